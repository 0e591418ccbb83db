"""Writes WORKDIR/gallery.png: CSG samples at beta0.

  python -m experiments.gallery --workdir=/tmp/gallery [--config.csg.resolution=128]
"""

from experiments import script
from hgrad.generators import gallery

_CONFIG, _WORKDIR = script.config_and_workdir("gallery.py", "Gallery config file.")


def main():
  print(gallery.run(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  script.run(main)
