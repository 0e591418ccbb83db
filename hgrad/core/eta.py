"""The time a run has left, priced per kind of step (outer steps cost ~10x a plain one).

Costs are medians of measured step times, by kind: this process's steps
(except the first of each kind where the loop did not compile the steps
ahead, e.g. a task's own step function: that step compiles) and, after a
resume, the steps of the earlier processes in metrics.jsonl. Before any outer step has run,
one is priced from the plain steps: its renders scale with the 2m + 1 sample
sets it draws and its device work (the unroll and its VJP) with about
`OUTER_DEVICE_FACTOR` plain steps; the ETA then reads "~" until one is measured.
Until `MIN_MEASURED` steps of a kind the schedule still needs are measured
(and `MIN_MEASURED` plain ones to price an outer step from), there is no
number: the ETA reads "estimating" rather than hours read off a first step.
What the loop does between steps (L on the real images, checkpoints, interim
plots) is priced per step as the mean of its measured `overhead_s`: it comes
every few steps, so a median would miss it.
"""

from __future__ import annotations

import numpy as np

OUTER_DEVICE_FACTOR = 3.0    # an unrolled step and its VJP against a plain step (measured: 3-3.5)
MIN_MEASURED = 3             # measured steps of a kind before it is priced


def kind_of(phase: str) -> str:
  """'outer' for an outer step, 'plain' for every other phase (they cost alike)."""
  return "outer" if phase == "outer" else "plain"


class StepCosts:
  """Measured step times by kind; `remaining(...)` prices the rest of a schedule."""

  def __init__(self, history: list[dict], render_sets_per_outer: int,
               first_step_compiles: bool = True):
    self._walls: dict[str, list[float]] = {"outer": [], "plain": []}
    self._renders: list[float] = []
    self._devices: list[float] = []
    self._overheads: list[float] = []
    self._seen: set[str] = set()
    self._render_sets = render_sets_per_outer
    self._first_step_compiles = first_step_compiles
    for record in history:
      self._add(record)

  def _add(self, record: dict) -> None:
    kind = kind_of(record["phase"])
    self._walls[kind].append(float(record["wall_s"]))
    if "overhead_s" in record:
      self._overheads.append(float(record["overhead_s"]))
    if kind == "plain":
      self._renders.append(float(record.get("host_render_s", 0.0)))
      self._devices.append(float(record.get("device_s", record["wall_s"])))

  def add(self, record: dict) -> None:
    """A step of this process (unless compiled ahead, its first step of a kind compiles: not a
    cost sample)."""
    kind = kind_of(record["phase"])
    if kind in self._seen or not self._first_step_compiles:
      self._add(record)
    self._seen.add(kind)

  def cost(self, kind: str) -> tuple[float | None, bool]:
    """(seconds per step, whether it is an estimate); None until enough steps are measured."""
    if len(self._walls[kind]) >= MIN_MEASURED or (kind == "outer" and self._walls[kind]):
      return float(np.median(self._walls[kind])), False
    if kind == "outer" and len(self._devices) >= MIN_MEASURED:
      return (OUTER_DEVICE_FACTOR * float(np.median(self._devices)) +
              self._render_sets * float(np.median(self._renders))), True
    return None, True

  def remaining(self, outer_steps: int, plain_steps: int,
                budget_left_s: float | None = None) -> tuple[float | None, bool]:
    """(seconds for that many steps of each kind and what the loop does between them, whether
    any price is an estimate); a time budget (`budget_left_s` of step time) cuts it short.
    None seconds: a kind it needs is not priced yet."""
    steps_s, estimated = 0.0, False
    for kind, count in (("outer", outer_steps), ("plain", plain_steps)):
      if count:
        cost, guessed = self.cost(kind)
        if cost is None:
          return None, True
        steps_s += count * cost
        estimated |= guessed
    between_s = (outer_steps + plain_steps) * (float(np.mean(self._overheads))
                                               if self._overheads else 0.0)
    if budget_left_s is not None and steps_s > budget_left_s:
      scale = max(budget_left_s, 0.0) / steps_s
      steps_s, between_s = steps_s * scale, between_s * scale
    return steps_s + between_s, estimated


def format_eta(seconds: float | None, estimated: bool = False) -> str:
  """'1h02m', '2m05s', '~2m05s' (an estimated price in it), 'estimating' (None: none yet)."""
  if seconds is None:
    return "estimating"
  seconds = int(max(seconds, 0))
  text = (f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else
          f"{seconds // 60}m{seconds % 60:02d}s")
  return ("~" if estimated else "") + text
