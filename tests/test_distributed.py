"""Two local JAX processes (CPU collectives) run one smoke run: the single-process trajectory,
one writer, and a kill of both followed by a resume (hgrad.core.distributed)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, kill_after, mbii_train_dir

from hgrad.core.distributed import DistributedConfig

pytestmark = pytest.mark.slow


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(workdir, data_dir, *extra, kill_after_lines=0):
  """Both processes of one launch; returns their (exit code, stdout, stderr). With
  `kill_after_lines`, both are SIGKILLed once that many steps are logged."""
  port = _free_port()
  args = [sys.executable, "-m", "experiments.mbii", "--config=configs/mbii.py:smoke",
          f"--workdir={workdir}", f"--config.data.dir={data_dir}", "--config.csg.exact_unions=True",
          f"--config.distributed.coordinator_address=localhost:{port}",
          "--config.distributed.num_processes=2", *extra]
  procs = [subprocess.Popen(args + [f"--config.distributed.process_id={i}"], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  if kill_after_lines:
    kill_after(procs, workdir, kill_after_lines)
  outputs = [p.communicate(timeout=600) for p in procs]
  return [(p.returncode, *out) for p, out in zip(procs, outputs)]


def _why(stderr: str) -> str:
  """An abort's cause is logged long before its thread dump: the lines that say so, then the end."""
  said = [line for line in stderr.splitlines() if any(
      word in line for word in ("Error", "error:", "Check failed", "Fatal", "timed out", "DEADLINE",
                                "heartbeat", "Terminating", "UNAVAILABLE"))]
  return "\n".join(said[:30]) + "\n...\n" + stderr[-2000:]


def test_two_processes_reproduce_the_single_process_trajectory_and_resume(tmp_path):
  data_dir = mbii_train_dir()
  workdir = str(tmp_path / "run")
  longer = "--config.schedule.final_steps=100"          # time to stop it mid-run
  killed = _launch(workdir, data_dir, longer, kill_after_lines=7)
  assert [code for code, _, _ in killed] == [-9, -9], [err[-2000:] for _, _, err in killed]
  finished = _launch(workdir, data_dir, longer)
  for i, (code, out, err) in enumerate(finished):
    assert code == 0, f"process {i}: {_why(err)}"
    assert "resumed" in err, f"process {i} did not resume"
  summaries = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in finished]
  assert summaries[0]["train_mae"] == pytest.approx(summaries[1]["train_mae"], abs=1e-4)

  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == list(range(1, 111)), "one writer: each step logged once"
  with open(os.path.join(REPO_ROOT, "tests", "data", "mbii_smoke_trajectory.json")) as f:
    recorded = json.load(f)            # the single-process trajectory (test_mbii_run), 10 steps
  rows = rows[:10]                     # where the two schedules agree
  assert [r["phase"] for r in rows] == recorded["phase"]
  np.testing.assert_allclose([list(r["beta"].values()) for r in rows], recorded["beta"],
                             rtol=1e-4, atol=1e-4)
  for name in ("results.json", "curve.png", "samples.png", "config.json"):
    assert os.path.exists(os.path.join(workdir, name)), name


def test_bad_distributed_config_is_named():
  with pytest.raises(ValueError, match="needs coordinator_address"):
    DistributedConfig(num_processes=2)
  with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\)"):
    DistributedConfig(coordinator_address="localhost:1234", num_processes=2, process_id=2)
