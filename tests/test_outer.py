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


def build(mesh=None, learning_rate=0.05, num_workers=0, overlap=False, frozen=(), trust_radius=0.0):
  generator = csg_generator(CSGConfig(resolution=RES), num_workers=num_workers)
  net = network.NetworkConfig(width=4, stacks=1, depth=2)
  inner = unroll.InnerConfig(steps=2, batch_size=4, learning_rate=0.05)
  config = outer.OuterConfig(num_perturbations=2, sigma=0.05, learning_rate=learning_rate,
                             frozen=frozen, trust_radius=trust_radius)
  beta_star = CSG_LAYOUT.default.copy()
  beta_star[CSG_LAYOUT.index("p_expand")] = 0.9
  real = jax.tree.map(jnp.asarray, generator.render(np.tile(beta_star, (4, 1)), 1000 + np.arange(4)))
  trainer = outer.OuterTrainer(generator,
                               train_loss=losses.train_loss_fn(net, losses.LossConfig()),
                               eval_loss=common.eval_loss_fn(net, real), inner=inner,
                               outer=config, mesh=mesh,
                               deferred=generator.deferred if overlap else None)
  params = network.init_params(net, jax.random.key(0), RES)
  return generator, trainer, params


@pytest.fixture(scope="module")
def setup():
  generator, trainer, params = build(learning_rate=0.5)
  yield trainer, params
  generator.close()


@pytest.mark.slow
def test_outer_step_compiles_once_and_keeps_beta_in_box(setup):
  trainer, params = setup
  beta0 = CSG_LAYOUT.default.copy()
  beta0[CSG_LAYOUT.index("p_expand")] = 1.0                 # on the upper edge
  beta0[CSG_LAYOUT.index("translate_x_var")] = CSG_LAYOUT.low[10]   # on the lower edge
  state = trainer.init(beta0, params)
  key = jax.random.key(42)
  history = []
  for _ in range(3):
    state, metrics = trainer.outer_step(state, key)
    history.append(jax.tree.map(np.asarray, metrics))
  assert trainer._jitted_outer._cache_size() == 1
  assert int(state.step) == 3
  beta = np.asarray(trainer.beta(state))
  assert np.all(beta >= CSG_LAYOUT.low) and np.all(beta <= CSG_LAYOUT.high)
  assert not np.allclose(beta, trainer.layout.clip(beta0)), "beta moved"
  for m in history:
    assert np.isfinite(m["L"]) and np.isfinite(m["grad_norm"]) and m["grad_norm"] > 0
    assert -1.0 <= m["grad_cosine"] <= 1.0
  assert history[0]["grad_cosine"] == 0.0      # no previous estimate yet


@pytest.mark.slow
@pytest.mark.parametrize("overlap", [False, True])
def test_frozen_dimensions_stay_at_beta0_and_the_others_move(overlap):
  generator, trainer, params = build(learning_rate=0.5, overlap=overlap, frozen=("p_*", "*_var"))
  try:
    state = trainer.init(CSG_LAYOUT.default, params)
    for _ in range(2):
      state, metrics = trainer.outer_step(state, jax.random.key(3))
    beta = np.asarray(trainer.beta(state))
    frozen = np.array([n.startswith("p_") or n.endswith("_var") for n in CSG_LAYOUT.names])
    assert frozen.sum() == 7 + 3 + 1 and len(trainer.update.free) == CSG_LAYOUT.dim - frozen.sum()
    np.testing.assert_array_equal(beta[frozen], CSG_LAYOUT.default[frozen])
    assert np.all(beta[~frozen] != CSG_LAYOUT.default[~frozen]), "every free dimension moved"
    assert np.asarray(state.last_grad)[frozen].max() == 0 and np.isfinite(metrics["L"])
  finally:
    generator.close()


