"""The outer loop (paper eq. 12): one jit-compiled hybrid-gradient step on beta.

    outer_step(state, key) -> (state, metrics)

draws n seeds, renders X at beta and at beta +- delta_j (one host call),
unrolls K inner steps from the warm-started weights, takes dL/dX by VJP,
contracts it with the finite differences, updates beta and clips it to the
box (first into a ball of `OuterConfig.trust_radius` around beta0, if set);
the trained weights warm-start the next step. Generic: the caller brings
`generate`, `train_loss(params, batch)`, `eval_loss(params)` and (optionally)
the inner and beta optax transformations; nothing here names a network or a
loss. `OuterConfig.estimator = "random_search"` swaps the estimator for Basic
Random Search behind the same step (the baseline of the comparison).

The state holds u, the coordinates the beta optimizer updates: by default
(beta - low) / (high - low), so sigma and the learning rate mean the same for
a probability and a log-mean; with `OuterConfig.coordinates = "log"` the
layout's variances move on a log scale, with "logit" also its rule weights
(as softmax logits) and probabilities (as log-odds). beta is derived from u
(`HybridGradient.beta`).
The step's key is `fold_in(key, state.step)`: a resumed run replays the keys
of an uninterrupted one.

Devices: the sample axis of the rendered data (and the batch axis inside every
inner step) is sharded over a 1-D mesh of all devices; the same code runs on
one CPU, several CPU devices, a GPU or a TPU slice.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hgrad.core import estimator
from hgrad.core import unroll
from hgrad.core.layout import COORDINATES, ParamLayout

AXIS = "devices"
GenerateBatch = Callable[[jax.Array, jax.Array], Any]


@dataclasses.dataclass(frozen=True)
class OuterConfig:
  """Hybrid-gradient settings (beta in unit-box coordinates)."""

  num_perturbations: int = 4       # m antithetic pairs
  sigma: float = 0.05              # std of the directions, in unit-box units
  learning_rate: float = 0.02      # step on u
  estimator: str = "hybrid"        # a key of estimator.ESTIMATORS ("hybrid", "random_search")
  directions: str = "gaussian"     # or "orthogonal": no projection noise at m = dim(beta)
  optimizer: str = "rmsprop"       # "rmsprop" (the paper), "adam" (bias-corrected) or "sgd" (BRS V1)
  coordinates: str = "unit"        # the optimizer's coordinates: "unit" box, "log" for the
                                   # layout's log_scale dimensions (variances: relative steps),
                                   # "logit": also rule weights and probabilities as logits
  rmsprop_decay: float = 0.9
  rmsprop_eps: float = 1e-8
  momentum: float = 0.0            # > 0: heavy-ball averaging of the noisy estimates
  frozen: tuple[str, ...] = ()     # fnmatch patterns of beta's names that stay at beta0: the
                                   # estimate and the step act on the other dimensions only
  trust_radius: float = 0.0        # > 0: u stays within this L2 distance of beta0's u (a ball
                                   # in the optimizer's coordinates), against late overshoot

  def __post_init__(self):
    if self.estimator not in estimator.ESTIMATORS:
      raise ValueError(f"OuterConfig.estimator must be one of {sorted(estimator.ESTIMATORS)}, "
                       f"got {self.estimator!r}")
    if not 0.0 <= self.momentum < 1.0:
      raise ValueError(f"OuterConfig.momentum must be in [0, 1), got {self.momentum}")
    if self.directions not in estimator.DIRECTIONS:
      raise ValueError(f"OuterConfig.directions must be one of {estimator.DIRECTIONS}, "
                       f"got {self.directions!r}")
    if self.optimizer not in ("rmsprop", "adam", "sgd"):
      raise ValueError(f"OuterConfig.optimizer must be 'rmsprop', 'adam' or 'sgd', got "
                       f"{self.optimizer!r}")
    if self.coordinates not in COORDINATES:
      raise ValueError(f"OuterConfig.coordinates must be one of {COORDINATES}, got "
                       f"{self.coordinates!r}")
    if self.num_perturbations < 1:
      raise ValueError(f"OuterConfig.num_perturbations must be >= 1, got {self.num_perturbations}")
    if not self.sigma > 0:
      raise ValueError(f"OuterConfig.sigma must be > 0, got {self.sigma}")
    if not self.learning_rate > 0:
      raise ValueError(f"OuterConfig.learning_rate must be > 0, got {self.learning_rate}")
    if not self.trust_radius >= 0:
      raise ValueError(f"OuterConfig.trust_radius must be >= 0 (0: no trust region), got "
                       f"{self.trust_radius}")
    if isinstance(self.frozen, str):
      raise ValueError(f"OuterConfig.frozen must be a tuple of name patterns, got the string "
                       f"{self.frozen!r} (write ({self.frozen!r},))")


def free_dimensions(layout: ParamLayout, frozen: tuple[str, ...]) -> np.ndarray:
  """Indices of the dimensions the outer step moves: those no pattern of `frozen` names."""
  hits = np.zeros(layout.dim, bool)
  for pattern in frozen:
    match = np.array([fnmatch.fnmatchcase(name, pattern) for name in layout.names])
    if not match.any():
      raise ValueError(f"OuterConfig.frozen: {pattern!r} names no dimension of the "
                       f"{layout.name} layout")
    hits |= match
  if hits.all():
    raise ValueError(f"OuterConfig.frozen freezes every dimension of the {layout.name} layout")
  return np.nonzero(~hits)[0]


class OuterState(NamedTuple):
  u: jax.Array                # (d,) beta in unit-box coordinates, in [0, 1]: what the optimizer updates
  beta_opt_state: Any         # beta optimizer state (on u)
  inner: unroll.InnerState    # model params and inner-optimizer state (warm start)
  step: jax.Array             # int32 outer step count
  prev_grad: jax.Array        # (d,) last gradient estimate, for the cosine metric
  average: Any = ()           # EMA of the model params (InnerConfig.ema_decay > 0), else ()
  anchor: Any = ()            # (d,) beta0's u, the trust region's centre (trust_radius > 0), else ()


def device_mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), (AXIS,))


def shard_axis(tree: Any, axis: int, mesh: Mesh) -> Any:
  """Shards `axis` of every leaf over the mesh where it divides evenly; replicates otherwise."""
  size = mesh.devices.size

  def constrain(x):
    if size == 1 or x.ndim <= axis or x.shape[axis] % size:
      return x
    spec = [None] * x.ndim
    spec[axis] = AXIS
    # Host-callback results live on one device: replicate first (a broadcast),
    # then shard (a local slice), rather than let SPMD do both implicitly.
    x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P()))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*spec)))
  return jax.tree.map(constrain, tree)


def batch_generator(generate: Callable[[jax.Array, jax.Array], Any], num_samples: int):
  """generate(beta, key) for one sample -> generate(beta, key) for n samples (one host call)."""
  def generate_batch(beta, key):
    return jax.vmap(generate, (None, 0))(beta, jax.random.split(key, num_samples))
  return generate_batch


def make_beta_optimizer(config: OuterConfig) -> optax.GradientTransformation:
  momentum = config.momentum or None
  if config.optimizer == "sgd":
    return optax.sgd(config.learning_rate, momentum=momentum)
  if config.optimizer == "adam":     # bias-corrected: the first steps are ~lr, not 2-3x lr
    return optax.adam(config.learning_rate, b1=config.momentum or 0.9, b2=config.rmsprop_decay,
                      eps=config.rmsprop_eps)
  return optax.rmsprop(config.learning_rate, decay=config.rmsprop_decay, eps=config.rmsprop_eps,
                       momentum=momentum)


class HybridGradient:
  """Builds the jitted `outer_step` and the plain `train_step` of one experiment.

  Args:
    generate: single-sample `generate(beta, key) -> X` (any pytree; e.g. a
      `hgrad.Generator`'s), vmappable, no gradient needed.
    layout: beta's layout (names and box).
    train_loss: `train_loss(params, batch) -> scalar`, the inner loss on a
      batch of B samples of X.
    eval_loss: `L(params) -> scalar`, e.g. the error on real validation data.
    inner: the unroll's shape (K steps of B samples, remat) and, unless
      `inner_optimizer` is given, its optimizer.
    outer: hybrid-gradient settings; `beta_optimizer` overrides its optimizer.
    mesh: devices to shard over (default: all).
    deferred: `generate` split into render-now / start / collect (e.g. a
      `hgrad.Generator`'s `.deferred`): the 2m perturbed renders then run while
      the unroll and its VJP compute (`estimator.hybrid_vjp`); same estimate.
  """

  def __init__(self, generate: Callable[[jax.Array, jax.Array], Any], layout: ParamLayout, *,
               train_loss: Callable[[Any, Any], jax.Array], eval_loss: Callable[[Any], jax.Array],
               inner: unroll.InnerConfig, outer: OuterConfig,
               inner_optimizer: optax.GradientTransformation | None = None,
               beta_optimizer: optax.GradientTransformation | None = None,
               mesh: Mesh | None = None, deferred: estimator.Deferred | None = None):
    self.layout, self.inner, self.outer = layout, inner, outer
    self.free = free_dimensions(layout, tuple(outer.frozen))
    self.frozen_any = len(self.free) < layout.dim
    self.mesh = mesh or device_mesh()
    self._generate_batch = batch_generator(generate, inner.num_samples)
    self._deferred = None if deferred is None else self._deferred_unit(deferred)
    self.train_loss, self.eval_loss = train_loss, eval_loss
    self.inner_optimizer = inner_optimizer or unroll.inner_optimizer(inner)
    self.beta_optimizer = beta_optimizer or make_beta_optimizer(outer)
    self.outer_step = jax.jit(self._outer_step)
    self.train_step = jax.jit(self._train_step)
    self.evaluate = jax.jit(eval_loss)

  def beta(self, state: OuterState) -> jax.Array:
    """beta in the layout's units (inside the box)."""
    return self.layout.from_coords(state.u, self.outer.coordinates)

  def init(self, beta0, params, *, what: str = "beta0") -> OuterState:
    """The state before any step (also the structure a checkpoint is restored into).

    beta0 is checked here, where a user's beta enters the engine (a bad value
    names `what`), and clipped to the box.
    """
    u0 = np.clip(self.layout.to_coords(self.layout.check(beta0, what=what),
                                       self.outer.coordinates), 0.0, 1.0)
    params = jax.tree.map(jnp.asarray, params)
    return OuterState(
        u=jnp.asarray(u0, jnp.float32),
        beta_opt_state=self.beta_optimizer.init(jnp.asarray(u0, jnp.float32)),
        inner=unroll.InnerState(params, self.inner_optimizer.init(params)),
        step=jnp.zeros((), jnp.int32),
        prev_grad=jnp.zeros(u0.shape, jnp.float32),
        average=params if self.averages else (),
        anchor=jnp.asarray(u0, jnp.float32) if self.outer.trust_radius > 0 else (),
    )

  @property
  def averages(self) -> bool:
    """Whether the state keeps an EMA of the weights (InnerConfig.ema_decay > 0)."""
    return self.inner.ema_decay > 0

  def eval_params(self, state: OuterState) -> Any:
    """The weights L is evaluated on and the run delivers: the EMA if configured, else the latest."""
    return state.average if self.averages else state.inner.params

  def _averaged(self, state: OuterState, trained: unroll.InnerState) -> Any:
    if not self.averages:
      return ()
    return unroll.update_average(state.average, trained.params, self.inner.ema_decay, state.step)

  def advance(self, state: OuterState, trained: unroll.InnerState) -> OuterState:
    """The state after a global step that trained the network to `trained` and left beta alone."""
    return state._replace(inner=trained, step=state.step + 1,
                          average=self._averaged(state, trained))

  def train_inner(self, inner_state: unroll.InnerState, data, remat: bool):
    batches = shard_axis(unroll.split_steps(data, self.inner.steps), 1, self.mesh)
    return unroll.unroll(self.train_loss, self.inner_optimizer, inner_state, batches, remat=remat)

  def generate_unit(self, u: jax.Array, key: jax.Array):
    """The n training samples of one outer step at unit-box coordinates u."""
    return self._generate_batch(self.layout.from_coords(u, self.outer.coordinates), key)

  def _deferred_unit(self, deferred: estimator.Deferred) -> estimator.Deferred:
    """`deferred` at unit-box coordinates u, n samples per call (as `generate_unit`)."""
    n = self.inner.num_samples

    def submit(u, key, after):
      beta = self.layout.from_coords(u, self.outer.coordinates)
      return jax.vmap(deferred.submit, (None, 0, None))(beta, jax.random.split(key, n), after)

    def collect(ticket, after):
      return jax.vmap(deferred.collect, (0, None))(ticket, after)
    return estimator.Deferred(self.generate_unit, submit, collect)

  def loss_of_data(self, inner_state: unroll.InnerState) -> Callable[[Any], Any]:
    """data -> (L after K steps from `inner_state` on data, (trained state, train losses))."""
    def loss(data):
      trained, train_losses = self.train_inner(inner_state, data, remat=self.inner.remat)
      return self.eval_loss(trained.params), (trained, train_losses)
    return loss

  def _free_view(self, u: jax.Array):
    """(v, generate(v, key), deferred) on the free dimensions of u (identity if none is frozen)."""
    if not self.frozen_any:
      return u, self.generate_unit, self._deferred
    free = jnp.asarray(self.free)
    expand = lambda v: u.at[free].set(v)
    deferred = None if self._deferred is None else estimator.Deferred(
        lambda v, key: self._deferred.generate(expand(v), key),
        lambda v, key, after: self._deferred.submit(expand(v), key, after),
        self._deferred.collect)
    return u[free], lambda v, key: self.generate_unit(expand(v), key), deferred

  def _project(self, u: jax.Array, anchor: Any) -> jax.Array:
    """u into the trust region around `anchor` (if configured), then into the box.

    The ball comes first: anchor lies in the box, so clipping to the box then
    moves no coordinate away from it and u stays in both.
    """
    radius = self.outer.trust_radius
    if radius > 0:
      offset = u - anchor
      norm = jnp.linalg.norm(offset)
      u = anchor + offset * jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-30))
    return jnp.clip(u, 0.0, 1.0)

  def _outer_step(self, state: OuterState, key: jax.Array):
    key = jax.random.fold_in(key, state.step)
    v, generate, deferred = self._free_view(state.u)
    (value, (trained, train_losses)), grad_v = estimator.ESTIMATORS[self.outer.estimator](
        generate, self.loss_of_data(state.inner), v, key,
        num_perturbations=self.outer.num_perturbations,
        sigma=self.outer.sigma, has_aux=True, shard=lambda d: shard_axis(d, 1, self.mesh),
        directions=self.outer.directions, deferred=deferred)
    # Frozen dimensions get a zero gradient: rmsprop, adam and sgd then leave them in place.
    grad = (jnp.zeros_like(state.u).at[jnp.asarray(self.free)].set(grad_v) if self.frozen_any
            else grad_v)
    updates, beta_opt_state = self.beta_optimizer.update(grad, state.beta_opt_state, state.u)
    new_u = self._project(optax.apply_updates(state.u, updates), state.anchor)
    grad_norm = jnp.linalg.norm(grad)
    prev_norm = jnp.linalg.norm(state.prev_grad)
    cosine = jnp.where(prev_norm > 0, jnp.vdot(grad, state.prev_grad) /
                       jnp.maximum(grad_norm * prev_norm, 1e-30), 0.0)
    new_state = OuterState(new_u, beta_opt_state, trained, state.step + 1, grad,
                           self._averaged(state, trained), state.anchor)
    metrics = {"L": value, "grad_norm": grad_norm, "grad_cosine": cosine,
               "train_loss": jnp.mean(train_losses)}
    if self.outer.trust_radius > 0:   # how far beta has gone: at trust_radius, the ball holds it
      metrics["trust_distance"] = jnp.linalg.norm(new_u - state.anchor)
    return new_state, metrics

  def _train_step(self, state: OuterState, key: jax.Array):
    """K plain inner steps on fresh samples at the current beta (warm-up, fixed-beta baseline)."""
    key = jax.random.fold_in(key, state.step)
    data = jax.lax.stop_gradient(self._generate_batch(self.beta(state), key))
    trained, train_losses = self.train_inner(state.inner, shard_axis(data, 0, self.mesh),
                                             remat=False)
    return self.advance(state, trained), {"train_loss": jnp.mean(train_losses)}
