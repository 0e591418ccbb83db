"""Evaluate a run's final checkpoint on MIT-Berkeley-layout data.

  python -m experiments.evaluate --workdir=runs/mbii --data_dir=/path/to/MIT-Berkeley [--split=test]

Writes WORKDIR/eval_<split>.json and WORKDIR/eval_<split>.png (input | ground
truth | prediction | error) and prints the metrics as JSON on its last line.
"""

import json

from absl import app
from absl import flags

from hgrad import evaluate

_WORKDIR = flags.DEFINE_string("workdir", None, "A run directory of experiments.mbii.",
                               required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "MIT-Berkeley-layout directory.", required=True)
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "test", "all"], "Which objects.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  result = evaluate.evaluate_run(_WORKDIR.value, _DATA_DIR.value, _SPLIT.value)
  print(json.dumps({"split": result["split"], "checkpoint_step": result["checkpoint_step"],
                    **result["image_mean"],
                    "pixel_pooled_mae": result["pixel_pooled"]["mae"]}))


if __name__ == "__main__":
  app.run(main)
