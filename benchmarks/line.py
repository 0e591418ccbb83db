"""Is the hybrid gradient's objective greedy? L along a line in beta, at several horizons.

The estimate descends L measured K inner steps after the data (one global
step). Whether data that lowers that L also trains a better network later is
the question behind the ambient overshoot (docs/results.md, "Moving only the
light"). This measures it directly, with no estimator in between:

  1. train `--warm_steps` plain steps at beta0 (the study's warm-up; seed `--seed`);
  2. from that network, for each value v on the line, train at beta(v) and
     record L after each horizon in `--horizons` global steps, repeated over
     `--repeats` key sequences. Every value uses the same keys, so differences
     between values are paired (common random numbers).

The line is one dimension (`--dimension`, v in its units, the rest of beta at
beta0) or, with `--toward=RUN`, the way a finished run moved: v is the fraction
of its move (final beta minus beta0, in its optimizer's coordinates; 0 is beta0,
1 its final beta).

`--from_run=RUN` branches from a run's checkpoint (`--from_step`, default its latest)
instead of a warm-up at beta0, so the line can be measured at a network whose
beta has moved: the task is built from RUN's config.json (`--config` is not
used), the `--dimension` line moves that dimension of the checkpoint's beta,
and a `--toward` line still starts at beta0 (fraction 0).

Horizon 1 is the estimator's own objective (raw weights after K inner steps).
If L there falls with v while L at the long horizons rises, the objective is
greedy in that dimension; if both fall, the overshoot is not a horizon effect.

  python -m benchmarks.line --config=configs/study.py:cpu_trust_cheap \\
      --config.base.data.dir=/path/to/MIT-Berkeley/train \\
      --dimension=ambient_mean --values=0.05,0.15,0.25,0.35,0.45 --horizons=1,5,25,100
  python -m benchmarks.line ... --toward=~/hgrad-runs/study_real_cheap/hybrid/seed0 --values=0,0.5,1
  python -m benchmarks.line --from_run=~/hgrad-runs/study_real_cheap/hybrid/seed0 \\
      --toward=~/hgrad-runs/study_real_cheap/hybrid/seed0 --values=0,1

Prints a table and, as its last line, JSON (`--out` also writes it to a file).
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
from hgrad.core import determinism
from hgrad.core.checkpoint import Checkpointer
from hgrad.tasks import evaluate

_FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "mbii.py"),
    "Task config, or a study config (its `base` is used).")
_DIMENSION = flags.DEFINE_string("dimension", "ambient_mean", "The beta dimension to move.")
_TOWARD = script.DEFINE_path("toward", "", "A finished run: the line is its move from beta0 "
                              "(--values are fractions of it) instead of --dimension.")
_VALUES = flags.DEFINE_list("values", ["0.05", "0.15", "0.25", "0.35", "0.45"],
                            "Points on the line: the dimension's values in the layout's units "
                            "(with --toward: fractions of the run's move).")
_HORIZONS = flags.DEFINE_list("horizons", ["1", "5", "25", "100"],
                              "Global steps (of K inner steps each) after which L is recorded "
                              "(1 is always included).")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Key sequences per value (shared by all values).")
_SHORT_REPEATS = flags.DEFINE_integer(
    "short_repeats", 8, "Extra key sequences for horizon 1 alone (cheap: one step each).")
_WARM = flags.DEFINE_integer("warm_steps", 200, "Plain steps at beta0 before branching.")
_SEED = flags.DEFINE_integer("seed", 0, "Network init and warm-up keys (the study's seed k).")
_FROM_RUN = script.DEFINE_path("from_run", "", "Branch from this run's checkpoint (its config, "
                                "seed and network) instead of warming up at beta0.")
_FROM_STEP = flags.DEFINE_integer("from_step", -1, "With --from_run: the checkpoint's step "
                                  "(-1: the latest).")
_OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")


def dimension_line(trainer, base: np.ndarray, name: str, values: list[float]) -> list[np.ndarray]:
  """Optimizer coordinates of `base` with `name` set to each value (each checked against the box)."""
  index = trainer.layout.index(name)      # an unknown name: an error that lists the layout's names
  low, high = trainer.layout.low[index], trainer.layout.high[index]
  points = []
  for value in values:
    if not low <= value <= high:
      raise ValueError(f"--values: {name}={value} is outside its box [{low:g}, {high:g}]")
    beta = np.array(base, np.float64)
    beta[index] = value
    points.append(np.asarray(trainer.layout.to_coords(beta, trainer.outer.coordinates)))
  return points


def run_line(trainer, u0: np.ndarray, run_dir: str, fractions: list[float]) -> list[np.ndarray]:
  """u0 plus each fraction of the run's move, in the box (the run must share layout and coordinates)."""
  move = common.load_move(run_dir)
  if move["names"] != trainer.layout.names or move["coordinates"] != trainer.outer.coordinates:
    raise ValueError(f"--toward={run_dir}: its layout or coordinates ({move['coordinates']}) "
                     f"differ from the config's ({trainer.layout.name}, {trainer.outer.coordinates})")
  return [np.clip(u0 + t * move["move"], 0.0, 1.0) for t in fractions]


def branch(trainer, state, key, horizons: list[int]) -> dict:
  """L of the raw weights (the estimator's) and of the delivered ones after each horizon."""
  out = {"raw": [], "delivered": []}
  for step in range(1, max(horizons) + 1):
    state, _ = trainer.train_step(state, key)
    if step in horizons:
      out["raw"].append(float(trainer.evaluate(state.inner.params)))
      out["delivered"].append(float(trainer.evaluate(trainer.eval_params(state))))
  return out


