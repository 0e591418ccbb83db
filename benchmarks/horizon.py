"""What the hybrid-gradient estimate prefers, by the network it starts from and the unroll length.

At one beta (the config's beta0), for `--keys` independent sample sets, the
estimate of dL/du (u: the optimizer's coordinates) is taken

  warm      from a trained network (`--workdir`'s latest checkpoint), K inner steps
  fresh     from the freshly initialized network, K steps, on the *same* renders
  warm_long from the trained network, `--long_steps` inner steps

and the script prints the cosines between their means, and, on a synthetic
target with a known beta* (the task module's `beta_star()`), the cosine of
each with the descent direction toward beta* (-(u* - u0) is the gradient
direction that points away from it) and the share of dimensions whose sign
agrees with it.

  python -m benchmarks.horizon --config=configs/study.py:screen --workdir=RUN [--keys=4]

Prints a table and, as its last line, JSON.
"""

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from benchmarks import common
from hgrad.core import estimator
from hgrad.core.checkpoint import Checkpointer
from hgrad.core.outer import HybridGradient

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "mbii.py"),
    "Task config, or a study config (its `base` is used).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run whose latest checkpoint is the warm network.",
                               required=True)
_KEYS = flags.DEFINE_integer("keys", 4, "Independent sample sets.")
_LONG = flags.DEFINE_integer("long_steps", 32, "Inner steps of the long unroll.")


def main(argv):
  del argv
  config, task_module = common.task_config(_CONFIG.value)
  task, _ = task_module.build(config)
  hg = task.hg
  warm = hg.init(task.beta0, task.params0)
  checkpointer = Checkpointer(_WORKDIR.value)
  warm, _ = checkpointer.restore(warm)
  checkpointer.close()
  fresh = hg.init(task.beta0, task.params0)
  u0 = fresh.u
  long_hg = HybridGradient(task.generator.generate, hg.layout, train_loss=hg.train_loss,
                           eval_loss=hg.eval_loss,
                           inner=dataclasses.replace(hg.inner, steps=_LONG.value), outer=hg.outer)

  def estimate(model, inner_state, key):
    _, grad = estimator.ESTIMATORS["hybrid"](
        model.generate_unit, model.loss_of_data(inner_state), u0, key,
        num_perturbations=hg.outer.num_perturbations, sigma=hg.outer.sigma, has_aux=True,
        directions=hg.outer.directions)
    return grad

  short = jax.jit(lambda inner_state, key: estimate(hg, inner_state, key))
  long = jax.jit(lambda inner_state, key: estimate(long_hg, inner_state, key))
  start = time.perf_counter()
  grads = {"warm": [], "fresh": [], "warm_long": []}
  for k in range(_KEYS.value):
    key = jax.random.key(2000 + k)
    grads["warm"].append(np.asarray(short(warm.inner, key)))
    grads["fresh"].append(np.asarray(short(fresh.inner, key)))       # the same renders
    grads["warm_long"].append(np.asarray(long(warm.inner, key)))
  task.generator.close()
  means = {name: np.mean(g, axis=0) for name, g in grads.items()}
  out = {"keys": _KEYS.value, "inner_steps": hg.inner.steps, "long_steps": _LONG.value,
         "cosine": {"warm_vs_fresh": common.cosine(means["warm"], means["fresh"]),
                    "warm_vs_warm_long": common.cosine(means["warm"], means["warm_long"]),
                    "fresh_vs_warm_long": common.cosine(means["fresh"], means["warm_long"])},
         "cross_key_cosine": {name: common.mean_cross_cosine(g)
                              for name, g in grads.items()},
         "seconds": round(time.perf_counter() - start, 1)}
  if hasattr(task_module, "beta_star"):
    toward = -(np.asarray(hg.layout.to_coords(task_module.beta_star(), hg.outer.coordinates))
               - np.asarray(u0))        # -(u* - u0): a gradient that descends toward beta*
    moving = np.abs(toward) > 1e-6
    out["toward_beta_star"] = {
        name: {"cosine": common.cosine(m, toward),
               "sign_agreement": float(np.mean(np.sign(m[moving]) == np.sign(toward[moving]))),
               "per_dimension": {hg.layout.names[i]: float(m[i]) for i in np.nonzero(moving)[0]}}
        for name, m in means.items()}
  for name, value in out["cosine"].items():
    print(f"cosine {name:<20} {value:+.3f}")
  for name, value in out["cross_key_cosine"].items():
    print(f"cross-key cosine {name:<10} {value:+.3f}")
  for name, entry in out.get("toward_beta_star", {}).items():
    print(f"toward beta* {name:<10} cosine {entry['cosine']:+.3f} "
          f"sign agreement {entry['sign_agreement']:.2f}")
  print(json.dumps(out))


if __name__ == "__main__":
  app.run(main)
