"""Render workers as Ray actors: the same hosts as the local pool, on every core of a cluster.

`config.render.backend = "ray"` (`bridge.RenderConfig`). Each actor holds one
long-lived host (its GL context and generator) and renders chunks of a batch;
a batch is cut into the same contiguous chunks as in the local pool
(`pool.split`), so the pixels are the same for the same (beta, seed) whatever
the backend or the number of workers. Results come back through Ray's object
store. `address` joins a running cluster ("auto", "ray://head:10001"; hgrad
must be importable on its nodes); without it a local Ray with `num_workers`
CPUs is started for the run and shut down with it.

Faults as in the local pool: an actor that dies is replaced and its chunk sent
again (renders are deterministic in (beta, seed), so the trajectory is
unchanged); a chunk that kills `pool.MAX_ATTEMPTS` actors in a row raises a
`RenderError` naming them. A GL platform: the user's PYOPENGL_PLATFORM, else
EGL, else OSMesa, as the local pool does.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from absl import logging

from hgrad.core import pool as pool_lib


class _Host:
  """The actor body: `start` builds `factory(config)` once in the actor's process, then its
  methods. Built in a method, not in __init__: Ray reports an error raised in a method
  as that error (a RenderError for no GL context), one in __init__ only as a dead actor."""

  def __init__(self):
    self._host = None

  def start(self, factory, config) -> int:
    self._host = factory(config)
    if hasattr(self._host, "warm_up"):
      self._host.warm_up()
    return os.getpid()

  def call(self, method: str, args: tuple):
    return pool_lib.host_call(self._host, method, args)

  def close(self):
    self._host.close()


def _ray():
  try:
    import ray  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("config.render.backend='ray' needs Ray: pip install 'hgrad[ray]' "
                      "(or pip install ray)") from e
  return ray


class RayPool:
  """`call(method, *args)` over Ray actors; the interface of `pool.RenderPool`."""

  def __init__(self, factory, config: Any, num_workers: int | None, address: str = ""):
    if num_workers is not None and num_workers < 1:
      raise ValueError(f"the ray backend needs num_workers >= 1 (actors), got {num_workers}")
    self._factory, self._config, self._address = factory, config, address
    self._requested = num_workers
    self._actors: list[Any] = []
    self._pids: list[int] = []
    self._owns_ray = False
    self._lock = threading.Lock()
    self._platform = ""

  @property
  def num_workers(self) -> int:
    if not self._actors and self._requested:
      return self._requested
    self._ensure_started()          # a cluster's CPU count: known once it is joined
    return len(self._actors)

  @property
  def worker_pids(self) -> list[int]:
    """The running actors' process ids (empty before the first call and after close)."""
    return list(self._pids) if self._actors else []

  def _init_ray(self):
    ray = _ray()
    if ray.is_initialized():
      return ray
    if self._address:
      ray.init(address=self._address, logging_level="WARNING")
    else:
      ray.init(num_cpus=self._requested or os.cpu_count() or 1, include_dashboard=False,
               logging_level="WARNING")
      self._owns_ray = True
    return ray

  def _spawn(self, platform: str):
    ray = self._init_ray()
    env = {"PYOPENGL_PLATFORM": platform}
    if not self._address:       # a local Ray: actors import what this process can (as the pool)
      env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return ray.remote(num_cpus=1)(_Host).options(runtime_env={"env_vars": env}).remote()

  def _start(self, platform: str, count: int):
    ray = self._init_ray()
    actors = [self._spawn(platform) for _ in range(count)]
    self._pids = self._start_hosts(actors)
    self._actors, self._platform = actors, platform

  def _start_hosts(self, actors: list) -> list[int]:
    """Builds each actor's host; their pids. A host that fails to build (no GL context)
    kills these actors and raises its error."""
    ray = _ray()
    try:
      return ray.get([a.start.remote(self._factory, self._config) for a in actors])
    except ray.exceptions.RayTaskError as e:
      for a in actors:
        ray.kill(a)
      self._raise(e)

  def _ensure_started(self):
    if self._actors:
      return
    ray = self._init_ray()
    count = self._requested or int(ray.cluster_resources().get("CPU", 1))
    pool_lib.start_on_a_platform(lambda platform: self._start(platform, count),
                                 " in the Ray actors")

  @staticmethod
  def _raise(error):
    """A host's exception raised in an actor, re-raised here as the local pool does."""
    cause = getattr(error, "cause", None) or error
    pool_lib.reraise(type(cause).__name__, str(cause), str(error))

  def call(self, method: str, *args) -> tuple[Any, dict]:
    """host.method(*args) with every argument split along its first axis over the actors."""
    ray = _ray()
    with self._lock:
      self._ensure_started()
      chunks = pool_lib.split(args, len(self._actors))
      futures = [self._actors[i].call.remote(method, c) for i, c in enumerate(chunks)]
      results: list[Any] = [None] * len(chunks)
      deaths: list[list[str]] = [[] for _ in chunks]
      restarts = 0
      for i in range(len(chunks)):
        while results[i] is None:
          try:
            results[i] = ray.get(futures[i])
          except ray.exceptions.RayActorError as e:
            deaths[i].append(f"actor pid {self._pids[i]} ({type(e).__name__})")
            if len(deaths[i]) >= pool_lib.MAX_ATTEMPTS:
              self.close()
              raise pool_lib.chunk_kills_workers("render actors", method, deaths[i]) from e
            self._replace(i, deaths[i][-1])
            restarts += 1
            futures[i] = self._actors[i].call.remote(method, chunks[i])
          except ray.exceptions.RayTaskError as e:
            if not isinstance(getattr(e, "cause", None), ValueError):
              self.close()
            self._raise(e)
    return pool_lib.join(results, restarts)

  def _replace(self, i: int, death: str):
    """A new actor in slot i (the old one died, as `death` says); same platform and config."""
    self._actors[i] = self._spawn(self._platform)
    try:
      self._pids[i] = self._start_hosts([self._actors[i]])[0]
    except BaseException:
      self.close()
      raise
    logging.warning("render %s died; replaced by actor pid %d, which renders its chunk again",
                    death, self._pids[i])

  def close(self):
    actors, self._actors = self._actors, []
    if not actors and not self._owns_ray:
      return
    ray = _ray()
    for actor in actors:
      try:
        ray.get(actor.close.remote(), timeout=10)
      except Exception:  # pylint: disable=broad-except
        pass
      ray.kill(actor)
    if self._owns_ray:
      ray.shutdown()
      self._owns_ray = False
