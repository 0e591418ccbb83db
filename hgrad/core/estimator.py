"""Estimators of d loss(generate(beta, key)) / d beta through a non-differentiable generator.

One interface (`Estimator`), three factories that bind the hyperparameters:

* `hybrid(num_perturbations, sigma)` -- the hybrid gradient (docs/design.md §2):

      g    = dL/dX                                         (one VJP through loss_of_data)
      s_j  = < g , f(beta + delta_j, r) - f(beta - delta_j, r) > / 2
      grad = (1 / (m sigma^2)) * sum_j s_j delta_j

  The m antithetic pairs share the data key (common random numbers), and the
  differences are contracted with g at once: the pixels x dim(beta) Jacobian
  is never formed. The unperturbed X and the 2m perturbed ones come from one
  vmapped `generate`, i.e. one host call for a `pure_callback`.
* `random_search(num_perturbations, sigma)` -- Basic Random Search V1 (Mania
  et al. 2018): finite differences of the loss itself, 2m + 1 evaluations
  (`map_evaluations`: one at a time on CPU, all at once on an accelerator).
* `placebo(num_perturbations, sigma)` -- a control: the hybrid estimate's value
  and norm in a uniformly random direction.

Every estimator is called as `estimator(generate, loss_of_data, beta, key, *,
has_aux=False, shard=None, deferred=None) -> (value, grad)`, composes with
`jit` and `vmap`, and perturbs the vector it is given: **sigma is the standard
deviation of each direction in that vector's units.** The outer step hands it
u, beta in box units (each dimension's box mapped to [0, 1]); `hybrid_vjp`,
`hybrid_value_and_grad` and `hybrid_grad` given a `layout` do the same for a
beta in the layout's own units, so one sigma means one thing everywhere.

Directions: "orthogonal" (the default of `hybrid` and `placebo`) draws blocks
of dim(beta) orthogonal directions of norm sqrt(d) (Choromanski et al. 2018):
unbiased for any m, exact per key for a linear generator at m = d; "gaussian"
(Basic Random Search V1's) i.i.d. N(0, I), which leaves noise of about d / m
times the gradient's energy.

Overlap (`Deferred`): only the unperturbed X is needed for the unroll and its
VJP. Given a generator whose renders can be started now and collected later,
`hybrid`'s forward renders X, *starts* the 2m perturbed renders and returns X;
the unroll and its VJP run while they render; the backward collects them (it
depends on the cotangent, so it is ordered after the VJP) and contracts. The
renders, and so the estimate, are the same as without overlap.

>>> import jax, jax.numpy as jnp
>>> estimate = hybrid(num_perturbations=3, sigma=1e-2)
>>> generate = lambda beta, key: jnp.sin(beta)          # any black box, e.g. a renderer
>>> value, grad = estimate(generate, lambda x: jnp.sum(x ** 2), jnp.array([0.3, -0.2, 0.5]),
...                        jax.random.key(0))
>>> grad.shape
(3,)

References: Yang & Deng, "Learning to Generate 3D Training Data through Hybrid
Gradient" (CVPR 2020); Mania, Guy & Recht, "Simple random search provides a
competitive approach to reinforcement learning" (NeurIPS 2018); Choromanski et
al., "Structured Evolution with Compact Architectures for Scalable Policy
Optimization" (ICML 2018).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Shard = Callable[[Any], Any]
Generate = Callable[[jax.Array, jax.Array], Any]
DIRECTIONS = ("gaussian", "orthogonal")
# The placebo's random direction comes from a key stream of its own (folded into the step's
# key), so it is independent of the estimate's directions and data.
PLACEBO_STREAM = 0x91ACEB0


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


def _order_token(tree: Any) -> jax.Array:
  """A scalar that depends on `tree`: passed to a callback, it orders the callback after it."""
  return jnp.sum(jax.tree.leaves(tree)[0]).astype(jnp.float32)


def contract(g: Any, diff: Any) -> jax.Array:
  """s_j = sum over every leaf and element of g * diff[j] (diff has a leading m axis)."""
  leaves = jax.tree.map(lambda gi, di: jnp.tensordot(di, gi, axes=gi.ndim), g, diff)
  return sum(jax.tree.leaves(leaves))


def combine(s_m: jax.Array, deltas: jax.Array, sigma: float) -> jax.Array:
  """grad = (1 / (m sigma^2)) sum_j s_j delta_j."""
  return jnp.tensordot(s_m, deltas, axes=1) / (s_m.shape[0] * sigma ** 2)


def draw_directions(key: jax.Array, num_perturbations: int, shape: tuple[int, ...], dtype,
                    kind: str = "orthogonal") -> jax.Array:
  """m unit-variance directions (m, *shape): E[delta delta^T] = I for either kind.

  "gaussian": i.i.d. N(0, I). "orthogonal": blocks of d = prod(shape)
  mutually orthogonal directions of norm sqrt(d), the axes of a uniformly
  random rotation. Both give the same unbiased estimate; orthogonal ones have
  no projection noise when m is a multiple of d.
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


