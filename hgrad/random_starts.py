"""Studies from random starts: the paper's Table 1 protocol, with pairs, controls and intervals.

The paper samples ten values of beta in advance, trains a network at each,
and starts hybrid gradient from the best, the median and the worst of them.
Here:

1. `num_betas` betas are drawn from the layout's prior
   (`ParamLayout.sample(prior_seed, num_betas)`, saved in `betas.json`);
2. a network is trained at each, beta frozen (`ranking/beta<i>`, seed
   `rank_seed`, the study's fixed-beta schedule), and the betas are ranked by
   the smoothed L that beta is optimized on (the mean of the last `last_k`
   evaluations; the paper ranked by test MAE, which here is held out); the
   median of an even number is the better of the two middle betas; the picks
   are saved in `picks.json`;
3. from each named start (best, median, worst) an ordinary study runs
   (`hgrad.study`: its arms x paired seeds, `from_<start>/`) with beta0 set to
   that start: hybrid, fixed at the start at equal steps and at equal wall
   time, the placebo, a network retrained at hybrid's final beta; the ranking
   run of that start is the study's `fixed_steps` run of seed `rank_seed` (the
   same run: it is linked, not redone);
4. fixed beta0 (the layout's default, and beta* on the synthetic testbed) is a
   reference row (`beta0/`);
5. Table 2 and Fig. 4: the baselines (`table2_arms`, e.g. Basic Random
   Search and Shape Evolution) join the studies of `table2_starts`; Fig. 4 is
   each start's `study.png` (L against steps, wall time and CPU time).

Every run resumes, and a finished one is read back, so the same command
continues the protocol where it stopped. Writes `table1.md` and
`table1.json`: the ranking, the paper's columns per start and arm (mean over
seeds), the paired differences with 95% t intervals, and the time each
method took to reach fixed beta_best's L.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import numpy as np
from absl import logging

from hgrad import study
from hgrad.baselines import compare
from hgrad.core import determinism
from hgrad.tasks import registry

STARTS = ("best", "median", "worst")
BETAS_FILE = "betas.json"
PICKS_FILE = "picks.json"


def draw(config) -> np.ndarray:
  """The protocol's random betas: `num_betas` draws of the layout's prior at `prior_seed`."""
  return registry.layout(config.base).sample(int(config.table1.prior_seed),
                                             int(config.table1.num_betas))


def _check(config) -> None:
  t1 = config.table1
  if t1.num_betas < len(STARTS):
    raise ValueError(f"config.table1.num_betas must be >= {len(STARTS)} (the best, the median "
                     f"and the worst must be different betas), got {t1.num_betas}")
  for field in ("starts", "table2_starts"):
    unknown = [s for s in t1[field] if s not in STARTS]
    if unknown:
      raise ValueError(f"config.table1.{field}: unknown start(s) {unknown}; choose from {STARTS}")
  if set(t1.table2_starts) - set(t1.starts):
    raise ValueError(f"config.table1.table2_starts {tuple(t1.table2_starts)} must be among "
                     f"config.table1.starts {tuple(t1.starts)}")
  for start, arms in _plans(config):     # each study's own checks, before any run starts
    study.check(_study_config(config, start or "beta0", (), arms))


def _plans(config) -> list[tuple[str | None, tuple[str, ...]]]:
  """(start, arms) of each study in the order they run; start None: the beta0 references."""
  t1 = config.table1
  plans = [(start, tuple(config.arms)) for start in t1.starts]
  plans += [(None, tuple(t1.references))]
  plans += [(start, tuple(config.arms) + tuple(t1.table2_arms)) for start in t1.table2_starts]
  return plans


def _saved_betas(config, workdir: str) -> np.ndarray:
  """The draws, saved on the first call; a later call with another prior is an error."""
  betas = draw(config)
  layout = registry.layout(config.base)
  path = os.path.join(workdir, BETAS_FILE)
  record = {"layout": layout.name, "prior_seed": int(config.table1.prior_seed),
            "betas": [layout.as_dict(b) for b in betas]}
  saved = _saved_once(path, record)
  if saved != json.loads(json.dumps(record)):
    raise ValueError(f"{path} holds other random betas (layout {saved['layout']}, prior seed "
                     f"{saved['prior_seed']}, {len(saved['betas'])} betas) than this config "
                     f"draws: use a new workdir, or the config that drew them")
  return betas


def _saved_once(path: str, record: dict) -> dict:
  """`record`, written to `path` if nothing is there yet; else what the first call wrote."""
  if not os.path.exists(path):
    with open(path, "w") as f:
      json.dump(record, f, indent=2)
  with open(path) as f:
    return json.load(f)


def rank(config, workdir: str, betas: np.ndarray) -> tuple[list[dict], dict[str, int]]:
  """Trains at each beta (beta frozen) and names the best, median and worst by last-k L.

  The picks are saved in `picks.json` on the first ranking; a later one that
  picks other betas (e.g. with another `last_k`) is an error, since the
  studies under `from_<start>/` started from the saved ones. A ranking run
  made with another `rank_seed` is refused when it is read back
  (`compare.run_method`).
  """
  rank_seed = int(config.table1.rank_seed)
  rows = []
  for index, beta in enumerate(betas):
    run_dir = os.path.join(workdir, "ranking", f"beta{index}")
    logging.info("table1: ranking beta %d of %d -> %s", index + 1, len(betas), run_dir)
    results = compare.run_method(config.task, config.base, "fixed", rank_seed, run_dir, beta)
    rows.append({"index": index, **study.score(results, run_dir, config.last_k)})
    if not np.isfinite(rows[-1]["last_k_L"]):
      raise ValueError(f"{run_dir}: last-{config.last_k} L is {rows[-1]['last_k_L']}: the betas "
                       f"cannot be ranked (look at its metrics.jsonl)")
  order = sorted(range(len(rows)), key=lambda i: rows[i]["last_k_L"])
  picks = {"best": order[0], "median": order[(len(order) - 1) // 2], "worst": order[-1]}
  for position, index in enumerate(order):
    rows[index]["rank"] = position + 1
  _saved_picks(workdir, picks, rank_seed, config.last_k)
  return rows, picks


def _saved_picks(workdir: str, picks: dict[str, int], rank_seed: int, last_k: int) -> None:
  path = os.path.join(workdir, PICKS_FILE)
  saved = _saved_once(path, {"picks": picks, "rank_seed": rank_seed, "last_k": int(last_k)})
  if saved["picks"] != picks:
    raise ValueError(f"the ranking now picks {picks} (last_k {last_k}), but {path} holds "
                     f"{saved['picks']} (last_k {saved['last_k']}), the betas the studies under "
                     f"{workdir}/from_<start> started from: rank with the settings that made "
                     f"them, or use a new workdir")


def _study_config(config, name: str, beta0, arms) -> Any:
  sub = copy.deepcopy(config)
  sub.name = f"{config.name}, {name}"
  sub.base.beta0 = tuple(float(b) for b in beta0)
  sub.start_name = "the start" if len(sub.base.beta0) else "beta0"
  sub.arms = tuple(arms)
  sub.references = tuple(r for r in config.references if r in arms)
  return sub


def _link_ranking_run(workdir: str, start_dir: str, rank_seed: int, index: int) -> None:
  """The start's ranking run is its study's fixed_steps run of rank_seed: link it once."""
  target = os.path.join(start_dir, "fixed_steps", f"seed{rank_seed}")
  if not os.path.lexists(target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.symlink(os.path.relpath(os.path.join(workdir, "ranking", f"beta{index}"),
                               os.path.dirname(target)), target)


def run(config, workdir: str, *, report_only: bool = False) -> dict[str, Any]:
  """The whole protocol (or, with `report_only`, the tables of what has finished)."""
  _check(config)
  t1 = config.table1
  if config.get("deterministic", True) and not report_only:
    determinism.require_deterministic_gpu()     # before the first run starts JAX's backends
  if report_only and not os.path.exists(os.path.join(workdir, BETAS_FILE)):
    raise FileNotFoundError(f"no Table 1 protocol under {workdir} (no {BETAS_FILE}): nothing to "
                            f"report")
  os.makedirs(workdir, exist_ok=True)
  betas = _saved_betas(config, workdir)
  if report_only:
    ranking, picks = _ranking_so_far(config, workdir, betas)
  else:
    ranking, picks = rank(config, workdir, betas)
  studies: dict[str, dict] = {}
  for start, arms in _plans(config):
    if start is None:
      name, beta0 = "beta0", ()
    elif start in picks:
      name, beta0 = f"from_{start}", betas[picks[start]]
    else:
      continue                                  # report_only before the ranking finished
    sub = _study_config(config, name, beta0, arms)
    start_dir = os.path.join(workdir, name)
    if start is not None and "fixed_steps" in arms and t1.rank_seed in config.seeds:
      _link_ranking_run(workdir, start_dir, t1.rank_seed, picks[start])
    try:
      studies[name] = study.run(sub, start_dir, report_only=report_only)
    except FileNotFoundError:
      if not report_only:
        raise
  summary = summarize(config, betas, ranking, picks, studies)
  with open(os.path.join(workdir, "table1.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, "table1.md"), "w") as f:
    f.write(table(summary))
  return summary


def _ranking_so_far(config, workdir: str, betas: np.ndarray):
  """The ranking if every ranking run has finished, else its finished rows and no picks."""
  from hgrad.core import loop  # pylint: disable=import-outside-toplevel
  rows = []
  for index in range(len(betas)):
    run_dir = os.path.join(workdir, "ranking", f"beta{index}")
    results = loop.finished_results(run_dir)
    if results is not None:
      rows.append({"index": index, **study.score(results, run_dir, config.last_k)})
  if len(rows) < len(betas):
    return rows, {}
  return rank(config, workdir, betas)


def summarize(config, betas: np.ndarray, ranking: list[dict], picks: dict[str, int],
              studies: dict[str, dict]) -> dict[str, Any]:
  """table1.json: the draws, the ranking, each study's scores and the paired differences."""
  layout = registry.layout(config.base)
  first = next(iter(studies.values()), None)
  summary: dict[str, Any] = {
      "name": config.name, "task": config.task, "last_k": config.last_k,
      "split": first["split"] if first else None, "metric": first["metric"] if first else None,
      "prior_seed": int(config.table1.prior_seed), "rank_seed": int(config.table1.rank_seed),
      "betas": [layout.as_dict(b) for b in betas], "ranking": ranking,
      "picks": picks, "studies": studies, "differences": {}, "time_to_best": {}}
  scores = {name: {arm: dict(zip(entry["seeds"], entry["scores"]))
                   for arm, entry in s["arms"].items()} for name, s in studies.items()}
  # Each pick's ranking run is its fixed_steps run of rank_seed: linked into its study when one
  # ran, and read from the ranking when none did (fixed beta_best for the paper's comparison).
  rows = {row["index"]: row for row in ranking}
  for start, index in picks.items():
    scores.setdefault(f"from_{start}", {}).setdefault("fixed_steps", {}).setdefault(
        int(config.table1.rank_seed), rows[index])
  pairs = []
  for start in config.table1.starts:
    name = f"from_{start}"
    for arm, reference in (("hybrid", "fixed_steps"), ("hybrid", "fixed_time"),
                           ("hybrid", "placebo"), ("retrain", "fixed_steps")):
      pairs.append(((name, arm), (name, reference)))
    pairs.append(((name, "hybrid"), ("from_best", "fixed_steps")))
    pairs.append(((name, "hybrid"), ("beta0", "fixed_steps")))
  for start in config.table1.table2_starts:
    for arm in config.table1.table2_arms:
      pairs.append(((f"from_{start}", arm), (f"from_{start}", "fixed_steps")))
      pairs.append(((f"from_{start}", "hybrid"), (f"from_{start}", arm)))
  for (study_a, arm_a), (study_b, arm_b) in pairs:
    a = scores.get(study_a, {}).get(arm_a, {})
    b = scores.get(study_b, {}).get(arm_b, {})
    seeds = sorted(set(a) & set(b))
    if not seeds or (study_a, arm_a) == (study_b, arm_b):
      continue
    key = f"{_row_name(study_a, arm_a)} − {_row_name(study_b, arm_b)}"
    summary["differences"][key] = {
        measure: study.paired([a[k][measure] for k in seeds], [b[k][measure] for k in seeds])
        for measure in ("last_k_L", "final_L")}
  target = scores.get("from_best", {}).get("fixed_steps", {})
  for name, arms in scores.items():
    for arm in arms:
      if name == "beta0" or arm in study.FROZEN:
        continue
      times = {}
      for seed in sorted(set(arms[arm]) & set(target)):
        curve = compare.curve(os.path.join(studies[name]["workdir"], arm, f"seed{seed}"))
        times[seed] = compare.time_to_target(curve, target[seed]["last_k_L"],
                                             window=int(config.last_k))
      if times:
        summary["time_to_best"][_row_name(name, arm)] = times
  return summary