def test_frozen_patterns_are_checked():
  with pytest.raises(ValueError, match="'p_expnd' names no dimension of the csg layout"):
    outer.free_dimensions(CSG_LAYOUT, ("p_expand", "p_expnd"))
  with pytest.raises(ValueError, match="freezes every dimension"):
    outer.free_dimensions(CSG_LAYOUT, ("*",))
  with pytest.raises(ValueError, match="must be a tuple of name patterns"):
    outer.OuterConfig(frozen="p_expand")


@pytest.mark.slow
def test_trust_region_holds_beta_near_beta0(setup):
  """The step is the unconstrained one pulled back onto the ball around beta0's u."""
  free_trainer, params = setup
  generator, trainer, _ = build(learning_rate=0.5, trust_radius=0.1)
  try:
    beta0 = CSG_LAYOUT.default
    state, free = trainer.init(beta0, params), free_trainer.init(beta0, params)
    np.testing.assert_array_equal(state.trust_center, free.u)
    key = jax.random.key(5)
    state, metrics = trainer.outer_step(state, key)
    free, _ = free_trainer.outer_step(free, key)
    step, free_step = np.asarray(state.u - state.trust_center), np.asarray(free.u - state.trust_center)
    assert np.linalg.norm(free_step) > 0.3, "without the ball this step goes far past 0.1"
    assert np.linalg.norm(step) == pytest.approx(0.1, rel=1e-3)
    assert metrics["trust_distance"] == pytest.approx(0.1, rel=1e-3)
    moved = free_step != 0       # (the free step is also cut by the box; the ball's is not)
    np.testing.assert_array_equal(np.sign(step[moved]), np.sign(free_step[moved]))
    for _ in range(2):
      state, metrics = trainer.outer_step(state, key)
      assert np.linalg.norm(np.asarray(state.u - state.trust_center)) <= 0.1 + 1e-6
    beta = np.asarray(trainer.beta(state))
    assert np.all(beta >= CSG_LAYOUT.low) and np.all(beta <= CSG_LAYOUT.high)
  finally:
    generator.close()
  with pytest.raises(ValueError, match="trust_radius must be >= 0"):
    outer.OuterConfig(trust_radius=-0.1)


def test_steps_replay_from_fold_in_keys(setup):
  """Same state and key -> same step: what resuming relies on."""
  trainer, params = setup
  state = trainer.init(CSG_LAYOUT.default, params)
  key = jax.random.key(1)
  first, _ = trainer.outer_step(state, key)
  again, _ = trainer.outer_step(state, key)
  np.testing.assert_array_equal(first.u, again.u)
  trained, metrics = trainer.train_step(state, key)
  assert int(trained.step) == 1 and np.isfinite(metrics["train_loss"])


_SHARDED = """
import jax, numpy as np
from jax.sharding import Mesh
import test_outer as t
assert len(jax.devices()) == 4, jax.devices()
results = []
for devices, overlap in ((jax.devices()[:1], False), (jax.devices(), False), (jax.devices(), True)):
  generator, trainer, params = t.build(mesh=Mesh(np.array(devices), ("devices",)), overlap=overlap)
  state = trainer.init(t.CSG_LAYOUT.default, params)
  for _ in range(2):
    state, metrics = trainer.outer_step(state, jax.random.key(5))
  results.append((np.asarray(trainer.beta(state)), float(metrics["L"]), np.asarray(metrics["grad_norm"])))
  generator.close()
(b1, l1, g1), (b4, l4, g4), (b4o, l4o, g4o) = results
np.testing.assert_array_equal(b4o, b4)     # overlapped renders, sharded: the same step
np.testing.assert_allclose(b4, b1, rtol=1e-4, atol=1e-5)
np.testing.assert_allclose(l4, l1, rtol=1e-4)
np.testing.assert_allclose(g4, g1, rtol=1e-3)
print("SHARDED_OK", l1, l4)
"""


