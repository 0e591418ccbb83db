"""All methods at equal budget on one task (the paper's Tables 2-4 and Fig. 4; Table 1:
configs/table1.py).

  python -m experiments.compare --workdir=runs/compare [--config=configs/compare.py:ARG]
      [--config.base.data.dir=/path/to/MIT-Berkeley/train] [--config.base.data.test_dir=...]

ARG is TASK or TASK_smoke with TASK in mbii (default), nyu, face:
  mbii        hybrid gradient, Basic Random Search, Shape Evolution, fixed beta0 (Table 2, Fig. 4)
              at cpu scale, 3 seeds, from beta0 (from random beta: configs/table1.py)
  nyu, face   random beta, Basic Random Search, hybrid gradient (Tables 3 and 4), 3 seeds
  *_smoke     tiny sizes, one seed (the tests run them)
"""

import ml_collections

from configs import face as face_configs
from configs import mbii as mbii_configs
from configs import nyu as nyu_configs

_BASES = {"mbii": mbii_configs, "nyu": nyu_configs, "face": face_configs}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = arg or "mbii"
  task, _, variant = arg.partition("_")
  if task not in _BASES or variant not in ("", "smoke"):
    raise ValueError(f"unknown compare config {arg!r}: use TASK or TASK_smoke, TASK in "
                     f"{sorted(_BASES)}")
  smoke = variant == "smoke"
  config = ml_collections.ConfigDict()
  config.task = task
  # The paper's settings at cpu scale for mbii (configs/mbii.py:paper_cpu), as the paper compared.
  config.base = _BASES[task].get_config("smoke" if smoke else "paper_cpu" if task == "mbii" else "cpu")
  config.seeds = [0] if smoke else [0, 1, 2]
  add_baselines(config.base, task, smoke)
  if task == "mbii":
    config.methods = ["hybrid", "random_search", "evolution", "fixed"]
  else:
    config.methods = ["random_beta", "random_search", "hybrid"]
  return config


def add_baselines(base: ml_collections.ConfigDict, task: str, smoke: bool = False
                  ) -> ml_collections.ConfigDict:
  """The baselines' own settings in a task config (also used by configs/study.py)."""
  # Basic Random Search pays 2m + 1 trainings per step: its own m (V1: Gaussian directions),
  # not hybrid gradient's (whose m costs renders only).
  base.random_search = ml_collections.ConfigDict(
      {"num_perturbations": min(4, base.outer.num_perturbations), "directions": "gaussian"})
  if task == "mbii":
    # Shape Evolution (hgrad.baselines.evolution.EvolutionConfig), evaluating as many
    # candidates per generation as random search evaluates directions.
    base.evolution = ml_collections.ConfigDict(dict(
        initial_population=16, max_population=64,
        candidates=2 * base.random_search.num_perturbations + 1, survivors=2,
        mutation_prob=0.7, perturb_std=0.25))
    if smoke:
      base.evolution.update(initial_population=4, max_population=8, survivors=1)
  return base
