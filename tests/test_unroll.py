"""Unrolled training: dL/dX against finite differences, remat, and the network."""

import doctest
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrad.core import estimator
from hgrad.tasks import losses
from hgrad.tasks import network
from hgrad.core import unroll
from hgrad.generators.sample import Sample

RES = 8
NET = network.NetworkConfig(width=4, stacks=2, depth=1)


def _samples(key, prefix):
  k1, k2, k3 = jax.random.split(key, 3)
  normals = jax.random.normal(k1, prefix + (RES, RES, 3))
  normals = normals / jnp.linalg.norm(normals, axis=-1, keepdims=True)
  normals = normals.at[..., 2].set(jnp.abs(normals[..., 2]))
  mask = (jax.random.uniform(k3, prefix + (RES, RES)) > 0.2).astype(jnp.float32)
  return Sample(jax.random.uniform(k2, prefix + (RES, RES, 1)), normals,
                1.0 + jax.random.uniform(k3, prefix + (RES, RES)), mask)


def _eval_loss_of_data(remat, dtype=jnp.float32, depth_weight=0.0):
  inner = unroll.InnerConfig(steps=3, batch_size=2, learning_rate=0.05, momentum=0.5)
  params = jax.tree.map(lambda p: p.astype(dtype), network.init_params(NET, jax.random.key(0), RES))
  optimizer = unroll.inner_optimizer(inner)
  state = unroll.InnerState(params, optimizer.init(params))
  real = jax.tree.map(lambda x: x.astype(dtype), _samples(jax.random.key(9), (3,)))
  loss_fn = losses.train_loss_fn(NET, losses.LossConfig(depth_weight=depth_weight))

  def loss_of_data(batches):
    trained, _ = unroll.unroll(loss_fn, optimizer, state, batches, remat=remat)
    pred = network.predict(NET, trained.params, real.image)
    return losses.normal_loss(pred.normals, real.normals, real.mask)
  data = jax.tree.map(lambda x: x.astype(dtype), _samples(jax.random.key(1), (3, 2)))
  return loss_of_data, data


@pytest.mark.slow
def test_dl_dx_matches_central_differences():
  with jax.enable_x64(True):
    loss_of_data, data = _eval_loss_of_data(remat=True, dtype=jnp.float64, depth_weight=0.5)
    loss_of_data = jax.jit(loss_of_data)
    grad = jax.jit(jax.grad(loss_of_data))(data)
    eps = 1e-5
    checked = 0
    for field in ("image", "normals", "depth"):
      g = np.asarray(getattr(grad, field)).reshape(-1)
      for flat in np.argsort(-np.abs(g))[:3]:     # the most sensitive entries of each field
        x = np.asarray(getattr(data, field))
        idx = np.unravel_index(flat, x.shape)
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        fd = (loss_of_data(data._replace(**{field: jnp.asarray(plus)})) -
              loss_of_data(data._replace(**{field: jnp.asarray(minus)}))) / (2 * eps)
        np.testing.assert_allclose(g[flat], fd, rtol=1e-4, atol=1e-9)
        checked += 1
    assert checked == 9


@pytest.mark.slow
def test_remat_and_no_remat_give_the_same_gradient():
  loss_a, data = _eval_loss_of_data(remat=True)
  loss_b, _ = _eval_loss_of_data(remat=False)
  grad_a = jax.jit(jax.grad(loss_a))(data)
  grad_b = jax.jit(jax.grad(loss_b))(data)
  for a, b in zip(grad_a, grad_b):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_custom_convolution_matches_xla_to_second_order():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
  reference = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def second_order(conv):
    inner = lambda x, w: jnp.sum(jnp.sin(conv(x, w)))  # noqa: E731
    return jax.grad(lambda x, w: jnp.sum(jax.grad(inner, 1)(x, w) ** 2), (0, 1))(x, w)
  np.testing.assert_allclose(network.conv2d(x, w), reference(x, w), rtol=1e-5, atol=1e-5)
  for a, b in zip(second_order(network.conv2d), second_order(reference)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_second_order_pass_uses_only_hwio_convolutions():
  """JAX's native conv transpose emits HWOI kernels, ~30x slower on XLA:CPU (docs/benchmarks.md)."""
  loss_of_data, data = _eval_loss_of_data(remat=True)
  hlo = jax.jit(jax.grad(loss_of_data)).lower(data).compile().as_text()
  labels = set(re.findall(r"dim_labels=([^,\s]+)", hlo))
  assert labels and not any("_01oi->" in label for label in labels), labels


def test_split_steps_keeps_contiguous_samples_in_the_batch_axis():
  x = jnp.arange(12)
  batches = unroll.split_steps(x, 3)
  assert batches.shape == (3, 4)
  np.testing.assert_array_equal(batches[:, 0], [0, 1, 2])
  np.testing.assert_array_equal(batches[0], [0, 3, 6, 9])
  with pytest.raises(ValueError, match="cannot be split"):
    unroll.split_steps(jnp.arange(10), 3)


def test_network_shapes_and_unit_normals():
  params = network.init_params(NET, jax.random.key(0), RES)
  out = network.apply(NET, params, jnp.ones((5, RES, RES, 1)))
  assert out.normals.shape == (NET.stacks, 5, RES, RES, 3)
  assert out.depth.shape == (NET.stacks, 5, RES, RES)
  np.testing.assert_allclose(jnp.linalg.norm(out.normals, axis=-1), 1.0, atol=1e-4)
  with pytest.raises(ValueError, match="divisible"):
    network.init_params(NET, jax.random.key(0), 7)
  with pytest.raises(ValueError, match="NetworkConfig.width"):
    network.NetworkConfig(width=0)


@pytest.mark.slow
def test_training_reduces_the_loss():
  inner = unroll.InnerConfig(steps=30, batch_size=4, learning_rate=0.05)
  params = network.init_params(NET, jax.random.key(0), RES)
  optimizer = unroll.inner_optimizer(inner)
  batch = _samples(jax.random.key(2), (4,))
  batches = jax.tree.map(lambda x: jnp.broadcast_to(x, (30,) + x.shape), batch)
  _, train_losses = unroll.unroll(losses.train_loss_fn(NET, losses.LossConfig()), optimizer,
                                  unroll.InnerState(params, optimizer.init(params)), batches)
  assert train_losses[-1] < 0.8 * train_losses[0]


def test_estimator_docstring_example_runs():
  failures, tried = doctest.testmod(estimator, raise_on_error=False, verbose=False)
  assert tried > 0 and failures == 0