def paired_row(values_by_key: np.ndarray, reference: int) -> tuple[np.ndarray, np.ndarray]:
  """Mean over keys of L - L(reference value) per value, and its standard error."""
  diff = values_by_key - values_by_key[:, reference:reference + 1]
  n = diff.shape[0]
  se = diff.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.full(diff.shape[1], np.nan)
  return diff.mean(axis=0), se


def main():
  determinism.require_deterministic_gpu()   # the points are paired by their keys
  from_run = os.path.expanduser(_FROM_RUN.value)
  if from_run:
    if _FLAGS["warm_steps"].present or _FLAGS["seed"].present:
      raise ValueError("--from_run takes the run's network and seed: drop --warm_steps and --seed")
    config, task_module = common.task_config(evaluate.load_config(from_run))
  else:
    config, task_module = common.task_config(_CONFIG.value)
    config.seed = _SEED.value
  task, _ = task_module.build(config)
  trainer = task.trainer
  values = [float(v) for v in _VALUES.value]
  horizons = sorted({int(h) for h in _HORIZONS.value} | {1})   # 1: the estimator's objective
  if not values or min(horizons) < 1 or _REPEATS.value < 1 or _SHORT_REPEATS.value < 0:
    raise ValueError("need at least one value, horizons >= 1, --repeats >= 1 and "
                     "--short_repeats >= 0")
  start = time.perf_counter()
  state = trainer.init(task.beta0, task.params0)
  u_beta0 = np.asarray(state.u)
  if from_run:                       # the checkpoint's network and beta
    checkpointer = Checkpointer(from_run)   # an unknown step: an error that lists the saved ones
    try:
      state, _ = checkpointer.restore(state, None if _FROM_STEP.value < 0 else _FROM_STEP.value)
    finally:
      checkpointer.close()
    origin = f"{from_run} at step {int(state.step)}"
    base = np.asarray(trainer.layout.from_coords(np.asarray(state.u, np.float64), trainer.outer.coordinates))
  else:                              # beta0 exactly, not its float32 round trip
    origin = f"{_WARM.value} warm-up steps at beta0"
    base = np.asarray(task.beta0, np.float64)
  # Bad input fails here, not after the warm-up.
  if _TOWARD.value:
    line = f"fraction of {_TOWARD.value}'s move"
    points = run_line(trainer, u_beta0, os.path.expanduser(_TOWARD.value), values)
    base_value = 0.0                  # fraction 0 is beta0, wherever the network was trained
  else:
    line = _DIMENSION.value
    points = dimension_line(trainer, base, _DIMENSION.value, values)
    base_value = float(base[trainer.layout.index(_DIMENSION.value)])
  reference = int(np.argmin(np.abs(np.asarray(values) - base_value)))
  warm_key = jax.random.key(config.seed)
  for _ in range(0 if from_run else _WARM.value):   # keys: fold_in(key(seed), step) in the step
    state, _ = trainer.train_step(state, warm_key)
  warm_s = time.perf_counter() - start
  # L[kind][horizon][repeat][value]
  long_l = {kind: np.zeros((len(horizons), _REPEATS.value, len(values)))
            for kind in ("raw", "delivered")}
  short_l = np.zeros((_REPEATS.value + _SHORT_REPEATS.value, len(values)))
  for r in range(_REPEATS.value + _SHORT_REPEATS.value):
    key = jax.random.key(10_000 + r)
    for j, u in enumerate(points):
      moved = state._replace(u=jax.numpy.asarray(u, jax.numpy.float32))
      if r < _REPEATS.value:
        result = branch(trainer, moved, key, horizons)
        for kind in long_l:
          long_l[kind][:, r, j] = result[kind]
        short_l[r, j] = result["raw"][0]
      else:
        short_l[r, j] = branch(trainer, moved, key, [1])["raw"][0]
  task.trainer.generator.close()
  out = {"line": line, "values": values, "base_value": base_value,
         "reference_value": values[reference], "from": origin,
         "warm_steps": 0 if from_run else _WARM.value, "seed": int(config.seed),
         "inner_steps": trainer.inner.steps, "horizons": horizons, "repeats": _REPEATS.value,
         "horizon1_keys": short_l.shape[0], "warm_s": round(warm_s, 1),
         "seconds": round(time.perf_counter() - start, 1)}
  mean, se = paired_row(short_l, reference)
  out["horizon1"] = {"L": short_l.mean(axis=0).tolist(), "minus_reference": mean.tolist(),
                     "se": se.tolist()}
  out["long"] = {}
  for kind, by_horizon in long_l.items():
    out["long"][kind] = {}
    for h, horizon in enumerate(horizons):
      mean_h, se_h = paired_row(by_horizon[h], reference)
      out["long"][kind][str(horizon)] = {"L": by_horizon[h].mean(axis=0).tolist(),
                                         "minus_reference": mean_h.tolist(), "se": se_h.tolist()}
  header = " ".join(f"{v:>14.3g}" for v in values)
  print(f"{line} (from {origin}: {base_value:.3g}); L minus L at {values[reference]:.3g}, "
        f"mean +- s.e. over paired keys; K = {trainer.inner.steps} inner steps per global step")
  print(f"{'':<26}{header}")

  def row(label, entry):
    cells = " ".join(f"{m:+7.2f} +-{s:4.2f}" for m, s in zip(entry["minus_reference"], entry["se"]))
    print(f"{label:<26}{cells}")
  row(f"h=1 raw ({short_l.shape[0]} keys)", out["horizon1"])
  for kind in ("raw", "delivered"):
    for horizon in horizons:
      row(f"h={horizon} {kind} ({_REPEATS.value} keys)", out["long"][kind][str(horizon)])
  print(json.dumps(out))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  script.run(main)
