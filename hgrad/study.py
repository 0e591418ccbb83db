"""Does optimizing beta help? Arms x paired seeds, with a fixed-beta yardstick and a placebo.

Arms (each an ordinary resumable run under WORKDIR/<arm>/seed<k>; a finished
run is read back, not redone, so the same command continues a study across
sessions):

  hybrid       the configured hybrid-gradient run
  placebo      the same pipeline, each estimate replaced by a random vector of
               its norm (`hgrad.estimators.placebo`): beta moves as
               much, without the gradient's information
  fixed_steps  beta frozen at beta0, the same steps (the paper's Table 1 comparison)
  fixed_time   beta frozen at beta0, as many plain steps as fit in the hybrid
               run's measured time (its median plain-step time): what a user
               gets for the same wall time. The budget is in steps, not a
               clock, so a run on a busy machine still gets all of them. Runs
               that share cores time badly: `config.timing_run` names one
               hybrid run measured alone whose budget every seed then gets,
               or `config.fixed_time_steps` writes that budget as a number
  retrain      a network trained from scratch at the hybrid run's final beta,
               fixed_steps' schedule: is the learned beta better data?
  oracle       beta frozen at the synthetic target's hidden beta*, fixed_steps'
               schedule: the most any beta could give (synthetic testbed only)
  random_search, evolution
               the paper's baselines (Basic Random Search V1, Shape Evolution;
               `hgrad.baselines`, their settings in config.base.random_search /
               .evolution) on the hybrid run's schedule (Table 2)
  hybrid_NAME  hybrid gradient with `config.variants.NAME` merged into the base
               config (nested, e.g. {"outer": {"optimizer": "adam"}})

Pairing: every arm of seed k uses config.seed = k, i.e. the same network
init and, at every step, the same render key (`fold_in(key, step)`); where
two arms are at the same beta they render the same samples. On a GPU that
needs XLA's deterministic ops (`config.deterministic`, hgrad.core.determinism).

Writes study.json, study.md (per arm mean ± standard error of the final L
and of the mean of the last `last_k` evaluations; paired differences to the
reference arms with 95% t and bootstrap intervals) and study.png.
"""

from __future__ import annotations

import copy
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
from hgrad.core import determinism  # noqa: E402
from hgrad.core import loop  # noqa: E402
from hgrad.tasks import registry  # noqa: E402

ARMS = ("hybrid", "placebo", "fixed_steps", "fixed_time", "retrain", "oracle", "random_search",
        "evolution")
NEEDS_HYBRID = ("fixed_time", "retrain")
FROZEN = ("fixed_steps", "fixed_time", "retrain", "oracle")     # beta does not move
STARTS_ELSEWHERE = ("oracle", "retrain")                        # beta0 is not the config's
RUN_AS_METHOD = ("hybrid", "placebo", "random_search", "evolution")   # compare's methods by name
LABELS = {**{arm: compare.LABELS[arm] for arm in RUN_AS_METHOD},
          "fixed_steps": "fixed beta0, equal steps", "fixed_time": "fixed beta0, equal wall time",
          "retrain": "retrained at the hybrid run's final beta",
          "oracle": "fixed at the hidden beta* (synthetic only)"}


def _fixed_time_schedule(hybrid_dir: str) -> dict:
  """Plain steps that fit into the hybrid run's step time (`_plain_schedule`).

  No clock stop: on a machine shared with other runs a stop at the hybrid's
  time would cut a fixed_time run short, its learning rate not yet decayed; the
  time is measured and spent as steps. Each step of the hybrid
  run is priced at the median wall time of its kind (outer or plain), so that
  a stretch of steps slowed by other work on the machine does not buy the
  fixed run extra steps; the ratio of an outer to a plain step is what counts.
  """
  rows = loop.read_metrics(hybrid_dir)[1:]            # the first step compiles (both runs pay it)
  plain = float(np.median([r["wall_s"] for r in rows if r["phase"] != "outer"]))
  outer = [r["wall_s"] for r in rows if r["phase"] == "outer"]
  step_time = plain * (len(rows) - len(outer)) + float(np.median(outer) if outer else 0.0) * len(outer)
  return _plain_schedule(1 + int(round(step_time / plain)))


