"""NYU Depth V2: optimize the 108-d scene perturbation for surface normals.

  python -m experiments.nyu --workdir=runs/nyu [--config=configs/nyu.py:smoke]
      [--config.data.file=/path/nyu_depth_v2_labeled.mat --config.data.splits=/path/splits.mat]
"""

import ml_collections

from configs import common
from hgrad.tasks import nyu_data


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "cpu"
  if variant not in ("smoke", "cpu"):
    raise ValueError(f"unknown nyu variant {variant!r}: use smoke or cpu")
  config = common.training(ml_collections.ConfigDict())
  config.task = "nyu"
  config.variant = variant
  # The labeled file; "" = $HGRAD_NYU_FILE, else a synthetic target (scenes at a hidden beta*).
  config.data = ml_collections.ConfigDict(dict(
      file="", splits="", validation=32, test_limit=0, synthetic_images=16,
      synthetic_seed=77_000_000))
  # The 108-d scene grammar; renders share the evaluation crop's field of view.
  config.scene = ml_collections.ConfigDict(dict(
      height=48, width=64, fov_y_deg=nyu_data.CROP_FOV_Y_DEG, min_objects=3, max_objects=8,
      ambient=0.25, near=0.05, far=30.0))
  config.inner.update(optimizer="adam", learning_rate=1e-3, lr_decay_steps=-1)
  config.schedule.update(warmup_steps=200, outer_steps=100, train_steps_per_outer=2,
                         final_steps=300, checkpoint_every=25, eval_every=25)
  if variant == "smoke":
    common.smoke(config)
    config.scene.update(height=24, width=32, max_objects=4)
    config.data.update(synthetic_images=4, validation=4)
  return config
