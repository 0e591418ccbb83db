"""Stacked hourglass network (Newell et al. 2016) for surface normals and depth.

Every 3x3 convolution goes through `conv2d`, a custom-VJP pair whose
derivatives of every order are again HWIO forward convolutions or
`weight_grad`. JAX's own transpose rule emits HWOI kernels, which XLA:CPU runs
~30x slower; avoiding them keeps the unroll's second-order pass (the VJP of
inner steps with respect to the data) near the 3-4x of a plain step that it
should cost (docs/benchmarks.md, "The unroll's cost").

No batch normalization: its statistics would couple the samples of a batch in
the unrolled second-order pass and cost more there than the convolutions;
pre-activation residual blocks whose last convolution starts small train
stably without it at these depths.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
  """Size of the stacked hourglass. `cpu` default; configs/mbii.py:paper has the GPU scale."""

  width: int = 24          # channels of every residual block
  stacks: int = 2          # hourglasses in sequence, each with its own supervised head
  depth: int = 3           # 2x downsamplings inside one hourglass (64 -> 8 at depth 3)
  blocks: int = 1          # residual blocks per hourglass level
  in_channels: int = 1     # shading
  residual_init_scale: float = 0.1

  def __post_init__(self):
    for name in ("width", "stacks", "depth", "blocks", "in_channels"):
      if getattr(self, name) < 1:
        raise ValueError(f"NetworkConfig.{name} must be >= 1, got {getattr(self, name)}")

  def num_params(self) -> int:
    params = init_params(self, jax.random.key(0), 2 ** self.depth)
    return sum(x.size for x in jax.tree.leaves(params))


_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv_same(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DIMS)


def _flip_transpose(w_HxWxIxO):
  """The kernel whose 'same' convolution is the transpose of w's (flip, swap I/O)."""
  return jnp.swapaxes(w_HxWxIxO[::-1, ::-1], 2, 3)


