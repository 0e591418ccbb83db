"""Installing hgrad adds the `hgrad` package only: no top-level configs/experiments/benchmarks."""

import os
import subprocess
import sys
import zipfile

from conftest import REPO_ROOT


def test_wheel_holds_only_the_hgrad_package(tmp_path):
  result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(tmp_path), REPO_ROOT], capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  wheel = next(f for f in os.listdir(tmp_path) if f.endswith(".whl"))
  with zipfile.ZipFile(os.path.join(tmp_path, wheel)) as archive:
    top = {name.split("/")[0] for name in archive.namelist()}
  packages = {t for t in top if not t.endswith((".dist-info", ".data"))}
  assert packages == {"hgrad"}, packages
  assert not {"configs", "experiments", "benchmarks", "examples", "tests"} & top
