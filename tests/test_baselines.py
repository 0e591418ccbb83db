"""Baselines: random search points downhill; evolution's operators keep meshes valid and shallow."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from hgrad.generators import csg
from hgrad.core import estimator
from hgrad.baselines import evolution


def test_random_search_points_downhill_on_a_quadratic():
  target = jnp.array([0.5, -1.0, 2.0, 0.0])
  curvature = jnp.array([1.0, 3.0, 0.5, 2.0])

  def generate(beta, key):
    del key
    return beta

  def loss(x):
    return jnp.sum(curvature * (x - target) ** 2)

  beta = jnp.zeros(4)
  exact = jax.grad(loss)(beta)
  for k in range(10):
    value, grad = estimator.random_search(16, 0.1)(generate, loss, beta, jax.random.key(k))
    assert value == loss(beta)
    assert jnp.dot(grad, exact) > 0, "the estimate has a positive projection on the gradient"
    assert loss(beta - 0.01 * grad) < loss(beta)
  # Averaged, it is the gradient (antithetic differences are exact for a quadratic).
  grads = jax.vmap(lambda k: estimator.random_search(4, 0.1)(generate, loss, beta, k)[1])(
      jax.random.split(jax.random.key(0), 4000))
  np.testing.assert_allclose(grads.mean(0), exact, atol=0.15 * float(jnp.linalg.norm(exact)))


def test_random_search_is_the_same_estimate_at_any_number_of_evaluations_at_once():
  """Each evaluation trains its own weights (a few SGD steps on the data of its beta); one at a
  time, in groups with a remainder, and all at once give the same value and estimate."""
  def generate(beta, key):
    return jnp.tanh(jax.random.normal(key, (5, 3)) * beta)           # 5 samples of 3 features

  def loss_of_data(x):
    def step(w, _):
      return w - 0.1 * jax.grad(lambda w: jnp.mean((x @ w - 1.0) ** 2))(w), None
    w, _ = jax.lax.scan(step, jnp.zeros(3), None, length=4)
    return jnp.sum(w ** 2)

  beta, key = jnp.array([0.3, -0.7, 1.1]), jax.random.key(3)
  results = [estimator.random_search(4, 0.1, at_once=at_once)(generate, loss_of_data, beta, key)
             for at_once in (1, 2, 4, 9, 50, None)]
  for value, grad in results[1:]:
    np.testing.assert_allclose(value, results[0][0], rtol=1e-5)
    np.testing.assert_allclose(grad, results[0][1], rtol=1e-4, atol=1e-6)
  assert float(jnp.linalg.norm(results[0][1])) > 0


def test_evaluations_at_once_must_be_a_positive_int():
  for bad in (0, -1, 2.0, True):
    with pytest.raises(ValueError, match="at_once"):
      estimator.random_search(4, 0.1, at_once=bad)
    with pytest.raises(ValueError, match="at_once"):
      evolution.EvolutionConfig(at_once=bad)


def _random_trees(config, count, seed):
  rng = np.random.default_rng(seed)
  beta = csg.CSG_LAYOUT.default.astype(np.float64)
  beta[csg.CSG_LAYOUT.index("p_expand")] = 0.7
  return [csg.sample_tree(beta, csg.draw_noise(int(rng.integers(2 ** 32)), config.max_depth), config)
          for _ in range(count)], rng


def _assert_valid(tree, config):
  assert csg.tree_depth(tree) <= config.max_depth
  if not evolution.is_valid(tree, config):
    return False
  shape, stats = csg.build_mesh(tree, config)
  mesh = shape.to_mesh()
  tm = trimesh.Trimesh(np.asarray(mesh.vert_properties)[:, :3], np.asarray(mesh.tri_verts),
                       process=True)
  assert tm.is_watertight, "manifold3d results are closed meshes"
  assert stats.degenerate_booleans <= stats.booleans
  return True


def test_evolution_operators_produce_valid_meshes_within_the_depth_bound():
  config = csg.CSGConfig(max_depth=3)
  trees, rng = _random_trees(config, 12, 0)

  def fresh(rng, depth):
    sub = dataclasses.replace(config, max_depth=max(depth, 0))
    return csg.sample_tree(csg.CSG_LAYOUT.default.astype(np.float64),
                           csg.draw_noise(int(rng.integers(2 ** 32)), sub.max_depth), sub)

  valid = 0
  for i in range(40):
    a, b = trees[i % len(trees)], trees[(3 * i + 1) % len(trees)]
    for child in (evolution.perturb(a, rng, 0.3),
                  evolution.replace_subtree(a, rng, fresh, config.max_depth),
                  evolution.combine(a, b, rng, config.max_depth)):
      valid += _assert_valid(child, config)
  assert valid >= 100, "invalid children are rare (and are rejected by the evolution loop)"


def test_evolution_samples_its_population_at_the_runs_beta0():
  """From a start other than the generator's defaults (Table 1's random betas) the initial
  population comes from that start: here p_expand 0 gives single primitives, 1 compositions."""
  import types
  config = csg.CSGConfig(resolution=32, max_depth=2)
  generator = types.SimpleNamespace(config=config, beta0=csg.CSG_LAYOUT.default,
                                    layout=csg.CSG_LAYOUT)
  problem = types.SimpleNamespace(config=types.SimpleNamespace(num_samples=4))
  evo_config = evolution.EvolutionConfig(initial_population=6)
  for p_expand, composed in ((0.0, False), (1.0, True)):
    beta0 = csg.CSG_LAYOUT.default.copy()
    beta0[csg.CSG_LAYOUT.index("p_expand")] = p_expand
    evo = evolution.ShapeEvolution(generator, problem, evo_config, seed=0, beta0=beta0)
    assert all(isinstance(tree, csg.Combine) == composed for tree in evo.population), p_expand
  named = dict(zip(csg.CSG_LAYOUT.names, beta0))
  assert evolution.ShapeEvolution(generator, problem, evo_config, seed=0,
                                  beta0=named).beta0.tolist() == evo.beta0.tolist()
  with pytest.raises(ValueError, match="ShapeEvolution beta0 must have trailing dimension"):
    evolution.ShapeEvolution(generator, problem, evo_config, seed=0, beta0=beta0[:3])
  with pytest.raises(ValueError, match="ShapeEvolution beta0 must be one beta"):
    evolution.ShapeEvolution(generator, problem, evo_config, seed=0, beta0=np.stack([beta0] * 2))


def test_combine_cuts_deep_operands_to_respect_the_bound():
  config = csg.CSGConfig(max_depth=2)
  rng = np.random.default_rng(1)
  beta = csg.CSG_LAYOUT.default.astype(np.float64)
  beta[csg.CSG_LAYOUT.index("p_expand")] = 1.0
  deep = csg.sample_tree(beta, csg.draw_noise(5, 2), config)
  assert csg.tree_depth(deep) == 2
  child = evolution.combine(deep, deep, rng, config.max_depth)
  assert csg.tree_depth(child) == 2 and isinstance(child, csg.Combine)


def test_paths_get_and_replace_round_trip():
  config = csg.CSGConfig(max_depth=2)
  beta = csg.CSG_LAYOUT.default.astype(np.float64)
  beta[csg.CSG_LAYOUT.index("p_expand")] = 1.0
  tree = csg.sample_tree(beta, csg.draw_noise(9, 2), config)
  paths = evolution.node_paths(tree)
  assert len(paths) == 7 and paths[0] == ()
  leaf = csg.Primitive(0, (0.5,))
  replaced = evolution.replace_node(tree, ("part", "base"), leaf)
  assert evolution.get_node(replaced, ("part", "base")) is leaf
  assert evolution.get_node(replaced, ("base",)) is tree.base
