"""What the estimator diagnostics share: cosines and the task of a (task or study) config."""

from __future__ import annotations

import numpy as np

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
