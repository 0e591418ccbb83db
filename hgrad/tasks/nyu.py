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

import numpy as np
from absl import logging

from hgrad.core.config import to_dataclass
from hgrad.generators import scenes
from hgrad.tasks import common
from hgrad.tasks import registry
from hgrad.tasks import nyu_data

INFO = registry.TaskInfo(name="nyu", layout=scenes.SCENE_LAYOUT, config_file="nyu.py",
                         splits=("validation", "test"), columns=common.NORMAL_COLUMNS,
                         paper_table="table3")


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
    common.warn_synthetic(f"NYU DEPTH V2 FILE (--config.data.file or ${nyu_data.DATA_ENV})",
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


@dataclasses.dataclass(frozen=True)
class Settings:
  """A checked NYU config: the data, the scenes, training."""

  data: NYUDataConfig
  scene: scenes.SceneConfig
  training: common.Training


def parse_config(config) -> Settings:
  return Settings(to_dataclass(NYUDataConfig, config.data, where="config.data"),
                  to_dataclass(scenes.SceneConfig, config.scene, where="config.scene"),
                  common.parse_training(config))


def build(config):
  cfg = parse_config(config)
  net = cfg.training.network
  validation, test, source = load_real(cfg.data, cfg.scene)
  generator = scenes.scene_generator(cfg.scene, num_workers=common.num_workers(config),
                                     render=cfg.training.render)
  predict = common.make_predict(net, flip=cfg.training.evaluation.flip)
  names = [f"frame_{i}" for i in range(len(validation.image))]

  def evaluate(params) -> dict:
    out = {"data_source": source, "validation": common.evaluate_normals(predict, params, validation, names)}
    if test is not None:
      out["test"] = common.evaluate_normals(predict, params, test,
                                     [f"test_{i}" for i in range(len(test.image))])
    return out

  def finish(workdir, state, history, results) -> None:
    del workdir, state, history
    if source == "synthetic":
      results["synthetic"] = common.synthetic_distances(INFO.layout, results, beta_star())
    logging.info("%s validation MAE %.2f deg%s", common.stage(results),
                 results["validation"]["image_mean"]["mae"],
                 f"; test {results['test']['image_mean']['mae']:.2f}" if "test" in results else "")

  eval_loss = common.eval_loss_fn(net, validation, flip=cfg.training.evaluation.flip)
  return common.build("nyu", config, cfg.training, generator, eval_loss, evaluate, finish)


def run(config, workdir: str) -> dict:
  return common.run(build, config, workdir)


summary = common.summary


def evaluate_data(config, params, data: str, split: str) -> tuple[dict, None]:
  """Scores `params` on the NYU labeled file `data` (`split` validation or test, as in a run)."""
  cfg = parse_config(config)
  data_config = dataclasses.replace(cfg.data, file=data) if data else cfg.data
  if not (data_config.file or os.environ.get(nyu_data.DATA_ENV)):
    raise ValueError("nyu evaluation needs the labeled .mat file (--data)")
  validation, test, _ = load_real(data_config, cfg.scene)
  if split == "test" and test is None:
    raise ValueError(f"{data} has no test frames")
  predict = common.make_predict(cfg.training.network, flip=cfg.training.evaluation.flip)
  real = validation if split == "validation" else test
  names = [f"{split}_{i}" for i in range(len(real.image))]
  return common.evaluate_normals(predict, params, real, names), None
