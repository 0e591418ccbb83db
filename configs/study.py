"""Is beta optimized by hybrid gradient better training data? Arms x paired seeds (hgrad.study).

  python -m experiments.study --workdir=~/hgrad-runs/study --config=configs/study.py:cpu \
      [--config.base.data.dir=/path/to/MIT-Berkeley/train]   # else the synthetic testbed

Arms: hybrid gradient, the placebo (random moves of the same size), fixed beta0 at equal
steps and at equal wall time, a network retrained at hybrid's final beta (hgrad/study.py).
The base is a configs/mbii.py variant; without data it runs on the synthetic target, where
beta* is known and each arm's distance to it is reported.

Variants:
  smoke      mbii smoke sizes, 2 seeds, every arm and a hybrid variant (the tests run it; ~2 min)
  cpu        the main job (configs/mbii.py:cpu), 3 seeds: about 1.5 hours a seed on 2 CPU cores
  cpu_trust  cpu with 100 outer steps (each followed by 2 plain ones) at a quarter of the step
             size, beta within 0.5 of beta0
  cpu_trust_cheap    cpu with beta within 0.5 of beta0
  cpu_trust_cheap10  cpu_trust_cheap with 10 outer steps (each followed by 29 plain ones) at
             2.5x the step size: the same 300-step outer phase and reach
  paper_cpu  the paper's settings at cpu scale (configs/mbii.py:paper_cpu)
  screen     paper_cpu's network, samples and estimator on a short schedule (60 warm-up, 20
             outer steps each followed by 2 plain ones, 60 final): a hybrid run ~8 minutes

More hybrid settings run as further arms "hybrid_NAME", NAME a key of config.variants
below, e.g. --config.arms="('hybrid','hybrid_light','fixed_steps')".
"""

import ml_collections

from configs import compare as compare_configs
from configs import mbii as mbii_configs

VARIANTS = ("smoke", "cpu", "cpu_trust", "cpu_trust_cheap", "cpu_trust_cheap10", "paper_cpu",
            "screen")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "screen"
  if variant not in VARIANTS:
    raise ValueError(f"unknown study variant {variant!r}: use one of {VARIANTS}")
  config = ml_collections.ConfigDict()
  config.name = variant
  config.task = "mbii"
  config.arms = ("hybrid", "placebo", "fixed_steps", "fixed_time", "retrain")   # tuples: overridable by flag
  config.references = ("fixed_steps", "fixed_time", "placebo")
  # Also: "oracle" (beta frozen at the synthetic target's beta*: the ceiling; synthetic only),
  # "random_search" (Basic Random Search V1) and "evolution" (Shape Evolution): Table 2.
  config.seeds = (0, 1, 2)
  # A finished hybrid run measured alone on the machine the comparison is about: its time
  # budget (and plain steps per budget) is every seed's fixed_time budget. Empty: each seed's
  # own hybrid run, which is only right where the runs did not share cores.
  config.timing_run = ""
  # Or that budget written as a number (plain steps), e.g. one measured on a machine earlier.
  # 0: from timing_run, else from each seed's own hybrid run.
  config.fixed_time_steps = 0
  config.last_k = 6                       # evaluations averaged for the smoothed L
  # What the frozen arms' labels call base.beta0: "beta0" (the hand-set one), or e.g. "the
  # start" where base.beta0 is another beta ("fixed at the start, equal steps").
  config.start_name = "beta0"
  # XLA:GPU's deterministic ops, so that the arms of a seed stay paired on a GPU; nothing on a CPU.
  config.deterministic = True
  # Hybrid variants, run as arms "hybrid_NAME" (nested overrides of config.base):
  config.variants = ml_collections.ConfigDict({
      # variances on a log scale, bias-corrected optimizer, smaller steps
      "log_adam": {"outer": {"coordinates": "log", "optimizer": "adam", "learning_rate": 0.01}},
      # ... and rule weights as softmax logits, p_expand as log-odds
      "logit_adam": {"outer": {"coordinates": "logit", "optimizer": "adam", "learning_rate": 0.01}},
      # only what is rendered moves (primitive kinds, sizes, offsets; under the "lighting"
      # layout also the light); the grammar's complexity and spread stay at beta0. m = 15
      # orthogonal directions: one per free dimension under "lighting" (12 under "paper").
      "content": {"outer": {"frozen": mbii_configs.COMPLEXITY, "num_perturbations": 15}},
  })
  # ... and u within L2 distance 0.5 of beta0's
  config.variants.content_trust = {"outer": dict(config.variants.content.outer, trust_radius=0.5)}
  # only the illumination moves ("lighting" layout: light cone, ambient mean and spread), the
  # grammar stays at beta0; m = 3 orthogonal directions, 7 renders per outer step instead of 31.
  config.variants.light = {"outer": {
      "frozen": ("p_*", "translate_*", "scale_*", "sphere_*", "box_*", "cone_*", "tetra_*"),
      "num_perturbations": 3}}
  base = {"smoke": "smoke", "paper_cpu": "paper_cpu", "screen": "paper_cpu"}.get(variant, "cpu")
  config.base = compare_configs.add_baselines(mbii_configs.get_config(base), "mbii",
                                              variant == "smoke")
  if variant == "smoke":
    config.arms += ("hybrid_log_adam", "random_search", "evolution")
    config.seeds = (0, 1)
    config.last_k = 2
  if variant == "screen":
    config.base.schedule.update(warmup_steps=60, outer_steps=20, train_steps_per_outer=2,
                                final_steps=60, checkpoint_every=20, eval_every=10)
  if variant.startswith("cpu_trust"):
    config.base.outer.trust_radius = 0.5
  if variant == "cpu_trust":
    config.base.schedule.update(outer_steps=100, train_steps_per_outer=2)
    config.base.outer.learning_rate = 0.01
  if variant == "cpu_trust_cheap10":
    config.base.schedule.update(outer_steps=10, train_steps_per_outer=29)
    config.base.outer.learning_rate = 0.1
  return config
