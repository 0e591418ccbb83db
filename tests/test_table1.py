"""The Table 1 protocol at smoke scale: random betas ranked by L, studies from the best, median
and worst, every row in table1.md / table1.json, and a resume after a kill that redoes nothing."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO_ROOT

from hgrad import random_starts


def _command(workdir, *extra):
  return [sys.executable, "-m", "experiments.table1", "--config=configs/table1.py:smoke",
          f"--workdir={workdir}", *extra]


def _env():
  return {k: v for k, v in os.environ.items() if k != "HGRAD_MBII_DIR"}   # the synthetic testbed


@pytest.mark.slow
def test_the_protocol_ranks_starts_every_row_and_resumes_after_a_kill(tmp_path):
  workdir = tmp_path / "table1"
  proc = subprocess.Popen(_command(workdir), cwd=REPO_ROOT, env=_env(), start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  second = workdir / "ranking" / "beta1" / "results.json"
  deadline = time.time() + 600
  while time.time() < deadline and not second.exists() and proc.poll() is None:
    time.sleep(0.2)
  assert second.exists(), proc.stderr.read()[-3000:] if proc.poll() is not None else "timeout"
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait(timeout=60)
  first = workdir / "ranking" / "beta0" / "results.json"
  finished = {path: path.stat().st_mtime_ns for path in (first, second)}

  result = subprocess.run(_command(workdir), cwd=REPO_ROOT, env=_env(), capture_output=True,
                          text=True, timeout=1800)
  assert result.returncode == 0, result.stderr[-4000:]
  assert {path: path.stat().st_mtime_ns for path in finished} == finished, "finished runs redone"

  summary = json.loads((workdir / "table1.json").read_text())
  table = (workdir / "table1.md").read_text()
  betas = json.loads((workdir / "betas.json").read_text())
  assert len(betas["betas"]) == 3 and betas["prior_seed"] == summary["prior_seed"]
  # Ranked by last-k L: best has the lowest, worst the highest.
  ranking = {row["index"]: row for row in summary["ranking"]}
  order = sorted(ranking, key=lambda i: ranking[i]["last_k_L"])
  assert summary["picks"] == {"best": order[0], "median": order[1], "worst": order[2]}
  assert [ranking[i]["rank"] for i in order] == [1, 2, 3]
  # Every start's study: each arm on both seeds, hybrid started from the named beta.
  for start in ("best", "median", "worst"):
    study = summary["studies"][f"from_{start}"]
    arms = {"hybrid", "placebo", "fixed_steps", "fixed_time", "retrain"}
    if start == "worst":
      arms |= {"random_search", "evolution"}
    assert set(study["arms"]) == arms, start
    assert all(entry["seeds"] == [0, 1] for entry in study["arms"].values())
    hybrid = json.loads((workdir / f"from_{start}" / "hybrid" / "seed1" / "results.json").read_text())
    np.testing.assert_allclose(list(hybrid["beta0"].values()),
                               list(betas["betas"][summary["picks"][start]].values()), rtol=1e-6)
    # The ranking run is this start's fixed_steps run of the ranking seed, not a second run.
    assert os.path.realpath(workdir / f"from_{start}" / "fixed_steps" / "seed0") == str(
        workdir / "ranking" / f"beta{summary['picks'][start]}")
    for arm in ("hybrid gradient", "fixed at the start, equal steps", "placebo"):
      assert any(line.startswith(f"| {start} | {arm}") for line in table.splitlines()), (start, arm)
    # The start's own study.md (and study.png) say what its frozen arms hold: not beta0.
    study_md = (workdir / f"from_{start}" / "study.md").read_text()
    assert "| fixed at the start, equal wall time |" in study_md and "fixed beta0" not in study_md
  assert "| fixed beta0, equal steps |" in (workdir / "beta0" / "study.md").read_text()
  assert set(summary["studies"]["beta0"]["arms"]) == {"fixed_steps", "oracle"}
  for key in ("hybrid @ worst − fixed_steps @ worst", "hybrid @ worst − fixed_time @ worst",
              "hybrid @ worst − placebo @ worst", "retrain @ worst − fixed_steps @ worst",
              "hybrid @ worst − fixed_steps @ best", "hybrid @ worst − fixed_steps @ beta0",
              "hybrid @ worst − random_search @ worst", "hybrid @ worst − evolution @ worst"):
    d = summary["differences"][key]["last_k_L"]
    assert d["n"] == 2 and d["t95"][0] <= d["mean"] <= d["t95"][1], key
    assert f"| {key} | last_k_L |" in table
  for column in ("% < 11.25°", "% < 22.5°", "% < 30°", "MAE (°)", "median (°)", "MSE (rad²)",
                 "distance to beta*"):
    assert column in table
  assert set(summary["time_to_best"]) >= {"hybrid @ worst", "random_search @ worst"}
  assert (workdir / "from_worst" / "study.png").stat().st_size > 0     # Fig. 4 with CPU time


def test_other_random_betas_in_the_same_workdir_are_refused(tmp_path):
  import configs.table1 as table1_configs
  config = table1_configs.get_config("smoke")
  random_starts._saved_betas(config, str(tmp_path))           # what the first call saves
  np.testing.assert_array_equal(random_starts._saved_betas(config, str(tmp_path)),
                                random_starts.draw(config))
  config.table1.prior_seed = 5
  with pytest.raises(ValueError, match="other random betas"):
    random_starts._saved_betas(config, str(tmp_path))


def test_unknown_starts_and_arms_fail_before_any_run():
  import configs.table1 as table1_configs
  config = table1_configs.get_config("smoke")
  config.table1.starts = ("worst", "tenth")
  with pytest.raises(ValueError, match="unknown start"):
    random_starts.run(config, "/nonexistent")
  config = table1_configs.get_config("smoke")
  config.table1.table2_arms = ("simulated_annealing",)
  with pytest.raises(ValueError, match="unknown arm 'simulated_annealing'"):
    random_starts.run(config, "/nonexistent")


def test_bad_protocols_fail_before_any_run(tmp_path):
  import configs.table1 as table1_configs
  for change, message in (
      (lambda c: c.table1.update(num_betas=2), "num_betas must be >= 3"),
      (lambda c: c.table1.update(table2_arms=("hybrid",)), "more than once"),
      (lambda c: setattr(c, "last_k", 0), "last_k .* must be >= 1"),
      (lambda c: c.table1.update(references=("fixed_steps", "fixed_time")), "need the hybrid"),
  ):
    config = table1_configs.get_config("smoke")
    change(config)
    with pytest.raises(ValueError, match=message):
      random_starts.run(config, str(tmp_path / "never"))
  with pytest.raises(FileNotFoundError, match="no Table 1 protocol under"):
    random_starts.run(table1_configs.get_config("smoke"), str(tmp_path / "typo"), report_only=True)
  assert not (tmp_path / "never").exists() and not (tmp_path / "typo").exists()


def test_a_ranking_that_picks_other_betas_is_refused(tmp_path, monkeypatch):
  import configs.table1 as table1_configs
  config = table1_configs.get_config("smoke")
  betas = random_starts.draw(config)
  last_k_L = [22.0, 21.0, 23.0]

  def fake_run(task, base, method, seed, run_dir, beta):   # a finished fixed run, no training
    del task, base, method, beta
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
      json.dump({"seed": seed}, f)
    return {}
  monkeypatch.setattr(random_starts.compare, "run_method", fake_run)
  monkeypatch.setattr(random_starts.study, "score", lambda results, run_dir, last_k: {
      "last_k_L": last_k_L[int(run_dir[-1])], "final_L": 0.0})
  workdir = str(tmp_path / "table1")
  _, picks = random_starts.rank(config, workdir, betas)
  assert picks == {"best": 1, "median": 0, "worst": 2}
  assert json.loads((tmp_path / "table1" / "picks.json").read_text())["picks"] == picks
  assert random_starts.rank(config, workdir, betas)[1] == picks       # the same ranking again
  last_k_L[1] = 30.0                  # e.g. another last_k: the studies' starts would change
  with pytest.raises(ValueError, match="the ranking now picks"):
    random_starts.rank(config, workdir, betas)
  last_k_L[0] = float("nan")
  with pytest.raises(ValueError, match="cannot be ranked"):
    random_starts.rank(config, str(tmp_path / "other"), betas)


def test_fixed_beta_best_is_its_ranking_run_when_no_study_starts_there(tmp_path):
  import configs.table1 as table1_configs
  config = table1_configs.get_config("smoke")
  config.table1.update(starts=("worst",), table2_starts=())
  betas = random_starts.draw(config)
  ranking = [{"index": i, "rank": i + 1, "last_k_L": 20.0 + i, "final_L": 19.5 + i}
             for i in range(len(betas))]
  picks = {"best": 0, "median": 1, "worst": 2}
  seed0 = tmp_path / "hybrid" / "seed0"
  seed0.mkdir(parents=True)
  seed0.joinpath("metrics.jsonl").write_text("".join(
      json.dumps({"step": step, "elapsed_s": 10.0 * step, "device_s": 1.0, "L": L}) + "\n"
      for step, L in ((1, 25.0), (2, 19.0), (3, 21.0))))
  from hgrad.tasks import registry
  image_mean = {key: 1.0 for key, _ in registry.get(config.task).INFO.columns}
  hybrid = {"seeds": [0, 1], "scores": [
      {"last_k_L": 23.0, "final_L": 22.0, "image_mean": image_mean},
      {"last_k_L": 24.0, "final_L": 23.0, "image_mean": image_mean}]}
  studies = {"from_worst": {"split": "train", "metric": "MAE (°)", "workdir": str(tmp_path),
                            "arms": {"hybrid": hybrid}}}
  summary = random_starts.summarize(config, betas, ranking, picks, studies)
  # The paper's comparison: hybrid from the worst start against fixed at the best random beta,
  # on the one seed they share (the ranking seed), with no interval from one pair.
  d = summary["differences"]["hybrid @ worst − fixed_steps @ best"]
  assert d["last_k_L"]["n"] == 1 and d["last_k_L"]["mean"] == pytest.approx(3.0)
  assert d["final_L"]["mean"] == pytest.approx(2.5) and "t95" not in d["last_k_L"]
  # The target is a mean of the last 2 evaluations (smoke's last_k), and so is what reaches it:
  # the means are 22 (steps 1-2) and 20 (steps 2-3), so the target 20.0 is reached at step 3.
  assert summary["time_to_best"] == {"hybrid @ worst": {0: 30.0}}
  assert "| hybrid @ worst − fixed_steps @ best | last_k_L | 1 | +3.00 | — | +3.00 |" in (
      random_starts.table(summary))
