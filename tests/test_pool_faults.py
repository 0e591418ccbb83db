"""A render worker (local pool process or Ray actor) that dies is replaced and its chunk rendered
again; one that keeps dying stops the call with an error that names it."""

import os
import signal
import time

import numpy as np
import pytest

from hgrad.core import pool as pool_lib
from hgrad.core.pool import RenderError, RenderPool
from hgrad.core.ray_pool import RayPool
from hgrad.generators.csg import CSGConfig
from hgrad.generators.csg_host import CSGHost


class CrashingHost:
  """Every render kills its worker process (a driver crash, the OOM killer)."""

  def __init__(self, config):
    del config

  def render_batch(self, beta_Bxd, seeds_B):
    os._exit(3)

  def close(self):
    pass


class NoGLHost:
  """A host whose GL context cannot be opened, on whatever platform."""

  def __init__(self, config):
    raise RenderError(f"no context on {os.environ.get('PYOPENGL_PLATFORM')}")


def _batch(n=6):
  beta = np.tile(CSGHost.layout.default, (n, 1)).astype(np.float32)
  return beta, np.arange(n, dtype=np.uint32)


@pytest.fixture(params=["local", "ray"])
def pool_class(request):
  if request.param == "ray":
    request.getfixturevalue("local_ray")
    return RayPool
  return RenderPool


def _wait_dead(pid):
  """Until the process is gone (a Ray actor) or a zombie (a pool worker, reaped by the pool)."""
  deadline = time.time() + 30
  while time.time() < deadline:
    try:
      with open(f"/proc/{pid}/stat") as f:
        if f.read().split(")")[-1].split()[0] == "Z":
          return
    except FileNotFoundError:
      return
    time.sleep(0.05)
  raise TimeoutError(f"process {pid} still alive")


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_the_batch_is_unchanged(pool_class):
  pool = pool_class(CSGHost, CSGConfig(resolution=16), 2)
  try:
    want, stats = pool.call("render_batch", *_batch())
    assert stats["worker_restarts"] == 0
    victim = pool.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    _wait_dead(victim)
    got, stats = pool.call("render_batch", *_batch())
    assert stats["worker_restarts"] == 1 and pool.worker_pids[0] != victim
    for g, w in zip(got, want):
      np.testing.assert_array_equal(g, w)
  finally:
    pool.close()


@pytest.mark.slow
def test_a_chunk_that_keeps_killing_workers_fails_naming_them(pool_class, monkeypatch):
  monkeypatch.setattr(pool_lib, "MAX_ATTEMPTS", 2)
  pool = pool_class(CrashingHost, None, 1)
  named = (r"worker \d+ \(exit code 3\), worker \d+ \(exit code 3\)" if pool_class is RenderPool
           else r"actor pid \d+ .*, actor pid \d+ ")
  with pytest.raises(RenderError, match=r"died 2 times in a row .*" + named + ".*checkpoint"):
    pool.call("render_batch", *_batch(2))
  assert not pool.worker_pids          # closed


@pytest.mark.slow
def test_a_host_without_gl_fails_naming_both_platforms(pool_class, monkeypatch):
  """EGL first, then OSMesa (the user chose no platform); the error names both failures."""
  monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
  pool = pool_class(NoGLHost, None, 1)
  with pytest.raises(RenderError, match=r"no headless OpenGL context.*EGL failed: no context on "
                                        r"egl OSMesa failed: no context on osmesa"):
    pool.call("render_batch", *_batch(2))
  pool.close()
