"""The MIT-Berkeley hybrid-gradient run: optimize the CSG grammar against real shading.

  python -m experiments.mbii --workdir=runs/mbii [--config=configs/mbii.py:VARIANT]
      [--config.data.dir=/path/to/MIT-Berkeley/train] [--config.data.test_dir=/path/to/test]

Writes metrics.jsonl, checkpoints/, results.json, curve.png, samples.png to
WORKDIR; run it again with the same WORKDIR to resume.
"""

from experiments import script

main = script.task_script("mbii", "smoke, cpu, fixed, paper_cpu, paper")

if __name__ == "__main__":
  script.run(main)
