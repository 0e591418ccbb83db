"""Orbax checkpoints of a run: the full outer state plus JSON metadata."""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class _QuietOrbax(logging.Filter):
  """Orbax logs every phase of every save at INFO; keep its warnings only."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


class Checkpointer:
  """Keeps the last few checkpoints under `workdir/checkpoints/<step>`.

  While it is open, orbax's INFO lines (a few per save) are left out of absl's
  log; its warnings stay.
  """

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self._quiet = _QuietOrbax()
    logging.getLogger("absl").addFilter(self._quiet)
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    """The step of the newest checkpoint, None if there is none."""
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Saves `state` (any pytree of arrays) and `meta` (JSON) as step `step`, and waits."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores into the structure (and dtypes, shardings) of `like`.

    `like=None` restores the saved tree as nested dicts of arrays (field names
    as keys): enough to read, e.g., the network parameters without the task.
    """
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"no checkpoint under {self.directory}")
    elif step not in (saved := sorted(self._manager.all_steps())):
      raise FileNotFoundError(f"no checkpoint at step {step} under {self.directory} (it has {saved})")
    target = None if like is None else jax.tree.map(lambda x: x, like)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    except ValueError as e:
      if "do not match" not in str(e):
        raise
      # Orbax's message lists the mismatched fields; say what it means for a run.
      raise ValueError(
          f"checkpoint {self.directory}/{step} does not fit this run's state: it was written "
          "with another configuration (e.g. inner.ema_decay, the network, the layout or "
          "outer.optimizer) or by an older hgrad. Resume with the configuration that wrote it "
          "(config.json beside checkpoints/) or use a new workdir. Orbax: " + str(e)) from None
    return restored.state, dict(restored.meta)

  def close(self) -> None:
    """Waits for a pending save and closes the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
    logging.getLogger("absl").removeFilter(self._quiet)
