"""The time a run has left, priced per kind of step (outer steps cost ~10x a plain one).

Costs are medians of measured step times, by kind: this process's steps
except the first of each kind (it compiles), and, after a resume, the steps
of the earlier processes in metrics.jsonl. Before any outer step has run,
one is priced from the plain steps: its renders scale with the 2m + 1 sample
sets it draws and its device work (the unroll and its VJP) with about
`OUTER_DEVICE_FACTOR` plain steps; the ETA then reads "~" until one is measured.
"""

from __future__ import annotations

import numpy as np

OUTER_DEVICE_FACTOR = 3.0    # an unrolled step and its VJP against a plain step (measured: 3-3.5)


def kind_of(phase: str) -> str:
  return "outer" if phase == "outer" else "plain"


class StepCosts:
  """Measured step times by kind; `remaining(...)` prices the rest of a schedule."""

  def __init__(self, history: list[dict], render_sets_per_outer: int):
    self._walls: dict[str, list[float]] = {"outer": [], "plain": []}
    self._renders: list[float] = []
    self._devices: list[float] = []
    self._seen: set[str] = set()
    self._render_sets = render_sets_per_outer
    for record in history:
      self._add(record)

  def _add(self, record: dict) -> None:
    kind = kind_of(record["phase"])
    self._walls[kind].append(float(record["wall_s"]))
    if kind == "plain":
      self._renders.append(float(record.get("host_render_s", 0.0)))
      self._devices.append(float(record.get("device_s", record["wall_s"])))

  def add(self, record: dict) -> None:
    """A step of this process (its first step of a kind compiles: not a cost sample)."""
    kind = kind_of(record["phase"])
    if kind in self._seen:
      self._add(record)
    self._seen.add(kind)

  def cost(self, kind: str) -> tuple[float | None, bool]:
    """(seconds per step, whether it is an estimate); None if nothing is known yet."""
    if self._walls[kind]:
      return float(np.median(self._walls[kind])), False
    if kind == "outer" and self._devices:
      return (OUTER_DEVICE_FACTOR * float(np.median(self._devices)) +
              self._render_sets * float(np.median(self._renders))), True
    return None, True

  def remaining(self, outer_steps: int, plain_steps: int, fallback_s: float
                ) -> tuple[float, bool]:
    """(seconds for that many steps of each kind, whether any price is an estimate)."""
    total, estimated = 0.0, False
    for kind, count in (("outer", outer_steps), ("plain", plain_steps)):
      if count:
        cost, guessed = self.cost(kind)
        total += count * (fallback_s if cost is None else cost)
        estimated |= guessed
    return total, estimated


def format_eta(seconds: float, estimated: bool = False) -> str:
  seconds = int(max(seconds, 0))
  text = (f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else
          f"{seconds // 60}m{seconds % 60:02d}s")
  return ("~" if estimated else "") + text
