"""The hybrid-gradient estimator against exact gradients (docs/design.md §2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hgrad
from hgrad.core import estimator

D = 5


def _linear_generator():
  a_img = jax.random.normal(jax.random.key(10), (4, 6, D))
  a_vec = jax.random.normal(jax.random.key(11), (3, D))

  def generate(beta, key):
    noise_img, noise_vec = jax.random.split(key)
    return {"img": a_img @ beta + 0.3 * jax.random.normal(noise_img, (4, 6)),
            "vec": a_vec @ beta + 0.3 * jax.random.normal(noise_vec, (3,))}
  return generate


def _loss_of_data(x):
  weights = jnp.linspace(-1.0, 1.0, 24).reshape(4, 6)
  return jnp.sum(jnp.tanh(x["img"]) * weights) + 0.5 * jnp.sum(x["vec"] ** 2)


def _exact(generate, beta, key):
  """jax.grad of the composite for the data key the estimator uses."""
  data_key, _ = jax.random.split(key)
  return jax.grad(lambda b: _loss_of_data(generate(b, data_key)))(beta)


def _assert_unbiased(estimate_KxD, exact_KxD) -> np.ndarray:
  """Mean error over K keys is zero within 5 standard errors of its own spread."""
  error = np.asarray(estimate_KxD) - np.asarray(exact_KxD)
  standard_error = error.std(axis=0) / np.sqrt(len(error))
  assert np.all(np.abs(error.mean(axis=0)) < 5 * standard_error + 1e-6), (
      error.mean(axis=0), standard_error)
  return standard_error


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("directions", ["orthogonal", "gaussian"])
def test_linear_generator_is_unbiased(m, directions):
  generate = _linear_generator()
  beta = jnp.array([0.2, -0.4, 0.1, 0.7, -0.3])
  keys = jax.random.split(jax.random.key(0), 4000)
  estimate = jax.jit(jax.vmap(lambda k: hgrad.hybrid_grad(
      generate, _loss_of_data, beta, k, num_perturbations=m, sigma=0.1,
      directions=directions)))(keys)
  exact = jax.vmap(lambda k: _exact(generate, beta, k))(keys)
  standard_error = _assert_unbiased(estimate, exact)
  # And the mean estimate equals jax.grad of the composite averaged over the data.
  np.testing.assert_allclose(estimate.mean(0), exact.mean(0),
                             atol=float(5 * standard_error.max()) + 1e-6)


def test_orthogonal_directions_are_an_orthogonal_basis_of_norm_sqrt_d():
  deltas = np.asarray(estimator.draw_directions(jax.random.key(2), 2 * D + 1, (D,), jnp.float32,
                                                "orthogonal"))
  assert deltas.shape == (2 * D + 1, D)
  for block in (deltas[:D], deltas[D:2 * D]):
    np.testing.assert_allclose(block @ block.T, D * np.eye(D), atol=1e-4)
  assert not np.allclose(deltas[:D], deltas[D:2 * D])       # each block is a fresh rotation
  with pytest.raises(ValueError, match="directions"):
    estimator.draw_directions(jax.random.key(2), 3, (D,), jnp.float32, "sobol")


def test_orthogonal_directions_at_m_equal_d_are_exact_for_a_linear_generator():
  """No projection noise: one key's estimate is jax.grad of the composite for that key."""
  generate = _linear_generator()
  beta = jnp.array([0.2, -0.4, 0.1, 0.7, -0.3])
  for seed in range(3):
    key = jax.random.key(seed)
    estimate = hgrad.hybrid_grad(generate, _loss_of_data, beta, key, num_perturbations=D,
                                 sigma=0.1, directions="orthogonal")
    np.testing.assert_allclose(estimate, _exact(generate, beta, key), rtol=1e-3, atol=1e-3)


def test_orthogonal_directions_below_d_are_unbiased():
  generate = _linear_generator()
  beta = jnp.array([0.2, -0.4, 0.1, 0.7, -0.3])
  keys = jax.random.split(jax.random.key(7), 4000)
  estimate = jax.jit(jax.vmap(lambda k: hgrad.hybrid_grad(
      generate, _loss_of_data, beta, k, num_perturbations=2, sigma=0.1,
      directions="orthogonal")))(keys)
  _assert_unbiased(estimate, jax.vmap(lambda k: _exact(generate, beta, k))(keys))


