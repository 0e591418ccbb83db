"""The nyu hybrid-gradient run (see configs/nyu.py).

  python -m experiments.nyu --workdir=runs/nyu [--config=configs/nyu.py:smoke]
"""

import json
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from hgrad import nyu

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "nyu.py"),
    "Config file (variants: smoke, cpu).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (resumes if it holds a run).",
                               required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  results = nyu.run(_CONFIG.value, _WORKDIR.value)
  print(json.dumps({"data_source": results["data_source"], "steps": results["steps"],
                    **{split: results[split]["image_mean"] for split in ("validation", "test")
                       if split in results}}))


if __name__ == "__main__":
  app.run(main)
