"""The worked examples run and do what they say: beta moves toward the known optimum."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

EXAMPLES = os.path.join(REPO_ROOT, "examples")


def _load(name):
  sys.path.insert(0, EXAMPLES)   # so render workers can import the example's host by name
  spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def _L_at_end_of_warmup(workdir, warmup_steps):
  import json
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return next(r["L"] for r in rows if r["step"] == warmup_steps)


def test_own_generator_example_improves_its_validation_loss(tmp_path):
  example = _load("own_generator")
  results = example.main(str(tmp_path))
  assert abs(results["beta"]["x_mean"] - 1.0) < abs(results["beta0"]["x_mean"] - 1.0) - 0.5
  assert results["L"] < 0.5 * _L_at_end_of_warmup(str(tmp_path), 10)


def test_own_pyrender_scene_example_moves_toward_beta_star(tmp_path):
  example = _load("own_pyrender_scene")
  results = example.main(str(tmp_path), outer_steps=10, num_workers=2)   # workers: the user's host
  start = np.array([results["beta0"]["x_mean"], results["beta0"]["y_mean"]])
  end = np.array([results["beta"]["x_mean"], results["beta"]["y_mean"]])
  beta_star = np.array([0.3, 0.3])
  assert np.linalg.norm(end - beta_star) < 0.5 * np.linalg.norm(start - beta_star), end
  assert results["L"] < _L_at_end_of_warmup(str(tmp_path), 10)


def test_examples_run_as_scripts(tmp_path):
  result = subprocess.run([sys.executable, os.path.join(EXAMPLES, "own_generator.py"),
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0 and "x_mean" in result.stdout, result.stderr[-3000:]
