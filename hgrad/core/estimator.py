"""The hybrid-gradient estimator of d loss(generate(beta, key)) / d beta (docs/design.md §2).

    g_i  = dL/dX_i                                        (one VJP through loss_of_data)
    s_j  = < g , f(beta + delta_j, r) - f(beta - delta_j, r) > / 2
    grad = (1 / (m sigma^2)) * sum_j s_j delta_j

The m antithetic pairs share the data key (common random numbers), and the
image differences are contracted with g at once: the pixels x dim(beta)
Jacobian is never formed. The unperturbed X and the 2m perturbed ones come
from one vmapped `generate`, i.e. one host call for a `pure_callback`.

`hybrid_vjp(generate)` is the estimator as a differentiable function: its
forward renders the 2m + 1 samples, its backward contracts the incoming
cotangent dL/dX with the finite differences, so `jax.grad` of any loss of its
output *is* the hybrid gradient (as optax's perturbations module makes a black
box differentiable). `hybrid_value_and_grad` and `hybrid_grad` are that, in
one call.

Overlap (`Deferred`): only the unperturbed X is needed for the unroll and its
VJP. Given a generator whose renders can be started now and collected later,
`hybrid_vjp`'s forward renders X, *starts* the 2m perturbed renders and returns
X; the unroll and its VJP run while they render; the backward collects them
(it depends on the cotangent, so it is ordered after the VJP) and contracts.
The renders, and so the estimate, are the same as without overlap.

`random_search_value_and_grad` (Basic Random Search) has the same interface,
so the outer loop can swap estimators (`ESTIMATORS`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Shard = Callable[[Any], Any]


class Deferred(NamedTuple):
  """A generator whose renders can be started now and collected later (all three vmappable).

  generate(beta, key) -> X             renders now (the unperturbed X)
  submit(beta, key, after) -> ticket   starts rendering f(beta, r(key)) and returns at once;
                                       `after` (a scalar) orders it after its producer
  collect(ticket, after) -> X          waits for a submitted render; `after` orders it
  """
  generate: Callable[[jax.Array, jax.Array], Any]
  submit: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
  collect: Callable[[jax.Array, jax.Array], Any]


def _after(tree: Any, token: Any) -> Any:
  """`tree` passed through a host callback that also takes `token`: its users wait for token.

  A real data dependence: XLA:CPU drops `optimization_barrier`s without keeping
  their order. Costs one host round trip of `tree` (the n unperturbed samples).
  """
  return jax.pure_callback(lambda t, _: t, jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree), tree, token,
                           vmap_method="broadcast_all")


def _anchor(tree: Any) -> jax.Array:
  """A scalar that depends on `tree`: passed to a callback, it orders the callback after it."""
  return jnp.sum(jax.tree.leaves(tree)[0]).astype(jnp.float32)


def _check(num_perturbations: int, sigma: float):
  if int(num_perturbations) < 1:
    raise ValueError(f"num_perturbations must be >= 1, got {num_perturbations}")
  if not float(sigma) > 0:
    raise ValueError(f"sigma must be > 0, got {sigma}")


def contract(g: Any, diff: Any) -> jax.Array:
  """s_j = sum over every leaf and element of g * diff[j] (diff has a leading m axis)."""
  leaves = jax.tree.map(lambda gi, di: jnp.tensordot(di, gi, axes=gi.ndim), g, diff)
  return sum(jax.tree.leaves(leaves))


DIRECTIONS = ("gaussian", "orthogonal")


def draw_directions(key: jax.Array, num_perturbations: int, shape: tuple[int, ...], dtype,
                    kind: str = "gaussian") -> jax.Array:
  """m unit-variance directions (m, *shape): E[delta delta^T] = I for either kind.

  "gaussian": i.i.d. N(0, I). "orthogonal": blocks of d = prod(shape)
  mutually orthogonal directions of norm sqrt(d), the axes of a uniformly
  random rotation (Choromanski et al. 2018). Both give the same unbiased
  estimate; orthogonal ones have no projection noise when m is a multiple of
  d (a linear generator's estimate is then exact), where m Gaussian
  directions leave noise of about d/m times the gradient's energy.
  """
  if kind not in DIRECTIONS:
    raise ValueError(f"directions must be one of {DIRECTIONS}, got {kind!r}")
  m = int(num_perturbations)
  if kind == "gaussian":
    return jax.random.normal(key, (m,) + tuple(shape), dtype)
  d = int(np.prod(shape))
  blocks = -(-m // d)
  q, r = jnp.linalg.qr(jax.random.normal(key, (blocks, d, d), dtype))
  q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]   # Haar-uniform rotation
  rows = jnp.swapaxes(q, -1, -2).reshape(blocks * d, d)[:m]
  return (jnp.sqrt(float(d)) * rows).reshape((m,) + tuple(shape))


def _deltas(beta, key, num_perturbations: int, sigma: float,
            direction_mask: jax.Array | None = None, directions: str = "gaussian"):
  """The data key and the directions delta (m, ...) of one estimate."""
  _check(num_perturbations, sigma)
  data_key, direction_key = jax.random.split(key)
  deltas = sigma * draw_directions(direction_key, int(num_perturbations), jnp.shape(beta),
                                   jnp.result_type(beta), directions)
  if direction_mask is not None:
    deltas = deltas * direction_mask
  return data_key, deltas


def _perturbed_data(generate, beta, key, num_perturbations: int, sigma: float,
                    shard: Shard | None, direction_mask: jax.Array | None = None,
                    directions: str = "gaussian"):
  """Directions delta (m, ...) and the data at [beta, beta + delta_j, beta - delta_j]."""
  data_key, deltas = _deltas(beta, key, num_perturbations, sigma, direction_mask, directions)
  betas = jnp.concatenate([beta[None], beta + deltas, beta - deltas])
  data = jax.lax.stop_gradient(jax.vmap(generate, (0, None))(betas, data_key))
  return deltas, (shard(data) if shard is not None else data)


def directional_derivatives(generate: Callable[[jax.Array, jax.Array], Any],
                            loss_of_data: Callable[[Any], Any], beta: jax.Array, key: jax.Array,
                            *, num_perturbations: int, sigma: float, has_aux: bool = False,
                            shard: Shard | None = None, direction_mask: jax.Array | None = None,
                            directions: str = "gaussian"):
  """The estimator's raw terms: `(value, s_m, deltas_mx...)`, s_j = <dL/dX, X(b+d_j) - X(b-d_j)>/2.

  `hybrid_value_and_grad` combines them; a diagnostic can split them (e.g.
  halves of the directions on the same samples). `direction_mask` (shaped like
  beta, 0/1) perturbs only a block of coordinates: the estimate is then
  unbiased for that block of the gradient.
  """
  m = int(num_perturbations)
  deltas, data = _perturbed_data(generate, beta, key, m, sigma, shard, direction_mask,
                                 directions)
  x = jax.tree.map(lambda a: a[0], data)
  diff = jax.tree.map(lambda a: a[1:m + 1] - a[m + 1:], data)
  value, g = jax.value_and_grad(loss_of_data, has_aux=has_aux)(x)
  return value, contract(g, diff) / 2.0, deltas


def combine(s_m: jax.Array, deltas: jax.Array, sigma: float) -> jax.Array:
  """grad = (1 / (m sigma^2)) sum_j s_j delta_j."""
  return jnp.tensordot(s_m, deltas, axes=1) / (s_m.shape[0] * sigma ** 2)


def _start_perturbed(deferred: Deferred, beta, key, num_perturbations: int, sigma: float,
                     shard: Shard | None, directions: str):
  """Renders X at beta now and starts the 2m perturbed renders: (X, (ticket, deltas))."""
  data_key, deltas = _deltas(beta, key, num_perturbations, sigma, directions=directions)
  x = jax.lax.stop_gradient(deferred.generate(beta, data_key))
  ticket = jax.vmap(deferred.submit, (0, None, None))(
      jnp.concatenate([beta + deltas, beta - deltas]), data_key, _anchor(x))
  x = _after(x, ticket)     # so the unroll waits until the renders were started
  if shard is not None:
    x = jax.tree.map(lambda a: a[0], shard(jax.tree.map(lambda a: a[None], x)))
  return x, (ticket, deltas)


def _collect_perturbed(deferred: Deferred, ticket, g, num_perturbations: int,
                       shard: Shard | None):
  """X(beta + delta_j) - X(beta - delta_j) (m, ...), collected once g = dL/dX exists."""
  data = jax.lax.stop_gradient(jax.vmap(deferred.collect, (0, None))(ticket, _anchor(g)))
  data = shard(data) if shard is not None else data
  m = int(num_perturbations)
  return jax.tree.map(lambda a: a[:m] - a[m:], data)


def hybrid_vjp(generate: Callable[[jax.Array, jax.Array], Any], *, num_perturbations: int,
               sigma: float, directions: str = "gaussian", shard: Shard | None = None,
               deferred: Deferred | None = None) -> Callable[[jax.Array, jax.Array], Any]:
  """Wraps a non-differentiable `generate(beta, key)` as a function with a hybrid-gradient VJP.

  Returns `f(beta, key) -> X`, X = generate(beta, data key of `key`); under
  `jax.grad` / `jax.vjp` its forward renders X and the 2m antithetic
  X(beta +- delta_j) in one vmapped call (same data key: common random
  numbers), and its backward turns the cotangent g = dL/dX into
  `(1 / (m sigma^2)) sum_j <g, X(beta + delta_j) - X(beta - delta_j)> / 2 * delta_j`.
  Composes with `jit` and `vmap`; the key gets no cotangent.

    gen = hgrad.hybrid_vjp(render, num_perturbations=29, sigma=0.05, directions="orthogonal")
    loss, grad = jax.value_and_grad(lambda b: my_loss(gen(b, key)))(beta)

  Args:
    generate: `generate(beta, key) -> pytree X`, vmappable over beta (e.g. a
      `pure_callback`); no gradient needed.
    num_perturbations: m, the number of antithetic pairs.
    sigma: scale of the directions, in beta's units (`draw_directions`).
    directions: "gaussian" or "orthogonal" (`draw_directions`).
    shard: optional function applied to the stacked (2m + 1, ...) data.
    deferred: the same generator split into render-now / start / collect
      (`Deferred`): the 2m perturbed renders then overlap with whatever runs
      between the forward and the backward (the unroll and its VJP).
  """
  _check(num_perturbations, sigma)
  m = int(num_perturbations)

  @jax.custom_vjp
  def f(beta, key):
    return generate(beta, jax.random.split(key)[0])

  def forward(beta, key):
    if deferred is not None:
      return _start_perturbed(deferred, beta, key, m, sigma, shard, directions)
    deltas, data = _perturbed_data(generate, beta, key, m, sigma, shard, directions=directions)
    x = jax.tree.map(lambda a: a[0], data)
    diff = jax.tree.map(lambda a: a[1:m + 1] - a[m + 1:], data)
    return x, (diff, deltas)

  def backward(residuals, g):
    diff, deltas = residuals
    if deferred is not None:
      diff = _collect_perturbed(deferred, diff, g, m, shard)   # diff holds the ticket
    return combine(contract(g, diff) / 2.0, deltas, sigma), None

  f.defvjp(forward, backward)
  return f


def hybrid_value_and_grad(generate: Callable[[jax.Array, jax.Array], Any],
                          loss_of_data: Callable[[Any], Any], beta: jax.Array, key: jax.Array,
                          *, num_perturbations: int, sigma: float, has_aux: bool = False,
                          shard: Shard | None = None, directions: str = "gaussian",
                          deferred: Deferred | None = None):
  """Like `jax.value_and_grad(lambda b: loss_of_data(generate(b, key)), has_aux)(beta)`.

  `jax.value_and_grad` through `hybrid_vjp(generate, ...)`: see there for the
  arguments. `loss_of_data(X)` returns a scalar (or `(scalar, aux)` with
  has_aux) and must be differentiable in X.

  Returns:
    `(value, grad)` or `((value, aux), grad)`, grad shaped like beta.
  """
  gen = hybrid_vjp(generate, num_perturbations=num_perturbations, sigma=sigma,
                   directions=directions, shard=shard, deferred=deferred)
  return jax.value_and_grad(lambda b: loss_of_data(gen(b, key)), has_aux=has_aux)(beta)


def random_search_value_and_grad(generate: Callable[[jax.Array, jax.Array], Any],
                                 loss_of_data: Callable[[Any], Any], beta: jax.Array,
                                 key: jax.Array, *, num_perturbations: int, sigma: float,
                                 has_aux: bool = False, shard: Shard | None = None,
                                 directions: str = "gaussian", deferred: Deferred | None = None):
  """Basic Random Search (Mania et al. 2018, V1) behind the same interface.

  Black box on the loss itself: each direction costs two full evaluations,
  L(beta + delta_j) and L(beta - delta_j) (for a training loss, two training
  runs), on the same data key; `grad = sum_j (L+ - L-) delta_j / (2 m sigma^2)`.
  The value (and aux) are those at beta itself, evaluated alongside. Every
  evaluation needs its data first, so `deferred` is not used (nothing to overlap).
  """
  del deferred
  m = int(num_perturbations)
  deltas, data = _perturbed_data(generate, beta, key, m, sigma, shard, directions=directions)
  outputs = jax.vmap(loss_of_data)(data)
  values = outputs[0] if has_aux else outputs
  value = jax.tree.map(lambda a: a[0], outputs)
  return value, combine((values[1:m + 1] - values[m + 1:]) / 2.0, deltas, sigma)


def placebo_value_and_grad(generate: Callable[[jax.Array, jax.Array], Any],
                           loss_of_data: Callable[[Any], Any], beta: jax.Array, key: jax.Array,
                           *, num_perturbations: int, sigma: float, has_aux: bool = False,
                           shard: Shard | None = None, directions: str = "gaussian",
                           deferred: Deferred | None = None):
  """A control arm: the hybrid estimate's value and norm, with a uniformly random direction.

  Everything else is identical (renders, unroll, cost), so a run with it moves
  beta as far and as often as hybrid gradient does, but without the
  gradient's information: what it gains or loses is the mere movement of beta.
  """
  value, grad = hybrid_value_and_grad(generate, loss_of_data, beta, key,
                                      num_perturbations=num_perturbations, sigma=sigma,
                                      has_aux=has_aux, shard=shard, directions=directions,
                                      deferred=deferred)
  direction = jax.random.normal(jax.random.fold_in(key, 0x9_1AC_EB0), jnp.shape(grad),
                                jnp.result_type(grad))
  return value, direction * (jnp.linalg.norm(grad) / jnp.maximum(jnp.linalg.norm(direction),
                                                                  1e-30))


ESTIMATORS = {"hybrid": hybrid_value_and_grad, "random_search": random_search_value_and_grad,
              "placebo": placebo_value_and_grad}


def hybrid_grad(generate: Callable[[jax.Array, jax.Array], Any], loss_of_data: Callable[[Any], Any],
                beta: jax.Array, key: jax.Array, *, num_perturbations: int, sigma: float,
                has_aux: bool = False, directions: str = "gaussian"):
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
                                      has_aux=has_aux, directions=directions)
  return (grad, value[1]) if has_aux else grad
