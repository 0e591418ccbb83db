"""The hybrid-gradient estimator of d loss(generate(beta, key)) / d beta (DESIGN §2).

    g_i  = dL/dX_i                                        (one VJP through loss_of_data)
    s_j  = < g , f(beta + delta_j, r) - f(beta - delta_j, r) > / 2
    grad = (1 / (m sigma^2)) * sum_j s_j delta_j

The m antithetic pairs share the data key (common random numbers), and the
image differences are contracted with g at once: the pixels x dim(beta)
Jacobian is never formed. The unperturbed X and the 2m perturbed ones come
from one vmapped `generate`, i.e. one host call for a `pure_callback`.

`random_search_value_and_grad` (Basic Random Search) has the same interface,
so the outer loop can swap estimators (`ESTIMATORS`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

Shard = Callable[[Any], Any]


def _check(num_perturbations: int, sigma: float):
  if int(num_perturbations) < 1:
    raise ValueError(f"num_perturbations must be >= 1, got {num_perturbations}")
  if not float(sigma) > 0:
    raise ValueError(f"sigma must be > 0, got {sigma}")


def contract(g: Any, diff: Any) -> jax.Array:
  """s_j = sum over every leaf and element of g * diff[j] (diff has a leading m axis)."""
  leaves = jax.tree.map(lambda gi, di: jnp.tensordot(di, gi, axes=gi.ndim), g, diff)
  return sum(jax.tree.leaves(leaves))


def _perturbed_data(generate, beta, key, num_perturbations: int, sigma: float,
                    shard: Shard | None):
  """Directions delta (m, ...) and the data at [beta, beta + delta_j, beta - delta_j]."""
  _check(num_perturbations, sigma)
  m = int(num_perturbations)
  data_key, direction_key = jax.random.split(key)
  deltas = sigma * jax.random.normal(direction_key, (m,) + jnp.shape(beta), jnp.result_type(beta))
  betas = jnp.concatenate([beta[None], beta + deltas, beta - deltas])
  data = jax.lax.stop_gradient(jax.vmap(generate, (0, None))(betas, data_key))
  return deltas, (shard(data) if shard is not None else data)


def hybrid_value_and_grad(generate: Callable[[jax.Array, jax.Array], Any],
                          loss_of_data: Callable[[Any], Any], beta: jax.Array, key: jax.Array,
                          *, num_perturbations: int, sigma: float, has_aux: bool = False,
                          shard: Shard | None = None):
  """Like `jax.value_and_grad(lambda b: loss_of_data(generate(b, key)), has_aux)(beta)`.

  Args:
    generate: `generate(beta, key) -> pytree X`; may be a `pure_callback`
      (no gradient needed); must be vmappable over beta.
    loss_of_data: `loss_of_data(X) -> scalar` (or `(scalar, aux)` with
      has_aux), differentiable in X.
    beta: parameter vector (any shape).
    key: one key for the data (shared by beta and every beta +- delta) and
      the directions.
    num_perturbations: m, the number of antithetic pairs.
    sigma: standard deviation of the Gaussian directions, in beta's units.
    has_aux: as in `jax.value_and_grad`.
    shard: optional function applied to the stacked (2m + 1, ...) data, e.g.
      a sharding constraint.

  Returns:
    `(value, grad)` or `((value, aux), grad)`, grad shaped like beta.
  """
  m = int(num_perturbations)
  deltas, data = _perturbed_data(generate, beta, key, m, sigma, shard)
  x = jax.tree.map(lambda a: a[0], data)
  diff = jax.tree.map(lambda a: a[1:m + 1] - a[m + 1:], data)
  value, g = jax.value_and_grad(loss_of_data, has_aux=has_aux)(x)
  s = contract(g, diff) / 2.0
  grad = jnp.tensordot(s, deltas, axes=1) / (m * sigma ** 2)
  return value, grad


def random_search_value_and_grad(generate: Callable[[jax.Array, jax.Array], Any],
                                 loss_of_data: Callable[[Any], Any], beta: jax.Array,
                                 key: jax.Array, *, num_perturbations: int, sigma: float,
                                 has_aux: bool = False, shard: Shard | None = None):
  """Basic Random Search (Mania et al. 2018, V1) behind the same interface.

  Black box on the loss itself: each direction costs two full evaluations,
  L(beta + delta_j) and L(beta - delta_j) (for a training loss, two training
  runs), on the same data key; `grad = sum_j (L+ - L-) delta_j / (2 m sigma^2)`.
  The value (and aux) are those at beta itself, evaluated alongside.
  """
  m = int(num_perturbations)
  deltas, data = _perturbed_data(generate, beta, key, m, sigma, shard)
  outputs = jax.vmap(loss_of_data)(data)
  values = outputs[0] if has_aux else outputs
  grad = jnp.tensordot(values[1:m + 1] - values[m + 1:], deltas, axes=1) / (2 * m * sigma ** 2)
  value = jax.tree.map(lambda a: a[0], outputs)
  return value, grad


ESTIMATORS = {"hybrid": hybrid_value_and_grad, "random_search": random_search_value_and_grad}


def hybrid_grad(generate: Callable[[jax.Array, jax.Array], Any], loss_of_data: Callable[[Any], Any],
                beta: jax.Array, key: jax.Array, *, num_perturbations: int, sigma: float,
                has_aux: bool = False):
  """Hybrid-gradient estimate of d loss_of_data(generate(beta, key)) / d beta.

  Analytic dL/dX (backprop) contracted with antithetic finite differences of
  the generator (common random numbers). Unbiased for a generator linear in
  beta; converges to the true gradient for a smooth one as m grows and sigma
  shrinks.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import hgrad
    >>> def generate(beta, key):              # any black box, e.g. a renderer
    ...   return jnp.sin(beta) + 0.1 * jax.random.normal(key, beta.shape)
    >>> def loss_of_data(x):                  # differentiable in the data
    ...   return jnp.sum(x ** 2)
    >>> beta = jnp.array([0.3, -0.2, 0.5])
    >>> g = hgrad.hybrid_grad(generate, loss_of_data, beta, jax.random.key(0),
    ...                       num_perturbations=256, sigma=1e-2)
    >>> g.shape
    (3,)

  Returns the estimate shaped like beta (and aux, with has_aux=True).
  """
  value, grad = hybrid_value_and_grad(generate, loss_of_data, beta, key,
                                      num_perturbations=num_perturbations, sigma=sigma,
                                      has_aux=has_aux)
  return (grad, value[1]) if has_aux else grad
