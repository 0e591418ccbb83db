"""Does optimizing beta help? Arms x paired seeds, with a fixed-beta yardstick and a placebo.

Arms (each an ordinary resumable run under WORKDIR/<arm>/seed<k>; a finished
run is read back, not redone, so the same command continues a study across
sessions):

  hybrid       the configured hybrid-gradient run
  placebo      the same pipeline, each estimate replaced by a random vector of
               its norm (`estimator.placebo_value_and_grad`): beta moves as
               much, without the gradient's information
  fixed_steps  beta frozen at beta0, the same steps (the paper's Table 1 comparison)
  fixed_time   beta frozen at beta0, as many plain steps as fit in the hybrid
               run's measured time (its mean plain-step time), with that time
               as a hard stop: what a user gets for the same wall time
  retrain      a network trained from scratch at the hybrid run's final beta,
               fixed_steps' schedule: is the learned beta better data?

Pairing: every arm of seed k uses config.seed = k, i.e. the same network
init and, at every step, the same render key (`fold_in(key, step)`); where
two arms are at the same beta they render the same samples.

Writes study.json, study.md (per arm mean ± standard error of the final L
and of the mean of the last `last_k` evaluations; paired differences to the
reference arms with 95% t and bootstrap intervals) and study.png.
"""

from __future__ import annotations

import json
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
from absl import logging  # noqa: E402

from hgrad import plots  # noqa: E402
from hgrad.baselines import compare  # noqa: E402
from hgrad.core import loop  # noqa: E402

ARMS = ("hybrid", "placebo", "fixed_steps", "fixed_time", "retrain")
NEEDS_HYBRID = ("fixed_time", "retrain")
LABELS = {"hybrid": "hybrid gradient", "placebo": "placebo (random direction, same norm)",
          "fixed_steps": "fixed beta0, equal steps", "fixed_time": "fixed beta0, equal wall time",
          "retrain": "retrained at the hybrid run's final beta"}


def _fixed_time_schedule(hybrid_dir: str) -> dict:
  """Plain steps that fit into the hybrid run's step time, and that time as a hard stop."""
  rows = loop.read_metrics(hybrid_dir)
  plain = [r["wall_s"] for r in rows[1:] if r["phase"] != "outer"]   # the first step compiles
  elapsed = rows[-1]["elapsed_s"]
  steps = int(round(elapsed / float(np.median(plain))))
  return {"warmup_steps": steps, "outer_steps": 0, "train_steps_per_outer": 0, "final_steps": 0,
          "time_budget_s": float(elapsed)}


def run_arm(config, arm: str, seed: int, workdir: str) -> dict:
  """One (arm, seed) run; the hybrid run of the same seed must exist for fixed_time / retrain."""
  if arm not in ARMS:
    raise ValueError(f"unknown arm {arm!r}; choose from {ARMS}")
  run_dir = os.path.join(workdir, arm, f"seed{seed}")
  hybrid_dir = os.path.join(workdir, "hybrid", f"seed{seed}")
  beta0, overrides, method = None, None, {"hybrid": "hybrid", "placebo": "placebo"}.get(arm, "fixed")
  if arm in NEEDS_HYBRID:
    with open(os.path.join(hybrid_dir, "results.json")) as f:
      hybrid = json.load(f)
    if arm == "retrain":
      beta0 = list(hybrid["beta"].values())
    else:
      overrides = _fixed_time_schedule(hybrid_dir)
  logging.info("study: %s, seed %d -> %s", arm, seed, run_dir)
  return compare.run_method(config.task, config.base, method, seed, run_dir, beta0, overrides)


def score(results: dict, workdir: str, last_k: int) -> dict:
  """The numbers a study compares for one run."""
  split = compare.split_of(results)
  values = [r["L"] for r in loop.read_metrics(workdir) if "L" in r]
  out = {"final_L": results[split]["image_mean"]["mae" if "mae" in results[split]["image_mean"]
                                                  else "rmse_log"],
         "last_k_L": float(np.mean(values[-last_k:])), "steps": results["steps"],
         "elapsed_s": results["elapsed_s"]}
  if "synthetic" in results:
    out["unit_distance_final"] = results["synthetic"]["unit_distance_final"]
    out["unit_distance_beta0"] = results["synthetic"]["unit_distance_beta0"]
  return out


def paired(a: list[float], b: list[float], *, resamples: int = 10_000, seed: int = 0) -> dict:
  """Mean of a - b over paired seeds, its 95% t interval and a 95% bootstrap interval."""
  diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  n = len(diff)
  out = {"n": n, "mean": float(diff.mean()), "diffs": diff.tolist()}
  if n < 2:
    return out
  se = diff.std(ddof=1) / np.sqrt(n)
  half = float(scipy.stats.t.ppf(0.975, n - 1) * se)
  means = np.random.default_rng(seed).choice(diff, (resamples, n)).mean(axis=1)
  out.update(se=float(se), t95=[out["mean"] - half, out["mean"] + half],
             bootstrap95=[float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))])
  return out