def _weight_grad_impl(x_BxHxWxI, dy_BxHxWxO, kh: int, kw: int):
  """sum_b,p x[b, p + k] dy[b, p]: batch as features, channels as batch (XLA's own form)."""
  out = jax.lax.conv_general_dilated(
      jnp.transpose(x_BxHxWxI, (3, 1, 2, 0)), jnp.transpose(dy_BxHxWxO, (1, 2, 0, 3)), (1, 1),
      ((kh // 2, kh // 2), (kw // 2, kw // 2)), dimension_numbers=_DIMS)
  return jnp.transpose(out, (1, 2, 0, 3))


@jax.custom_vjp
def conv2d(x_BxHxWxI, w_HxWxIxO):
  """'same' convolution (odd kernel) whose derivatives of every order are again
  HWIO forward convolutions or `weight_grad`.

  JAX's own transpose rule for a convolution emits it with an HWOI kernel
  layout, which XLA:CPU runs ~30x slower than HWIO: that, not the second-order
  pass itself, is why naive conv nets are slow to differentiate twice on CPU.
  """
  return _conv_same(x_BxHxWxI, w_HxWxIxO)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def weight_grad(x_BxHxWxI, dy_BxHxWxO, kernel_shape):
  """d(sum conv2d(x, w) * dy)/dw, as its own differentiable operation."""
  return _weight_grad_impl(x_BxHxWxI, dy_BxHxWxO, *kernel_shape)


def _conv2d_fwd(x, w):
  # Calling conv2d (not _conv_same) keeps higher-order passes on the custom rule.
  return conv2d(x, w), (x, w)


def _conv2d_bwd(res, dy):
  x, w = res
  return conv2d(dy, _flip_transpose(w)), weight_grad(x, dy, w.shape[:2])


def _weight_grad_fwd(x, dy, kernel_shape):
  return weight_grad(x, dy, kernel_shape), (x, dy)


def _weight_grad_bwd(kernel_shape, res, dw):
  del kernel_shape
  x, dy = res
  return conv2d(dy, _flip_transpose(dw)), conv2d(x, dw)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)
weight_grad.defvjp(_weight_grad_fwd, _weight_grad_bwd)


class Conv(nn.Module):
  """k x k 'same' convolution (k odd) with bias; 1 x 1 is a plain matmul."""

  features: int
  kernel: int = 3
  init_scale: float = 1.0

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    k, c = self.kernel, x_BxHxWxC.shape[-1]
    init = nn.initializers.variance_scaling(2.0 * self.init_scale ** 2, "fan_in", "normal")
    w = self.param("kernel", init, (k, k, c, self.features), jnp.float32)
    b_O = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    if k == 1:
      y = jnp.einsum("bhwc,co->bhwo", x_BxHxWxC, w[0, 0])
    else:
      y = conv2d(x_BxHxWxC, w)
    return y + b_O


class Residual(nn.Module):
  """Pre-activation residual block: x + conv(relu(conv(relu(x))))."""

  width: int
  init_scale: float

  @nn.compact
  def __call__(self, x):
    h = Conv(self.width)(jax.nn.relu(x))
    h = Conv(self.width, init_scale=self.init_scale)(jax.nn.relu(h))
    skip = x if x.shape[-1] == self.width else Conv(self.width, kernel=1)(x)
    return skip + h


def max_pool_2x2(x):
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def upsample_2x(x):
  b, h, w, c = x.shape
  return jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)


class Hourglass(nn.Module):
  width: int
  depth: int
  blocks: int
  init_scale: float

  def _res(self, x):
    for _ in range(self.blocks):
      x = Residual(self.width, self.init_scale)(x)
    return x

  @nn.compact
  def __call__(self, x):
    upper = self._res(x)
    lower = self._res(max_pool_2x2(x))
    if self.depth > 1:
      lower = Hourglass(self.width, self.depth - 1, self.blocks, self.init_scale)(lower)
    else:
      lower = self._res(lower)
    lower = self._res(lower)
    return upper + upsample_2x(lower)


class StackedHourglass(nn.Module):
  """Returns per-stack raw predictions (S, B, H, W, 4): 3 normal channels + 1 depth."""

  config: NetworkConfig

  @nn.compact
  def __call__(self, image_BxHxWxC):
    cfg = self.config
    x = Residual(cfg.width, cfg.residual_init_scale)(Conv(cfg.width)(image_BxHxWxC))
    outputs = []
    for s in range(cfg.stacks):
      h = Hourglass(cfg.width, cfg.depth, cfg.blocks, cfg.residual_init_scale)(x)
      h = Residual(cfg.width, cfg.residual_init_scale)(h)
      features = jax.nn.relu(Conv(cfg.width, kernel=1)(h))
      prediction = Conv(4, kernel=1)(features)
      outputs.append(prediction)
      if s + 1 < cfg.stacks:
        x = x + Conv(cfg.width, kernel=1)(features) + Conv(cfg.width, kernel=1)(prediction)
    return jnp.stack(outputs)


class Prediction(NamedTuple):
  normals: jax.Array   # (..., H, W, 3) unit
  depth: jax.Array     # (..., H, W)


def heads(raw_SxBxHxWx4: jax.Array) -> Prediction:
  """Unit normals (safe normalization) and depth from the raw outputs."""
  n = raw_SxBxHxWx4[..., :3]
  n = n * jax.lax.rsqrt(jnp.sum(n * n, axis=-1, keepdims=True) + 1e-8)
  return Prediction(n, raw_SxBxHxWx4[..., 3])


def init_params(config: NetworkConfig, key: jax.Array, resolution: int | tuple[int, int]):
  """Parameters for images of `resolution` (square size or (height, width))."""
  height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
  if height % (2 ** config.depth) or width % (2 ** config.depth):
    raise ValueError(f"resolution {height}x{width} is not divisible by 2**depth = "
                     f"{2 ** config.depth}")
  dummy = jnp.zeros((1, height, width, config.in_channels), jnp.float32)
  return StackedHourglass(config).init(key, dummy)["params"]


def apply(config: NetworkConfig, params, image_BxHxWxC: jax.Array) -> Prediction:
  """All stacks' predictions, (S, B, H, W, ...): intermediate supervision uses every one."""
  return heads(StackedHourglass(config).apply({"params": params}, image_BxHxWxC))


def predict(config: NetworkConfig, params, image_BxHxWxC: jax.Array) -> Prediction:
  """The last stack's prediction, (B, H, W, ...)."""
  out = apply(config, params, image_BxHxWxC)
  return Prediction(out.normals[-1], out.depth[-1])