def _plain_schedule(steps: int) -> dict:
  """`steps` plain steps at beta0: the fixed_time arm's schedule."""
  return {"warmup_steps": steps, "outer_steps": 0, "train_steps_per_outer": 0, "final_steps": 0,
          "time_budget_s": 0.0}


def variant(config, arm: str) -> dict | None:
  """The overrides of a `hybrid_NAME` arm (None for the built-in arms)."""
  if arm in ARMS:
    return None
  name = arm[len("hybrid_"):] if arm.startswith("hybrid_") else ""
  if not name or name not in config.get("variants", {}):
    raise ValueError(f"unknown arm {arm!r}; choose from {ARMS} or hybrid_NAME with NAME in "
                     f"config.variants {sorted(config.get('variants', {}))}")
  return config.variants[name]


def _merge(base, overrides, where: str) -> None:
  """Writes nested `overrides` into `base`; a field the base lacks is an error that names it."""
  for key, value in overrides.items():
    if key not in base:
      raise ValueError(f"variant of arm {where!r}: the base config has no field {key!r}")
    if hasattr(value, "items"):
      _merge(base[key], value, where)
    else:
      base[key] = value


def _oracle_beta(config) -> list[float]:
  """beta* of the task's synthetic target; an error where there is none (real data configured)."""
  beta_star = registry.known_beta_star(config.base)
  if beta_star is None:
    raise ValueError(f"arm 'oracle' needs a synthetic target with a known beta*: task "
                     f"{config.task!r} has none with this config (is a dataset configured?)")
  return [float(b) for b in beta_star]


def label(arm: str, start: str = "beta0") -> str:
  """An arm's name in tables and figures ("hybrid_NAME": "hybrid gradient, NAME"); `start`
  names the beta the frozen arms hold where it is not the hand-set beta0 ("fixed at START")."""
  text = LABELS.get(arm) or f"hybrid gradient, {arm[len('hybrid_'):]}"
  return text if start == "beta0" else text.replace("fixed beta0", f"fixed at {start}")


def _budget_steps(config) -> int:
  """config.fixed_time_steps, checked: 0 (the budget comes from a hybrid run) or a step count."""
  steps = config.get("fixed_time_steps", 0) or 0
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
    raise ValueError(f"config.fixed_time_steps must be a whole number of steps >= 0 "
                     f"(0: from a hybrid run), got {steps!r}")
  if steps and config.get("timing_run"):
    raise ValueError(f"config.fixed_time_steps={steps} and config.timing_run="
                     f"{config.timing_run!r} both give fixed_time's budget: set one")
  return steps


def run_arm(config, arm: str, seed: int, workdir: str) -> dict:
  """One (arm, seed) run; retrain needs the same seed's finished hybrid run, and so does
  fixed_time unless config.timing_run or config.fixed_time_steps gives its budget."""
  overrides = variant(config, arm)
  base = config.base
  if overrides is not None:
    base = copy.deepcopy(config.base)
    _merge(base, overrides, arm)
  run_dir = os.path.join(workdir, arm, f"seed{seed}")
  hybrid_dir = os.path.join(workdir, "hybrid", f"seed{seed}")
  beta0, schedule = None, None
  method = "hybrid" if overrides is not None else arm if arm in RUN_AS_METHOD else "fixed"
  budget_steps = _budget_steps(config)
  if arm == "fixed_time" and budget_steps:
    schedule = _plain_schedule(budget_steps)
  elif arm in NEEDS_HYBRID:
    timing_run = os.path.expanduser(config.get("timing_run", "") or "")
    if arm == "fixed_time" and timing_run:      # every seed's budget from one run timed alone
      hybrid_dir = timing_run
      needed = f"its time budget from config.timing_run: no finished hybrid run in {hybrid_dir}"
    else:
      needed = f"the finished hybrid run of seed {seed} in {hybrid_dir}"
    hybrid = loop.finished_results(hybrid_dir)
    if hybrid is None:
      raise FileNotFoundError(f"arm {arm!r} needs {needed}")
    if arm == "retrain":
      beta0 = list(hybrid["beta"].values())
    else:
      schedule = _fixed_time_schedule(hybrid_dir)
  if arm == "oracle":
    beta0 = _oracle_beta(config)
  logging.info("study: %s, seed %d -> %s", arm, seed, run_dir)
  return compare.run_method(config.task, base, method, seed, run_dir, beta0, schedule)


