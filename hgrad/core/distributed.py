"""Several JAX processes on one run (`config.distributed`): `jax.distributed`, one writer.

Every process runs the same program: the same jitted steps on a mesh of all
processes' devices (the sample axis of the rendered data, and the batch axis
of every inner step, sharded over it; beta, the network and the optimizer
states replicated), so beta stays identical everywhere. Host callbacks (the
renders) run in the process that owns device 0; its render pool (or Ray)
serves the whole mesh. Only process 0 writes metrics, events, plots and
results; every process takes part in saving and restoring checkpoints
(orbax's collective save). Stop decisions (a signal, the time budget) are
agreed on by all processes each step (`agree`), so no process runs a step the
others skip.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """`jax.distributed.initialize` arguments; one process (the default) initializes nothing."""

  coordinator_address: str = ""   # "host:port" of process 0; "auto": the cluster's (SLURM, ...)
  num_processes: int = 1
  process_id: int = 0

  def __post_init__(self):
    if self.num_processes < 1:
      raise ValueError(f"config.distributed.num_processes must be >= 1, got {self.num_processes}")
    if not 0 <= self.process_id < self.num_processes:
      raise ValueError(f"config.distributed.process_id must be in [0, {self.num_processes}), "
                       f"got {self.process_id}")
    if self.num_processes > 1 and not self.coordinator_address:
      raise ValueError("config.distributed.num_processes > 1 needs coordinator_address "
                       "(host:port of process 0, or 'auto')")


def initialize(config: DistributedConfig) -> None:
  """Joins the processes (before any JAX computation); nothing for a single process."""
  if config.num_processes == 1 and config.coordinator_address != "auto":
    return
  if jax.distributed.is_initialized():
    return
  # XLA:CPU needs a collectives backend to reach other processes' devices.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if config.coordinator_address == "auto":
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address=config.coordinator_address,
                               num_processes=config.num_processes, process_id=config.process_id)


def shutdown() -> None:
  """Leaves the run together: without it the process that hosts the coordinator (0) may exit
  first, and another then aborts (exit -6) when it loses the coordination service."""
  if jax.distributed.is_initialized():
    jax.distributed.shutdown()


def is_primary() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def agree(flags: list[bool]) -> list[bool]:
  """Each flag true if it is true in any process (a stop wanted anywhere stops everyone)."""
  if jax.process_count() == 1:
    return list(flags)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  gathered = multihost_utils.process_allgather(np.asarray(flags, np.int32))
  return [bool(v) for v in np.asarray(gathered).reshape(-1, len(flags)).any(axis=0)]


def to_local(tree):
  """Replicated arrays as host numpy: what runs on them then runs here, without collectives."""
  return jax.tree.map(lambda a: np.asarray(a) if isinstance(a, jax.Array) else a, tree)
