"""The NYU Depth V2 experiment: optimize the 108-d scene perturbation for surface normals.

L = mean angle error of the network on a validation subset of the train split
(the first `data.validation` frames of the official train split, or of the
file when no splits.mat is given); the final metrics are on the test split.
Without the labeled file (`config.data.file` / $HGRAD_NYU_FILE) the run uses
a synthetic target: scenes rendered at a hidden beta* under different light,
logged loudly as synthetic.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from hgrad import outer
from hgrad import scenes
from hgrad import task
from hgrad.config_util import to_dataclass
from hgrad.data import nyu as nyu_data
from hgrad.mbii import evaluate_normals, make_predict


@dataclasses.dataclass(frozen=True)
class NYUDataConfig:
  file: str = ""            # nyu_depth_v2_labeled.mat; "" = $HGRAD_NYU_FILE or synthetic
  splits: str = ""          # splits.mat (official train/test indices); "" = see module doc
  validation: int = 32      # validation frames (L) from the train split
  test_limit: int = 0       # 0 = the whole test split
  synthetic_images: int = 16
  synthetic_seed: int = 77_000_000


def beta_star() -> np.ndarray:
  """Hidden setting of the synthetic default: larger camera pitch spread, objects pushed back."""
  layout = scenes.SCENE_LAYOUT
  beta = layout.default.copy()
  for k in range(3):
    beta[layout.index(f"camera_pitch_mean{k}")] = -0.15
    beta[layout.index(f"object_dz_mean{k}")] = -0.3
    beta[layout.index(f"camera_yaw_kappa{k}")] = 10.0
  return beta


def load_real(data: NYUDataConfig, scene: scenes.SceneConfig):
  """(validation Sample, test Sample | None, source)."""
  path = data.file or os.environ.get(nyu_data.DATA_ENV, "")
  if not path:
    task.warn_synthetic(f"NYU DEPTH V2 FILE (--config.data.file or ${nyu_data.DATA_ENV})",
                        f"{data.synthetic_images} scenes at a hidden beta* under different light")
    target_config = dataclasses.replace(scene, ambient=0.4)
    with scenes.scene_generator(target_config, num_workers=0) as target:
      seeds = data.synthetic_seed + np.arange(data.synthetic_images)
      return target.render(np.tile(beta_star(), (data.synthetic_images, 1)), seeds), None, "synthetic"
  if data.splits:
    train_idx = nyu_data.read_split(data.splits, "train")
    test_idx = nyu_data.read_split(data.splits, "test")
  else:
    count = nyu_data.frame_count(path)
    train_idx, test_idx = list(range(data.validation)), list(range(data.validation, count))
    logging.warning("no splits.mat: validation = first %d frames, test = the rest (NOT the "
                    "official split)", data.validation)
  if data.test_limit:
    test_idx = test_idx[:data.test_limit]
  resolution = scene.resolution
  validation = nyu_data.load(path, train_idx[:data.validation], resolution)
  test = nyu_data.load(path, test_idx, resolution) if test_idx else None
  return validation, test, path


def parse_config(config) -> dict[str, Any]:
  return {"data": to_dataclass(NYUDataConfig, config.data, where="config.data"),
          "scene": to_dataclass(scenes.SceneConfig, config.scene, where="config.scene"),
          **task.parse_training(config)}


def build(config):
  cfg = parse_config(config)
  net = cfg["network"]
  validation, test, source = load_real(cfg["data"], cfg["scene"])
  generator = scenes.scene_generator(cfg["scene"], num_workers=task.num_workers(config))
  predict = make_predict(net)
  names = [f"frame_{i}" for i in range(len(validation.image))]

  def evaluate(params) -> dict:
    out = {"data_source": source, "validation": evaluate_normals(predict, params, validation, names)}
    if test is not None:
      out["test"] = evaluate_normals(predict, params, test,
                                     [f"test_{i}" for i in range(len(test.image))])
    return out

  def finish(workdir, state, results, hg) -> None:
    del workdir, hg
    if source == "synthetic":
      layout = scenes.SCENE_LAYOUT
      results["synthetic"] = {
          "unit_distance_beta0": layout.unit_distance(layout.default, beta_star()),
          "unit_distance_final": layout.unit_distance(state.beta, beta_star())}
    logging.info("final validation MAE %.2f deg%s", results["validation"]["image_mean"]["mae"],
                 f"; test {results['test']['image_mean']['mae']:.2f}" if "test" in results else "")

  real = jax.tree.map(jnp.asarray, validation)
  return task.build("nyu", config, cfg, generator, outer.normals_eval_loss(net, real), evaluate,
                    finish)


def run(config, workdir: str) -> dict:
  return task.run(build, config, workdir)