@pytest.mark.slow
def test_sharded_outer_step_matches_one_device():
  # Four CPU devices also on a GPU machine; the caller's PYTHONPATH kept (packages there).
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([os.path.join(REPO_ROOT, "tests"), REPO_ROOT,
                                         os.environ.get("PYTHONPATH", "")]))
  result = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True,
                          text=True, timeout=600)
  assert "SHARDED_OK" in result.stdout, result.stderr[-4000:]


@pytest.mark.slow
def test_overlapped_renders_give_the_same_steps(num_workers=2):
  """Perturbed renders started before the unroll and collected after it: the same trajectory.

  With render workers, where the renders run beside the unroll; the in-process host (one
  thread) is covered by the recorded smoke trajectory (test_mbii_run), which runs with the
  default overlap."""
  trajectories, stats = [], []
  for overlap in (False, True):
    generator, trainer, params = build(learning_rate=0.5, num_workers=num_workers, overlap=overlap)
    state = trainer.init(CSG_LAYOUT.default, params)
    generator.reset_stats()
    us = []
    for _ in range(3):
      state, metrics = trainer.outer_step(state, jax.random.key(7))
      us.append(np.asarray(state.u))
    trajectories.append((np.stack(us), float(metrics["L"]), state.inner.params))
    stats.append(generator.reset_stats())
    generator.close()
  (serial, l_serial, params_serial), (overlapped, l_overlapped, params_overlapped) = trajectories
  np.testing.assert_array_equal(overlapped, serial)
  assert l_overlapped == l_serial
  jax.tree.map(np.testing.assert_array_equal, params_overlapped, params_serial)
  # 3 steps x (2m + 1 = 5 betas x n = 8 samples), one call for X and one for the 2m others.
  assert stats[0]["samples"] == stats[1]["samples"] == 3 * 5 * 8
  assert stats[0]["host_calls"] == 3 and stats[1]["host_calls"] == 6


def test_overlap_orders_submit_before_the_unroll_and_collect_after_it():
  """The order the jitted step runs its callbacks in: X, start the rest, unroll + VJP, collect."""
  events = []
  layout_dim = 3
  deferred_results = {}

  def render_now(beta, seed):
    events.append("render")
    return np.asarray(beta)[..., :1] * 0 + np.asarray(seed, np.float32)[..., None] % 7

  def submit(beta, seed, after):
    events.append("submit")
    deferred_results[1] = render_now(beta, seed)
    events.pop()
    return np.ones(np.shape(seed), np.int32)

  def collect(ticket, after):
    events.append("collect")
    return deferred_results.pop(1)

  spec = jax.ShapeDtypeStruct((1,), jnp.float32)

  def generate(beta, key):
    return jax.pure_callback(render_now, spec, beta, jax.random.bits(key, dtype=jnp.uint32),
                             vmap_method="broadcast_all")

  deferred = estimator_module().Deferred(
      generate,
      lambda beta, key, after: jax.pure_callback(
          submit, jax.ShapeDtypeStruct((), jnp.int32), beta,
          jax.random.bits(key, dtype=jnp.uint32), after, vmap_method="broadcast_all"),
      lambda ticket, after: jax.pure_callback(collect, spec, ticket, after,
                                              vmap_method="broadcast_all"))

  def marker(name):
    def record(x):
      events.append(name)
      return x
    return lambda x: jax.pure_callback(record, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

  @jax.custom_vjp
  def unroll(x):     # stands for the unroll (forward) and its VJP (backward)
    return x

  unroll.defvjp(lambda x: (marker("unroll")(x), None), lambda _, g: (marker("vjp")(g),))

  def loss_of_data(x):
    return jnp.sum(unroll(x) ** 2)

  est = estimator_module()
  jax.jit(lambda b, k: est.hybrid_value_and_grad(
      generate, loss_of_data, b, k, num_perturbations=2, sigma=0.1, deferred=deferred))(
          jnp.ones(layout_dim), jax.random.key(0))
  assert events == ["render", "submit", "unroll", "vjp", "collect"], events


def estimator_module():
  from hgrad.core import estimator
  return estimator
