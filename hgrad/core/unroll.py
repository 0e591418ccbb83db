"""Unrolled inner training: K optimizer steps as one pure `lax.scan`, differentiable in the data.

Generic: the loss, the parameters and the batches are the caller's (any
pytree); `jax.vjp` through `unroll` gives dL/dX for the hybrid gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax



@dataclasses.dataclass(frozen=True)
class InnerConfig:
  """Inner training: K steps of a smooth optimizer (SGD, optionally with momentum, or Adam).

  Attributes:
    steps: K, inner steps per global step.
    batch_size: B; a global step trains on n = K * B samples.
    optimizer: "sgd" or "adam" (both smooth: the unroll differentiates through them).
    learning_rate: the inner step size.
    lr_decay_steps: > 0: cosine decay to `lr_final_fraction` over this many
      inner steps; -1: over the whole run (resolved by the experiment).
    lr_final_fraction: the decayed learning rate as a fraction of the first.
    momentum: SGD's heavy-ball momentum (0: plain SGD).
    nesterov: SGD's Nesterov momentum.
    b1: Adam's first-moment decay.
    remat: `jax.checkpoint` each unrolled step: memory flat in K.
    ema_decay: > 0: L is evaluated on (and the run delivers) an exponential
      moving average of the weights, updated once per global step.
  """

  steps: int = 8
  batch_size: int = 8
  optimizer: str = "sgd"
  learning_rate: float = 0.02
  lr_decay_steps: int = 0
  lr_final_fraction: float = 0.1
  momentum: float = 0.0
  nesterov: bool = False
  b1: float = 0.9
  remat: bool = True
  ema_decay: float = 0.0

  def __post_init__(self):
    if self.steps < 1 or self.batch_size < 1:
      raise ValueError(f"InnerConfig.steps and batch_size must be >= 1, got "
                       f"{self.steps}, {self.batch_size}")
    if not self.learning_rate > 0:
      raise ValueError(f"InnerConfig.learning_rate must be > 0, got {self.learning_rate}")
    if self.lr_decay_steps < -1 or not 0.0 <= self.lr_final_fraction <= 1.0:
      raise ValueError("InnerConfig.lr_decay_steps must be >= -1 and lr_final_fraction in [0, 1]")
    if self.optimizer not in ("sgd", "adam"):
      raise ValueError(f"InnerConfig.optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
    if not 0.0 <= self.momentum < 1.0:
      raise ValueError(f"InnerConfig.momentum must be in [0, 1), got {self.momentum}")
    if not 0.0 <= self.b1 < 1.0:
      raise ValueError(f"InnerConfig.b1 must be in [0, 1), got {self.b1}")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"InnerConfig.ema_decay must be in [0, 1), got {self.ema_decay}")

  @property
  def num_samples(self) -> int:
    """n = K * B, the samples one global step trains on."""
    return self.steps * self.batch_size


class InnerState(NamedTuple):
  """The network's parameters and its inner optimizer's state."""

  params: Any
  opt_state: Any


def inner_optimizer(config: InnerConfig) -> optax.GradientTransformation:
  """The inner optimizer; both choices are smooth, so the unroll differentiates through them.

  The learning-rate schedule counts inner steps (the unrolled ones included),
  so it lives in the optimizer state and survives checkpoints.
  """
  learning_rate = config.learning_rate
  if config.lr_decay_steps < 0:
    raise ValueError("InnerConfig.lr_decay_steps = -1 must be resolved to the run's length first")
  if config.lr_decay_steps:
    learning_rate = optax.cosine_decay_schedule(config.learning_rate, config.lr_decay_steps,
                                                alpha=config.lr_final_fraction)
  if config.optimizer == "adam":
    return optax.adam(learning_rate, b1=config.b1, eps_root=1e-8)
  return optax.sgd(learning_rate, momentum=config.momentum or None, nesterov=config.nesterov)


def update_average(average: Any, params: Any, decay: float, count: jax.Array) -> Any:
  """One EMA step of the weights (Polyak averaging), warmed up by the step count.

  The decay used is min(decay, (1 + count) / (10 + count)), so the average
  forgets the random initial weights within the first steps instead of being
  biased toward them for ~1 / (1 - decay) steps.
  """
  rate = jnp.minimum(decay, (1.0 + count) / (10.0 + count))
  return optax.incremental_update(params, average, 1.0 - rate)


def split_steps(data: Any, steps: int) -> Any:
  """(n, ...) -> (K, B, ...): sample i goes to step i % K, slot i // K.

  This order keeps contiguous blocks of samples (a device's shard) in the batch
  axis, so a sample-sharded X stays batch-sharded inside every step.
  """
  def split(x):
    n = x.shape[0]
    if n % steps:
      raise ValueError(f"{n} samples cannot be split into {steps} equal steps")
    return jnp.swapaxes(x.reshape((n // steps, steps) + x.shape[1:]), 0, 1)
  return jax.tree.map(split, data)


def unroll(loss_fn: Callable, optimizer: optax.GradientTransformation, state: InnerState,
           batches: Any, *, remat: bool = True) -> tuple[InnerState, jax.Array]:
  """Runs one optimizer step per leading slice of `batches`; returns the state and K losses."""
  def step(state: InnerState, batch):
    loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return InnerState(optax.apply_updates(state.params, updates), opt_state), loss

  if remat:
    # Inside scan, CSE across iterations cannot undo the remat, so allow it (faster).
    step = jax.checkpoint(step, prevent_cse=False)
  return jax.lax.scan(step, state, batches)
