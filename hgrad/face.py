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

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from hgrad import faces
from hgrad import losses
from hgrad import metrics
from hgrad import network
from hgrad import task
from hgrad.config_util import to_dataclass
from hgrad.sample import Sample


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
    sample, _ = host.render_params(params)
  finally:
    host.close()
  validation = identity < protocol.validation_identities
  pick = lambda m: Sample(*(x[m] for x in sample))  # noqa: E731
  source = face_config.model_path or "synthetic"
  if not face_config.model_path:
    task.warn_synthetic("BASEL-FACE-MODEL FILE (--config.face.model_path)",
                        "the embedded procedural morphable model (a stand-in for the licensed "
                        f"BFM), {protocol.identities} held-out identities x 3 lights x 9 poses")
  return pick(validation), pick(~validation), source


def depth_eval_loss(net: network.NetworkConfig, real: Sample):
  def eval_loss(params):
    pred = network.predict(net, params, real.image)
    return losses.log_depth_rmse(pred.depth, real.depth, real.mask)
  return eval_loss


def evaluate_depth(predict, params, data: Sample) -> dict:
  log_depth = np.asarray(predict(params, jnp.asarray(data.image)))
  result = metrics.depth_metrics(np.exp(log_depth), data.depth, data.mask)
  result.pop("per_image")
  return result


def parse_config(config) -> dict[str, Any]:
  return {"face": to_dataclass(faces.FaceConfig, config.face, where="config.face"),
          "protocol": to_dataclass(FaceProtocolConfig, config.protocol, where="config.protocol"),
          **task.parse_training(config)}


def build(config):
  cfg = parse_config(config)
  net = cfg["network"]
  if net.in_channels != 3:
    raise ValueError(f"config.network.in_channels must be 3 (RGB faces), got {net.in_channels}")
  validation, test, source = protocol_data(cfg["face"], cfg["protocol"])
  generator = faces.face_generator(cfg["face"], num_workers=task.num_workers(config))
  predict = jax.jit(lambda params, image: network.predict(net, params, image).depth)

  def evaluate(params) -> dict:
    return {"data_source": source, "validation": evaluate_depth(predict, params, validation),
            "test": evaluate_depth(predict, params, test)}

  def finish(workdir, state, results, hg) -> None:
    del workdir, state, hg
    logging.info("final test depth metrics: %s", {k: round(v, 4) for k, v in
                                                  results["test"]["image_mean"].items()})

  real = jax.tree.map(jnp.asarray, validation)
  return task.build("face", config, cfg, generator, depth_eval_loss(net, real), evaluate, finish)


def run(config, workdir: str) -> dict:
  return task.run(build, config, workdir)
