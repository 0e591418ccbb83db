"""The face hybrid-gradient run (see configs/face.py).

  python -m experiments.face --workdir=runs/face [--config=configs/face.py:smoke]
"""

from experiments import script

main = script.task_script("face", "smoke, cpu")

if __name__ == "__main__":
  script.run(main)
