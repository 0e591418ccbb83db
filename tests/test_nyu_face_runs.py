"""NYU-scene and face experiments end to end at smoke scale."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from test_nyu_bfm_data import _write_nyu

pytestmark = pytest.mark.slow


def _run(module, workdir, *overrides, env=None):
  result = subprocess.run([sys.executable, "-m", f"experiments.{module}",
                           f"--config=configs/{module}.py:smoke", f"--workdir={workdir}",
                           *overrides], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900, env=env)
  assert result.returncode == 0, result.stderr[-4000:]
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f), result


def test_nyu_smoke_synthetic(tmp_path):
  """Also: the distance to beta* is measured from the run's own beta0 (it once used the default)."""
  from hgrad.generators.scenes import SCENE_LAYOUT
  from hgrad.tasks import nyu
  beta0 = SCENE_LAYOUT.default.astype(float)
  beta0[SCENE_LAYOUT.index("camera_pitch_mean0")] = 0.2
  env = {k: v for k, v in os.environ.items() if k != "HGRAD_NYU_FILE"}
  results, run = _run("nyu", tmp_path, f"--config.beta0=({','.join(f'{b:.6f}' for b in beta0)})",
                      env=env)
  assert "SYNTHETIC" in run.stderr and results["data_source"] == "synthetic"
  assert 0 < results["validation"]["image_mean"]["mae"] < 90
  assert results["synthetic"]["unit_distance_final"] >= 0
  expected = SCENE_LAYOUT.unit_distance(beta0.astype(np.float32), nyu.beta_star())
  assert results["synthetic"]["unit_distance_beta0"] == pytest.approx(expected, rel=1e-5)
  assert expected != pytest.approx(SCENE_LAYOUT.unit_distance(SCENE_LAYOUT.default, nyu.beta_star()))
  rows = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
  assert all(len(r["beta"]) == 108 for r in rows)
  for name in ("curve.png", "samples.png"):
    assert os.path.getsize(os.path.join(tmp_path, name)) > 0


def test_nyu_smoke_on_a_labeled_file(tmp_path):
  path = tmp_path / "nyu.mat"
  _write_nyu(path)
  results, _ = _run("nyu", tmp_path / "run", f"--config.data.file={path}",
                    f"--config.data.splits={path}.splits.mat", "--config.data.validation=2")
  assert results["data_source"] == str(path)
  assert set(results["validation"]["image_mean"]) >= {"mae", "median", "within_11_25"}
  assert np.isfinite(results["test"]["image_mean"]["mae"])


def test_face_smoke_depth_metrics(tmp_path):
  results, run = _run("face", tmp_path)
  assert "SYNTHETIC" in run.stderr and results["data_source"] == "synthetic"
  for split in ("validation", "test"):
    metrics = results[split]["image_mean"]
    assert set(metrics) == {"abs_rel", "sq_rel", "rmse", "rmse_log", "si_rmse_log"}
    assert all(np.isfinite(v) and v >= 0 for v in metrics.values())
  rows = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
  assert all(len(r["beta"]) == 204 for r in rows)
