"""What every network task (MIT-Berkeley, NYU scenes, faces) builds the same way.

A task module supplies its generator, its real (or synthetic) validation
data, L and the final metrics; this module turns them into a `loop.Task`:
the stacked hourglass, its training loss, the engine, initial parameters,
beta0, and the common outputs (curve.png, samples.png, config.json). The
evaluation pieces the tasks share (L as mean angle error or log-depth RMSE,
metrics on a batch of real images) live here too.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from hgrad import plots
from hgrad.core import distributed
from hgrad.core import loop
from hgrad.core import outer
from hgrad.core import unroll
from hgrad.core.bridge import Generator, RenderConfig
from hgrad.core.config import to_dataclass
from hgrad.core.layout import ParamLayout
from hgrad.generators.sample import Sample
from hgrad.tasks import losses
from hgrad.tasks import metrics
from hgrad.tasks import network


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """How the network is scored (L and the final metrics)."""

  flip: bool = False     # also predict the mirrored image and average (test-time augmentation)


@dataclasses.dataclass(frozen=True)
class Training:
  """The training block every task config writes out (configs/common.py), checked.

  Attributes:
    network: the stacked hourglass's size.
    loss: what the network is trained on.
    inner: K inner steps of B samples and their optimizer (an lr_decay_steps of
      -1 resolved to the run's length).
    outer: how beta moves.
    schedule: the run's phases.
    evaluation: how the network is scored.
    render: where renders run.
  """

  network: network.NetworkConfig
  loss: losses.LossConfig
  inner: unroll.InnerConfig
  outer: outer.OuterConfig
  schedule: loop.Schedule
  evaluation: EvalConfig
  render: RenderConfig


def parse_training(config) -> Training:
  """The training block of a task config, each field checked against its dataclass."""
  schedule = to_dataclass(loop.Schedule, config.schedule, where="config.schedule")
  inner = to_dataclass(unroll.InnerConfig, config.inner, where="config.inner")
  if inner.lr_decay_steps == -1:
    inner = dataclasses.replace(inner, lr_decay_steps=schedule.total_steps * inner.steps)
  return Training(
      network=to_dataclass(network.NetworkConfig, config.network, where="config.network"),
      loss=to_dataclass(losses.LossConfig, config.loss, where="config.loss"),
      inner=inner,
      outer=to_dataclass(outer.OuterConfig, config.outer, where="config.outer"),
      schedule=schedule,
      evaluation=to_dataclass(EvalConfig, config.get("evaluation"), where="config.evaluation"),
      render=render_config(config))


def render_config(config) -> RenderConfig:
  """config.render (backend, address, overlap) checked; absent = the defaults."""
  return to_dataclass(RenderConfig, config.get("render"), where="config.render")


def summary(results: dict) -> dict:
  """The one-line JSON an experiment script prints: source, steps, image-mean metrics per split."""
  return {"data_source": results["data_source"], "steps": results["steps"],
          **{split: results[split]["image_mean"] for split in ("validation", "test", "train")
             if split in results}}


def stage(results: dict) -> str:
  """'final', 'interim (step N)' for the outputs a run writes before its end, or
  'interrupted at step N'."""
  if results.get("interrupted"):
    return f"interrupted at step {results['steps']}"
  return f"interim (step {results['steps']})" if results.get("partial") else "final"


def warn_synthetic(what: str, detail: str) -> None:
  """The loud warning of a run on a synthetic target instead of real data."""
  logging.warning("=" * 72)
  logging.warning("NO %s CONFIGURED.", what)
  logging.warning("Running on the SYNTHETIC default: %s. Numbers from this run say nothing "
                  "about real images.", detail)
  logging.warning("=" * 72)


def num_workers(config) -> int | None:
  """config.num_workers as `Generator` takes it (-1: None, one per core)."""
  return None if config.num_workers < 0 else config.num_workers


# --- L and metrics on real images, shared by the tasks -------------------------------------

# (metric key, table header) of the results tables (hgrad.baselines.compare, study tables).
NORMAL_COLUMNS = (("within_11_25", "% < 11.25°"), ("within_22_5", "% < 22.5°"),
                  ("within_30", "% < 30°"), ("mae", "MAE (°)"), ("median", "median (°)"),
                  ("mse_rad2", "MSE (rad²)"))
DEPTH_COLUMNS = (("abs_rel", "abs rel"), ("sq_rel", "sq rel"), ("rmse", "RMSE"),
                 ("rmse_log", "RMSE log"), ("si_rmse_log", "scale-inv. RMSE log"))


def predict_fn(net: network.NetworkConfig, head: str = "normals", flip: bool = False
               ) -> Callable[[Any, jax.Array], jax.Array]:
  """(params, image_BxHxWxC) -> the last stack's `head` ("normals" or "depth").

  flip: average with the prediction on the mirrored image, mirrored back (its
  normals' x component negated, then renormalized): lower-variance scores.
  """
  def predict(params, image_BxHxWxC):
    out = getattr(network.predict(net, params, image_BxHxWxC), head)
    if not flip:
      return out
    mirrored = jnp.flip(getattr(network.predict(net, params, jnp.flip(image_BxHxWxC, 2)), head), 2)
    if head == "depth":
      return 0.5 * (out + mirrored)
    total = out + mirrored * jnp.array([-1.0, 1.0, 1.0], out.dtype)
    return total * jax.lax.rsqrt(jnp.sum(total * total, axis=-1, keepdims=True) + 1e-12)
  return predict


def eval_loss_fn(net: network.NetworkConfig, real: Sample, head: str = "normals",
                 flip: bool = False) -> Callable[[Any], jax.Array]:
  """L(params) of the last stack on the real images: mean angle error (degrees) for
  "normals", per-image RMSE of log depth for "depth"."""
  loss = {"normals": losses.mean_angle_error, "depth": losses.log_depth_rmse}[head]
  real = jax.tree.map(jnp.asarray, real)
  predict = predict_fn(net, head, flip)

  def eval_loss(params):
    return loss(predict(params, real.image), getattr(real, head), real.mask)
  return eval_loss


def make_predict(net: network.NetworkConfig, head: str = "normals", flip: bool = False):
  """jit(params, image) -> the last stack's `head` ("normals" or "depth")."""
  return jax.jit(predict_fn(net, head, flip))


def evaluate_normals(predict, params, data: Sample, names) -> dict:
  """Normal metrics of the network on a batch of real images, with per-object rows."""
  pred = np.asarray(predict(params, jnp.asarray(data.image)))
  result = metrics.normal_metrics(pred, data.normals, data.mask)
  result["per_image"] = {name: row for name, row in zip(names, result["per_image"])}
  return result


def evaluate_depth(predict, params, data: Sample) -> dict:
  """Depth metrics of a log-depth head on a batch of real images."""
  log_depth = np.asarray(predict(params, jnp.asarray(data.image)))
  result = metrics.depth_metrics(np.exp(log_depth), data.depth, data.mask)
  result.pop("per_image")
  return result


def synthetic_distances(layout: ParamLayout, results: dict, beta_star) -> dict:
  """How far a run's start and end (its results' beta0 and beta) are from the hidden beta* of
  a synthetic target."""
  return {"beta_star": layout.as_dict(beta_star),
          "unit_distance_beta0": layout.unit_distance(layout.check(results["beta0"]), beta_star),
          "unit_distance_final": layout.unit_distance(layout.check(results["beta"]), beta_star)}


# --- The task ------------------------------------------------------------------------------

def build(name: str, config, training: Training, generator: Generator,
          eval_loss: Callable[[Any], jax.Array], evaluate: Callable[[Any], dict],
          finish: loop.Finish | None = None,
          input_name: str = "input") -> tuple[loop.Task, loop.Schedule]:
  """The Task: `generator`'s beta tuned while the hourglass trains on its samples, L = eval_loss.

  `finish(workdir, state, history, results)` (the signature of `loop.Task.finish`) adds
  task-specific outputs after the common ones (curve.png, samples.png); `input_name` names
  the network's input in samples.png (e.g. "shading").
  """
  net = training.network
  trainer = outer.OuterTrainer(generator,
                               train_loss=losses.train_loss_fn(net, training.loss),
                               eval_loss=eval_loss, inner=training.inner, outer=training.outer,
                               deferred=generator.deferred if training.render.overlap else None)
  params0 = network.init_params(net, jax.random.key(config.seed), (generator.height, generator.width))
  beta0 = np.asarray(config.get("beta0") or generator.beta0, np.float32)
  beta0_source = "config.beta0" if config.get("beta0") else "the layout's defaults"
  schedule = training.schedule

  def finish_all(workdir: str, state, history: list[dict], results: dict) -> None:
    step = int(state.step)
    against = describe_source(results.get("data_source", ""))
    plots.curve(history, os.path.join(workdir, "curve.png"),
                title=f"{name}: L against {against}, {stage(results)}\n{schedule.describe()}")
    beta = np.asarray(trainer.beta(state))
    moved = "" if np.any(beta != beta0) else " (beta has not moved yet)"
    try:   # render workers ignore SIGINT / SIGTERM, so an interrupted run redraws too
      seeds = 123_456 + np.arange(8)
      plots.samples(generator.render(np.tile(beta0, (8, 1)), seeds),
                    generator.render(np.tile(beta, (8, 1)), seeds),
                    (f"at beta0 ({beta0_source})", f"at beta of step {step}{moved}"),
                    f"{name} training samples, {stage(results)}; the network is scored against "
                    f"{against}", os.path.join(workdir, "samples.png"), input_name)
    except Exception as error:  # noqa: BLE001 - an interim figure must not lose the run
      if not results.get("interrupted"):
        raise
      logging.warning("samples.png not redrawn at the interruption: %s", error)
    if finish is not None:
      finish(workdir, state, history, results)

  task = loop.Task(name, trainer, params0, beta0, evaluate, finish_all)
  return task, schedule


def describe_source(source: str) -> str:
  """What L is measured on, in words: a dataset path, or the synthetic target."""
  if source in ("", "synthetic"):
    return "the SYNTHETIC target (renders of a hidden beta*)"
  return source


CONFIG_FILE = "config.json"
# How a run is carried out, not what it computes: these may change when it resumes.
RUNTIME_KEYS = ("num_workers", "render", "distributed")


def check_same_run(workdir: str, config) -> None:
  """Refuses to resume (or read back) the run in `workdir` under other settings.

  A run is found by its directory, so a second command naming the same one
  with another seed, beta0, data or schedule would silently mix two runs.
  Keys only one side has (a field newer than the run) and `RUNTIME_KEYS` are
  not compared.

  Raises:
    ValueError: naming the settings that differ from `workdir/config.json`.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = traverse_util.flatten_dict(json.load(f), sep=".")
  now = traverse_util.flatten_dict(json.loads(config.to_json_best_effort()), sep=".")
  differ = [key for key in sorted(set(saved) & set(now))
            if saved[key] != now[key] and key.split(".")[0] not in RUNTIME_KEYS]
  if differ:
    shown = "; ".join(f"{key}: {saved[key]!r} there, {now[key]!r} now" for key in differ[:4])
    more = f" (and {len(differ) - 4} more)" if len(differ) > 4 else ""
    raise ValueError(f"{workdir} holds a run made with other settings: {shown}{more}. Resume it "
                     f"with the settings in {path}, or use a new workdir")


def run(build_fn: Callable[[Any], tuple[loop.Task, loop.Schedule]], config,
        workdir: str) -> dict:
  """Joins the other JAX processes (if any), builds, writes WORKDIR/config.json, runs (or
  resumes) and closes the generator."""
  distributed.initialize(to_dataclass(distributed.DistributedConfig, config.get("distributed"),
                                      where="config.distributed"))
  check_same_run(workdir, config)
  task, schedule = build_fn(config)
  os.makedirs(workdir, exist_ok=True)
  if distributed.is_primary():
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  try:
    return loop.run(task, schedule, workdir, config.seed)
  finally:
    task.trainer.generator.close()
    distributed.shutdown()
