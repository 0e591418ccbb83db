"""The JAX bridge: f(beta, key) as a `jax.pure_callback`, usable under jit and vmap.

`vmap_method="broadcast_all"` hands the host the whole vmapped batch in one
call, with beta and seed tiled to the full batch shape (nested vmaps stack
their axes), so n seeds x 2m perturbed betas are rendered in one host call.
No gradient flows through the callback: the hybrid-gradient estimator supplies
dX/dbeta by finite differences.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from hgrad.core.layout import ParamLayout
from hgrad.core.pool import RenderPool, merge_stats


def default_num_workers() -> int:
  """One render worker per core where there are several cores; in-process otherwise."""
  cores = os.cpu_count() or 1
  return 0 if cores < 2 else min(cores, 8)


def seed_from_key(key: jax.Array) -> jax.Array:
  """The renderer's integer seed r, derived from a JAX key."""
  return jax.random.bits(key, dtype=jnp.uint32)


class FunctionHost:
  """The host behind `Generator.from_function`: a numpy function, its layout and output spec."""

  def __init__(self, spec: tuple[Callable, ParamLayout, Any]):
    self._render, self.layout, self.output_spec = spec

  def render_batch(self, beta_Bxd: np.ndarray, seeds_B: np.ndarray) -> tuple[Any, dict]:
    return self._render(beta_Bxd, seeds_B), {"samples": len(seeds_B)}

  def close(self):
    pass


class Generator:
  """A data generator f(beta, r): a host renderer plus its JAX entry point.

  The host is anything with `layout` (a `ParamLayout`), `output_spec` (a
  pytree of `jax.ShapeDtypeStruct`, the outputs of ONE sample: e.g. a
  `Sample`, a dict, an array), `render_batch(beta_Bxd, seeds_B) ->
  (outputs with a leading B axis, stats dict)` and `close()`. beta reaches it
  checked (shape, NaN) and clipped to the box: this is the one place where
  beta enters a renderer. Every in-process host call runs on one thread owned
  by the generator, and every worker serves its host from one thread, so a GL
  (or other thread-bound) context the host opens stays current.

  Args:
    host_factory: builds the host from `config`. It must be picklable (a
      module-level class or function) when `num_workers > 0`.
    config: the host's settings (e.g. a frozen dataclass), picklable.
    num_workers: worker processes; 0 renders in this process; None = one per core.
  """

  def __init__(self, host_factory: Callable[[Any], Any], config: Any,
               num_workers: int | None = None):
    self.config = config
    self._host = host_factory(config)
    self.layout: ParamLayout = self._host.layout
    self.output_spec = self._host.output_spec
    self.height = getattr(self._host, "height", None)
    self.width = getattr(self._host, "width", None)
    self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
    if self.num_workers < 0:
      raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
    self._pool = RenderPool(host_factory, config, self.num_workers) if self.num_workers else None
    self._thread = (None if self._pool is not None else
                    concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hgrad-host"))
    self._stats_lock = threading.Lock()
    self.stats: dict[str, float] = {}

  @classmethod
  def from_function(cls, render_batch: Callable[[np.ndarray, np.ndarray], Any],
                    layout: ParamLayout, output_spec: Any,
                    num_workers: int | None = 0) -> "Generator":
    """A generator from a plain numpy `render_batch(beta_Bxd, seeds_B) -> outputs` (no class).

    `output_spec` describes one sample's outputs (a pytree of
    `jax.ShapeDtypeStruct`). With `num_workers > 0` the function must be
    importable by name (defined at module level).
    """
    return cls(FunctionHost, (render_batch, layout, output_spec), num_workers)

  @property
  def beta0(self) -> np.ndarray:
    return self.layout.default.copy()

  def reset_stats(self) -> dict[str, float]:
    """Returns the accumulated host statistics and starts counting afresh."""
    with self._stats_lock:
      stats, self.stats = self.stats, {}
    return stats

  def render(self, beta_Bxd, seeds_B) -> Any:
    """Host path: numpy in, numpy out; sample i is f(clip(beta[i]), seeds[i])."""
    beta_Bxd = self.layout.clip(self.layout.check(beta_Bxd).reshape(-1, self.layout.dim))
    return self._host_call("render_batch", beta_Bxd, np.asarray(seeds_B, np.uint32).reshape(-1))

  def render_trees(self, trees, seeds_B) -> Any:
    """Renders explicit shapes (generators that support it, e.g. CSG trees)."""
    return self._host_call("render_trees", list(trees), np.asarray(seeds_B, np.uint32).reshape(-1))

  def _host_call(self, method: str, *args) -> Any:
    start = time.perf_counter()
    if self._pool is not None:
      outputs, stats = getattr(self._pool, method)(*args)
    else:
      outputs, stats = self._thread.submit(getattr(self._host, method), *args).result()
    stats["host_wall_s"] = time.perf_counter() - start
    stats["host_calls"] = 1
    with self._stats_lock:
      self.stats = merge_stats([self.stats, stats]) if self.stats else stats
    return outputs

  def _callback(self, beta, seed) -> Any:
    beta, seed = np.asarray(beta), np.asarray(seed)
    batch_shape = seed.shape
    flat = self.render(beta.reshape(-1, self.layout.dim), seed.reshape(-1))
    return jax.tree.map(lambda x, spec: np.ascontiguousarray(x, spec.dtype).reshape(
        batch_shape + spec.shape), flat, self.output_spec)

  def generate(self, beta: jax.Array, key: jax.Array) -> Any:
    """X = f(clip(beta), r(key)) as JAX arrays; traceable, vmappable, no gradient."""
    if jnp.shape(beta) != (self.layout.dim,):
      raise ValueError(f"beta must have shape ({self.layout.dim},) for the "
                       f"{self.layout.name} layout, got {jnp.shape(beta)}")
    if not isinstance(beta, jax.core.Tracer):   # eager call: a clear error now, not from XLA
      self.layout.check(np.asarray(beta))
    return jax.pure_callback(self._callback, self.output_spec,
                             jax.lax.stop_gradient(jnp.asarray(beta, jnp.float32)),
                             seed_from_key(key), vmap_method="broadcast_all")

  def close(self):
    if self._pool is not None:
      self._pool.close()
    if self._thread is not None:
      self._thread.submit(self._host.close).result()
      self._thread.shutdown()
      self._thread = None
    else:
      self._host.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
