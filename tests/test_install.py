"""The README's first command and the notebook's install cell, each in a fresh venv.

A copy of the working tree (what a fresh clone holds) is installed into a new
virtual environment of every Python the README promises (3.11, 3.12, 3.13),
and the main job runs a few steps of its default configuration; the notebook
runs headless in a fresh venv of the newest of them with nothing but a kernel
installed, through its own install cell. Slow: a few minutes each (pip, a
first compile).
"""

import glob
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow

PROMISED = ("3.11", "3.12", "3.13")     # README: "Python 3.11, 3.12 or 3.13"
# A few steps of the main job's own configuration: warm-up, one outer step, plain steps.
FEW_STEPS = ["--config.schedule.warmup_steps=2", "--config.schedule.outer_steps=1",
             "--config.schedule.train_steps_per_outer=1", "--config.schedule.final_steps=1",
             "--config.schedule.eval_every=2"]


def _interpreter(version: str) -> str | None:
  """A working python of that version: this one, one under pyenv, or one on PATH."""
  candidates = [sys.executable] if sys.version.startswith(version + ".") else []
  candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python3")))
  candidates += [p for p in (shutil.which(f"python{version}"),) if p]
  for python in candidates:
    probe = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True)
    if probe.returncode == 0 and probe.stdout.strip() == version:
      return python
  return None


def _fresh_copy(tmp_path) -> str:
  """The working tree as a fresh clone has it: no venv, no caches, no run directories."""
  copy = str(tmp_path / "hgrad")
  shutil.copytree(REPO_ROOT, copy, ignore=shutil.ignore_patterns(
      ".git", ".venv*", "__pycache__", "*.egg-info", "runs", "build", ".pytest_cache"))
  return copy


def _venv(python: str, where) -> str:
  subprocess.run([python, "-m", "venv", str(where)], check=True, timeout=300)
  return str(where / "bin" / "python")


def _run(args, **kwargs):
  result = subprocess.run(args, capture_output=True, text=True, **kwargs)
  assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-4000:])
  return result


@pytest.mark.parametrize("version", PROMISED)
def test_the_readme_install_and_main_job_work_in_a_fresh_venv(version, tmp_path):
  python = _interpreter(version)
  if python is None:
    pytest.skip(f"no Python {version} on this machine (PATH or ~/.pyenv)")
  copy = _fresh_copy(tmp_path)
  venv_python = _venv(python, tmp_path / "venv")
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  _run([venv_python, "-m", "pip", "install", "-q", "-e", "."], cwd=copy, env=env, timeout=1200)
  run = _run([venv_python, "-m", "experiments.mbii", f"--workdir={tmp_path / 'run'}", *FEW_STEPS],
             cwd=copy, env=env, timeout=900)
  summary = run.stdout.strip().splitlines()[-1]
  assert '"steps": 5' in summary and "distance_to_beta_star" in summary, summary
  assert (tmp_path / "run" / "samples.png").stat().st_size > 0


def test_the_notebook_installs_itself_in_a_fresh_venv_and_runs(tmp_path):
  """Newest promised Python, no hgrad installed, opened from a checkout: its cells run with no
  edit and no kernel restart."""
  python = next((p for p in map(_interpreter, reversed(PROMISED)) if p), None)
  assert python is not None
  copy = _fresh_copy(tmp_path)
  venv_python = _venv(python, tmp_path / "venv")
  env = {k: v for k, v in os.environ.items()
         if k not in ("PYTHONPATH", "VIRTUAL_ENV", "HGRAD_SOURCE", "HGRAD_MBII_DIR")}
  _run([venv_python, "-m", "pip", "install", "-q", "nbclient", "nbformat", "ipykernel"],
       env=env, timeout=900)
  assert subprocess.run([venv_python, "-c", "import hgrad"], env=env, cwd="/",
                        capture_output=True).returncode != 0, "the venv must start without hgrad"
  notebooks = os.path.join(copy, "notebooks")
  code = ("import nbformat, nbclient, sys\n"
          "nb = nbformat.read('quickstart.ipynb', as_version=4)\n"
          "nbclient.NotebookClient(nb, timeout=900, kernel_name='python3',\n"
          "                        resources={'metadata': {'path': '.'}}).execute()\n"
          "nbformat.write(nb, sys.argv[1])\n")
  executed = tmp_path / "executed.ipynb"
  _run([venv_python, "-c", code, str(executed)], cwd=notebooks, env=env, timeout=1800)
  import nbformat  # pylint: disable=import-outside-toplevel
  notebook = nbformat.read(str(executed), as_version=4)
  outputs = [o for cell in notebook.cells if cell.cell_type == "code"
             for o in cell.get("outputs", [])]
  assert not [o for o in outputs if o.output_type == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 4, "gallery, curve, samples and predictions are shown"
  printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "hgrad 0." in printed
  progress = [line for line in printed.splitlines() if " step " in line]
  assert len(progress) <= 20, f"{len(progress)} progress lines"
