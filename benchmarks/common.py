"""What the estimator diagnostics share: cosines, the task of a (task or study) config, a run's move."""

from __future__ import annotations

import numpy as np

from hgrad.core import loop
from hgrad.tasks import evaluate
from hgrad.tasks import registry


def cosine(a, b) -> float:
  return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def mean_cross_cosine(vectors) -> float:
  """Mean cosine over all pairs: how much estimates from different sample sets agree."""
  return float(np.mean([cosine(a, b) for i, a in enumerate(vectors) for b in vectors[i + 1:]]))


def task_config(config):
  """(task config, task module) from a task config or a study config (its `base`)."""
  config = config.base if "base" in config else config
  return config, registry.get(config.get("task", "mbii"))


def load_move(run_dir: str) -> dict:
  """{"names", "coordinates", "move", "toward"}: a finished run's move, final beta minus beta0,
  in its optimizer's coordinates (and the way to its beta*, if it has one)."""
  config = evaluate.load_config(run_dir)
  results = loop.finished_results(run_dir)
  if results is None:
    raise ValueError(f"{run_dir} has not finished (no results.json, or a partial one)")
  layout = registry.layout(config)
  coordinates = config.get("outer", {}).get("coordinates", "unit")
  to_u = lambda beta: np.asarray(layout.to_coords(
      np.array([beta[n] for n in layout.names], np.float64), coordinates))
  u0 = to_u(results["beta0"])
  star = results.get("synthetic", {}).get("beta_star")
  return {"names": layout.names, "coordinates": coordinates, "move": to_u(results["beta"]) - u0,
          "toward": None if star is None else to_u(star) - u0}
