"""Host renderers in worker processes: one long-lived GL context per worker.

Workers are fresh interpreters (`python -m hgrad.core.worker`), not forks: forking a
process that runs JAX is unsafe, and multiprocessing's 'spawn' re-imports the
user's `__main__`, which breaks scripts without a main guard. Each worker
connects back over a local socket, builds its host generator once and then
renders chunks. A batch is split into contiguous chunks, one per worker, so
results do not depend on the number of workers. If EGL cannot open a context
and the user did not choose a platform, the workers are restarted with OSMesa;
if that fails too, the error names both.

A worker that dies (killed, out of memory, a crash in the GL driver) is
replaced and its chunk sent again: renders are deterministic in (beta, seed),
so the retried batch, and the run's trajectory, are unchanged. A chunk that
kills `MAX_ATTEMPTS` workers in a row stops the call with a `RenderError`
naming the workers and their exit codes (the run's last checkpoint resumes it).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing.connection import Listener
from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from hgrad.core.errors import GeneratorError, RenderError

Factory = Callable[[Any], Any]
_START_TIMEOUT_S = 120.0
MAX_ATTEMPTS = 3            # workers a chunk may kill before the call fails




def _output_name(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/") or "the output"


def check_outputs(outputs: Any, spec: Any, batch: int, method: str = "render_batch") -> Any:
  """`outputs` of a host call against `spec` (one sample's outputs, a pytree of
  `jax.ShapeDtypeStruct`): the same keys, each of shape `(batch,) + spec.shape` and of a dtype
  that casts to the spec's (numpy "same_kind"). Returns the outputs cast to the spec's dtypes;
  raises `GeneratorError` naming what is wrong (values: `check_finite`)."""
  spec_paths = dict(jax.tree_util.tree_flatten_with_path(spec)[0])
  try:
    leaves = jax.tree_util.tree_flatten_with_path(outputs)[0]
    same_structure = jax.tree.structure(outputs) == jax.tree.structure(spec)
  except Exception:  # noqa: BLE001 - an object that is no pytree at all
    same_structure, leaves = False, []
  if not same_structure:
    if (isinstance(outputs, tuple) and len(outputs) == 2 and isinstance(outputs[1], dict)
        and jax.tree.structure(outputs[0]) == jax.tree.structure(spec)):
      raise GeneratorError(f"{method} returned a tuple (outputs, stats): return the outputs "
                           f"only (a host reports statistics through pop_stats())")
    want = sorted(map(_output_name, spec_paths))
    got = sorted(_output_name(path) for path, _ in leaves)
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    detail = (f"missing {missing}" if missing else "") + (", " if missing and extra else "") + (
        f"unexpected {extra}" if extra else "")
    raise GeneratorError(f"{method} returned outputs {got or type(outputs).__name__} where the "
                         f"output spec declares {want}" + (f": {detail}" if detail else ""))
  checked = []
  for (path, value), leaf_spec in zip(leaves, jax.tree.leaves(spec)):
    name, value = _output_name(path), np.asarray(value)
    want_shape = (batch,) + tuple(leaf_spec.shape)
    if value.shape != want_shape:
      hint = (" (the same number of values in another layout: is the batch axis first?)"
              if value.size == int(np.prod(want_shape)) else "")
      raise GeneratorError(f"{method} output {name!r} has shape {value.shape}, expected "
                           f"{want_shape} (batch {batch} x the spec's {tuple(leaf_spec.shape)})"
                           f"{hint}")
    if not np.can_cast(value.dtype, leaf_spec.dtype, casting="same_kind"):
      raise GeneratorError(f"{method} output {name!r} has dtype {value.dtype}, which does not "
                           f"cast to the spec's {np.dtype(leaf_spec.dtype)}")
    checked.append(np.ascontiguousarray(value, leaf_spec.dtype))
  return jax.tree.unflatten(jax.tree.structure(spec), checked)


def check_finite(outputs: Any, *, method: str = "render_batch", betas: np.ndarray | None = None,
                 seeds: np.ndarray | None = None, layout: Any = None) -> None:
  """Raises `GeneratorError` naming the first output, sample, seed and beta with a NaN or an
  infinity (outputs with a leading batch axis)."""
  for path, value in jax.tree_util.tree_flatten_with_path(outputs)[0]:
    value = np.asarray(value)
    if value.dtype.kind not in "fc" or np.isfinite(value).all():
      continue
    sample = int(np.nonzero(~np.isfinite(value).reshape(len(value), -1).all(axis=1))[0][0])
    where = f"sample {sample}" + (f" (seed {int(seeds[sample])})" if seeds is not None else "")
    if betas is not None:
      beta = (layout.as_dict(betas[sample]) if layout is not None else
              np.asarray(betas[sample]).tolist())
      where += f" at beta {beta}"
    raise GeneratorError(f"{method} output {_output_name(path)!r} is NaN or infinite in {where}")


def _error(e: BaseException):
  return ("error", (type(e).__name__, str(e), traceback.format_exc()))


def serve(conn):
  """Worker side: build the host from the first message, then render until told to stop."""
  factory, config = conn.recv()
  try:
    host = factory(config)
    if hasattr(host, "warm_up"):
      host.warm_up()
    conn.send(("ready", None))
  except BaseException as e:  # pylint: disable=broad-except
    conn.send(_error(e))
    return
  while True:
    try:
      message = conn.recv()
    except EOFError:
      break
    if message is None:
      break
    method, args = message
    try:
      conn.send(("ok", host_call(host, method, args)))
    except BaseException as e:  # pylint: disable=broad-except
      conn.send(_error(e))
  host.close()


def _take(arg, idx):
  return arg[idx] if isinstance(arg, np.ndarray) else [arg[i] for i in idx]


def _death(proc) -> str:
  """'worker PID (exit code C)' for a worker whose connection broke."""
  try:
    code = proc.wait(timeout=5)
  except subprocess.TimeoutExpired:
    proc.kill()
    code = proc.wait()
  return f"worker {proc.pid} (exit code {code})"


def _close_workers(workers: list[tuple[Any, Any]]):
  for _, conn in workers:
    try:
      conn.send(None)
    except OSError:
      pass
  for proc, conn in workers:
    try:
      proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
      proc.kill()
    conn.close()


def merge_stats(stats: list[dict]) -> dict:
  """Sums of every key over the dicts (a key missing from one counts 0 there)."""
  keys = dict.fromkeys(k for s in stats for k in s)
  return {k: sum(s.get(k, 0) for s in stats) for k in keys}


def split(args: tuple, num_workers: int) -> list[tuple]:
  """Every argument cut along its first axis into contiguous chunks, one per worker (fewer
  when there are fewer items): results then do not depend on the number of workers."""
  chunks = [c for c in np.array_split(np.arange(len(args[0])), num_workers) if len(c)]
  return [tuple(_take(a, idx) for a in args) for idx in chunks]


def join(results: list[tuple[Any, dict]], restarts: int) -> tuple[Any, dict]:
  """The chunks' (outputs, stats) as one batch, in order; stats summed, restarts counted."""
  outputs, stats = zip(*results)
  stats = merge_stats(list(stats))
  stats["worker_restarts"] = float(restarts)
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs), stats


