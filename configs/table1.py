"""The paper's Table 1 from random beta, and Table 2 / Fig. 4 from the same starts.

  python -m experiments.table1 --config=configs/table1.py:synthetic --workdir=~/hgrad-runs/table1_synthetic
  python -m experiments.table1 --config=configs/table1.py:real --workdir=~/hgrad-runs/table1_real \
      --config.base.data.dir=/path/to/MIT-Berkeley/train
  ... --report_only      (the tables of the runs finished so far)

Ten betas drawn from the layout's prior, a network trained at each, and
from the best, median and worst of them a study of paired seeds: hybrid
gradient, fixed at the start (equal steps, equal wall time), the placebo, a
network retrained at hybrid's final beta; fixed beta0 as a reference row;
Basic Random Search and Shape Evolution from the worst start (hgrad.random_starts).

Variants (all on the study's `screen` schedule: 60 warm-up, 20 outer steps
each followed by 2 plain ones, 60 final; the cpu network and samples):
  smoke      tiny sizes, 3 betas, 2 seeds, every arm (the tests run it; about 4 minutes)
  select     the choice of hybrid settings from a poor start, on the synthetic testbed:
             4 betas of another draw, three hybrid settings from the worst and the median
             start, one seed (a screen, not a result): the one that ends closest to beta* on
             average is the hybrid arm of every variant (Adam lr 0.02)
  synthetic  the synthetic testbed (beta* known: distance to it reported), 3 seeds
             ($HGRAD_MBII_DIR ignored, as in smoke and select)
  real       the same arms on the photographs named by --config.base.data.dir (or
             $HGRAD_MBII_DIR; without either it fails instead of falling back to the testbed)

Fig. 4 is each start's study.png: L against steps, wall time and CPU time.

The hybrid arm moves every dimension of the 29-d grammar in logit coordinates
(rule weights as softmax logits, probabilities as log-odds, variances on a log
scale) with Adam at lr 0.02, and has no trust region: a start far from any
good beta must not hold it there. EMA + flip evaluation for every arm.
"""

import ml_collections

from configs import mbii as mbii_configs
from configs import study as study_configs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "synthetic"
  variants = ("smoke", "select", "synthetic", "real")
  if variant not in variants:
    raise ValueError(f"unknown table1 variant {variant!r}: use one of {variants}")
  config = study_configs.get_config("smoke" if variant == "smoke" else "screen")
  config.name = f"table1_{variant}"
  config.arms = ("hybrid", "placebo", "fixed_steps", "fixed_time", "retrain")
  # The arms each study takes paired differences against (config.table1.references, below,
  # are the arms run at beta0).
  config.references = ("fixed_steps", "fixed_time", "placebo")
  config.seeds = (0, 1, 2)
  base = config.base
  base.inner.ema_decay = 0.95
  base.evaluation.flip = True
  base.outer.update(num_perturbations=29, directions="orthogonal", coordinates="logit",
                    optimizer="adam", learning_rate=0.02, trust_radius=0.0, frozen=())
  # The hybrid settings `select` compared with the arm above (arms "hybrid_NAME").
  config.variants = ml_collections.ConfigDict({
      "lr05": {"outer": {"learning_rate": 0.05}},
      # at lr 0.05, the grammar's complexity and spread kept at the start (m = 12, one per
      # free dimension)
      "content_lr05": {"outer": {"frozen": mbii_configs.COMPLEXITY, "num_perturbations": 12,
                                 "learning_rate": 0.05}},
  })
  config.table1 = ml_collections.ConfigDict(dict(
      num_betas=10,
      prior_seed=1,              # ParamLayout.sample(prior_seed, num_betas)
      rank_seed=0,               # the ranking runs' seed (also that seed's fixed_steps run)
      starts=("worst", "median", "best"),
      references=("fixed_steps", "oracle"),      # run at beta0 (oracle: at beta*, synthetic only)
      table2_arms=("random_search", "evolution"),
      table2_starts=("worst",)))
  # The testbed each variant names, whatever $HGRAD_MBII_DIR says; `real` fails without data.
  base.data.target = "photographs" if variant == "real" else "synthetic"
  if variant == "real":
    config.table1.references = ("fixed_steps",)
  if variant == "select":
    config.table1.update(num_betas=4, prior_seed=2, starts=("worst", "median"),
                         references=("fixed_steps",), table2_arms=(), table2_starts=())
    config.arms = ("fixed_steps", "hybrid_lr05", "hybrid", "hybrid_content_lr05")
    config.references = ("fixed_steps",)
    config.seeds = (0,)
  if variant == "smoke":
    config.seeds = (0, 1)
    config.last_k = 2
    base.outer.num_perturbations = 2
    config.table1.num_betas = 3
  return config
