"""The face hybrid-gradient run (see configs/face.py).

  python -m experiments.face --workdir=runs/face [--config=configs/face.py:smoke]
"""

import json

from experiments import script
from hgrad import face
from hgrad import task

_CONFIG, _WORKDIR = script.config_and_workdir(
    "face.py", "Config file (variants: smoke, cpu).",
    "Run directory (resumes if it holds a run).")


def main():
  print(json.dumps(task.summary(face.run(_CONFIG.value, _WORKDIR.value))))


if __name__ == "__main__":
  script.run(main)