def score(results: dict, workdir: str, last_k: int) -> dict:
  """The numbers a study compares for one run."""
  split = compare.split_of(results)
  values = [r["L"] for r in loop.read_metrics(workdir) if "L" in r]
  image_mean = results[split]["image_mean"]
  out = {"final_L": image_mean["mae" if "mae" in image_mean else "rmse_log"],
         "image_mean": image_mean,
         "last_k_L": float(np.mean(values[-last_k:])), "steps": results["steps"],
         "elapsed_s": results["elapsed_s"], "L_noise": evaluation_noise(values[-2 * last_k:])}
  if "synthetic" in results:
    out["unit_distance_final"] = results["synthetic"]["unit_distance_final"]
    out["unit_distance_beta0"] = results["synthetic"]["unit_distance_beta0"]
    out["per_dimension"] = progress_toward(results["beta0"], results["beta"],
                                           results["synthetic"]["beta_star"])
  return out


def evaluation_noise(values: list[float]) -> float:
  """How much L moves between successive evaluations: std of the differences / sqrt 2.

  Differencing removes the slow trend of training, so on a flat stretch this
  is the standard deviation of one evaluation around it (nan for < 3 values).
  """
  if len(values) < 3:
    return float("nan")
  return float(np.std(np.diff(values), ddof=1) / np.sqrt(2.0))


def progress_toward(beta0: dict, beta: dict, beta_star: dict) -> dict:
  """Per dimension, in units of beta0's distance to beta*: 1 = reached, 0 = no progress, < 0 =
  moved away; dimensions where beta* equals beta0 report how far they drifted instead."""
  out = {}
  for name, target in beta_star.items():
    start, end = beta0[name], beta[name]
    if abs(target - start) > 1e-6:
      out[name] = {"progress": (abs(target - start) - abs(target - end)) / abs(target - start)}
    else:
      out[name] = {"drift": end - start}
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
             bootstrap95=[float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
             seeds_to_resolve=seeds_to_resolve(out["mean"], float(diff.std(ddof=1))))
  return out


MOST_SEEDS = 1000   # seeds_to_resolve searches no further


def seeds_to_resolve(mean: float, sd: float, *, power: float = 0.8,
                     most: int = MOST_SEEDS) -> int | None:
  """Paired seeds at which a true difference `mean` with spread `sd` gets a 95% t interval
  that excludes 0 with probability `power` (two-sided paired t-test; noncentral t).

  For planning the next runs: with the observed mean and s.d. plugged in it is
  optimistic when the observed mean is lucky. None: more than `most` (or no difference).
  """
  if sd == 0.0:
    return 2 if mean != 0.0 else None
  effect = abs(mean) / sd
  for n in range(2, most + 1):
    critical = scipy.stats.t.ppf(0.975, n - 1)
    noncentrality = effect * np.sqrt(n)
    achieved = (scipy.stats.nct.sf(critical, n - 1, noncentrality)
                + scipy.stats.nct.cdf(-critical, n - 1, noncentrality))
    if achieved >= power:
      return n
  return None


def _mean_se(values: list[float]) -> str:
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return f"{values.mean():.2f}"
  return f"{values.mean():.2f} ± {values.std(ddof=1) / np.sqrt(len(values)):.2f}"


