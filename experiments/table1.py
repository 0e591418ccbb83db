"""The paper's Table 1 from random beta, and Table 2 / Fig. 4 from the same starts.

  python -m experiments.table1 --config=configs/table1.py:synthetic --workdir=~/hgrad-runs/table1_synthetic

Writes WORKDIR/table1.md and table1.json; betas.json (the random betas), ranking/beta<i> (a
run at each), picks.json (the best, median and worst), and a study per start
(from_<start>/study.md, study.json, study.png) and at beta0 (beta0/). Every run resumes, so
rerunning the same command continues where it stopped; --report_only writes the tables of the
runs finished so far.
"""

from experiments import script
from hgrad import random_starts

main = script.study_script("table1.py", "smoke, select, synthetic, real", random_starts.run,
                           random_starts.table)

if __name__ == "__main__":
  script.run(main)
