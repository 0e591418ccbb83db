"""The jit-compiled outer step on the real CSG generator (tiny sizes; the GL side of the engine)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrad.tasks import common
from hgrad.tasks import losses
from hgrad.tasks import network
from hgrad.core import outer
from hgrad.core import unroll
from hgrad.generators.csg import CSG_LAYOUT, CSGConfig
from hgrad.generators.csg_host import csg_generator

from conftest import REPO_ROOT

RES = 16


def build(mesh=None, learning_rate=0.05):
  generator = csg_generator(CSGConfig(resolution=RES), num_workers=0)
  net = network.NetworkConfig(width=4, stacks=1, depth=2)
  inner = unroll.InnerConfig(steps=2, batch_size=4, learning_rate=0.05)
  config = outer.OuterConfig(num_perturbations=2, sigma=0.05, learning_rate=learning_rate)
  beta_star = CSG_LAYOUT.default.copy()
  beta_star[CSG_LAYOUT.index("p_expand")] = 0.9
  real = jax.tree.map(jnp.asarray, generator.render(np.tile(beta_star, (4, 1)), 1000 + np.arange(4)))
  hg = outer.HybridGradient(generator.generate, generator.layout,
                            train_loss=losses.train_loss_fn(net, losses.LossConfig()),
                            eval_loss=common.eval_loss_fn(net, real), inner=inner,
                            outer=config, mesh=mesh)
  params = network.init_params(net, jax.random.key(0), RES)
  return generator, hg, params


@pytest.fixture(scope="module")
def setup():
  generator, hg, params = build(learning_rate=0.5)
  yield hg, params
  generator.close()


def test_outer_step_compiles_once_and_keeps_beta_in_box(setup):
  hg, params = setup
  beta0 = CSG_LAYOUT.default.copy()
  beta0[CSG_LAYOUT.index("p_expand")] = 1.0                 # on the upper edge
  beta0[CSG_LAYOUT.index("translate_x_var")] = CSG_LAYOUT.low[10]   # on the lower edge
  state = hg.init(beta0, params)
  key = jax.random.key(42)
  history = []
  for _ in range(3):
    state, metrics = hg.outer_step(state, key)
    history.append(jax.tree.map(np.asarray, metrics))
  assert hg.outer_step._cache_size() == 1
  assert int(state.step) == 3
  beta = np.asarray(hg.beta(state))
  assert np.all(beta >= CSG_LAYOUT.low) and np.all(beta <= CSG_LAYOUT.high)
  assert not np.allclose(beta, hg.layout.clip(beta0)), "beta moved"
  for m in history:
    assert np.isfinite(m["L"]) and np.isfinite(m["grad_norm"]) and m["grad_norm"] > 0
    assert -1.0 <= m["grad_cosine"] <= 1.0
  assert history[0]["grad_cosine"] == 0.0      # no previous estimate yet


def test_steps_replay_from_fold_in_keys(setup):
  """Same state and key -> same step: what resuming relies on."""
  hg, params = setup
  state = hg.init(CSG_LAYOUT.default, params)
  key = jax.random.key(1)
  first, _ = hg.outer_step(state, key)
  again, _ = hg.outer_step(state, key)
  np.testing.assert_array_equal(first.u, again.u)
  trained, metrics = hg.train_step(state, key)
  assert int(trained.step) == 1 and np.isfinite(metrics["train_loss"])


_SHARDED = """
import jax, numpy as np
from jax.sharding import Mesh
import test_outer as t
assert len(jax.devices()) == 4, jax.devices()
results = []
for devices in (jax.devices()[:1], jax.devices()):
  generator, hg, params = t.build(mesh=Mesh(np.array(devices), ("devices",)))
  state = hg.init(t.CSG_LAYOUT.default, params)
  for _ in range(2):
    state, metrics = hg.outer_step(state, jax.random.key(5))
  results.append((np.asarray(hg.beta(state)), float(metrics["L"]), np.asarray(metrics["grad_norm"])))
  generator.close()
(b1, l1, g1), (b4, l4, g4) = results
np.testing.assert_allclose(b4, b1, rtol=1e-4, atol=1e-5)
np.testing.assert_allclose(l4, l1, rtol=1e-4)
np.testing.assert_allclose(g4, g1, rtol=1e-3)
print("SHARDED_OK", l1, l4)
"""


def test_sharded_outer_step_matches_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             PYTHONPATH=os.pathsep.join([os.path.join(REPO_ROOT, "tests"), REPO_ROOT]))
  result = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True,
                          text=True, timeout=600)
  assert "SHARDED_OK" in result.stdout, result.stderr[-4000:]
