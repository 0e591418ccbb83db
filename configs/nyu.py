"""NYU Depth V2: optimize the 108-d scene perturbation for surface normals.

  python -m experiments.nyu --workdir=runs/nyu [--config=configs/nyu.py:smoke]
      [--config.data.file=/path/nyu_depth_v2_labeled.mat --config.data.splits=/path/splits.mat]
"""

import ml_collections

from configs import common
from hgrad.data import nyu as nyu_data
from hgrad.nyu import NYUDataConfig
from hgrad.scenes import SceneConfig


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "cpu"
  if variant not in ("smoke", "cpu"):
    raise ValueError(f"unknown nyu variant {variant!r}: use smoke or cpu")
  config = common.training(ml_collections.ConfigDict())
  config.variant = variant
  config.data = common.as_config(NYUDataConfig())
  # Renders share the evaluation crop's field of view.
  config.scene = common.as_config(SceneConfig(fov_y_deg=nyu_data.CROP_FOV_Y_DEG))
  config.inner.update(optimizer="adam", learning_rate=1e-3, lr_decay_steps=-1)
  config.schedule.update(warmup_steps=200, outer_steps=100, train_steps_per_outer=2,
                         final_steps=300, checkpoint_every=25, eval_every=25)
  if variant == "smoke":
    common.smoke(config)
    config.scene.update(height=24, width=32, max_objects=4)
    config.data.update(synthetic_images=4, validation=4)
  return config
