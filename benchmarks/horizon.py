"""What the hybrid-gradient estimate prefers, by the network it starts from and the unroll length.

At one beta (the config's beta0), for `--keys` independent sample sets, the
estimate of dL/du (u: the optimizer's coordinates) is taken

  warm      from a trained network (`--workdir`'s latest checkpoint), K inner steps
  fresh     from the freshly initialized network, K steps, on the *same* renders
  warm_long from the trained network, `--long_steps` inner steps

and the script prints the cosines between their means, and, on a synthetic
target with a known beta* (the task module's `known_beta_star`), the cosine of
each with the descent direction toward beta* (-(u* - u0) is the gradient
direction that points away from it), the share of dimensions whose sign
agrees with it, and the t statistic of the single estimates' component along
it (a cosine of the mean is hard to read in 29 dimensions at a few keys).

With `--probe_step` it also writes betas moved that far from beta0 along each
mean estimate's descent, a random direction and the way to beta*: training a
fresh network at each (the study's `fixed_steps` arm with `--config.base.beta0`)
asks whether the direction the estimate prefers makes better training data.

  python -m benchmarks.horizon --config=configs/study.py:screen --workdir=RUN [--keys=4]
      [--nofresh] [--long_steps=0] [--probe_step=0.35]

Prints a table and, as its last line, JSON.
"""

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from benchmarks import common
from experiments import script
from hgrad.tasks import registry
from hgrad.core import estimator as estimators
from hgrad.core.checkpoint import Checkpointer
from hgrad.core.outer import OuterTrainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "mbii.py"),
    "Task config, or a study config (its `base` is used).")
_WORKDIR = script.DEFINE_path("workdir", None, "Run whose latest checkpoint is the warm network.",
                               required=True)
_KEYS = flags.DEFINE_integer("keys", 4, "Independent sample sets.")
_FRESH = flags.DEFINE_bool("fresh", True, "Also estimate from the fresh network.")
_PROBE = flags.DEFINE_float(
    "probe_step", 0.0, "> 0: also write betas moved this far (optimizer coordinates) from beta0 "
    "along each mean estimate's descent, a random direction and the way to beta*, to train "
    "at with the study's fixed_steps arm (--config.base.beta0).")
_LONG = flags.DEFINE_integer("long_steps", 32, "Inner steps of the long unroll (0: skip it).")


def projection_t(grads, unit_direction) -> float:
  """t statistic of the estimates' component along a direction, over the sample sets.

  Positive: the mean estimate descends along it beyond the spread of single
  estimates (|t| > ~2.1 at 16 keys is a 95% decision, where a cosine of the
  mean in 29 dimensions is hard to read).
  """
  along = np.asarray(grads) @ unit_direction
  if along.size < 2:
    return float("nan")
  return float(along.mean() / max(along.std(ddof=1) / np.sqrt(along.size), 1e-30))


def probe(trainer, u0, direction, step: float) -> dict:
  """beta at u0 + step * direction / |direction|, clipped to the box (`moved`: the clipped length)."""
  u = np.clip(u0 + step * direction / np.linalg.norm(direction), 0.0, 1.0)
  beta = np.asarray(trainer.layout.from_coords(u, trainer.outer.coordinates), np.float64)
  return {"beta": beta.tolist(), "moved": float(np.linalg.norm(u - u0)),
          "beta0_flag": "(" + ",".join(f"{v:.6g}" for v in beta) + ")"}


