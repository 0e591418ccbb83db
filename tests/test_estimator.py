"""The hybrid-gradient estimator against exact gradients (DESIGN §2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hgrad
from hgrad import estimator

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
def test_linear_generator_is_unbiased(m):
  generate = _linear_generator()
  beta = jnp.array([0.2, -0.4, 0.1, 0.7, -0.3])
  keys = jax.random.split(jax.random.key(0), 4000)
  estimate = jax.jit(jax.vmap(lambda k: hgrad.hybrid_grad(
      generate, _loss_of_data, beta, k, num_perturbations=m, sigma=0.1)))(keys)
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


def test_direction_mask_estimates_its_block_of_the_gradient():
  """Directions restricted to a block: zero outside it, unbiased for the block inside it."""
  generate = _linear_generator()
  beta = jnp.array([0.2, -0.4, 0.1, 0.7, -0.3])
  mask = jnp.array([1.0, 0.0, 1.0, 0.0, 0.0])
  keys = jax.random.split(jax.random.key(5), 4000)

  def masked_grad(key):
    _, s_m, deltas = estimator.directional_derivatives(
        generate, _loss_of_data, beta, key, num_perturbations=2, sigma=0.1, direction_mask=mask)
    return estimator.combine(s_m, deltas, 0.1)

  estimate = np.asarray(jax.jit(jax.vmap(masked_grad))(keys))
  exact = np.asarray(jax.vmap(lambda k: _exact(generate, beta, k))(keys)) * np.asarray(mask)
  assert np.all(estimate[:, np.asarray(mask) == 0] == 0.0)
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


def test_more_directions_converge():
  beta = jnp.array([0.1, 0.0, -1.3, -0.2, 0.3, -1.4])
  exact = jax.grad(lambda b: _blob_loss(_blobs(b, None)))(beta)

  def mean_cosine(m):
    g = jax.vmap(lambda k: hgrad.hybrid_grad(_blobs, _blob_loss, beta, k, num_perturbations=m,
                                             sigma=1e-2))(jax.random.split(jax.random.key(1), 20))
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
