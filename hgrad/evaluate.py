"""Evaluate a run's final checkpoint on MIT-Berkeley-layout data (experiments/evaluate.py)."""

from __future__ import annotations

import json
import os

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from hgrad import metrics  # noqa: E402
from hgrad import network  # noqa: E402
from hgrad import outer  # noqa: E402
from hgrad import viz  # noqa: E402
from hgrad.checkpoint import Checkpointer  # noqa: E402
from hgrad.csg import CSG_LAYOUT  # noqa: E402
from hgrad.data import mbii as mbii_data  # noqa: E402
from hgrad.mbii import evaluate_normals, make_predict, parse_config  # noqa: E402

ERROR_SCALE_DEG = 60.0


def load_run(workdir: str):
  """(config, network config, params, step) of the run's latest checkpoint."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a run directory?")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  parsed = parse_config(config)
  net = parsed["network"]
  params = network.init_params(net, jax.random.key(0), config.data.resolution)
  like = outer.initial_state(CSG_LAYOUT, parsed["inner"], parsed["outer"], CSG_LAYOUT.default,
                             params)
  checkpointer = Checkpointer(workdir)
  try:
    state, _ = checkpointer.restore(like)
  finally:
    checkpointer.close()
  return config, net, state.inner.params, int(state.step)


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


def evaluate_run(workdir: str, data_dir: str, split: str = "train") -> dict:
  """Writes WORKDIR/eval_<split>.json and eval_<split>.png; returns the metrics."""
  if split not in mbii_data.SPLITS:
    raise ValueError(f"split must be one of {sorted(mbii_data.SPLITS)}, got {split!r}")
  config, net, params, step = load_run(workdir)
  names = mbii_data.SPLITS[split]
  missing = [n for n in names if not os.path.isdir(os.path.join(data_dir, n))]
  if missing:
    raise mbii_data.DataError(f"{data_dir} lacks the {split}-split object(s) {missing}")
  data, names = mbii_data.load(data_dir, names, config.data.resolution, config.data.fill)
  predict = make_predict(net)
  result = evaluate_normals(predict, params, data, names)
  result.update(split=split, data_dir=os.path.abspath(data_dir), checkpoint_step=step)
  with open(os.path.join(workdir, f"eval_{split}.json"), "w") as f:
    json.dump(result, f, indent=2)
  panel(data, np.asarray(predict(params, data.image)), names,
        os.path.join(workdir, f"eval_{split}.png"))
  return result
