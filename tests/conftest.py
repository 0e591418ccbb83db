"""Shared fixtures: one in-process CSG generator per test session."""

import os

import pytest

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def csg_gen():
  from hgrad.csg_host import csg_generator
  generator = csg_generator(num_workers=0)
  yield generator
  generator.close()
