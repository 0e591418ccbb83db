"""Training losses of the network and the evaluation loss L on real images.

Both are masked: only pixels where `mask > 0` count. Every sum over pixels is
divided by the number of valid pixels of the same image first and then
averaged over images, so large objects do not outweigh small ones.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from hgrad.tasks import network
from hgrad.tasks.network import Prediction

_COS_LIMIT = 1.0 - 1e-6


def _per_image_mean(value_BxHxW: jax.Array, mask_BxHxW: jax.Array) -> jax.Array:
  axes = tuple(range(value_BxHxW.ndim - 2, value_BxHxW.ndim))
  return jnp.sum(value_BxHxW * mask_BxHxW, axes) / jnp.maximum(jnp.sum(mask_BxHxW, axes), 1.0)


def cosine(pred_normals: jax.Array, true_normals: jax.Array) -> jax.Array:
  return jnp.sum(pred_normals * true_normals, axis=-1)


def angle_deg(pred_normals: jax.Array, true_normals: jax.Array) -> jax.Array:
  """Per-pixel angle in degrees; cos is clipped so the gradient stays finite at 0 degrees."""
  return jnp.degrees(jnp.arccos(jnp.clip(cosine(pred_normals, true_normals), -_COS_LIMIT, _COS_LIMIT)))


def mean_angle_error(pred_normals, true_normals, mask) -> jax.Array:
  """L for surface normals: per-image mean angle (degrees) over valid pixels, averaged over images."""
  return jnp.mean(_per_image_mean(angle_deg(pred_normals, true_normals), mask))


def normal_loss(pred_normals, true_normals, mask) -> jax.Array:
  """1 - cos, masked: smooth everywhere (the angle's gradient blows up at 0 degrees)."""
  return jnp.mean(_per_image_mean(1.0 - cosine(pred_normals, true_normals), mask))


def scale_invariant_depth_loss(pred_depth, true_depth, mask) -> jax.Array:
  """Eigen et al.'s scale-invariant log-depth error (lambda = 1), masked.

  The prediction is read as log depth; depth is only known up to scale in the
  generators, so only relative depth is supervised.
  """
  diff = (pred_depth - jnp.log(jnp.maximum(true_depth, 1e-6))) * mask
  count = jnp.maximum(jnp.sum(mask, axis=(-2, -1)), 1.0)
  mean = jnp.sum(diff, axis=(-2, -1)) / count
  return jnp.mean(jnp.sum(diff * diff, axis=(-2, -1)) / count - mean * mean)


def log_depth_mse(pred_log_depth, true_depth, mask) -> jax.Array:
  """Mean squared error of log depth (absolute scale), masked."""
  diff = pred_log_depth - jnp.log(jnp.maximum(true_depth, 1e-6))
  return jnp.mean(_per_image_mean(diff * diff, mask))


def log_depth_rmse(pred_log_depth, true_depth, mask) -> jax.Array:
  """L for depth: per-image RMSE of log depth, averaged over images."""
  diff = pred_log_depth - jnp.log(jnp.maximum(true_depth, 1e-6))
  return jnp.mean(jnp.sqrt(_per_image_mean(diff * diff, mask) + 1e-12))


DEPTH_LOSSES = {"scale_invariant": scale_invariant_depth_loss, "log_l2": log_depth_mse}


def supervised_loss(prediction: Prediction, batch, *, normal_weight: float = 1.0,
                    depth_weight: float = 0.0, depth_loss: str = "scale_invariant") -> jax.Array:
  """Loss of every stack's prediction (intermediate supervision), summed over stacks."""
  total = 0.0
  if normal_weight:
    total += normal_weight * jax.vmap(lambda n: normal_loss(n, batch.normals, batch.mask))(
        prediction.normals).sum()
  if depth_weight:
    loss = DEPTH_LOSSES[depth_loss]
    total += depth_weight * jax.vmap(lambda d: loss(d, batch.depth, batch.mask))(
        prediction.depth).sum()
  return total


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """What the network is trained on: weights of the normal and depth terms."""

  normal_weight: float = 1.0
  depth_weight: float = 0.0
  depth_loss: str = "scale_invariant"   # or "log_l2" (absolute log depth)

  def __post_init__(self):
    if self.depth_loss not in DEPTH_LOSSES:
      raise ValueError(f"LossConfig.depth_loss must be one of {sorted(DEPTH_LOSSES)}, "
                       f"got {self.depth_loss!r}")
    if self.normal_weight < 0 or self.depth_weight < 0 or not (self.normal_weight or
                                                               self.depth_weight):
      raise ValueError("LossConfig.normal_weight and depth_weight must be >= 0, not both 0")


def train_loss_fn(net: network.NetworkConfig, config: LossConfig) -> Callable:
  """train_loss(params, batch) of the stacked hourglass on a Sample batch (all stacks supervised)."""
  def train_loss(params, batch):
    prediction = network.apply(net, params, batch.image)
    return supervised_loss(prediction, batch, normal_weight=config.normal_weight,
                           depth_weight=config.depth_weight, depth_loss=config.depth_loss)
  return train_loss
