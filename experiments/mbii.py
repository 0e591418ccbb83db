"""The MIT-Berkeley hybrid-gradient run: optimize the CSG grammar against real shading.

  python -m experiments.mbii --workdir=runs/mbii [--config=configs/mbii.py:smoke]
      [--config.data.dir=/path/to/MIT-Berkeley/train] [--config.data.test_dir=/path/to/test]

Writes metrics.jsonl, checkpoints/, results.json, curve.png, samples.png to
WORKDIR; run it again with the same WORKDIR to resume.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from hgrad import mbii

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "mbii.py"),
    "MIT-Berkeley config file (variants: smoke, cpu, paper, fixed).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (resumes if it holds a run).",
                               required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  mbii.print_summary(mbii.run(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  app.run(main)