def table(summary: dict) -> str:
  """study.md: per arm mean ± s.e. (and distance to beta* on a synthetic target), progress
  per dimension, and the paired differences with their intervals."""
  arms, seeds, start = summary["arms"], summary["seeds"], summary.get("start", "beta0")
  synthetic = any("unit_distance_final" in s for a in arms.values() for s in a["scores"])
  lines = [f"Study `{summary['name']}` ({summary['task']}, {summary['split']}): mean ± "
           f"standard error over the seeds listed (of {seeds}); L = {summary['metric']}; "
           f"last-{summary['last_k']} = mean of the last evaluations; eval noise = std of "
           f"successive differences of the last {2 * summary['last_k']} evaluations / sqrt 2.", "",
           "| arm | seeds | final L | last-k L | eval noise | steps | wall s |" +
           (" distance to beta* |" if synthetic else ""),
           "|---|---|---|---|---|---|---|" + ("---|" if synthetic else "")]
  for arm, entry in arms.items():
    s = entry["scores"]
    row = (f"| {label(arm, start)} | {','.join(map(str, entry['seeds']))} | "
           f"{_mean_se([x['final_L'] for x in s])} | "
           f"{_mean_se([x['last_k_L'] for x in s])} | "
           f"{_mean_se([x.get('L_noise', np.nan) for x in s])} | {_mean_se([x['steps'] for x in s])} | "
           f"{_mean_se([x['elapsed_s'] for x in s])} |")
    if synthetic:
      row += f" {_mean_se([x.get('unit_distance_final', np.nan) for x in s])} |"
    lines.append(row)
  moving = [arm for arm in arms if arm not in FROZEN]
  if synthetic and moving and summary["moved_dimensions"]:    # else no arm moves beta
    lines += ["", "Per dimension where beta* differs from beta0: mean over seeds of the progress "
              "toward beta* (1 = reached, 0 = none, < 0 = moved away).", "",
              "| arm | " + " | ".join(summary["moved_dimensions"]) + " |",
              "|---|" + "---|" * len(summary["moved_dimensions"])]
    for arm in moving:
      entry = arms[arm]
      cells = [np.mean([s["per_dimension"][n]["progress"] for s in entry["scores"]
                        if "per_dimension" in s]) for n in summary["moved_dimensions"]]
      lines.append(f"| {label(arm, start)} | " + " | ".join(f"{c:+.2f}" for c in cells) + " |")
  lines += ["", "Paired differences (arm − reference; negative = arm better), 95% intervals "
            "(at under ~10 seeds the bootstrap interval is too narrow: read the t interval). "
            "Seeds to resolve: paired seeds at which a difference of this mean and spread has a "
            "t interval that excludes 0 in 80% of studies (optimistic if this mean is lucky).", "",
            "| arm − reference | measure | mean | t 95% | bootstrap 95% | seeds to resolve | "
            "per seed |", "|---|---|---|---|---|---|---|"]
  for key, entry in summary["differences"].items():
    for measure, d in entry.items():
      t95 = "[{:.2f}, {:.2f}]".format(*d["t95"]) if "t95" in d else "—"
      boot = "[{:.2f}, {:.2f}]".format(*d["bootstrap95"]) if "bootstrap95" in d else "—"
      needed = "—" if "t95" not in d else d.get("seeds_to_resolve") or f"> {MOST_SEEDS}"
      lines.append(f"| {key} | {measure} | {d['mean']:+.2f} | {t95} | {boot} | {needed} | "
                   + ", ".join(f"{x:+.2f}" for x in d["diffs"]) + " |")
  return "\n".join(lines) + "\n"