def host_call(host, method: str, args: tuple) -> tuple[Any, dict]:
  """(outputs, stats) of host.method(*args), where it runs (in-process, pool and Ray workers
  alike): the outputs checked against the host's output spec (`check_outputs`: keys, shapes,
  dtypes; the last argument is the seeds, one per sample; finiteness is the caller's, on the
  whole batch), the stats those of `host.pop_stats()` if it has one, with the CPU time."""
  cpu_start = time.process_time()
  outputs = getattr(host, method)(*args)
  seeds = np.asarray(args[-1]).reshape(-1)
  outputs = check_outputs(outputs, host.output_spec, len(seeds), method)
  stats = dict(host.pop_stats()) if hasattr(host, "pop_stats") else {}
  stats["worker_cpu_s"] = time.process_time() - cpu_start
  return outputs, stats


def start_on_a_platform(start: Callable[[str], None], where: str = "") -> None:
  """start(platform) on the user's PYOPENGL_PLATFORM, else EGL, else OSMesa; a RenderError
  naming both failures if neither opens a context (`where`: e.g. " in the Ray actors")."""
  user_platform = os.environ.get("PYOPENGL_PLATFORM")
  if user_platform:
    start(user_platform)
    return
  try:
    start("egl")
  except RenderError as egl_error:
    try:
      start("osmesa")
    except RenderError as osmesa_error:
      raise RenderError(f"no headless OpenGL context{where}. EGL failed: {egl_error} OSMesa "
                        f"failed: {osmesa_error}") from osmesa_error


def chunk_kills_workers(what: str, method: str, deaths: list[str]) -> RenderError:
  """The error when one chunk killed `MAX_ATTEMPTS` workers in a row, naming each."""
  return RenderError(f"{what} died {len(deaths)} times in a row on the same {method} chunk "
                     f"({', '.join(deaths)}); the run's last checkpoint resumes it")


def reraise(kind: str, message: str, trace: str):
  """A worker's exception, raised here: ValueError, GeneratorError and RenderError as
  themselves."""
  if kind == "GeneratorError":
    raise GeneratorError(message)
  if kind == "ValueError":
    raise ValueError(message)
  if kind == "RenderError":
    raise RenderError(message)
  raise RuntimeError(f"render worker failed: {kind}: {message}\n{trace}")


