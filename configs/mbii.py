"""MIT-Berkeley hybrid-gradient run.

  python -m experiments.mbii --workdir=runs/mbii                      # cpu (default)
  python -m experiments.mbii --config=configs/mbii.py:smoke --workdir=/tmp/smoke
  python -m experiments.mbii --config=configs/mbii.py:paper --workdir=runs/paper
  ... --config.data.dir=/path/to/MIT-Berkeley/train   (or $HGRAD_MBII_DIR; else synthetic)

Variants:
  smoke  tiny sizes, < 3 minutes on 2 CPU cores (the tests run it)
  cpu    the default: the best this 2-core machine does in <= 45 minutes
  paper  GPU scale: 128x128, 4-stack hourglass of width 128, more samples and steps
  fixed  the yardstick: cpu's network and training, beta frozen at beta0, same wall time
"""

import ml_collections

from configs import common
from hgrad.tasks.mbii_data import MIT_TRAIN


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "cpu"
  if variant not in ("smoke", "cpu", "paper", "fixed"):
    raise ValueError(f"unknown mbii variant {variant!r}: use smoke, cpu, paper or fixed")
  config = common.training(ml_collections.ConfigDict())
  config.task = "mbii"
  config.variant = variant
  # The real images: SIRFS layout; "" = $HGRAD_MBII_DIR, else the synthetic target below.
  config.data = ml_collections.ConfigDict(dict(
      dir="", test_dir="", resolution=64, fill=0.9, objects=list(MIT_TRAIN)))
  # Without data: 16 renders of a hidden beta* under a narrower light cone and more ambient.
  config.synthetic = ml_collections.ConfigDict(dict(
      num_images=16, seed=1_000_000_007, light_max_angle_deg=35.0, ambient_low=0.15,
      ambient_high=0.25, primitive_weights=(0.6, 0.05, 0.3, 0.05)))   # sphere, cube, cone, tetra
  # The 29-d CSG grammar and its renders (docs/design.md §3). layout="lighting": 32-d beta
  # whose last three dimensions replace the light_* / ambient_* settings (set
  # --config.outer.num_perturbations=32 with it).
  config.csg = ml_collections.ConfigDict(dict(
      resolution=64, max_depth=3, sphere_segments=32, cone_segments=32, sharp_angle_deg=45.0,
      min_size=0.05, fill=0.9, light_max_angle_deg=60.0, ambient_low=0.0, ambient_high=0.3,
      exact_unions=False, layout="paper"))

  if variant in ("cpu", "fixed"):
    # K = 8 inner Adam steps of B = 8 samples; lr cosine-decays to 10% over the whole run.
    config.inner.update(optimizer="adam", learning_rate=1e-3, lr_decay_steps=-1)
    # m = dim(beta) orthogonal directions: no projection noise (BUILD_NOTES, issue 4).
    config.outer.update(num_perturbations=29, directions="orthogonal", learning_rate=0.04)
    config.schedule.update(warmup_steps=200, outer_steps=100, train_steps_per_outer=2,
                           final_steps=400, checkpoint_every=25, eval_every=10)
  if variant == "fixed":
    # Same network, samples and inner training (cosine lr decay over its own
    # length), beta never moves; as many plain steps as fit in the cpu run's
    # wall time on this machine (BUILD_NOTES), with that time as a hard stop.
    config.schedule.update(warmup_steps=1450, outer_steps=0, final_steps=0,
                           time_budget_s=40 * 60.0)
  if variant == "smoke":
    common.smoke(config)
    config.data.resolution = config.csg.resolution = 32
    config.csg.max_depth = 2
    config.synthetic.num_images = 4
  if variant == "paper":
    config.data.resolution = config.csg.resolution = 128
    config.network.update(width=128, stacks=4, depth=4)   # network.paper_network()
    config.inner.update(steps=16, batch_size=16)
    config.outer.update(num_perturbations=29, directions="orthogonal")
    config.schedule.update(warmup_steps=2000, outer_steps=1000, train_steps_per_outer=2,
                           checkpoint_every=100, eval_every=100)
  return config