@dataclasses.dataclass(frozen=True)
class Estimator:
  """An estimate of d loss_of_data(generate(beta, key)) / d beta, hyperparameters bound.

  Call it as `estimator(generate, loss_of_data, beta, key, *, has_aux=False,
  shard=None, deferred=None) -> (value, grad)`: `generate(beta, key) -> X`
  (vmappable, no gradient needed), `loss_of_data(X) -> scalar` (or `(scalar,
  aux)` with `has_aux`), `shard` a function applied to the stacked (2m + 1,
  ...) data, `deferred` the generator split for overlapped renders. Returns
  `(value, grad)` or `((value, aux), grad)`, value at beta, grad shaped like
  beta. Build one with `hybrid`, `random_search` or `placebo`.

  Attributes:
    num_perturbations: m, the number of antithetic pairs of directions.
    sigma: the standard deviation of each direction, in the units of the
      vector the estimator perturbs (box units for the outer step's u).
    directions: "orthogonal" or "gaussian" (`draw_directions`).
  """

  num_perturbations: int
  sigma: float
  directions: str = "orthogonal"

  def __post_init__(self):
    if isinstance(self.num_perturbations, bool) or int(self.num_perturbations) < 1:
      raise ValueError(f"num_perturbations must be >= 1, got {self.num_perturbations}")
    if not float(self.sigma) > 0:
      raise ValueError(f"sigma must be > 0, got {self.sigma}")
    if self.directions not in DIRECTIONS:
      raise ValueError(f"directions must be one of {DIRECTIONS}, got {self.directions!r}")

  def __call__(self, generate: Generate, loss_of_data: Callable[[Any], Any], beta: jax.Array,
               key: jax.Array, *, has_aux: bool = False, shard: Shard | None = None,
               deferred: Deferred | None = None):
    raise NotImplementedError

  def _deltas(self, beta: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The data key and the directions delta (m, ...) of one estimate."""
    data_key, direction_key = jax.random.split(key)
    return data_key, self.sigma * draw_directions(
        direction_key, int(self.num_perturbations), jnp.shape(beta), jnp.result_type(beta),
        self.directions)

  def _perturbed_data(self, generate: Generate, beta: jax.Array, key: jax.Array,
                      shard: Shard | None):
    """Directions delta (m, ...) and the data at [beta, beta + delta_j, beta - delta_j]."""
    data_key, deltas = self._deltas(beta, key)
    betas = jnp.concatenate([beta[None], beta + deltas, beta - deltas])
    data = jax.lax.stop_gradient(jax.vmap(generate, (0, None))(betas, data_key))
    return deltas, (shard(data) if shard is not None else data)


@dataclasses.dataclass(frozen=True)
class HybridEstimator(Estimator):
  """The hybrid gradient: backprop gives dL/dX, antithetic differences give dX/dbeta."""

  def vjp(self, generate: Generate, *, shard: Shard | None = None,
          deferred: Deferred | None = None) -> Callable[[jax.Array, jax.Array], Any]:
    """`f(beta, key) -> X` whose VJP is this estimate: `jax.grad` of any loss of X is it.

    The forward renders X = generate(beta, data key of `key`) and the 2m
    antithetic X(beta +- delta_j) in one vmapped call; the backward turns the
    cotangent g = dL/dX into `(1 / (m sigma^2)) sum_j <g, X(beta + delta_j) -
    X(beta - delta_j)> / 2 * delta_j`. The key gets no cotangent.
    """
    m = int(self.num_perturbations)

    @jax.custom_vjp
    def f(beta, key):
      return generate(beta, jax.random.split(key)[0])

    def forward(beta, key):
      if deferred is not None:
        return self._start_perturbed(deferred, beta, key, shard)
      deltas, data = self._perturbed_data(generate, beta, key, shard)
      x = jax.tree.map(lambda a: a[0], data)
      diff = jax.tree.map(lambda a: a[1:m + 1] - a[m + 1:], data)
      return x, (diff, deltas)

    def backward(residuals, g):
      diff, deltas = residuals
      if deferred is not None:
        diff = self._collect_perturbed(deferred, diff, g, shard)   # diff holds the ticket
      return combine(contract(g, diff) / 2.0, deltas, self.sigma), None

    f.defvjp(forward, backward)
    return f

  def __call__(self, generate, loss_of_data, beta, key, *, has_aux=False, shard=None,
               deferred=None):
    f = self.vjp(generate, shard=shard, deferred=deferred)
    return jax.value_and_grad(lambda b: loss_of_data(f(b, key)), has_aux=has_aux)(beta)

  def terms(self, generate: Generate, loss_of_data: Callable[[Any], Any], beta: jax.Array,
            key: jax.Array, *, has_aux: bool = False, shard: Shard | None = None):
    """The raw terms `(value, s_m, deltas_mx...)` that `combine` turns into the estimate, for
    diagnostics that split them (e.g. halves of the directions on the same samples)."""
    m = int(self.num_perturbations)
    deltas, data = self._perturbed_data(generate, beta, key, shard)
    x = jax.tree.map(lambda a: a[0], data)
    diff = jax.tree.map(lambda a: a[1:m + 1] - a[m + 1:], data)
    value, g = jax.value_and_grad(loss_of_data, has_aux=has_aux)(x)
    return value, contract(g, diff) / 2.0, deltas

  def _start_perturbed(self, deferred: Deferred, beta, key, shard: Shard | None):
    """Renders X at beta now and starts the 2m perturbed renders: (X, (ticket, deltas))."""
    data_key, deltas = self._deltas(beta, key)
    x = jax.lax.stop_gradient(deferred.generate(beta, data_key))
    ticket = jax.vmap(deferred.submit, (0, None, None))(
        jnp.concatenate([beta + deltas, beta - deltas]), data_key, _order_token(x))
    x = _after(x, ticket)     # so the unroll waits until the renders were started
    if shard is not None:
      x = jax.tree.map(lambda a: a[0], shard(jax.tree.map(lambda a: a[None], x)))
    return x, (ticket, deltas)

  def _collect_perturbed(self, deferred: Deferred, ticket, g, shard: Shard | None):
    """X(beta + delta_j) - X(beta - delta_j) (m, ...), collected once g = dL/dX exists."""
    data = jax.lax.stop_gradient(jax.vmap(deferred.collect, (0, None))(ticket, _order_token(g)))
    data = shard(data) if shard is not None else data
    m = int(self.num_perturbations)
    return jax.tree.map(lambda a: a[:m] - a[m:], data)


def check_at_once(at_once: int | None) -> None:
  """Raises ValueError unless `at_once` is None or a positive int."""
  if at_once is not None and (isinstance(at_once, bool) or not isinstance(at_once, int)
                              or at_once < 1):
    raise ValueError(f"at_once must be None or an int >= 1, got {at_once!r}")


def map_evaluations(evaluate: Callable[[Any], Any], inputs: Any, at_once: int | None = None
                    ) -> Any:
  """`evaluate` over the leading axis of `inputs`, `at_once` of them at a time.

  Within a group the evaluations are vmapped, the groups run in sequence
  (`jax.lax.map` with that batch size); the result is the same either way, up
  to float rounding. Black-box estimators evaluate one training run per
  perturbation, each on its own weights, and XLA's CPU convolutions over a
  batch of weight sets are several times slower than the same convolutions in
  sequence (`benchmarks/black_box.py`). So None, the default, means one at a
  time on CPU and all at once on an accelerator.

  Args:
    evaluate: a function of one slice of `inputs` (a pytree).
    inputs: a pytree whose leaves share a leading axis of length n.
    at_once: evaluations per group, >= 1 (n or more: a single vmap); None: by backend.

  Returns:
    The outputs of `evaluate`, stacked along a new leading axis of length n.
  """
  check_at_once(at_once)
  n = jax.tree.leaves(inputs)[0].shape[0]
  if at_once is None:
    at_once = 1 if jax.default_backend() == "cpu" else n
  if at_once >= n:
    return jax.vmap(evaluate)(inputs)
  return jax.lax.map(evaluate, inputs, batch_size=at_once if at_once > 1 else None)


@dataclasses.dataclass(frozen=True)
class RandomSearchEstimator(Estimator):
  """Basic Random Search V1: black box on the loss itself.

  Each direction costs two full evaluations, L(beta + delta_j) and
  L(beta - delta_j) (for a training loss, two training runs), on the same data
  key; `grad = sum_j (L+ - L-) delta_j / (2 m sigma^2)`. The value (and aux)
  are those at beta, evaluated alongside. Every evaluation needs its data
  first, so `deferred` is not used (nothing to overlap). The 2m + 1
  evaluations run `at_once` at a time (`map_evaluations`).
  """

  directions: str = "gaussian"
  at_once: int | None = None

  def __post_init__(self):
    super().__post_init__()
    check_at_once(self.at_once)

  def __call__(self, generate, loss_of_data, beta, key, *, has_aux=False, shard=None,
               deferred=None):
    del deferred
    m = int(self.num_perturbations)
    deltas, data = self._perturbed_data(generate, beta, key, shard)
    outputs = map_evaluations(loss_of_data, data, self.at_once)
    values = outputs[0] if has_aux else outputs
    value = jax.tree.map(lambda a: a[0], outputs)
    return value, combine((values[1:m + 1] - values[m + 1:]) / 2.0, deltas, self.sigma)


@dataclasses.dataclass(frozen=True)
class PlaceboEstimator(HybridEstimator):
  """A control arm: the hybrid estimate's value and norm, in a uniformly random direction.

  Everything else is identical (renders, unroll, cost), so a run with it moves
  beta as far and as often as hybrid gradient does, without the gradient's
  information: what it gains or loses is the mere movement of beta.
  """

  def __call__(self, generate, loss_of_data, beta, key, *, has_aux=False, shard=None,
               deferred=None):
    value, grad = super().__call__(generate, loss_of_data, beta, key, has_aux=has_aux,
                                   shard=shard, deferred=deferred)
    direction = jax.random.normal(jax.random.fold_in(key, PLACEBO_STREAM), jnp.shape(grad),
                                  jnp.result_type(grad))
    return value, direction * (jnp.linalg.norm(grad) /
                               jnp.maximum(jnp.linalg.norm(direction), 1e-30))


def hybrid(num_perturbations: int, sigma: float, directions: str = "orthogonal"
           ) -> HybridEstimator:
  """The hybrid-gradient estimator (module docstring) with m pairs of directions of std sigma.

  Args:
    num_perturbations: m, antithetic pairs: 2m + 1 renders per estimate.
    sigma: std of each direction, in the units of the vector it perturbs.
    directions: "orthogonal" (default) or "gaussian".

  Returns:
    An `Estimator`; `.vjp(generate)` gives the generator with this estimate as its VJP.
  """
  return HybridEstimator(num_perturbations, sigma, directions)


def random_search(num_perturbations: int, sigma: float, directions: str = "gaussian",
                  at_once: int | None = None) -> RandomSearchEstimator:
  """Basic Random Search V1 (Gaussian directions by default, as V1): 2m + 1 loss evaluations.

  Args:
    num_perturbations: m, antithetic pairs: 2m + 1 evaluations per estimate.
    sigma: std of each direction, in the units of the vector it perturbs.
    directions: "gaussian" (default) or "orthogonal".
    at_once: how many evaluations run at once (`map_evaluations`); None picks
      one at a time on CPU and all of them on an accelerator.

  Returns:
    An `Estimator`.
  """
  return RandomSearchEstimator(num_perturbations, sigma, directions, at_once)


def placebo(num_perturbations: int, sigma: float, directions: str = "orthogonal"
            ) -> PlaceboEstimator:
  """The placebo control: hybrid's cost, value and norm; a random direction."""
  return PlaceboEstimator(num_perturbations, sigma, directions)


# The factories by the name a config gives (`OuterConfig.estimator`).
ESTIMATORS: dict[str, Callable[..., Estimator]] = {
    "hybrid": hybrid, "random_search": random_search, "placebo": placebo}


def in_box_units(generate: Generate, layout) -> tuple[Generate, Callable, Callable]:
  """(generate_u, to_u, from_u): `generate` taking u = beta in box units (each dimension's box
  of `layout` mapped to [0, 1]); identity maps without a layout."""
  if layout is None:
    return generate, lambda beta: beta, lambda u: u
  return (lambda u, key: generate(layout.from_unit(u), key), layout.to_unit, layout.from_unit)


def hybrid_vjp(generate: Generate, *, num_perturbations: int, sigma: float,
               directions: str = "orthogonal", layout=None, shard: Shard | None = None,
               deferred: Deferred | None = None) -> Callable[[jax.Array, jax.Array], Any]:
  """Wraps a non-differentiable `generate(beta, key)` as a function with a hybrid-gradient VJP.

  Returns `f(beta, key) -> X`; `jax.grad` of any loss of X is the hybrid
  gradient (`hybrid(...).vjp`), composes with `jit`, `vmap` and optax.

    gen = hgrad.hybrid_vjp(render, num_perturbations=29, sigma=0.05, layout=layout)
    loss, grad = jax.value_and_grad(lambda b: my_loss(gen(b, key)))(beta)

  Args:
    generate: `generate(beta, key) -> pytree X`, vmappable over beta (e.g. a
      `pure_callback`); no gradient needed.
    num_perturbations: m, the number of antithetic pairs.
    sigma: std of each direction in box units (each dimension's box of
      `layout` mapped to [0, 1], as `OuterConfig.sigma`); without a layout, in
      beta's own units.
    directions: "orthogonal" (default) or "gaussian" (`draw_directions`).
    layout: beta's `ParamLayout`: perturb in box units, so that sigma means
      the same for a probability and an angle in degrees.
    shard: optional function applied to the stacked (2m + 1, ...) data.
    deferred: the same generator split into render-now / start / collect
      (`Deferred`): the 2m perturbed renders then overlap with whatever runs
      between the forward and the backward (the unroll and its VJP).
  """
  generate_u, to_u, from_u = in_box_units(generate, layout)
  if deferred is not None and layout is not None:
    deferred = Deferred(lambda u, key: deferred.generate(from_u(u), key),
                        lambda u, key, after: deferred.submit(from_u(u), key, after),
                        deferred.collect)
  f = hybrid(num_perturbations, sigma, directions).vjp(generate_u, shard=shard, deferred=deferred)
  return lambda beta, key: f(to_u(beta), key)


def hybrid_value_and_grad(generate: Generate, loss_of_data: Callable[[Any], Any],
                          beta: jax.Array, key: jax.Array, *, num_perturbations: int,
                          sigma: float, directions: str = "orthogonal", layout=None,
                          has_aux: bool = False, shard: Shard | None = None,
                          deferred: Deferred | None = None):
  """`jax.value_and_grad(lambda b: loss_of_data(generate(b, key)), has_aux)(beta)`, estimated.

  `jax.value_and_grad` through `hybrid_vjp(generate, ...)`: see there for the
  arguments. `loss_of_data(X)` returns a scalar (or `(scalar, aux)` with
  has_aux) and must be differentiable in X.

  Returns:
    `(value, grad)` or `((value, aux), grad)`, grad shaped like beta.
  """
  f = hybrid_vjp(generate, num_perturbations=num_perturbations, sigma=sigma,
                 directions=directions, layout=layout, shard=shard, deferred=deferred)
  return jax.value_and_grad(lambda b: loss_of_data(f(b, key)), has_aux=has_aux)(beta)


def hybrid_grad(generate: Generate, loss_of_data: Callable[[Any], Any], beta: jax.Array,
                key: jax.Array, *, num_perturbations: int, sigma: float,
                directions: str = "orthogonal", layout=None, has_aux: bool = False,
                shard: Shard | None = None, deferred: Deferred | None = None):
  """Hybrid-gradient estimate of d loss_of_data(generate(beta, key)) / d beta.

  The arguments of `hybrid_value_and_grad`. Unbiased for a generator linear in
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

  Returns:
    The estimate shaped like beta; `(grad, aux)` with has_aux.
  """
  value, grad = hybrid_value_and_grad(generate, loss_of_data, beta, key,
                                      num_perturbations=num_perturbations, sigma=sigma,
                                      directions=directions, layout=layout, has_aux=has_aux,
                                      shard=shard, deferred=deferred)
  return (grad, value[1]) if has_aux else grad
