"""The study harness at smoke scale: every arm, paired seeds, intervals, resume without redoing."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, mbii_train_dir

from hgrad import study


def _study(workdir, *extra):
  return subprocess.run([sys.executable, "-m", "experiments.study", "--config=configs/study.py:smoke",
                         f"--workdir={workdir}", f"--config.base.data.dir={mbii_train_dir()}",
                         *extra], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("study")
  result = _study(workdir)
  assert result.returncode == 0, result.stderr[-4000:]
  return workdir


def test_study_writes_every_arm_with_paired_seeds_and_intervals(smoke_study):
  with open(smoke_study / "study.json") as f:
    summary = json.load(f)
  assert set(summary["arms"]) == set(study.ARMS)
  for arm in study.ARMS:
    assert len(summary["arms"][arm]["scores"]) == 2
    for seed in (0, 1):
      assert (smoke_study / arm / f"seed{seed}" / "results.json").exists()
  d = summary["differences"]["hybrid − fixed_steps"]["final_L"]
  assert d["n"] == 2 and d["t95"][0] <= d["mean"] <= d["t95"][1]
  assert len(d["diffs"]) == 2
  assert (smoke_study / "study.png").stat().st_size > 0
  assert "placebo" in (smoke_study / "study.md").read_text()


def test_arms_are_paired_and_do_what_they_say(smoke_study):
  def rows(arm, seed=0):
    with open(smoke_study / arm / f"seed{seed}" / "metrics.jsonl") as f:
      return [json.loads(line) for line in f]
  hybrid, fixed, placebo = rows("hybrid"), rows("fixed_steps"), rows("placebo")
  assert len(hybrid) == len(fixed) == len(placebo)
  # Same seed: identical until beta first moves (warm-up), then the arms part.
  assert hybrid[0]["train_loss"] == pytest.approx(fixed[0]["train_loss"], rel=1e-6)
  assert all(r["beta"] == fixed[0]["beta"] for r in fixed)
  assert hybrid[-1]["beta"] != fixed[-1]["beta"] and placebo[-1]["beta"] != hybrid[-1]["beta"]
  # The placebo moves beta as far per step as hybrid gradient does (same estimate norms).
  h_norms = [r["grad_norm"] for r in hybrid if r["phase"] == "outer"]
  p_norms = [r["grad_norm"] for r in placebo if r["phase"] == "outer"]
  np.testing.assert_allclose(p_norms[0], h_norms[0], rtol=1e-4)   # same state, same key
  with open(smoke_study / "hybrid" / "seed0" / "results.json") as f:
    learned = json.load(f)["beta"]
  with open(smoke_study / "retrain" / "seed0" / "results.json") as f:
    retrained = json.load(f)
  assert retrained["beta0"] == pytest.approx(learned, rel=1e-5)
  timed = rows("fixed_time")
  assert timed[-1]["elapsed_s"] <= hybrid[-1]["elapsed_s"] + max(r["wall_s"] for r in timed)


def test_rerunning_a_finished_study_redoes_nothing(smoke_study):
  before = {p: os.path.getmtime(p) for p in smoke_study.glob("*/seed*/results.json")}
  result = _study(smoke_study)
  assert result.returncode == 0, result.stderr[-3000:]
  assert {p: os.path.getmtime(p) for p in smoke_study.glob("*/seed*/results.json")} == before


def test_paired_intervals():
  out = study.paired([1.0, 2.0, 3.0], [0.4, 1.5, 2.6])      # differences 0.6, 0.5, 0.4
  assert out["mean"] == pytest.approx(0.5)
  assert out["t95"][0] < 0.5 < out["t95"][1]
  assert 0.4 - 1e-9 <= out["bootstrap95"][0] <= 0.5 <= out["bootstrap95"][1] <= 0.6 + 1e-9
  assert out["t95"] == pytest.approx([0.5 - 4.303 * 0.1 / 3 ** 0.5, 0.5 + 4.303 * 0.1 / 3 ** 0.5], rel=1e-3)
