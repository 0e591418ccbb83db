"""Shared fixtures: one in-process CSG generator per test session."""

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

# One persistent XLA compilation cache for the session, shared with the subprocesses that the
# tests start: most of them compile the same smoke-size steps (a user's own setting wins).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="hgrad-test-xla-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def csg_gen():
  from hgrad.generators.csg_host import csg_generator
  generator = csg_generator(num_workers=0)
  yield generator
  generator.close()


SHARED_MBII_TRAIN = os.path.join(REPO_ROOT, "..", "shared", "data", "mit-berkeley", "train")


def mbii_train_dir() -> str:
  """The MIT-Berkeley train split: skip on a user's machine without it, fail under CI."""
  path = os.environ.get("HGRAD_MBII_DIR") or SHARED_MBII_TRAIN
  if os.path.isdir(os.path.join(path, "apple")):
    return os.path.abspath(path)
  message = (f"MIT-Berkeley train split not found at {path} "
             "(set HGRAD_MBII_DIR or put ../shared/data/mit-berkeley/train beside the repo)")
  if os.environ.get("CI"):
    pytest.fail(message)
  pytest.skip(message)


@pytest.fixture(scope="session")
def mbii_dir():
  return mbii_train_dir()


@pytest.fixture(scope="session")
def local_ray():
  """A local Ray with 2 CPUs for the Ray backend's tests (Ray is in the test extra; under CI a
  missing Ray fails the tests that need it)."""
  ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")
  ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
  yield ray
  ray.shutdown()


def kill_after(procs, workdir, lines: int, timeout: float = 300.0) -> None:
  """SIGKILLs every process of `procs` once WORKDIR/metrics.jsonl holds `lines` steps: a hard
  stop mid-run, after whatever checkpoint came last (the resume redoes the steps since)."""
  import signal
  import time
  path = os.path.join(str(workdir), "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline and any(p.poll() is None for p in procs):
    if os.path.exists(path):
      with open(path) as f:
        if sum(1 for line in f if line.strip()) >= lines:
          break
    time.sleep(0.02)
  for proc in procs:
    if proc.poll() is None:
      os.kill(proc.pid, signal.SIGKILL)
  for proc in procs:
    proc.wait(timeout=60)
