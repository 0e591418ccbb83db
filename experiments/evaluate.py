"""Evaluate a run's latest checkpoint on data in its task's layout (any registered task).

  python -m experiments.evaluate --workdir=runs/mbii --data=/path/to/MIT-Berkeley --split=test
  python -m experiments.evaluate --workdir=runs/mbii --data=/path/to/my_scans --split=dir
  python -m experiments.evaluate --workdir=runs/nyu --data=nyu_depth_v2_labeled.mat --split=test

Splits: mbii train | test | all | dir (every object folder under --data);
nyu and face validation | test (face: --data is a BFM .mat, or empty for the run's model).
Writes WORKDIR/eval_<split>.json (and eval_<split>.png for mbii) and prints
the metrics as JSON on its last line.
"""

import json

from absl import flags
from absl import logging

from experiments import script
from hgrad.tasks import evaluate

_WORKDIR = script.DEFINE_path("workdir", None, "A run directory (any task).", required=True)
_DATA = script.DEFINE_path("data", "", "The data to score, in the task's layout.")
_SPLIT = flags.DEFINE_string("split", "train", "Which part of the data (see the module doc).")
flags.DEFINE_alias("data_dir", "data")


def main():
  result = evaluate.evaluate_run(_WORKDIR.value, _DATA.value, _SPLIT.value)
  mean = result["image_mean"]
  line = {"task": result["task"], "split": result["split"],
          "checkpoint_step": result["checkpoint_step"], **mean}
  if "pixel_pooled" in result and "mae" in result["pixel_pooled"]:
    line["pixel_pooled_mae"] = result["pixel_pooled"]["mae"]
  logging.info("wrote %s", " and ".join(result["written"]))
  print(json.dumps(line))


if __name__ == "__main__":
  script.run(main)
