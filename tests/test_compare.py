"""The comparison at smoke scale: every method through the same budget accounting."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, mbii_train_dir
from hgrad.baselines import compare

pytestmark = pytest.mark.slow


def test_compare_smoke_writes_all_files_with_a_row_per_method(tmp_path):
  data_dir = mbii_train_dir()
  result = subprocess.run(
      [sys.executable, "-m", "experiments.compare", "--config=configs/compare.py:mbii_smoke",
       f"--workdir={tmp_path}", f"--config.base.data.dir={data_dir}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  for name in ("table2.md", "fig4.png", "compare.json"):
    assert os.path.getsize(os.path.join(tmp_path, name)) > 0, name
  with open(os.path.join(tmp_path, "table2.md")) as f:
    table = f.read()
  methods = ("hybrid", "random_search", "evolution", "fixed")
  for method in methods:
    assert f"| {compare.LABELS[method]} |" in table
  with open(os.path.join(tmp_path, "compare.json")) as f:
    summary = json.load(f)
  assert set(summary["methods"]) == set(methods)
  for method, entry in summary["methods"].items():
    assert np.isfinite(entry["final"]["mae"][0]) and entry["wall_s"][0] > 0
    assert entry["cpu_s"][0] > 0 and len(entry["time_to_target"]) == 1
    rows = [json.loads(line) for line in open(os.path.join(tmp_path, method, "seed0",
                                                           "metrics.jsonl"))]
    assert len(rows) == 10, "the same schedule (budget) for every method"
    assert all({"wall_s", "cpu_s", "device_s", "host_render_s"} <= set(r) for r in rows)
    phases = {r["phase"] for r in rows}
    assert ("outer" in phases) == (method != "fixed")
  assert summary["methods"]["random_search"]["time_to_target"][0] is not None
