"""Arms x paired seeds: does optimizing beta beat fixed beta and a placebo? (configs/study.py)

  python -m experiments.study --workdir=~/hgrad-runs/study --config=configs/study.py:cpu

Writes WORKDIR/study.json, study.md and study.png; every (arm, seed) run lives
in WORKDIR/<arm>/seed<k> and resumes, so rerunning the same command continues
the study where it stopped; --report_only summarizes the runs finished so far.
"""

from experiments import script
from hgrad import study

main = script.study_script(
    "study.py", "smoke, cpu, cpu_trust, cpu_trust_cheap, cpu_trust_cheap10, paper_cpu, screen",
    study.run, study.table)

if __name__ == "__main__":
  script.run(main)
