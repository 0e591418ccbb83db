"""Bit-identical runs on a GPU, so that a study's arms stay paired.

A study pairs its arms by seed: same network init, same render keys. That
only pairs them if the same seed gives the same numbers. XLA:CPU does;
XLA:GPU sums with atomics and picks kernels by timing them, so two runs of
one seed drift apart from the first step (on a lent H200 the arms of one
seed were 0.12-0.37 deg apart in L by the end of a warm-up that is identical
on CPU: docs/benchmarks.md, "On an H200 GPU"). `--xla_gpu_deterministic_ops` makes XLA:GPU
deterministic at some speed; it counts only if it is in XLA_FLAGS before JAX
starts its backends.
"""

from __future__ import annotations

import os

from absl import logging

FLAG = "--xla_gpu_deterministic_ops"


def _backends_started() -> bool:
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  return xla_bridge.backends_are_initialized()


def require_deterministic_gpu() -> str:
  """Asks XLA:GPU for deterministic ops; returns what was done ('user', 'set', 'too late').

  A user's own XLA_FLAGS setting of the flag wins (=false too). Once JAX has
  started its backends the flag no longer counts: on a GPU that is logged as
  a warning (the arms are then paired only up to GPU noise), on a CPU it does
  not matter.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if FLAG in flags:
    return "user"
  if not _backends_started():
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}=true".strip()
    return "set"
  import jax  # pylint: disable=g-import-not-at-top
  if any(device.platform == "gpu" for device in jax.devices()):
    logging.warning("JAX started on the GPU before the study could set %s=true in XLA_FLAGS: "
                    "the arms of a seed will differ by GPU noise from the first step. Set it "
                    "before JAX runs anything (e.g. XLA_FLAGS=%s=true python ...).", FLAG, FLAG)
  return "too late"