def _mean_se(values: list[float]) -> str:
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return f"{values.mean():.2f}"
  return f"{values.mean():.2f} ± {values.std(ddof=1) / np.sqrt(len(values)):.2f}"


def table(summary: dict) -> str:
  arms, seeds = summary["arms"], summary["seeds"]
  synthetic = any("unit_distance_final" in s for a in arms.values() for s in a["scores"])
  lines = [f"Study `{summary['name']}` ({summary['task']}, {summary['split']} split): mean ± "
           f"standard error over seeds {seeds}; L = {summary['metric']}; last-{summary['last_k']} "
           "= mean of the last evaluations.", "",
           "| arm | final L | last-k L | steps | wall s |" + (" distance to beta* |" if synthetic
                                                             else ""),
           "|---|---|---|---|---|" + ("---|" if synthetic else "")]
  for arm, entry in arms.items():
    s = entry["scores"]
    row = (f"| {LABELS[arm]} | {_mean_se([x['final_L'] for x in s])} | "
           f"{_mean_se([x['last_k_L'] for x in s])} | {_mean_se([x['steps'] for x in s])} | "
           f"{_mean_se([x['elapsed_s'] for x in s])} |")
    if synthetic:
      row += f" {_mean_se([x.get('unit_distance_final', np.nan) for x in s])} |"
    lines.append(row)
  lines += ["", "Paired differences (arm − reference; negative = arm better), 95% intervals:", "",
            "| arm − reference | measure | mean | t 95% | bootstrap 95% | per seed |",
            "|---|---|---|---|---|---|"]
  for key, entry in summary["differences"].items():
    for measure, d in entry.items():
      t95 = "[{:.2f}, {:.2f}]".format(*d["t95"]) if "t95" in d else "—"
      boot = "[{:.2f}, {:.2f}]".format(*d["bootstrap95"]) if "bootstrap95" in d else "—"
      lines.append(f"| {key} | {measure} | {d['mean']:+.2f} | {t95} | {boot} | "
                   + ", ".join(f"{x:+.2f}" for x in d["diffs"]) + " |")
  return "\n".join(lines) + "\n"


def figure(curves: dict[str, list[dict]], path: str) -> None:
  """L against steps and against wall time: per arm the mean over seeds and a ± se band."""
  fig, axes = plt.subplots(1, 2, figsize=(12, 4))
  for index, (arm, runs) in enumerate(curves.items()):
    for ax, axis in zip(axes, ("step", "wall")):
      length = min(len(c["L"]) for c in runs)
      x = np.mean([c[axis][:length] for c in runs], axis=0)
      values = np.array([c["L"][:length] for c in runs])
      mean = values.mean(0)
      se = values.std(0, ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else 0 * mean
      ax.plot(x, mean, color=f"C{index}", label=LABELS[arm], linewidth=1.2)
      ax.fill_between(x, mean - se, mean + se, color=f"C{index}", alpha=0.2)
  plots.finish(fig, axes, ("global step", "wall time (s)"), "validation L", path)


def run(config, workdir: str) -> dict[str, Any]:
  """Every arm x seed (hybrid first, so the arms that need it find it), then the outputs."""
  unknown = sorted(set(config.arms) - set(ARMS))
  if unknown:
    raise ValueError(f"unknown study arm(s) {unknown}; choose from {ARMS}")
  if set(config.arms) & set(NEEDS_HYBRID) and "hybrid" not in config.arms:
    raise ValueError(f"arms {sorted(set(config.arms) & set(NEEDS_HYBRID))} need the hybrid arm")
  os.makedirs(workdir, exist_ok=True)
  order = sorted(config.arms, key=lambda a: (a != "hybrid", a in NEEDS_HYBRID, ARMS.index(a)))
  arms: dict[str, dict] = {arm: {"scores": []} for arm in config.arms}
  curves: dict[str, list[dict]] = {arm: [] for arm in config.arms}
  split = metric = None
  for seed in config.seeds:                 # seed by seed: an interrupted study has whole pairs
    for arm in order:
      results = run_arm(config, arm, seed, workdir)
      run_dir = os.path.join(workdir, arm, f"seed{seed}")
      arms[arm]["scores"].append(score(results, run_dir, config.last_k))
      curves[arm].append(compare.curve(run_dir))
      split = compare.split_of(results)
      metric = "MAE (°)" if "mae" in results[split]["image_mean"] else "RMSE log"
  differences: dict[str, dict] = {}
  for arm in config.arms:
    for reference in config.references:
      if arm == reference or reference not in arms:
        continue
      a, b = arms[arm]["scores"], arms[reference]["scores"]
      differences[f"{arm} − {reference}"] = {
          measure: paired([x[measure] for x in a], [x[measure] for x in b])
          for measure in ("final_L", "last_k_L")}
  summary = {"name": config.name, "task": config.task, "split": split, "metric": metric,
             "seeds": list(config.seeds), "last_k": config.last_k, "arms": arms,
             "differences": differences}
  with open(os.path.join(workdir, "study.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, "study.md"), "w") as f:
    f.write(table(summary))
  figure(curves, os.path.join(workdir, "study.png"))
  return summary
