"""Writes WORKDIR/gallery.png: CSG samples at beta0.

  python -m experiments.gallery --workdir=/tmp/gallery [--config.csg.resolution=128]
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from hgrad import gallery

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "gallery.py"),
    "Gallery config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  print(gallery.run(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  app.run(main)
