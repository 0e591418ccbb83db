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
from hgrad import network
from hgrad.csg import CSGConfig
from hgrad.data.mbii import MBIIConfig
from hgrad.mbii import SyntheticConfig


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "cpu"
  if variant not in ("smoke", "cpu", "paper", "fixed"):
    raise ValueError(f"unknown mbii variant {variant!r}: use smoke, cpu, paper or fixed")
  config = common.training(ml_collections.ConfigDict())
  config.variant = variant
  config.data = common.as_config(MBIIConfig())
  config.data.objects = list(config.data.objects)
  config.synthetic = common.as_config(SyntheticConfig())
  config.csg = common.as_config(CSGConfig())

  if variant in ("cpu", "fixed"):
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
    config.network = common.as_config(network.paper_network())
    config.inner.update(steps=16, batch_size=16)
    config.outer.update(num_perturbations=29, directions="orthogonal")
    config.schedule.update(warmup_steps=2000, outer_steps=1000, train_steps_per_outer=2,
                           checkpoint_every=100, eval_every=100)
  return config
