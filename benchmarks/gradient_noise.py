"""Where the noise of the hybrid-gradient estimate comes from, on any registered task.

For a trained network (a run's latest checkpoint) and a fixed beta, draws
`--keys` independent outer-step sample sets, each with m = `--num_perturbations`
antithetic directions, and compares:

  halves     cosine of the estimates from the first and the second half of the
             directions on the *same* samples: low means projection noise
             (too few directions m for dim(beta));
  cross_key  mean cosine between estimates on *different* samples: the part of
             the gradient that the next outer step would agree with;
  |s| tail   max |s_j| / median |s_j|: a few huge directional terms mean that
             discrete choices flipping under beta +- delta dominate.

Each comparison is made for directions over all of beta, over its discrete
rule weights and probabilities only (the layout's `kind`), and over its
continuous dimensions only; the estimate for a block is unbiased for that
block of the gradient. A block may also be one dimension by name
(`--blocks=all,p_expand`): directions along it alone, so a term s_j is exactly
0 when the data on the two sides of the perturbation are identical (a
discrete dimension whose flips never happen); `zero share` is that share of
the terms. Such a block needs only m = 2 (its directions are +-sigma along
the dimension, on one sample set per key): spend the budget on `--keys`.
`--dimensions` names dimensions whose component of the estimate is reported
in every block that holds it: its mean over the keys, the standard error and
t = mean / s.e. (how consistently the estimate moves that dimension, in the
optimizer's coordinates). The task is the config's (`config.task`: mbii, nyu,
face).

  python -m benchmarks.gradient_noise --workdir=runs/cpu \\
      --config.data.dir=/path/to/MIT-Berkeley/train [--keys=4 --num_perturbations=24]
  python -m benchmarks.gradient_noise ... --directions=orthogonal --num_perturbations=58 --blocks=all
  python -m benchmarks.gradient_noise --config=configs/nyu.py:smoke --keys=2 --num_perturbations=2
  python -m benchmarks.gradient_noise --config=configs/table1.py:real --workdir=RUN \\
      --blocks=p_expand --dimensions=p_expand --keys=64 --num_perturbations=2

Prints a table and, as its last line, JSON with the numbers per block.
"""

import json
import os
import time

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from benchmarks import common
from experiments import script
from hgrad.core import estimator as estimators
from hgrad.core.checkpoint import Checkpointer
from hgrad.tasks import registry

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "mbii.py"),
    "Task config (its network and inner training must match the run's).")
_WORKDIR = script.DEFINE_path("workdir", None, "Run whose latest checkpoint gives the network "
                               "(empty: the untrained initial network).")
_AT = flags.DEFINE_enum("at", "beta0", ["beta0", "run"], "Estimate at beta0 or at the run's beta.")
_KEYS = flags.DEFINE_integer("keys", 4, "Independent sample sets.")
_M = flags.DEFINE_integer("num_perturbations", 24, "Directions per sample set (even).")
_DIRECTIONS = flags.DEFINE_enum("directions", "gaussian", ["gaussian", "orthogonal"],
                                "Direction draws (orthogonal: use m = 2 * dim(beta)).")
_BLOCKS = flags.DEFINE_list("blocks", ["all", "discrete", "continuous"],
                            "Blocks to measure: all, discrete, continuous or a dimension's name.")
_DIMENSIONS = flags.DEFINE_list("dimensions", [], "Dimensions whose component of the estimate "
                                "is reported (mean, s.e. and t over the keys) in each block.")


def block_stats(s_KxM: np.ndarray, deltas_KxMxD: np.ndarray, sigma: float
                ) -> tuple[dict, np.ndarray]:
  """Halves, cross-key and tail statistics of K sets of (s_j, delta_j), and the K estimates."""
  num_keys, m = s_KxM.shape
  combine = lambda s, d: np.asarray(estimators.combine(s, d, sigma))  # noqa: E731
  grads = np.stack([combine(s, d) for s, d in zip(s_KxM, deltas_KxMxD)])
  half = m // 2
  halves = [common.cosine(combine(s[:half], d[:half]), combine(s[half:], d[half:]))
            for s, d in zip(s_KxM, deltas_KxMxD)]
  cross = common.mean_cross_cosine(grads)
  abs_s = np.abs(s_KxM)
  median = float(np.median(abs_s))
  return {"halves_cosine": float(np.mean(halves)), "cross_key_cosine": cross,
          "grad_norm": float(np.mean(np.linalg.norm(grads, axis=1))),
          "mean_grad_norm": float(np.linalg.norm(grads.mean(0))),
          "s_median": median, "s_tail": float(abs_s.max() / median) if median > 0 else None,
          "zero_share": float(np.mean(s_KxM == 0))}, grads