def main():
  config, task_module = common.task_config(_CONFIG.value)
  task, _ = task_module.build(config)
  trainer = task.trainer
  warm = trainer.init(task.beta0, task.params0)
  checkpointer = Checkpointer(_WORKDIR.value)
  warm, _ = checkpointer.restore(warm)
  checkpointer.close()
  fresh = trainer.init(task.beta0, task.params0)
  u0 = fresh.u

  def estimate(model, inner_state, key):
    _, grad = hybrid(model.samples, model.problem.loss_of_data(inner_state), u0, key,
                     has_aux=True)
    return grad

  hybrid = estimators.hybrid(trainer.outer.num_perturbations, trainer.outer.sigma,
                             trainer.outer.directions)
  short = jax.jit(lambda inner_state, key: estimate(trainer, inner_state, key))
  if _LONG.value:
    long_trainer = OuterTrainer(task.trainer.generator, train_loss=trainer.problem.train_loss,
                                eval_loss=trainer.problem.eval_loss,
                                inner=dataclasses.replace(trainer.inner, steps=_LONG.value),
                                outer=trainer.outer)
    long = jax.jit(lambda inner_state, key: estimate(long_trainer, inner_state, key))
  start = time.perf_counter()
  grads = ({"warm": []} | ({"fresh": []} if _FRESH.value else {})
           | ({"warm_long": []} if _LONG.value else {}))
  for k in range(_KEYS.value):
    key = jax.random.key(2000 + k)
    grads["warm"].append(np.asarray(short(warm.inner, key)))
    if _FRESH.value:
      grads["fresh"].append(np.asarray(short(fresh.inner, key)))     # the same renders
    if _LONG.value:
      grads["warm_long"].append(np.asarray(long(warm.inner, key)))
  task.trainer.generator.close()
  means = {name: np.mean(g, axis=0) for name, g in grads.items()}
  names = list(means)
  out = {"keys": _KEYS.value, "inner_steps": trainer.inner.steps, "long_steps": _LONG.value,
         "cosine": {f"{a}_vs_{b}": common.cosine(means[a], means[b])
                    for i, a in enumerate(names) for b in names[i + 1:]},
         "cross_key_cosine": {name: common.mean_cross_cosine(g)
                              for name, g in grads.items()},
         "mean_estimate": {name: [float(v) for v in m] for name, m in means.items()},
         "seconds": round(time.perf_counter() - start, 1)}
  # beta* only where the config runs on the synthetic target (not on a dataset).
  beta_star = registry.known_beta_star(config)
  descents = {name: -m for name, m in means.items()}
  descents["random"] = np.random.default_rng(11).normal(size=means["warm"].shape)
  if beta_star is not None:
    descents["toward_beta_star"] = (
        np.asarray(trainer.layout.to_coords(beta_star, trainer.outer.coordinates)) - np.asarray(u0))
  if _PROBE.value > 0:
    out["probes"] = {name: probe(trainer, np.asarray(u0), d, _PROBE.value)
                     for name, d in descents.items()}
  if beta_star is not None:
    toward = -descents["toward_beta_star"]    # -(u* - u0): a gradient that descends toward beta*
    moving = np.abs(toward) > 1e-6
    unit_toward = toward / np.linalg.norm(toward)
    out["toward_beta_star"] = {
        name: {"cosine": common.cosine(m, toward),
               "projection_t": projection_t(grads[name], unit_toward),
               "sign_agreement": float(np.mean(np.sign(m[moving]) == np.sign(toward[moving]))),
               "per_dimension": {trainer.layout.names[i]: float(m[i]) for i in np.nonzero(moving)[0]},
               # descent toward beta* in this dimension, in standard errors over the keys
               "per_dimension_t": {trainer.layout.names[i]: projection_t(
                   np.asarray(grads[name])[:, i:i + 1], np.sign(toward[i:i + 1]))
                                   for i in np.nonzero(moving)[0]}}
        for name, m in means.items()}
  for name, value in out["cosine"].items():
    print(f"cosine {name:<20} {value:+.3f}")
  for name, value in out["cross_key_cosine"].items():
    print(f"cross-key cosine {name:<10} {value:+.3f}")
  for name, entry in out.get("toward_beta_star", {}).items():
    print(f"toward beta* {name:<10} cosine {entry['cosine']:+.3f} "
          f"sign agreement {entry['sign_agreement']:.2f} "
          f"projection t {entry['projection_t']:+.2f}")
  for name, entry in out.get("probes", {}).items():
    print(f"probe {name:<16} moved {entry['moved']:.3f}: --config.base.beta0=\"{entry['beta0_flag']}\"")
  print(json.dumps(out))


if __name__ == "__main__":
  script.run(main)
