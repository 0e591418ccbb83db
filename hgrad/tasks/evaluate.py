"""Evaluate a run's latest checkpoint on data in its task's layout (experiments/evaluate.py).

Works for every registered task: the run's config.json names the task, the
task's `evaluate_data(config, params, data, split)` loads and scores the data.
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from hgrad import viz  # noqa: E402
from hgrad.core.checkpoint import Checkpointer  # noqa: E402
from hgrad.tasks import metrics  # noqa: E402
from hgrad.tasks import registry  # noqa: E402

ERROR_SCALE_DEG = 60.0


# Fields a run's config.json may hold that this version of hgrad no longer has (a run's
# config is read back to evaluate it or branch from it).
RETIRED_FIELDS = {"schedule": ("kill_at_step",)}


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run wrote beside its outputs (config.json)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a run directory?")
  with open(path) as f:
    saved = json.load(f)
  for block, fields in RETIRED_FIELDS.items():
    for field in fields:
      saved.get(block, {}).pop(field, None)
  return ml_collections.ConfigDict(saved)


def load_run(workdir: str):
  """(config, params, step) of the run's latest checkpoint; any task, no task code needed."""
  config = load_config(workdir)
  checkpointer = Checkpointer(workdir)
  try:
    if checkpointer.latest_step() is None:
      raise FileNotFoundError(f"{workdir} holds no checkpoint yet")
    state, _ = checkpointer.restore(None)
  finally:
    checkpointer.close()
  # The network the run delivers: the EMA of the weights where the run kept one.
  averaged = config.get("inner", {}).get("ema_decay", 0.0) > 0
  return config, state["average"] if averaged else state["inner"]["params"], int(state["step"])


def panel(data, pred_normals: np.ndarray, names, path: str) -> None:
  """input | ground truth | prediction | angle error (0 to 60 degrees), one row per object."""
  n = len(names)
  fig, axes = plt.subplots(n, 4, figsize=(8, 2.1 * n), squeeze=False)
  titles = ("input shading", "ground truth", "prediction", f"error (0-{ERROR_SCALE_DEG:.0f} deg)")
  for i, name in enumerate(names):
    valid = data.mask[i] > 0
    on_object = data.image[i, ..., 0] > 0
    error = np.where(valid, metrics.angles_deg(pred_normals[i], data.normals[i]), np.nan)
    images = (data.image[i, ..., 0], viz.normals_rgb(data.normals[i], valid),
              viz.normals_rgb(pred_normals[i], on_object), error)
    for j, (ax, image) in enumerate(zip(axes[i], images)):
      kwargs = {"cmap": "gray", "vmin": 0, "vmax": 1} if j == 0 else {}
      if j == 3:
        kwargs = {"cmap": "magma", "vmin": 0, "vmax": ERROR_SCALE_DEG}
      ax.imshow(image, interpolation="nearest", **kwargs)
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(titles[j], fontsize=9)
    axes[i, 0].set_ylabel(f"{name}\n{np.nanmean(error):.1f} deg", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def evaluate_run(workdir: str, data: str, split: str) -> dict:
  """Writes WORKDIR/eval_<split>.json (and eval_<split>.png where the task draws one); the
  result's "written" lists those paths."""
  config, params, step = load_run(workdir)
  task = registry.get(config.get("task", "mbii"))
  if split not in task.INFO.splits:
    raise ValueError(f"{task.INFO.name} evaluation: split must be one of {task.INFO.splits}, "
                     f"got {split!r}")
  result, draw = task.evaluate_data(config, params, data, split)
  result.update(task=task.INFO.name, split=split, data=os.path.abspath(data) if data else "",
                checkpoint_step=step)
  written = [os.path.join(workdir, f"eval_{split}.json")]
  with open(written[0], "w") as f:
    json.dump(result, f, indent=2)
  if draw is not None:
    written.append(os.path.join(workdir, f"eval_{split}.png"))
    draw(written[-1])
  result["written"] = written
  return result
