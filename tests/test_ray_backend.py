"""The Ray render backend: the same pixels as the local pool and in-process, whatever the
number of workers (a local Ray with 2 CPUs; its faults are tested with the local pool's,
tests/test_pool_faults.py)."""

import numpy as np
import pytest

from hgrad.core.bridge import RenderConfig
from hgrad.generators.csg import CSGConfig
from hgrad.generators.csg_host import CSGHost, csg_generator

pytestmark = pytest.mark.slow

CONFIG = CSGConfig(resolution=32)


def _batch(n=10):
  rng = np.random.default_rng(0)
  layout = CSGHost.layout
  beta = np.clip(layout.default + 0.1 * rng.standard_normal((n, layout.dim)) * (layout.high - layout.low),
                 layout.low, layout.high).astype(np.float32)
  return beta, np.arange(100, 100 + n, dtype=np.uint32)


def test_same_pixels_whatever_the_backend_and_worker_count(local_ray):
  beta, seeds = _batch()
  with csg_generator(CONFIG, num_workers=0) as in_process:
    want = in_process.render(beta, seeds)
  results = {}
  for name, workers, backend in (("local, 1 worker", 1, "local"), ("local, 2 workers", 2, "local"),
                                 ("ray, 1 actor", 1, "ray"), ("ray, 2 actors", 2, "ray")):
    with csg_generator(CONFIG, num_workers=workers, render=RenderConfig(backend=backend)) as gen:
      results[name] = gen.render(beta, seeds)
      assert gen.num_workers == workers
  for name, got in results.items():
    for g, w, field in zip(got, want, want._fields):
      np.testing.assert_array_equal(g, w, err_msg=f"{name}: {field}")


def test_bad_render_config_is_named():
  with pytest.raises(ValueError, match="config.render.backend"):
    RenderConfig(backend="slurm")
  with pytest.raises(ValueError, match="address.*needs backend 'ray'"):
    RenderConfig(address="auto")
  with pytest.raises(ValueError, match="ray backend renders in actors"):
    csg_generator(CONFIG, num_workers=0, render=RenderConfig(backend="ray"))