def component(grads_KxD: np.ndarray, index: int) -> dict:
  """One dimension's component of K estimates: mean, standard error, t = mean / s.e."""
  values = grads_KxD[:, index]
  mean = float(values.mean())
  se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
  return {"mean": mean, "se": se, "t": mean / se if se > 0 else float("nan")}


def main():
  if _M.value < 2 or _M.value % 2:
    raise ValueError(f"--num_perturbations must be even and >= 2, got {_M.value}")
  config, task_module = common.task_config(_CONFIG.value)
  layout = registry.layout(config)
  kinds = ("all", "discrete", "continuous")
  unknown = sorted(set(_BLOCKS.value) - set(kinds) - set(layout.names))
  if unknown:
    raise ValueError(f"unknown --blocks {unknown}: use {', '.join(kinds)} or a dimension of "
                     f"the {layout.name} layout ({', '.join(layout.names)})")
  dimensions = [layout.index(name) for name in _DIMENSIONS.value]   # an unknown name: its error
  task, _ = task_module.build(config)
  trainer = task.trainer
  state = trainer.init(task.beta0, task.params0)
  if _WORKDIR.value:
    checkpointer = Checkpointer(_WORKDIR.value)
    state, _ = checkpointer.restore(state)
    checkpointer.close()
  u = trainer.init(task.beta0, task.params0).u if _AT.value == "beta0" else state.u
  sigma = trainer.outer.sigma
  discrete = layout.kind != ""            # rule weights and probabilities
  blocks = {"all": np.arange(layout.dim), "discrete": np.nonzero(discrete)[0],
            "continuous": np.nonzero(~discrete)[0],
            **{name: np.array([layout.index(name)]) for name in layout.names}}
  hybrid = estimators.hybrid(_M.value, sigma, _DIRECTIONS.value)

  def raw_terms(block: np.ndarray):
    """The estimate's terms with directions on one block of u's dimensions, the rest fixed."""
    @jax.jit
    def terms(key):
      _, s_m, deltas = hybrid.terms(
          lambda v, k: trainer.samples(u.at[block].set(v), k),
          trainer.problem.loss_of_data(state.inner), u[block], key, has_aux=True)
      return s_m, deltas
    return terms

  results = {}
  start = time.perf_counter()
  for name in _BLOCKS.value:
    block_terms = raw_terms(blocks[name])
    terms = [jax.device_get(block_terms(jax.random.key(1000 + k))) for k in range(_KEYS.value)]
    results[name], grads = block_stats(np.stack([t[0] for t in terms]),
                                       np.stack([t[1] for t in terms]), sigma)
    results[name]["dims"] = int(len(blocks[name]))
    results[name]["components"] = {
        layout.names[i]: component(grads, list(blocks[name]).index(i))
        for i in dimensions if i in blocks[name]}
  task.trainer.generator.close()
  print(f"{'block':<11} {'dims':>4} {'halves cos':>10} {'cross-key cos':>13} "
        f"{'|mean g|/mean|g|':>16} {'max|s|/med|s|':>13} {'zero share':>10}")
  for name, r in results.items():
    print(f"{name:<11} {r['dims']:>4} {r['halves_cosine']:>10.3f} {r['cross_key_cosine']:>13.3f} "
          f"{r['mean_grad_norm'] / max(r['grad_norm'], 1e-30):>16.3f} "
          f"{'-' if r['s_tail'] is None else format(r['s_tail'], '.1f'):>13} "
          f"{r['zero_share']:>10.3f}")
  print(f"(pure noise: cross-key cos ~ 0 and |mean g|/mean|g| ~ 1/sqrt(keys) = "
        f"{1 / np.sqrt(_KEYS.value):.3f})")
  for name, r in results.items():
    for dim, c in r["components"].items():
      print(f"{dim} in block {name}: mean {c['mean']:+.4g}, s.e. {c['se']:.3g}, t {c['t']:+.2f}")
  print(json.dumps({"num_perturbations": _M.value, "directions": _DIRECTIONS.value,
                    "keys": _KEYS.value, "sigma": sigma,
                    "at": _AT.value, "workdir": _WORKDIR.value, "blocks": results,
                    "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
  script.run(main)