def test_the_terms_on_a_block_estimate_its_block_of_the_gradient():
  """Directions on a block of dimensions (the others held, as frozen ones are): the terms
  combine to an unbiased estimate of that block of the gradient."""
  generate = _linear_generator()
  beta = jnp.array([0.2, -0.4, 0.1, 0.7, -0.3])
  block = np.array([0, 2])
  keys = jax.random.split(jax.random.key(5), 4000)
  hybrid = estimator.hybrid(2, 0.1, "gaussian")

  def block_grad(key):
    _, s_m, deltas = hybrid.terms(lambda v, k: generate(beta.at[block].set(v), k), _loss_of_data,
                                  beta[block], key)
    return estimator.combine(s_m, deltas, 0.1)

  estimate = np.asarray(jax.jit(jax.vmap(block_grad))(keys))
  exact = np.asarray(jax.vmap(lambda k: _exact(generate, beta, k))(keys))[:, block]
  _assert_unbiased(estimate, exact)


def test_linear_generator_many_directions_matches_grad_per_key():
  generate = _linear_generator()
  beta = jnp.array([0.2, -0.4, 0.1, 0.7, -0.3])
  key = jax.random.key(3)
  estimate = hgrad.hybrid_grad(generate, _loss_of_data, beta, key, num_perturbations=20000,
                               sigma=0.5)
  exact = _exact(generate, beta, key)
  assert jnp.linalg.norm(estimate - exact) < 0.05 * jnp.linalg.norm(exact)


_YY, _XX = jnp.meshgrid(jnp.linspace(-1, 1, 32), jnp.linspace(-1, 1, 32), indexing="ij")


def _blobs(beta, key):
  """Two Gaussian blobs, beta = (x, y, log size) each: a smooth nonlinear generator."""
  del key
  image = 0.0
  for x, y, log_size in beta.reshape(2, 3):
    image = image + jnp.exp(-((_XX - x) ** 2 + (_YY - y) ** 2) / (2 * jnp.exp(2 * log_size)))
  return {"image": image}


_TARGET = _blobs(jnp.array([0.3, -0.2, -1.5, -0.4, 0.5, -1.2]), None)["image"]


def _blob_loss(x):
  return jnp.sum((x["image"] - _TARGET) ** 2)


def test_smooth_generator_cosine_at_documented_m_and_sigma():
  """m = 64, sigma = 1e-2 (d = 6): every estimate is within 26 degrees of the exact gradient."""
  beta = jnp.array([0.1, 0.0, -1.3, -0.2, 0.3, -1.4])
  exact = jax.grad(lambda b: _blob_loss(_blobs(b, None)))(beta)
  estimate_fn = jax.jit(jax.vmap(lambda k: hgrad.hybrid_grad(
      _blobs, _blob_loss, beta, k, num_perturbations=64, sigma=1e-2)))
  estimates = estimate_fn(jax.random.split(jax.random.key(7), 10))
  cosines = estimates @ exact / (jnp.linalg.norm(estimates, axis=1) * jnp.linalg.norm(exact))
  assert jnp.all(cosines >= 0.9), cosines


@pytest.mark.slow
def test_more_directions_converge():
  beta = jnp.array([0.1, 0.0, -1.3, -0.2, 0.3, -1.4])
  exact = jax.grad(lambda b: _blob_loss(_blobs(b, None)))(beta)

  def mean_cosine(m):
    g = jax.vmap(lambda k: hgrad.hybrid_grad(_blobs, _blob_loss, beta, k, num_perturbations=m,
                                             sigma=1e-2, directions="gaussian"))(
                                                 jax.random.split(jax.random.key(1), 20))
    return float(jnp.mean(g @ exact / (jnp.linalg.norm(g, axis=1) * jnp.linalg.norm(exact))))
  assert mean_cosine(4) < mean_cosine(32) < mean_cosine(256)
  assert mean_cosine(256) > 0.98


def test_has_aux_and_value():
  generate = _linear_generator()
  beta = jnp.zeros(D)
  key = jax.random.key(0)
  (value, aux), grad = estimator.hybrid_value_and_grad(
      generate, lambda x: (_loss_of_data(x), x["vec"]), beta, key, num_perturbations=2,
      sigma=0.1, has_aux=True)
  data_key, _ = jax.random.split(key)
  np.testing.assert_allclose(value, _loss_of_data(generate(beta, data_key)), rtol=1e-6)
  assert aux.shape == (3,) and grad.shape == (D,)
  grad_only, aux_only = hgrad.hybrid_grad(generate, lambda x: (_loss_of_data(x), x["vec"]), beta,
                                          key, num_perturbations=2, sigma=0.1, has_aux=True)
  np.testing.assert_allclose(grad_only, grad)
  np.testing.assert_allclose(aux_only, aux)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_perturbations=0, sigma=0.1), "num_perturbations"),
    (dict(num_perturbations=2, sigma=0.0), "sigma"),
])
def test_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    hgrad.hybrid_grad(_blobs, _blob_loss, jnp.zeros(6), jax.random.key(0), **kwargs)


