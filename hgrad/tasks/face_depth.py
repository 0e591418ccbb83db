"""The face experiment: optimize the 204-d 3DMM sampling grammar for depth from a face image.

Evaluation follows the paper's protocol: 10 identities x 3 lights x 9 poses
(`faces.protocol_params`), identities 0-4 for validation (L) and 5-9 for the
test metrics (abs rel, sq rel, RMSE linear, RMSE log, scale-invariant RMSE
log). The identities come from the morphable model in use: a BFM-format file
(`config.face.model_path`) or, by default, the embedded procedural stand-in,
in which case the run is logged loudly as synthetic. The network's depth
channel is read as log depth; L is the per-image RMSE of log depth.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import logging

from hgrad.core.config import to_dataclass
from hgrad.generators import faces
from hgrad.generators.sample import Sample
from hgrad.tasks import common
from hgrad.tasks import registry

INFO = registry.TaskInfo(name="face", layout=faces.FACE_LAYOUT, config_file="face.py",
                         splits=("validation", "test"), columns=common.DEPTH_COLUMNS,
                         paper_table="table4")


@dataclasses.dataclass(frozen=True)
class FaceProtocolConfig:
  identities: int = 10
  validation_identities: int = 5
  seed: int = 4242

  def __post_init__(self):
    if not 0 < self.validation_identities < self.identities:
      raise ValueError("FaceProtocolConfig needs 0 < validation_identities < identities")


def protocol_data(face_config: faces.FaceConfig, protocol: FaceProtocolConfig):
  """(validation Sample, test Sample, source): the protocol rendered in-process."""
  host = faces.FaceHost(face_config)
  try:
    params, identity = faces.protocol_params(host.model, protocol.identities, protocol.seed)
    sample = host.render_params(params)
  finally:
    host.close()
  validation = identity < protocol.validation_identities
  pick = lambda m: Sample(*(x[m] for x in sample))  # noqa: E731
  source = face_config.model_path or "synthetic"
  if not face_config.model_path:
    common.warn_synthetic("BASEL-FACE-MODEL FILE (--config.face.model_path)",
                        "the embedded procedural morphable model (a stand-in for the licensed "
                        f"BFM), {protocol.identities} held-out identities x 3 lights x 9 poses")
  return pick(validation), pick(~validation), source


@dataclasses.dataclass(frozen=True)
class Settings:
  """A checked face config: the 3DMM grammar, the evaluation protocol, training."""

  face: faces.FaceConfig
  protocol: FaceProtocolConfig
  training: common.Training


def parse_config(config) -> Settings:
  return Settings(to_dataclass(faces.FaceConfig, config.face, where="config.face"),
                  to_dataclass(FaceProtocolConfig, config.protocol, where="config.protocol"),
                  common.parse_training(config))


def build(config):
  cfg = parse_config(config)
  net = cfg.training.network
  if net.in_channels != 3:
    raise ValueError(f"config.network.in_channels must be 3 (RGB faces), got {net.in_channels}")
  validation, test, source = protocol_data(cfg.face, cfg.protocol)
  generator = faces.face_generator(cfg.face, num_workers=common.num_workers(config),
                                   render=cfg.training.render)
  predict = common.make_predict(net, "depth", flip=cfg.training.evaluation.flip)

  def evaluate(params) -> dict:
    return {"data_source": source, "validation": common.evaluate_depth(predict, params, validation),
            "test": common.evaluate_depth(predict, params, test)}

  def finish(workdir, state, history, results) -> None:
    del workdir, state, history
    logging.info("%s test depth metrics: %s", common.stage(results),
                 {k: round(v, 4) for k, v in results["test"]["image_mean"].items()})

  eval_loss = common.eval_loss_fn(net, validation, "depth", flip=cfg.training.evaluation.flip)
  return common.build("face", config, cfg.training, generator, eval_loss, evaluate, finish)


def run(config, workdir: str) -> dict:
  return common.run(build, config, workdir)


summary = common.summary


def evaluate_data(config, params, data: str, split: str) -> tuple[dict, None]:
  """Scores `params` on the face protocol (`split` validation or test) of the morphable model
  at `data` (a BFM-format .mat; "" = the run's own model)."""
  cfg = parse_config(config)
  face_config = dataclasses.replace(cfg.face, model_path=data) if data else cfg.face
  validation, test, _ = protocol_data(face_config, cfg.protocol)
  predict = common.make_predict(cfg.training.network, "depth", flip=cfg.training.evaluation.flip)
  return common.evaluate_depth(predict, params, validation if split == "validation" else test), None
