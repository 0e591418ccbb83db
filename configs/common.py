"""Pieces every experiment config shares (training, schedule, variants' sizes)."""

import dataclasses

import ml_collections

from hgrad import experiment
from hgrad import network
from hgrad import outer
from hgrad import unroll


def as_config(instance) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dataclasses.asdict(instance))


def training(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds seed, workers, beta0, network, inner, outer and schedule with their defaults."""
  config.seed = 0
  config.num_workers = -1          # render worker processes; -1 = one per core
  config.beta0 = ()                # starting beta (a tuple, so --config.beta0="(...)" works); empty = the layout's default
  config.network = as_config(network.NetworkConfig())
  config.inner = as_config(unroll.InnerConfig())
  config.outer = as_config(outer.OuterConfig())
  config.schedule = as_config(experiment.Schedule())
  return config


def smoke(config: ml_collections.ConfigDict) -> None:
  """Tiny sizes: a whole run in well under a minute on 2 CPU cores."""
  config.num_workers = 0
  config.network.update(width=8, stacks=1, depth=2)
  config.inner.update(steps=2, batch_size=4)
  config.outer.update(num_perturbations=2)
  config.schedule.update(warmup_steps=2, outer_steps=4, train_steps_per_outer=1, final_steps=0,
                         checkpoint_every=3, eval_every=2)
