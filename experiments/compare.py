"""Hybrid gradient vs Basic Random Search vs Shape Evolution vs fixed beta, at equal budget.

  python -m experiments.compare --workdir=runs/compare [--config=configs/compare.py:mbii_smoke]

Writes WORKDIR/<the paper's table>.md (table2 for mbii, table3 nyu, table4 face), fig4.png
and compare.json; every (method, seed) run lives in WORKDIR/<method>/seed<k> and resumes.
"""

import json

from experiments import script
from hgrad.baselines import compare

_CONFIG, _WORKDIR = script.config_and_workdir(
    "compare.py", "Comparison config file (ARG: TASK or TASK_smoke, TASK in mbii, nyu, face).")


def main():
  summary = compare.run(_CONFIG.value, _WORKDIR.value)
  print(json.dumps({m: {"final_validation_L": v["final_validation_L"],
                        "time_to_target": v.get("time_to_target")}
                    for m, v in summary["methods"].items()}))


if __name__ == "__main__":
  script.run(main)
