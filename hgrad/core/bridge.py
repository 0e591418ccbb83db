"""The JAX bridge: f(beta, key) as a `jax.pure_callback`, usable under jit and vmap.

`vmap_method="broadcast_all"` hands the host the whole vmapped batch in one
call, with beta and seed tiled to the full batch shape (nested vmaps stack
their axes), so n seeds x 2m perturbed betas are rendered in one host call.
No gradient flows through the callback: the hybrid-gradient estimator supplies
dX/dbeta by finite differences.

`submit` / `collect` split a render into two callbacks: the first hands the
batch to the workers and returns a ticket at once, the second waits for it.
Between them the jitted step computes (the unroll) while the workers render
(`Generator.deferred`, used by `estimator.hybrid_vjp`).

The output contract: every batch a host returns is checked against the declared
output spec (keys, shape `(B,) + spec.shape`, a dtype that casts; finite values
unless `check_finite=False`), and a broken one raises `GeneratorError` naming
the output, and for a value the sample, its seed and its beta. Raised inside a
callback, XLA would wrap it in its own runtime error (and JAX log it once more):
under `host_errors()` (the run loop uses it) the error reaches the caller once,
as itself.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import itertools
import logging
import os
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from hgrad.core.estimator import Deferred
from hgrad.core.layout import ParamLayout
from hgrad.core import pool as pool_lib
from hgrad.core.pool import GeneratorError, RenderPool, merge_stats
from hgrad.core.ray_pool import RayPool


BACKENDS = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class RenderConfig:
  """Where renders run (`config.render`); the worker count is `config.num_workers`."""

  backend: str = "local"   # "local": worker processes beside this process; "ray": Ray actors
  address: str = ""        # ray: a running cluster ("auto", "ray://head:10001"); "" = a local Ray
  overlap: bool = True     # the 2m perturbed renders run while the unroll and its VJP compute

  def __post_init__(self):
    if self.backend not in BACKENDS:
      raise ValueError(f"config.render.backend must be one of {BACKENDS}, got {self.backend!r}")
    if self.address and self.backend != "ray":
      raise ValueError(f"config.render.address={self.address!r} needs backend 'ray', got "
                       f"{self.backend!r}")


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
    self.render_batch, self.layout, self.output_spec = spec

  def close(self):
    pass


# The GeneratorErrors raised inside callbacks since `host_errors()` was entered (per thread of
# the caller is not knowable from the callback's thread: one list, cleared on entry).
_RAISED: list[GeneratorError] = []


class _DropReportsOfGeneratorErrors(logging.Filter):
  """JAX logs every exception raised in a callback before XLA re-raises it: for a
  GeneratorError (reported once, by `host_errors()` or in XLA's error) that is a duplicate."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], GeneratorError))


_CALLBACK_LOGGER = "jax._src.callback"


def _quiet_duplicate_reports() -> None:
  logger = logging.getLogger(_CALLBACK_LOGGER)
  if not any(isinstance(f, _DropReportsOfGeneratorErrors) for f in logger.filters):
    logger.addFilter(_DropReportsOfGeneratorErrors())


@contextlib.contextmanager
def host_errors():
  """Within it, a `GeneratorError` a host raised inside a jitted computation surfaces as itself
  instead of as XLA's runtime error around it. Wrap the call that waits for the result
  (e.g. `jax.block_until_ready`, `jax.device_get`)::

    with hgrad.host_errors():
      state, metrics = jax.device_get(trainer.outer_step(state, key))
  """
  _RAISED.clear()
  try:
    yield
  except jax.errors.JaxRuntimeError:
    if _RAISED:
      error = _RAISED.pop()
      _RAISED.clear()
      raise error from None
    raise


class Generator:
  """A data generator f(beta, r): a host renderer plus its JAX entry point.

  The host contract: `layout` (a `ParamLayout`), `output_spec` (a pytree of
  `jax.ShapeDtypeStruct`, the outputs of ONE sample: e.g. a `Sample`, a dict,
  an array), `render_batch(beta_Bxd, seeds_B) -> outputs` (each output with a
  leading axis of B samples, sample i rendered from beta[i] and seeds[i],
  deterministic in both) and `close()`; optionally `pop_stats() -> dict`
  (timings and counts since the last call, summed over workers into
  `reset_stats()`), `height` / `width`, `warm_up()` and
  `render_trees(trees, seeds_B)`. Every batch is checked against
  `output_spec` (module docstring). beta reaches the host checked (shape,
  NaN) and clipped to the box: this is the one place where beta enters a
  renderer. Every in-process host call runs on one thread owned by the
  generator, and every worker serves its host from one thread, so a GL (or
  other thread-bound) context the host opens stays current.

  Args:
    host_factory: builds the host from `config`. It must be picklable (a
      module-level class or function) when `num_workers > 0`.
    config: the host's settings (e.g. a frozen dataclass), picklable.
    num_workers: worker processes (Ray actors); 0 renders in this process;
      None = one per core (for a Ray cluster: one per CPU of the cluster).
    render: where the workers run (`RenderConfig`: "local" processes or "ray").
    check_finite: raise `GeneratorError` on a NaN or infinite output value
      (the check costs about a millisecond per batch of 64x64 samples).
  """

  def __init__(self, host_factory: Callable[[Any], Any], config: Any,
               num_workers: int | None = None, render: RenderConfig | None = None,
               check_finite: bool = True):
    _quiet_duplicate_reports()
    self.config = config
    self.check_finite = check_finite
    self._host = host_factory(config)
    self.layout: ParamLayout = self._host.layout
    self.output_spec = self._host.output_spec
    self.height = getattr(self._host, "height", None)
    self.width = getattr(self._host, "width", None)
    self.render_config = render = render or RenderConfig()
    if render.backend == "ray":
      if num_workers is not None and int(num_workers) < 1:
        raise ValueError(f"the ray backend renders in actors: num_workers must be >= 1 (or "
                         f"-1 / None for one per CPU), got {num_workers}")
      if num_workers is None and not render.address:
        num_workers = default_num_workers() or 1
      self._pool = RayPool(host_factory, config, num_workers, render.address)
    else:
      num_workers = default_num_workers() if num_workers is None else int(num_workers)
      if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
      self._pool = RenderPool(host_factory, config, num_workers) if num_workers else None
    self._thread = (None if self._pool is not None else
                    concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hgrad-host"))
    self._stats_lock = threading.Lock()
    self.stats: dict[str, float] = {}
    self._submitter = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hgrad-submit")
    self._tickets = itertools.count(1)
    self._pending: dict[int, concurrent.futures.Future] = {}

  @property
  def num_workers(self) -> int:
    """Render workers (0: in this process); a Ray cluster's count is known once it is joined."""
    return self._pool.num_workers if self._pool is not None else 0

  @classmethod
  def from_function(cls, render_batch: Callable[[np.ndarray, np.ndarray], Any],
                    layout: ParamLayout, output_spec: Any, num_workers: int | None = 0,
                    check_finite: bool = True) -> "Generator":
    """A generator from a plain numpy `render_batch(beta_Bxd, seeds_B) -> outputs` (no class).

    The host contract's `render_batch` (class docstring); `output_spec`
    describes one sample's outputs (a pytree of `jax.ShapeDtypeStruct`). With
    `num_workers > 0` the function must be importable by name (defined at
    module level).
    """
    return cls(FunctionHost, (render_batch, layout, output_spec), num_workers,
               check_finite=check_finite)

  @property
  def beta0(self) -> np.ndarray:
    """The layout's default beta (a copy)."""
    return self.layout.default.copy()

  def reset_stats(self) -> dict[str, float]:
    """Returns the accumulated host statistics and starts counting afresh."""
    with self._stats_lock:
      stats, self.stats = self.stats, {}
    return stats

  def render(self, beta_Bxd, seeds_B) -> Any:
    """Host path: numpy in, numpy out; sample i is f(clip(beta[i]), seeds[i])."""
    beta_Bxd = self.layout.clip(self.layout.check(beta_Bxd).reshape(-1, self.layout.dim))
    return self._render_checked(beta_Bxd, np.asarray(seeds_B, np.uint32).reshape(-1))

  def _render_checked(self, beta_Bxd: np.ndarray, seeds_B: np.ndarray,
                      wall_key: str = "host_wall_s") -> Any:
    """render_batch on checked, clipped betas; its outputs checked for finite values."""
    outputs = self._host_call("render_batch", beta_Bxd, seeds_B, wall_key=wall_key)
    if self.check_finite:
      pool_lib.check_finite(outputs, betas=beta_Bxd, seeds=seeds_B, layout=self.layout)
    return outputs

  def render_trees(self, trees, seeds_B) -> Any:
    """Renders explicit shapes (generators that support it, e.g. CSG trees)."""
    return self._host_call("render_trees", list(trees), np.asarray(seeds_B, np.uint32).reshape(-1))

  def _host_call(self, method: str, *args, wall_key: str = "host_wall_s") -> Any:
    """host.method(*args) in the workers or the host thread; its wall time under `wall_key`:
    host_wall_s for calls the step waits on, host_overlapped_s for submitted ones."""
    start = time.perf_counter()
    if self._pool is not None:
      outputs, stats = self._pool.call(method, *args)
    else:
      outputs, stats = self._thread.submit(pool_lib.host_call, self._host, method, args).result()
    stats[wall_key] = time.perf_counter() - start
    stats["host_calls"] = 1
    self._add_stats(stats)
    return outputs

  def _add_stats(self, stats: dict) -> None:
    with self._stats_lock:
      self.stats = merge_stats([self.stats, stats])

  def _shaped(self, flat: Any, batch_shape: tuple[int, ...]) -> Any:
    """Checked outputs (B, ...) with B = prod(batch_shape) -> batch_shape + spec.shape."""
    return jax.tree.map(lambda x, spec: x.reshape(batch_shape + spec.shape), flat,
                        self.output_spec)

  @staticmethod
  def _reported(call: Callable[[], Any]) -> Any:
    """call() inside a host callback; a GeneratorError is remembered for `host_errors()`."""
    try:
      return call()
    except GeneratorError as error:
      _RAISED.append(error)
      raise

  def _callback(self, beta, seed) -> Any:
    beta, seed = np.asarray(beta), np.asarray(seed)
    return self._reported(lambda: self._shaped(
        self.render(beta.reshape(-1, self.layout.dim), seed.reshape(-1)), seed.shape))

  def _submit_callback(self, beta, seed, after) -> np.ndarray:
    del after
    beta, seed = np.asarray(beta), np.asarray(seed)
    ticket = next(self._tickets)
    # Checked now, so bad beta fails here and not in the collecting callback.
    beta_Bxd = self.layout.clip(self.layout.check(beta.reshape(-1, self.layout.dim)))
    self._pending[ticket] = self._submitter.submit(
        self._render_checked, beta_Bxd, seed.reshape(-1).astype(np.uint32),
        wall_key="host_overlapped_s")
    return np.full(seed.shape, ticket, np.int32)

  def _collect_callback(self, ticket, after) -> Any:
    del after
    ticket = np.asarray(ticket)
    unique = np.unique(ticket)
    if len(unique) != 1 or int(unique[0]) not in self._pending:
      raise ValueError(f"collect got tickets {unique.tolist()}, pending "
                       f"{sorted(self._pending)}: every ticket is collected once, with the "
                       f"shape it was submitted with")
    start = time.perf_counter()
    outputs = self._reported(self._pending.pop(int(unique[0])).result)
    self._add_stats({"host_wall_s": time.perf_counter() - start})   # what the step waited
    return self._shaped(outputs, ticket.shape)

  def _checked(self, beta: jax.Array) -> jax.Array:
    if jnp.shape(beta) != (self.layout.dim,):
      raise ValueError(f"beta must have shape ({self.layout.dim},) for the "
                       f"{self.layout.name} layout, got {jnp.shape(beta)}")
    if not isinstance(beta, jax.core.Tracer):   # eager call: a clear error now, not from XLA
      self.layout.check(np.asarray(beta))
    return jax.lax.stop_gradient(jnp.asarray(beta, jnp.float32))

  def generate(self, beta: jax.Array, key: jax.Array) -> Any:
    """X = f(clip(beta), r(key)) as JAX arrays; traceable, vmappable, no gradient."""
    return jax.pure_callback(self._callback, self.output_spec, self._checked(beta),
                             seed_from_key(key), vmap_method="broadcast_all")

  def submit(self, beta: jax.Array, key: jax.Array, after: jax.Array | float = 0.0) -> jax.Array:
    """Starts rendering f(clip(beta), r(key)) and returns an int32 ticket at once (vmappable).

    The render runs in the workers (or the host thread) while the caller
    computes; `collect(ticket)` waits for it. `after` (any scalar) makes the
    call wait for whatever computes it.
    """
    return jax.pure_callback(self._submit_callback, jax.ShapeDtypeStruct((), jnp.int32),
                             self._checked(beta), seed_from_key(key),
                             jnp.asarray(after, jnp.float32), vmap_method="broadcast_all")

  def collect(self, ticket: jax.Array, after: jax.Array | float = 0.0) -> Any:
    """The X of a submitted render, with the ticket's (vmapped) shape; waits until it is done."""
    return jax.pure_callback(self._collect_callback, self.output_spec, ticket,
                             jnp.asarray(after, jnp.float32), vmap_method="broadcast_all")

  @property
  def deferred(self) -> Deferred:
    """generate / submit / collect, for renders that overlap with the unroll (hybrid_vjp)."""
    return Deferred(self.generate, self.submit, self.collect)

  def close(self):
    """Ends the workers (or the host thread) and closes the host; pending renders are dropped."""
    self._submitter.shutdown(wait=True)
    self._pending.clear()
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
