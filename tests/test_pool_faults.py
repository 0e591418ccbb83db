"""A render worker that dies is replaced and its chunk rendered again; one that keeps dying stops
the call with an error that names it."""

import os
import signal

import numpy as np
import pytest

from hgrad.core import pool as pool_lib
from hgrad.core.pool import RenderError, RenderPool
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


def _batch(n=6):
  beta = np.tile(CSGHost.layout.default, (n, 1)).astype(np.float32)
  return beta, np.arange(n, dtype=np.uint32)


def test_a_killed_worker_is_replaced_and_the_batch_is_unchanged():
  pool = RenderPool(CSGHost, CSGConfig(resolution=16), 2)
  try:
    want, stats = pool.render_batch(*_batch())
    assert stats["worker_restarts"] == 0
    victim = pool._workers[0][0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    got, stats = pool.render_batch(*_batch())
    assert stats["worker_restarts"] == 1 and pool._workers[0][0].pid != victim.pid
    for g, w in zip(got, want):
      np.testing.assert_array_equal(g, w)
  finally:
    pool.close()


def test_a_chunk_that_keeps_killing_workers_fails_naming_them(monkeypatch):
  monkeypatch.setattr(pool_lib, "MAX_ATTEMPTS", 2)
  pool = RenderPool(CrashingHost, None, 1)
  with pytest.raises(RenderError, match=r"died 2 times in a row .*worker \d+ \(exit code 3\), "
                                        r"worker \d+ \(exit code 3\).*checkpoint"):
    pool.render_batch(*_batch(2))
  assert not pool._workers          # closed