class RenderPool:
  """Runs methods of `factory(config)` (render_batch, render_trees) over worker processes."""

  def __init__(self, factory: Factory, config: Any, num_workers: int):
    if num_workers < 1:
      raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    self._factory, self._config, self.num_workers = factory, config, num_workers
    self._workers: list[tuple[Any, Any]] = []
    self._platform = ""
    self._lock = threading.Lock()
    atexit.register(self.close)

  def _spawn(self, count: int, platform: str) -> list[tuple[Any, Any]]:
    """Starts `count` workers on `platform` and builds their hosts; returns (process, conn)s."""
    authkey = secrets.token_bytes(16)
    address = os.path.join(tempfile.mkdtemp(prefix="hgrad-pool-"), "socket")
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYOPENGL_PLATFORM=platform, HGRAD_POOL_AUTHKEY=authkey.hex(),
               PYTHONPATH=os.pathsep.join([package_root] + sys.path))
    workers = []
    try:
      with Listener(address, authkey=authkey) as listener:
        procs = {}
        for _ in range(count):
          proc = subprocess.Popen([sys.executable, "-m", "hgrad.core.worker", address], env=env)
          procs[proc.pid] = proc
        # Closing the listener makes a pending accept() fail: the start-up timeout.
        watchdog = threading.Timer(_START_TIMEOUT_S, listener.close)
        watchdog.start()
        try:
          for _ in range(count):
            conn = listener.accept()
            workers.append((procs[conn.recv()], conn))
        except OSError as e:
          for proc in procs.values():
            proc.kill()
          _close_workers(workers)
          raise RuntimeError(f"render workers did not start within {_START_TIMEOUT_S:.0f} s "
                             f"(exit codes {[p.poll() for p in procs.values()]})") from e
        finally:
          watchdog.cancel()
    finally:
      shutil.rmtree(os.path.dirname(address), ignore_errors=True)
    for _, conn in workers:
      conn.send((self._factory, self._config))
    replies = [self._receive(w) for w in workers]
    if any(r[0] != "ready" for r in replies):
      _close_workers(workers)
      for kind, detail in replies:
        if kind == "error":
          reraise(*detail)
      raise RenderError("render workers died while starting: "
                        + ", ".join(detail for kind, detail in replies if kind == "died"))
    return workers

  def _start(self, platform: str):
    self._workers = self._spawn(self.num_workers, platform)
    self._platform = platform

  def _ensure_started(self):
    if self._workers:
      return
    start_on_a_platform(self._start)

  @staticmethod
  def _receive(worker):
    proc, conn = worker
    try:
      return conn.recv()
    except (EOFError, OSError):
      return ("died", _death(proc))

  @staticmethod
  def _send(worker, message) -> bool:
    try:
      worker[1].send(message)
      return True
    except OSError:
      return False

  def call(self, method: str, *args) -> tuple[Any, dict]:
    """host.method(*args) with every argument split along its first axis over the workers."""
    with self._lock:
      self._ensure_started()
      messages = [(method, chunk) for chunk in split(args, self.num_workers)]
      replies: list[Any] = [None] * len(messages)
      deaths: list[list[str]] = [[] for _ in messages]
      restarts = 0
      pending = list(range(len(messages)))
      while pending:
        sent = [i for i in pending if self._send(self._workers[i], messages[i])]
        for i in pending:
          reply = self._receive(self._workers[i]) if i in sent else ("died",
                                                                     _death(self._workers[i][0]))
          if reply[0] == "died":
            deaths[i].append(reply[1])
          else:
            replies[i], deaths[i] = reply, []
        pending = [i for i in pending if deaths[i]]
        for i in pending:
          if len(deaths[i]) >= MAX_ATTEMPTS:
            self.close()
            raise chunk_kills_workers("render workers", method, deaths[i])
          self._replace(i, deaths[i][-1])
          restarts += 1
    failures = [r[1] for r in replies if r[0] == "error"]
    if failures:
      if any(f[0] not in ("ValueError", "GeneratorError") for f in failures):
        self.close()
      reraise(*failures[0])
    return join([r[1] for r in replies], restarts)

  @property
  def worker_pids(self) -> list[int]:
    """The running workers' process ids (empty before the first call and after close)."""
    return [proc.pid for proc, _ in self._workers]

  def _replace(self, i: int, death: str):
    """A new worker in slot i (the old one died, as `death` says); same platform and config."""
    self._workers[i][1].close()
    self._workers[i] = self._spawn(1, self._platform)[0]
    logging.warning("render %s died; replaced by worker %d, which renders its chunk again",
                    death, self._workers[i][0].pid)

  def close(self):
    workers, self._workers = self._workers, []
    _close_workers(workers)
