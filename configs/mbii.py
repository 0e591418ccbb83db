"""MIT-Berkeley: tune the CSG grammar's beta so that a normal estimator trained on its
renders does well on real shading images.

  python -m experiments.mbii --workdir=runs/mbii                              # cpu, the default
  python -m experiments.mbii --workdir=runs/fixed --config=configs/mbii.py:fixed  # the yardstick
  ... --config.data.dir=/path/to/MIT-Berkeley/train   (or $HGRAD_MBII_DIR; without it the
                                                       synthetic target, where beta* is known)

Variants:
  smoke      tiny sizes: a whole run in about 20 seconds (the tests run it)
  cpu        the default, the configuration measured best (docs/results.md): EMA + flip
             evaluation, light and ambient as beta dimensions ("lighting" layout), rule
             weights as logits moved by Adam, the grammar's complexity and spread kept at
             beta0, beta within 0.25 of beta0, 25 outer steps; 900 steps, about 30 minutes on
             2 CPU cores
  fixed      the yardstick: cpu with beta frozen at beta0, the same 900 steps (for the same
             wall time on 2 CPU cores add --config.schedule.final_steps=519)
  paper_cpu  the paper's settings at cpu scale: all 29 dimensions in the unit box, RMSprop,
             100 outer steps each followed by 2 plain ones
  paper      the paper's scale (a GPU): 128x128, 4-stack hourglass of width 128, more steps
"""

import ml_collections

from configs import common
from hgrad.tasks.mbii_data import MIT_TRAIN

VARIANTS = ("smoke", "cpu", "fixed", "paper_cpu", "paper")
# The grammar's complexity and spread (expansion, operations, part scales, every variance).
COMPLEXITY = ("p_expand", "p_union", "p_subtract", "scale_*_logmean", "*var")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "cpu"
  if variant not in VARIANTS:
    raise ValueError(f"unknown mbii variant {variant!r}: use one of {', '.join(VARIANTS)}")
  config = common.training(ml_collections.ConfigDict())
  config.task = "mbii"
  config.variant = variant
  # The real images: the SIRFS layout, the folder that holds the object folders (apple/, box/,
  # ...); "" = $HGRAD_MBII_DIR, else the synthetic target below. target: "auto" (that rule),
  # "photographs" (a directory required) or "synthetic" (the target below, $HGRAD_MBII_DIR ignored).
  config.data = ml_collections.ConfigDict(dict(
      dir="", test_dir="", target="auto", resolution=64, fill=0.9, objects=list(MIT_TRAIN)))
  # Without data: 16 renders of a hidden beta* under a narrower light cone and more ambient.
  config.synthetic = ml_collections.ConfigDict(dict(
      num_images=16, seed=1_000_000_007, light_max_angle_deg=35.0, ambient_low=0.15,
      ambient_high=0.25, primitive_weights=(0.6, 0.05, 0.3, 0.05)))   # sphere, cube, cone, tetra
  # The 29-d CSG grammar and its renders (docs/design.md §3). layout="lighting": 32-d beta
  # whose last three dimensions replace the light_* / ambient_* settings.
  config.csg = ml_collections.ConfigDict(dict(
      resolution=64, max_depth=3, sphere_segments=32, cone_segments=32, sharp_angle_deg=45.0,
      min_size=0.05, fill=0.9, light_max_angle_deg=60.0, ambient_low=0.0, ambient_high=0.3,
      exact_unions=False, layout="paper"))

  if variant in ("cpu", "fixed", "paper_cpu"):
    # K = 8 inner Adam steps of B = 8 samples; lr cosine-decays to 10% over the whole run.
    config.inner.update(optimizer="adam", learning_rate=1e-3, lr_decay_steps=-1)
    # m = dim(beta) orthogonal directions: no projection noise.
    config.outer.update(num_perturbations=29, directions="orthogonal", learning_rate=0.04)
    config.schedule.update(warmup_steps=200, outer_steps=100, train_steps_per_outer=2,
                           final_steps=400, checkpoint_every=25, eval_every=10)
  if variant in ("cpu", "fixed"):
    # L of an EMA of the weights, with mirrored-image averaging: 2.4x less noisy.
    config.inner.ema_decay = 0.95
    config.evaluation.flip = True
    config.csg.layout = "lighting"
    # The rendered content and the light move (m = 15 orthogonal directions, one per free
    # dimension); rule weights as softmax logits, probabilities as log-odds, Adam.
    config.outer.update(coordinates="logit", optimizer="adam", learning_rate=0.04,
                        frozen=COMPLEXITY, num_perturbations=15, trust_radius=0.25)
    # 25 outer steps, each followed by 11 plain steps: 200 + 25 x 12 + 400 = 900 steps.
    config.schedule.update(outer_steps=25, train_steps_per_outer=11)
  if variant == "fixed":
    config.schedule.freeze_beta = True
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
