"""The paper's Table 1 from random beta, and Table 2 / Fig. 4 from the same starts.

  python -m experiments.table1 --config=configs/table1.py:synthetic --workdir=~/hgrad-runs/table1_synthetic

Writes WORKDIR/table1.md and table1.json (and a study per start: WORKDIR/from_<start>/study.md,
study.png); every run resumes, so rerunning the same command continues where it stopped;
--report_only writes the tables of the runs finished so far.
"""

from absl import flags

from experiments import script
from hgrad import random_starts

_CONFIG, _WORKDIR = script.config_and_workdir(
    "table1.py", "Table 1 config file (variants: smoke, select, synthetic, real).",
    "Protocol directory (resumes if it holds one).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False,
                                 "Run nothing: write the tables of the runs finished so far.")


def main():
  summary = random_starts.run(_CONFIG.value, _WORKDIR.value, report_only=_REPORT_ONLY.value)
  print(random_starts.table(summary))


if __name__ == "__main__":
  script.run(main)
