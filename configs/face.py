"""Faces: optimize the 204-d 3DMM sampling grammar for depth from a face image.

  python -m experiments.face --workdir=runs/face [--config=configs/face.py:smoke]
      [--config.face.model_path=/path/to/BFM.mat]
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "cpu"
  if variant not in ("smoke", "cpu"):
    raise ValueError(f"unknown face variant {variant!r}: use smoke or cpu")
  config = common.training(ml_collections.ConfigDict())
  config.task = "face"
  config.variant = variant
  # The 204-d 3DMM grammar; model_path "" = the embedded procedural stand-in for the BFM.
  config.face = ml_collections.ConfigDict(dict(
      resolution=64, model_path="", fov_deg=30.0, distance=4.5, ambient_low=0.2,
      ambient_high=0.4, light_max_angle_deg=60.0))
  # The paper's protocol: 10 identities x 3 lights x 9 poses, 5 of them for L.
  config.protocol = ml_collections.ConfigDict(dict(identities=10, validation_identities=5,
                                                   seed=4242))
  config.network.in_channels = 3
  config.loss.update(normal_weight=0.0, depth_weight=1.0, depth_loss="log_l2")
  config.inner.update(optimizer="adam", learning_rate=1e-3, lr_decay_steps=-1)
  config.schedule.update(warmup_steps=200, outer_steps=100, train_steps_per_outer=2,
                         final_steps=300, checkpoint_every=25, eval_every=25)
  if variant == "smoke":
    common.smoke(config)
    config.face.resolution = 32
    config.protocol.identities = 2
    config.protocol.validation_identities = 1
  return config
