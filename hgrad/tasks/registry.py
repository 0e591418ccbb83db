"""One registry of tasks, used by every script, the comparison, evaluation and the benchmarks.

A task is a module with:

  NAME, LAYOUT (its beta's default `ParamLayout`), CONFIG_FILE (under configs/), SPLITS
  (what `evaluate_data` accepts),
  COLUMNS (metric key, table header) and PAPER_TABLE (the paper's table its
  comparison rows mirror);
  build(config) -> (loop.Task, loop.Schedule);  run(config, workdir) -> results;
  summary(results) -> dict (the script's last line);
  evaluate_data(config, params, data, split) -> (metrics, panel(path) | None).

Optional: layout_for(config) (where the config chooses the layout, e.g. the
CSG "lighting" layout), known_beta_star(config) (beta* of a synthetic target,
None on real data).

`register(name, module)` adds a researcher's own task; modules are imported
on first use.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from hgrad.core.layout import ParamLayout

_TASKS = {"mbii": "hgrad.tasks.mbii", "nyu": "hgrad.tasks.nyu", "face": "hgrad.tasks.face_depth"}


def names() -> tuple[str, ...]:
  return tuple(_TASKS)


def register(name: str, module: str) -> None:
  """Registers the task module `module` (dotted path) under `name`."""
  _TASKS[name] = module


def get(name: str) -> ModuleType:
  if name not in _TASKS:
    raise ValueError(f"unknown task {name!r}; registered: {sorted(_TASKS)}")
  return importlib.import_module(_TASKS[name])


def layout(config) -> ParamLayout:
  """The beta layout a task config renders from."""
  task = get(config.get("task", "mbii"))
  return task.layout_for(config) if hasattr(task, "layout_for") else task.LAYOUT


def known_beta_star(config) -> np.ndarray | None:
  """beta* of the config's synthetic target; None on real data or for a task without one."""
  task = get(config.get("task", "mbii"))
  return task.known_beta_star(config) if hasattr(task, "known_beta_star") else None
