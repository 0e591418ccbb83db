"""Hybrid gradient vs Basic Random Search vs Shape Evolution vs fixed beta, at equal budget.

  python -m experiments.compare --workdir=runs/compare [--config=configs/compare.py:smoke]

Writes WORKDIR/table1.md, table2.md, fig4.png and compare.json; every
(method, seed) run lives in WORKDIR/<method>/seed<k> and resumes.
"""

import json
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from hgrad import compare

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "compare.py"),
    "Comparison config file (variants: smoke, full).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  summary = compare.run(_CONFIG.value, _WORKDIR.value)
  print(json.dumps({m: {"final_validation_L": v["final_validation_L"],
                        "time_to_target": v.get("time_to_target")}
                    for m, v in summary["methods"].items()}))


if __name__ == "__main__":
  app.run(main)
