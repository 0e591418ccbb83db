"""The NYU Depth V2 hybrid-gradient run (see configs/nyu.py).

  python -m experiments.nyu --workdir=runs/nyu [--config=configs/nyu.py:smoke]
"""

import json

from experiments import script
from hgrad import nyu
from hgrad import task

_CONFIG, _WORKDIR = script.config_and_workdir(
    "nyu.py", "Config file (variants: smoke, cpu).",
    "Run directory (resumes if it holds a run).")


def main():
  print(json.dumps(task.summary(nyu.run(_CONFIG.value, _WORKDIR.value))))


if __name__ == "__main__":
  script.run(main)
