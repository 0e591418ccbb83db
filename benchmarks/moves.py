"""Does beta follow the target, or a preference of its own? Compares finished runs' moves.

A run's move is its final beta minus its beta0, in the coordinates its beta
optimizer used (`config.outer.coordinates`; the layout from its config.json),
over the dimensions some run moved. For two groups of runs (e.g. hybrid runs
on two different targets) it prints how much the moves agree within each
group and across the groups (mean pairwise cosine), the cosine of the two
groups' mean moves, and, for runs on a synthetic target, the cosine of each
move with the way from beta0 to that run's beta*. If the moves across two
targets agree as much as within one, the direction does not come from the
target (docs/results.md, "Does beta follow the target?").

  python -m benchmarks.moves --runs="~/hgrad-runs/study_cpu_trust_cheap/hybrid/seed*" \\
      --against="~/hgrad-runs/study_flipped/hybrid/seed*"

Prints a table and, as its last line, JSON with the numbers.
"""

import glob
import json
import os

import numpy as np
from absl import flags

from benchmarks import common
from experiments import script

_RUNS = flags.DEFINE_string("runs", None, "glob of finished run directories (group A)")
_AGAINST = flags.DEFINE_string("against", "", "glob of finished run directories (group B)")


def compare(group_a: list[dict], group_b: list[dict]) -> dict:
  """Agreement of the moves within and across the groups (cosines over the moved dimensions)."""
  runs = group_a + group_b
  if len({r["names"] for r in runs}) != 1:
    raise ValueError("the runs use different beta layouts: their moves cannot be compared")
  moved = np.any([np.abs(r["move"]) > 1e-6 for r in runs], axis=0)
  if not moved.any():
    raise ValueError("no run moved beta")
  out = {"moved_dimensions": [n for n, m in zip(runs[0]["names"], moved) if m]}
  moves, means = {}, {}
  for name, group in (("A", group_a), ("B", group_b)):
    if not group:
      continue
    moves[name] = [r["move"][moved] for r in group]
    means[name] = np.mean(moves[name], 0)
    out[f"within_{name}"] = (common.mean_cross_cosine(moves[name]) if len(group) > 1 else None)
    out[f"mean_move_{name}"] = dict(zip(out["moved_dimensions"], means[name].tolist()))
    towards = [common.cosine(m, r["toward"][moved]) for m, r in zip(moves[name], group)
               if r["toward"] is not None]
    out[f"toward_beta_star_{name}"] = towards or None
  if group_b:
    out["across"] = float(np.mean([common.cosine(a, b) for a in moves["A"] for b in moves["B"]]))
    out["mean_moves"] = common.cosine(means["A"], means["B"])
  return out


def _group(pattern: str) -> list[dict]:
  dirs = sorted(glob.glob(os.path.expanduser(pattern)))
  if not dirs:
    raise FileNotFoundError(f"no run directory matches {pattern!r}")
  return [common.load_move(d) for d in dirs]


def main():
  group_a = _group(_RUNS.value)
  group_b = _group(_AGAINST.value) if _AGAINST.value else []
  out = compare(group_a, group_b)
  fmt = lambda x: "—" if x is None else f"{x:+.2f}"
  print(f"runs: A {len(group_a)}, B {len(group_b)}; moved dimensions: "
        f"{', '.join(out['moved_dimensions'])}")
  print(f"mean pairwise cosine of the moves: within A {fmt(out['within_A'])}"
        + (f", within B {fmt(out['within_B'])}, across {fmt(out['across'])}; "
           f"cosine of the mean moves {fmt(out['mean_moves'])}" if group_b else ""))
  for name in ("A", "B"):
    towards = out.get(f"toward_beta_star_{name}")
    if towards:
      print(f"cosine with the way to beta*, group {name}: "
            + " ".join(fmt(t) for t in towards) + f" (mean {np.mean(towards):+.2f})")
  print("| dimension | mean move A |" + (" mean move B |" if group_b else ""))
  print("|---|---|" + ("---|" if group_b else ""))
  for n in out["moved_dimensions"]:
    print(f"| {n} | {out['mean_move_A'][n]:+.3f} |"
          + (f" {out['mean_move_B'][n]:+.3f} |" if group_b else ""))
  print(json.dumps(out))


if __name__ == "__main__":
  flags.mark_flag_as_required("runs")
  script.run(main)