def figure(curves: dict[str, list[dict]], path: str, start: str = "beta0") -> None:
  """L against steps, wall time and CPU time (the paper's Fig. 4 axes): per arm the mean over
  seeds and a ± se band; arms labelled as `label(arm, start)`."""
  fig, axes = plt.subplots(1, 3, figsize=(17, 4))
  for index, (arm, runs) in enumerate(curves.items()):
    for ax, axis in zip(axes, ("step", "wall", "cpu")):
      length = min(len(c["L"]) for c in runs)
      x = np.mean([c[axis][:length] for c in runs], axis=0)
      values = np.array([c["L"][:length] for c in runs])
      mean = values.mean(0)
      se = values.std(0, ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else 0 * mean
      ax.plot(x, mean, color=f"C{index}", label=label(arm, start), linewidth=1.2)
      ax.fill_between(x, mean - se, mean + se, color=f"C{index}", alpha=0.2)
  plots.finish(fig, axes, ("global step", "wall time (s)",
                           "CPU time (s, this process and the render workers)"),
               "validation L", path)


def check(config) -> None:
  """Refuses a study config that could not run whole, before any run starts.

  Raises:
    ValueError: an arm or seed listed twice, an unknown arm, an arm that needs
      the hybrid arm without it, or `last_k` below 1.
  """
  for field in ("arms", "seeds"):
    repeated = sorted({x for x in config[field] if list(config[field]).count(x) > 1}, key=str)
    if repeated:   # one pair per (arm, seed): a repeat would run or score it twice
      raise ValueError(f"config.{field} lists {repeated} more than once: {tuple(config[field])}")
  for arm in config.arms:
    variant(config, arm)
  needs_hybrid = (set(config.arms) & set(NEEDS_HYBRID)) - (
      {"fixed_time"} if _budget_steps(config) or config.get("timing_run") else set())
  if needs_hybrid and "hybrid" not in config.arms:
    raise ValueError(f"arms {sorted(needs_hybrid)} need the hybrid arm")
  if int(config.last_k) < 1:
    raise ValueError(f"config.last_k (the evaluations L is averaged over) must be >= 1, "
                     f"got {config.last_k}")


def run(config, workdir: str, *, report_only: bool = False) -> dict[str, Any]:
  """Every arm x seed (hybrid first, so the arms that need it find it), then the outputs.

  `report_only`: run nothing; summarize the runs that have finished (paired
  differences over the seeds both arms have).
  """
  check(config)
  if config.get("deterministic", True) and not report_only:
    determinism.require_deterministic_gpu()     # before anything starts JAX's backends
  if "oracle" in config.arms:
    _oracle_beta(config)                 # JAX finds beta*: after the flag
  os.makedirs(workdir, exist_ok=True)
  order = sorted(config.arms, key=lambda a: (a != "hybrid", a in NEEDS_HYBRID,
                                             ARMS.index(a) if a in ARMS else len(ARMS)))
  scores: dict[str, dict[int, dict]] = {arm: {} for arm in config.arms}
  curves: dict[str, list[dict]] = {arm: [] for arm in config.arms}
  scored_on = metric = None
  for seed in config.seeds:                 # seed by seed: an interrupted study has whole pairs
    for arm in order:
      run_dir = os.path.join(workdir, arm, f"seed{seed}")
      if report_only:
        results = loop.finished_results(run_dir)
        if results is None:
          continue
      else:
        results = run_arm(config, arm, seed, workdir)
      scores[arm][seed] = score(results, run_dir, config.last_k)
      curves[arm].append(compare.curve(run_dir))
      split = compare.split_of(results)
      metric = "MAE (°)" if "mae" in results[split]["image_mean"] else "RMSE log"
      scored_on = "synthetic target" if "synthetic" in results else f"{split} split"
  arms = {arm: {"seeds": sorted(s), "scores": [s[k] for k in sorted(s)]}
          for arm, s in scores.items() if s}
  if not arms:
    raise FileNotFoundError(f"no finished run under {workdir}")
  differences: dict[str, dict] = {}
  references = list(config.references)
  for arm in arms:
    for reference in references:
      common_seeds = sorted(set(scores[arm]) & set(scores.get(reference, {})))
      # Each pair once: an arm against every reference, references against later ones.
      if arm == reference or not common_seeds or (
          arm in references and references.index(arm) > references.index(reference)):
        continue
      differences[f"{arm} − {reference}"] = {
          measure: paired([scores[arm][k][measure] for k in common_seeds],
                          [scores[reference][k][measure] for k in common_seeds])
          for measure in ("final_L", "last_k_L")}
  # Where beta* differs from beta0, read off an arm that starts at beta0.
  first = next((entry["scores"][0].get("per_dimension", {}) for arm, entry in arms.items()
                if arm not in STARTS_ELSEWHERE), {})
  summary = {"moved_dimensions": [n for n, v in first.items() if "progress" in v],
             "name": config.name, "workdir": workdir, "task": config.task, "split": scored_on, "metric": metric,
             "seeds": list(config.seeds), "last_k": config.last_k, "arms": arms,
             "start": config.get("start_name", "beta0"),
             "differences": differences}
  with open(os.path.join(workdir, "study.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, "study.md"), "w") as f:
    f.write(table(summary))
  figure({arm: c for arm, c in curves.items() if c}, os.path.join(workdir, "study.png"),
         summary["start"])
  return summary
