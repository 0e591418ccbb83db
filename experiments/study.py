"""Arms x paired seeds: does optimizing beta beat fixed beta and a placebo? (configs/study.py)

  python -m experiments.study --workdir=~/hgrad-runs/study --config=configs/study.py:screen

Writes WORKDIR/study.json, study.md and study.png; every (arm, seed) run lives
in WORKDIR/<arm>/seed<k> and resumes, so rerunning the same command continues
the study where it stopped; --report_only summarizes the runs finished so far.
"""

from absl import flags

from experiments import script
from hgrad import study

_CONFIG, _WORKDIR = script.config_and_workdir(
    "study.py", "Study config file (variants: smoke, cpu, cpu_trust, cpu_trust_cheap, "
    "cpu_trust_cheap10, paper_cpu, screen).",
    "Study directory (resumes if it holds one).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False,
                                 "Run nothing: summarize the runs that have finished.")


def main():
  summary = study.run(_CONFIG.value, _WORKDIR.value, report_only=_REPORT_ONLY.value)
  print(study.table(summary))


if __name__ == "__main__":
  script.run(main)
