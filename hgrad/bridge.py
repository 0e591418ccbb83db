"""The JAX bridge: f(beta, key) as a `jax.pure_callback`, usable under jit and vmap.

`vmap_method="broadcast_all"` hands the host the whole vmapped batch in one
call, with beta and seed tiled to the full batch shape (nested vmaps stack
their axes), so n seeds x 2m perturbed betas are rendered in one host call.
No gradient flows through the callback: the hybrid-gradient estimator supplies
dX/dbeta by finite differences.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from hgrad.layout import ParamLayout
from hgrad.pool import RenderPool, merge_stats
from hgrad.sample import Sample, sample_shapes


def default_num_workers() -> int:
  """One render worker per core where there are several cores; in-process otherwise."""
  cores = os.cpu_count() or 1
  return 0 if cores < 2 else min(cores, 8)


def seed_from_key(key: jax.Array) -> jax.Array:
  """The renderer's integer seed r, derived from a JAX key."""
  return jax.random.bits(key, dtype=jnp.uint32)


class Generator:
  """A data generator f(beta, r): host rendering plus its JAX entry point.

  Args:
    host_factory: builds the host renderer from `config`; a class with a
      `layout` attribute, `height`/`width`, `render_batch(beta_Bxd, seeds_B)`
      returning `(Sample, stats)`, and `close()`. It must be picklable (a
      module-level class) when `num_workers > 0`.
    config: the generator's settings (a frozen dataclass).
    num_workers: worker processes; 0 renders in this process.
  """

  def __init__(self, host_factory: Callable[[Any], Any], config: Any,
               num_workers: int | None = None):
    self.config = config
    self._host = host_factory(config)
    self.layout: ParamLayout = self._host.layout
    self.height, self.width = self._host.height, self._host.width
    self.channels = getattr(self._host, "channels", 1)
    self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
    if self.num_workers < 0:
      raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
    self._pool = RenderPool(host_factory, config, self.num_workers) if self.num_workers else None
    self._stats_lock = threading.Lock()
    self.stats: dict[str, float] = {}

  @property
  def beta0(self) -> np.ndarray:
    return self.layout.default.copy()

  def reset_stats(self) -> dict[str, float]:
    """Returns the accumulated host statistics and starts counting afresh."""
    with self._stats_lock:
      stats, self.stats = self.stats, {}
    return stats

  def render(self, beta_Bxd, seeds_B) -> Sample:
    """Host path: numpy in, numpy out; sample i is f(clip(beta[i]), seeds[i])."""
    beta_Bxd = self.layout.check(beta_Bxd).reshape(-1, self.layout.dim)
    return self._host_call("render_batch", beta_Bxd, np.asarray(seeds_B, np.uint32).reshape(-1))

  def render_trees(self, trees, seeds_B) -> Sample:
    """Renders explicit shapes (generators that support it, e.g. CSG trees)."""
    return self._host_call("render_trees", list(trees), np.asarray(seeds_B, np.uint32).reshape(-1))

  def _host_call(self, method: str, *args) -> Sample:
    start = time.perf_counter()
    backend = self._pool if self._pool is not None else self._host
    sample, stats = getattr(backend, method)(*args)
    stats["host_wall_s"] = time.perf_counter() - start
    stats["host_calls"] = 1
    with self._stats_lock:
      self.stats = merge_stats([self.stats, stats]) if self.stats else stats
    return sample

  def _callback(self, beta, seed) -> Sample:
    beta, seed = np.asarray(beta), np.asarray(seed)
    batch_shape = seed.shape
    flat = self.render(beta.reshape(-1, self.layout.dim), seed.reshape(-1))
    shapes = sample_shapes(self.height, self.width, batch_shape, self.channels)
    return Sample(*(np.ascontiguousarray(x).reshape(s) for x, s in zip(flat, shapes)))

  def generate(self, beta: jax.Array, key: jax.Array) -> Sample:
    """X = f(clip(beta), r(key)) as JAX arrays; traceable, vmappable, no gradient."""
    if jnp.shape(beta) != (self.layout.dim,):
      raise ValueError(f"beta must have shape ({self.layout.dim},) for the "
                       f"{self.layout.name} layout, got {jnp.shape(beta)}")
    if not isinstance(beta, jax.core.Tracer):
      self.layout.check(np.asarray(beta))
    beta = self.layout.clip(jnp.asarray(beta, jnp.float32))
    out_types = Sample(*(jax.ShapeDtypeStruct(s, jnp.float32)
                         for s in sample_shapes(self.height, self.width, (), self.channels)))
    return jax.pure_callback(self._callback, out_types, jax.lax.stop_gradient(beta),
                             seed_from_key(key), vmap_method="broadcast_all")

  def close(self):
    if self._pool is not None:
      self._pool.close()
    self._host.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
