"""The MIT-Berkeley experiment: optimize the 29-d CSG grammar against real shading images.

L = mean angle error (degrees) of the network trained on renders, on the train
split's 10 real images (the paper's protocol); the test split is for
reporting only. Without a dataset (`config.data.dir` / $HGRAD_MBII_DIR) the
run uses an embedded synthetic target: renders of a hidden beta* under
different lighting, so beta can be seen moving toward beta* (logged loudly).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from hgrad import experiment
from hgrad import metrics
from hgrad import network
from hgrad import outer
from hgrad import task
from hgrad.config_util import to_dataclass
from hgrad.csg import CSG_LAYOUT, CSGConfig
from hgrad.csg_host import csg_generator
from hgrad.data import mbii as mbii_data
from hgrad.sample import Sample

# The hidden setting of the synthetic default: more expansion, mostly spheres
# and cones, larger attached parts. Only used when no dataset is configured.
SYNTHETIC_BETA_STAR = {"p_sphere": 0.6, "p_cube": 0.05, "p_truncated_cone": 0.3,
                       "p_tetrahedron": 0.05, "p_expand": 0.8, "p_union": 0.8,
                       "p_subtract": 0.2, "scale_x_logmean": 0.0, "scale_y_logmean": 0.0,
                       "scale_z_logmean": 0.0}


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  num_images: int = 16
  seed: int = 1_000_000_007
  light_max_angle_deg: float = 35.0     # "different lighting" than the generator's
  ambient_low: float = 0.15
  ambient_high: float = 0.25


def beta_star() -> np.ndarray:
  beta = CSG_LAYOUT.default.copy()
  for name, value in SYNTHETIC_BETA_STAR.items():
    beta[CSG_LAYOUT.index(name)] = value
  return beta


def synthetic_target(csg_config: CSGConfig, synthetic: SyntheticConfig) -> Sample:
  """Renders of beta* under the synthetic target's own lighting (in-process)."""
  target_config = dataclasses.replace(
      csg_config, light_max_angle_deg=synthetic.light_max_angle_deg,
      ambient_low=synthetic.ambient_low, ambient_high=synthetic.ambient_high)
  with csg_generator(target_config, num_workers=0) as target:
    seeds = synthetic.seed + np.arange(synthetic.num_images)
    return target.render(np.tile(beta_star(), (synthetic.num_images, 1)), seeds)


def parse_config(config) -> dict[str, Any]:
  data = to_dataclass(mbii_data.MBIIConfig, config.data, where="config.data")
  csg = to_dataclass(CSGConfig, config.csg, where="config.csg")
  if csg.resolution != data.resolution:
    raise ValueError(f"config.csg.resolution ({csg.resolution}) must equal "
                     f"config.data.resolution ({data.resolution})")
  if csg.fill != data.fill:
    raise ValueError(f"config.csg.fill ({csg.fill}) must equal config.data.fill ({data.fill}): "
                     "renders and real images must share one framing")
  synthetic = to_dataclass(SyntheticConfig, config.synthetic, where="config.synthetic")
  return {"data": data, "csg": csg, "synthetic": synthetic, **task.parse_training(config)}


def load_real(data: mbii_data.MBIIConfig, csg: CSGConfig, synthetic: SyntheticConfig):
  """(train Sample, names, test Sample | None, test names, source description)."""
  root = mbii_data.resolve_dir(data.dir)
  if root is None:
    task.warn_synthetic(f"MIT-BERKELEY DATA (--config.data.dir or ${mbii_data.DATA_ENV})",
                        f"{synthetic.num_images} renders of a hidden beta* under different lighting")
    target = synthetic_target(csg, synthetic)
    names = tuple(f"synthetic_{i}" for i in range(synthetic.num_images))
    return target, names, None, (), "synthetic"
  train, names = mbii_data.load(root, data.objects, data.resolution, data.fill)
  test, test_names = None, ()
  if data.test_dir:
    test, test_names = mbii_data.load(data.test_dir, mbii_data.MIT_TEST, data.resolution, data.fill)
  logging.info("MIT-Berkeley: %d train objects from %s%s", len(names), root,
               f", {len(test_names)} test objects from {data.test_dir}" if test_names else "")
  return train, names, test, test_names, root


def make_predict(net: network.NetworkConfig):
  return jax.jit(lambda params, image: network.predict(net, params, image).normals)


def evaluate_normals(predict, params, data: Sample, names) -> dict:
  """Normal metrics of the network on a batch of real images, with per-object rows."""
  pred = np.asarray(predict(params, jnp.asarray(data.image)))
  result = metrics.normal_metrics(pred, data.normals, data.mask)
  result["per_image"] = {name: row for name, row in zip(names, result["per_image"])}
  return result


def build(config) -> tuple[experiment.Task, experiment.Schedule]:
  """The MIT-Berkeley task and its schedule from an ml_collections config."""
  cfg = parse_config(config)
  net = cfg["network"]
  train, names, test, test_names, source = load_real(cfg["data"], cfg["csg"], cfg["synthetic"])
  generator = csg_generator(cfg["csg"], num_workers=task.num_workers(config))
  predict = make_predict(net)

  def evaluate(params) -> dict:
    out = {"data_source": source, "train": evaluate_normals(predict, params, train, names)}
    if test is not None:
      out["test"] = evaluate_normals(predict, params, test, test_names)
    return out

  def finish(workdir: str, state, results: dict, hg) -> None:
    del workdir, hg
    if source == "synthetic":
      results["synthetic"] = {
          "beta_star": CSG_LAYOUT.as_dict(beta_star()),
          "unit_distance_beta0": CSG_LAYOUT.unit_distance(list(results["beta0"].values()),
                                                          beta_star()),
          "unit_distance_final": CSG_LAYOUT.unit_distance(state.beta, beta_star()),
      }
    logging.info("final train-split MAE %.2f deg (image mean), %.2f deg (pixel pooled)%s",
                 results["train"]["image_mean"]["mae"], results["train"]["pixel_pooled"]["mae"],
                 f"; test {results['test']['image_mean']['mae']:.2f}" if "test" in results else "")

  real = jax.tree.map(jnp.asarray, train)
  return task.build("mbii", config, cfg, generator, outer.normals_eval_loss(net, real), evaluate,
                    finish)


def run(config, workdir: str) -> dict:
  """The whole optimization run; see experiments/mbii.py."""
  return task.run(build, config, workdir)


def print_summary(results: dict) -> None:
  summary = {"train_mae": results["train"]["image_mean"]["mae"], "steps": results["steps"],
             "elapsed_s": round(results["elapsed_s"], 1), "data_source": results["data_source"]}
  if "test" in results:
    summary["test_mae"] = results["test"]["image_mean"]["mae"]
  print(json.dumps(summary))