def _non_differentiable(generate):
  """The generator behind a pure_callback, as a renderer would be: no JAX gradient exists."""
  def host(beta, key_data):
    return jax.tree.map(np.asarray, generate(jnp.asarray(beta), jax.random.wrap_key_data(key_data)))

  def wrapped(beta, key):
    out_types = jax.eval_shape(generate, beta, key)
    return jax.pure_callback(host, out_types, beta, jax.random.key_data(key),
                             vmap_method="sequential")
  return wrapped


@pytest.mark.parametrize("directions", ["gaussian", "orthogonal"])
def test_grad_through_hybrid_vjp_equals_hybrid_grad(directions):
  generate = _non_differentiable(_linear_generator())
  beta, key = jnp.linspace(-0.5, 0.5, D), jax.random.key(3)
  expected = hgrad.hybrid_grad(generate, _loss_of_data, beta, key, num_perturbations=7,
                               sigma=1e-2, directions=directions)
  gen = hgrad.hybrid_vjp(generate, num_perturbations=7, sigma=1e-2, directions=directions)
  got = jax.grad(lambda b: _loss_of_data(gen(b, key)))(beta)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  jitted = jax.jit(jax.grad(lambda b, k: _loss_of_data(gen(b, k))))(beta, key)
  np.testing.assert_allclose(jitted, expected, rtol=1e-4, atol=1e-5)


def test_hybrid_vjp_composes_with_vmap_and_is_exact_at_m_equal_d():
  """Per key, the vmapped estimate equals the exact gradient (orthogonal, m = d, linear)."""
  generate = _linear_generator()
  gen = hgrad.hybrid_vjp(_non_differentiable(generate), num_perturbations=D, sigma=1e-2,
                         directions="orthogonal")
  beta = jnp.linspace(-0.5, 0.5, D)
  keys = jax.random.split(jax.random.key(4), 6)
  grads = jax.jit(jax.vmap(jax.grad(lambda b, k: _loss_of_data(gen(b, k))), (None, 0)))(beta, keys)
  exact = jnp.stack([_exact(generate, beta, k) for k in keys])
  np.testing.assert_allclose(grads, exact, rtol=2e-2, atol=2e-3)
  # The primal is the generator at the data key the estimate uses.
  data_key = jax.random.split(keys[0])[0]
  np.testing.assert_allclose(gen(beta, keys[0])["img"], generate(beta, data_key)["img"], rtol=1e-6)


def test_placebo_has_the_norm_of_the_estimate_and_no_correlation_with_it():
  generate = _linear_generator()
  beta = jnp.linspace(-0.5, 0.5, D)
  kwargs = dict(num_perturbations=D, sigma=1e-2, directions="orthogonal")

  @jax.jit
  def both(key):
    _, real = estimator.hybrid_value_and_grad(generate, _loss_of_data, beta, key, **kwargs)
    _, placebo = estimator.placebo(**kwargs)(generate, _loss_of_data, beta, key)
    return real, placebo
  real, placebo = jax.vmap(both)(jax.random.split(jax.random.key(8), 2000))
  np.testing.assert_allclose(np.linalg.norm(placebo, axis=1), np.linalg.norm(real, axis=1),
                             rtol=1e-5)
  cosines = np.sum(real * placebo, 1) / (np.linalg.norm(real, axis=1) * np.linalg.norm(placebo, axis=1))
  # Independent directions in D = 5: mean cosine 0 with standard error 1/sqrt(D * 2000).
  assert abs(cosines.mean()) < 5 / np.sqrt(D * 2000)
  # Real estimates agree with each other (the gradient); placebos do not.
  assert np.linalg.norm(real.mean(0)) > 0.5 * np.linalg.norm(real, axis=1).mean()
  assert np.linalg.norm(placebo.mean(0)) < 0.1 * np.linalg.norm(placebo, axis=1).mean()