def _row_name(study_name: str, arm: str) -> str:
  start = study_name[len("from_"):] if study_name.startswith("from_") else "beta0"
  return f"{arm} @ {start}"


def _cells(scores: list[dict], columns) -> list[str]:
  return [f"{np.mean([s['image_mean'][key] for s in scores]):.2f}" for key, _ in columns]


def table(summary: dict) -> str:
  """table1.md: the ranking, the paper's Table 1 columns, the paired differences, time to target."""
  columns = registry.get(summary["task"]).INFO.columns
  synthetic = any("unit_distance_final" in row for row in summary["ranking"])
  picked = {index: name for name, index in summary["picks"].items()}
  lines = [f"# Table 1 `{summary['name']}`: hybrid gradient from random beta", "",
           f"{len(summary['betas'])} betas drawn from the layout's prior (seed "
           f"{summary['prior_seed']}), a network trained at each (beta frozen, seed "
           f"{summary['rank_seed']}), ranked by last-{summary['last_k']} L"
           + (f" ({summary['split']}; {summary['metric']})." if summary["split"] else "."), "",
           "| rank | random beta (run in ranking/beta<i>) | last-k L | final L |"
           + (" distance to beta* |" if synthetic else ""),
           "|---|---|---|---|" + ("---|" if synthetic else "")]
  for row in sorted(summary["ranking"], key=lambda r: r.get("rank", 1 << 30)):
    name = f"#{row['index']}" + (f" (**{picked[row['index']]}**)" if row["index"] in picked
                                 else "")
    lines.append(f"| {row.get('rank', '—')} | {name} | {row['last_k_L']:.2f} | "
                 f"{row['final_L']:.2f} |" + (f" {row['unit_distance_final']:.2f} |"
                                             if synthetic else ""))
  lines += ["", "Each start's arms, image-mean metrics of the final network, mean over the "
            "seeds listed (the paper's columns), and last-k L.", "",
            "| start | arm | seeds | " + " | ".join(label for _, label in columns) +
            " | last-k L |" + (" distance to beta* |" if synthetic else ""),
            "|---|---|---|" + "---|" * (len(columns) + 1) + ("---|" if synthetic else "")]
  for name, entry in summary["studies"].items():
    for arm, arm_entry in entry["arms"].items():
      s = arm_entry["scores"]
      start = name[len("from_"):] if name.startswith("from_") else "beta0"
      arm_label = study.label(arm, entry.get("start", "beta0"))
      row = (f"| {start} | {arm_label} | {','.join(map(str, arm_entry['seeds']))} | "
             + " | ".join(_cells(s, columns)) + f" | {np.mean([x['last_k_L'] for x in s]):.2f} |")
      if synthetic:
        row += f" {np.mean([x.get('unit_distance_final', np.nan) for x in s]):.2f} |"
      lines.append(row)
  lines += ["", "Paired differences (first − second; negative: the first is better), last-k L "
            "and final L, 95% t intervals over the seeds both have.", "",
            "| difference | measure | seeds | mean | t 95% | per seed |", "|---|---|---|---|---|---|"]
  for key, entry in summary["differences"].items():
    for measure, d in entry.items():
      t95 = "[{:+.2f}, {:+.2f}]".format(*d["t95"]) if "t95" in d else "—"
      lines.append(f"| {key} | {measure} | {d['n']} | {d['mean']:+.2f} | {t95} | "
                   + ", ".join(f"{x:+.2f}" for x in d["diffs"]) + " |")
  if summary["time_to_best"]:
    lines += ["", f"Wall seconds until the mean of the last {summary['last_k']} evaluations of L "
              "first reached the same seed's fixed beta_best last-k L (— : never).", "",
              "| arm | per seed |", "|---|---|"]
    for key, times in summary["time_to_best"].items():
      lines.append(f"| {key} | " + ", ".join(
          f"seed {seed}: {'—' if t is None else f'{t:.0f} s'}" for seed, t in times.items()) + " |")
  return "\n".join(lines) + "\n"
