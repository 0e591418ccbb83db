"""One registry of tasks, used by every script, the comparison, evaluation and the benchmarks.

A task is a module with:

  NAME, LAYOUT (its beta's `ParamLayout`), CONFIG_FILE (under configs/), SPLITS
  (what `evaluate_data` accepts),
  COLUMNS (metric key, table header) and PAPER_TABLE (the paper's table its
  comparison rows mirror);
  build(config) -> (loop.Task, loop.Schedule);  run(config, workdir) -> results;
  summary(results) -> dict (the script's last line);
  evaluate_data(config, params, data, split) -> (metrics, panel(path) | None).

`register(name, module)` adds a researcher's own task; modules are imported
on first use.
"""

from __future__ import annotations

import importlib
from types import ModuleType

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
