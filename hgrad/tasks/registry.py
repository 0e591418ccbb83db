"""One registry of tasks, used by every script, the comparison, evaluation and the benchmarks.

A task is a module (or any object) with the members of `TaskModule`;
`register(name, task)` checks a researcher's own task against it and adds
it; the paper's tasks (`mbii`, `nyu`, `face`) are imported on first use.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

import numpy as np

from hgrad.core.layout import ParamLayout

if TYPE_CHECKING:
  from hgrad.core import loop


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """What a task is, as the scripts, tables and evaluation need to know it.

  Attributes:
    name: the task's name in results.
    layout: its beta's default `ParamLayout`.
    config_file: its config file under configs/ (the scripts' default --config).
    splits: the splits `evaluate_data` accepts.
    columns: (metric key, table header) pairs of its results tables.
    paper_table: the paper's table its comparison rows mirror (e.g. "table2").
  """

  name: str
  layout: ParamLayout
  config_file: str
  splits: tuple[str, ...]
  columns: tuple[tuple[str, str], ...]
  paper_table: str


@runtime_checkable
class TaskModule(Protocol):
  """What a task provides: `INFO` (a `TaskInfo`) and the four functions below.

  Optional members: `layout_for(config) -> ParamLayout` (where the config
  chooses the layout, e.g. the CSG "lighting" layout) and
  `known_beta_star(config) -> array | None` (beta* of a synthetic target, None
  on real data).
  """

  INFO: TaskInfo

  def build(self, config) -> tuple[loop.Task, loop.Schedule]:
    """The run's `loop.Task` and `loop.Schedule` from an ml_collections config."""

  def run(self, config, workdir: str) -> dict:
    """Runs (or resumes) the task in `workdir`; returns its results (`loop.run`)."""

  def summary(self, results: dict) -> dict:
    """The one-line JSON its script prints at the end."""

  def evaluate_data(self, config, params, data: str, split: str
                    ) -> tuple[dict, Callable[[str], None] | None]:
    """(metrics of `params` on `split` of `data`, a panel-maker `panel(path)` or None)."""


REQUIRED = ("INFO", "build", "run", "summary", "evaluate_data")

_TASKS: dict[str, Any] = {"mbii": "hgrad.tasks.mbii", "nyu": "hgrad.tasks.nyu",
                          "face": "hgrad.tasks.face_depth"}


def _checked(name: str, task: Any) -> Any:
  """The task (a dotted module path is imported), or a ValueError naming what it lacks."""
  module = importlib.import_module(task) if isinstance(task, str) else task
  missing = [member for member in REQUIRED if not hasattr(module, member)]
  if not missing and not isinstance(module.INFO, TaskInfo):
    raise ValueError(f"task {name!r}: INFO must be a hgrad.tasks.registry.TaskInfo, got "
                     f"{type(module.INFO).__name__}")
  if missing:
    what = module.__name__ if isinstance(module, ModuleType) else type(module).__name__
    raise ValueError(f"task {name!r} ({what}) lacks {missing}: a task provides "
                     f"{', '.join(REQUIRED)} (hgrad.tasks.registry.TaskModule)")
  return module


def names() -> tuple[str, ...]:
  """The registered tasks' names."""
  return tuple(_TASKS)


def register(name: str, task: Any) -> None:
  """Registers `task` (a module, a dotted module path or an object) under `name`, checked
  against `TaskModule` now: a missing member is an error that names it."""
  _TASKS[name] = _checked(name, task)


def get(name: str) -> TaskModule:
  """The task registered as `name` (imported and checked on first use)."""
  if name not in _TASKS:
    raise ValueError(f"unknown task {name!r}; registered: {sorted(_TASKS)}")
  _TASKS[name] = _checked(name, _TASKS[name])
  return _TASKS[name]


def layout(config) -> ParamLayout:
  """The beta layout a task config renders from."""
  task = get(config.get("task", "mbii"))
  layout_for = getattr(task, "layout_for", None)
  return layout_for(config) if layout_for is not None else task.INFO.layout


def known_beta_star(config) -> np.ndarray | None:
  """beta* of the config's synthetic target; None on real data or for a task without one."""
  known = getattr(get(config.get("task", "mbii")), "known_beta_star", None)
  return known(config) if known is not None else None
