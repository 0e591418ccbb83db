"""XLA:GPU's deterministic ops are asked for before JAX starts, never over the user's choice."""

import os
import subprocess
import sys

from conftest import REPO_ROOT
from hgrad.core import determinism


def test_the_flag_is_set_before_jax_starts_and_this_xla_accepts_it():
  """In a fresh process (JAX imported, no backend yet) the flag goes into XLA_FLAGS, and XLA,
  which stops on a flag it does not know, then runs a computation with it."""
  code = ("import os, jax, jax.numpy as jnp\nfrom hgrad.core import determinism\n"
          "print(determinism.require_deterministic_gpu(), os.environ['XLA_FLAGS'])\n"
          "print(float(jax.jit(lambda x: 2 * x)(jnp.ones(2)).sum()))\n")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split("\n")[:2] == ["set --xla_gpu_deterministic_ops=true", "4.0"]


def test_a_users_own_setting_wins(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_hlo_as_text --xla_gpu_deterministic_ops=false")
  monkeypatch.setattr(determinism, "_backends_started", lambda: False)
  assert determinism.require_deterministic_gpu() == "user"
  assert os.environ["XLA_FLAGS"] == "--xla_dump_hlo_as_text --xla_gpu_deterministic_ops=false"


def test_after_jax_started_the_flag_is_not_set(monkeypatch):
  """Too late to count: XLA_FLAGS is left alone (on a CPU nothing is lost; on a GPU, a warning)."""
  monkeypatch.delenv("XLA_FLAGS", raising=False)   # (XLA stops on a flag it does not know)
  monkeypatch.setattr(determinism, "_backends_started", lambda: True)
  assert determinism.require_deterministic_gpu() == "too late"
  assert "XLA_FLAGS" not in os.environ
