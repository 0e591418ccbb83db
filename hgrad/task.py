"""What every experiment (MIT-Berkeley, NYU scenes, faces) builds the same way.

A task module supplies its generator, its real (or synthetic) validation
data, L and the final metrics; this module turns them into an
`experiment.Task`: the hybrid-gradient machinery, initial parameters, beta0,
and the common outputs (curve.png, samples.png, config.json).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from hgrad import experiment
from hgrad import network
from hgrad import outer
from hgrad import plots
from hgrad import unroll
from hgrad import viz
from hgrad.bridge import Generator
from hgrad.config_util import to_dataclass


def parse_training(config) -> dict[str, Any]:
  """network, inner (an lr_decay_steps of -1 resolved to the run's length), outer, schedule."""
  schedule = to_dataclass(experiment.Schedule, config.schedule, where="config.schedule")
  inner = to_dataclass(unroll.InnerConfig, config.inner, where="config.inner")
  if inner.lr_decay_steps == -1:
    inner = dataclasses.replace(inner, lr_decay_steps=schedule.total_steps * inner.steps)
  return {
      "network": to_dataclass(network.NetworkConfig, config.network, where="config.network"),
      "inner": inner,
      "outer": to_dataclass(outer.OuterConfig, config.outer, where="config.outer"),
      "schedule": schedule,
  }


def summary(results: dict) -> dict:
  """The one-line JSON an experiment script prints: source, steps, image-mean metrics per split."""
  return {"data_source": results["data_source"], "steps": results["steps"],
          **{split: results[split]["image_mean"] for split in ("validation", "test", "train")
             if split in results}}


def warn_synthetic(what: str, detail: str) -> None:
  logging.warning("=" * 72)
  logging.warning("NO %s CONFIGURED.", what)
  logging.warning("Running on the SYNTHETIC default: %s. Numbers from this run say nothing "
                  "about real images.", detail)
  logging.warning("=" * 72)


def num_workers(config) -> int | None:
  return None if config.num_workers < 0 else config.num_workers


def build(name: str, config, training: dict, generator: Generator,
          eval_loss: Callable[[Any], jax.Array], evaluate: Callable[[Any], dict],
          finish: Callable[[str, Any, dict, Any], None] | None = None
          ) -> tuple[experiment.Task, experiment.Schedule]:
  """The Task: hybrid gradient on `generator` with L = `eval_loss(params)`.

  `finish(workdir, state, results, hg)` adds task-specific outputs after the
  common ones.
  """
  net = training["network"]
  hg = outer.HybridGradient(generator.generate, generator.layout, net, training["inner"],
                            training["outer"], eval_loss)
  params0 = network.init_params(net, jax.random.key(config.seed), (generator.height, generator.width))
  beta0 = np.asarray(config.get("beta0") or generator.beta0, np.float32)
  generator.layout.check(beta0, what="config.beta0")

  def finish_all(workdir: str, state, history: list[dict], results: dict) -> None:
    plots.curve(history, os.path.join(workdir, "curve.png"))
    seeds = 123_456 + np.arange(8)
    before = generator.render(np.tile(beta0, (8, 1)), seeds)
    after = generator.render(np.tile(np.asarray(state.beta), (8, 1)), seeds)
    plots.side_by_side(viz.sample_grid(before, 2), viz.sample_grid(after, 2),
                       ("samples at beta0", f"samples at the final beta (step {int(state.step)})"),
                       os.path.join(workdir, "samples.png"))
    if finish is not None:
      finish(workdir, state, results, hg)

  task = experiment.Task(name, generator, hg, params0, beta0, evaluate, finish_all)
  return task, training["schedule"]


def run(build_fn: Callable[[Any], tuple[experiment.Task, experiment.Schedule]], config,
        workdir: str) -> dict:
  """Builds, writes WORKDIR/config.json, runs (or resumes) and closes the generator."""
  task, schedule = build_fn(config)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  try:
    return experiment.run(task, schedule, workdir, config.seed)
  finally:
    task.generator.close()
