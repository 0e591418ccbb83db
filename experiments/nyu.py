"""The NYU Depth V2 hybrid-gradient run (see configs/nyu.py).

  python -m experiments.nyu --workdir=runs/nyu [--config=configs/nyu.py:smoke]
"""

from experiments import script

main = script.task_script("nyu", "smoke, cpu")

if __name__ == "__main__":
  script.run(main)
