"""The outer loop (paper eq. 12): tune beta while the network trains, in one jitted step.

Three parts, each usable on its own:

* `InnerProblem`: the network's side. K inner optimizer steps on a batch of
  generated samples, a pure `lax.scan` differentiable in the samples; L, the
  loss on real data; an EMA of the weights.
* an `Estimator` (`hgrad.core.estimator`): d L / d u through the generator.
* `BetaUpdate`: the beta side, on u, beta in the optimizer's coordinates (each
  dimension's box mapped to [0, 1]; `OuterConfig.coordinates`): the estimate on
  the free dimensions, the beta optimizer, a trust region around beta0, the box.

`OuterTrainer` composes them into `outer_step(state, key)`: draw the step's
samples at u and the estimator's perturbed ones (one host call), unroll K
inner steps from the warm-started weights, take dL/dX by VJP and contract it
with the finite differences, update u; the trained weights warm-start the
next step. `train_step` is a plain training step at the current beta. Nothing
here names a network or a loss. The step's key is `fold_in(key, state.step)`,
so a resumed run replays the keys of an uninterrupted one.

Devices: the sample axis of the generated data (and the batch axis inside
every inner step) is sharded over a 1-D mesh of all devices; the same code
runs on one CPU, several CPU devices, a GPU or a TPU slice.
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

from hgrad.core import estimator as estimators
from hgrad.core import unroll
from hgrad.core.layout import COORDINATES, ParamLayout

AXIS = "devices"
OPTIMIZERS = ("rmsprop", "adam", "sgd")


@dataclasses.dataclass(frozen=True)
class OuterConfig:
  """How beta moves (in u: each dimension's box mapped to [0, 1], `coordinates`).

  Attributes:
    num_perturbations: m antithetic pairs of directions per estimate (2m + 1
      sample sets rendered; Basic Random Search: 2m + 1 trainings).
    sigma: std of each direction in u (box units): the same meaning as the
      `sigma` of `hgrad.hybrid_vjp` given a layout.
    learning_rate: the beta optimizer's step size on u.
    estimator: "hybrid", "random_search" or "placebo" (`estimator.ESTIMATORS`).
    directions: "orthogonal" (exact per key for a linear generator at
      m = dim(beta); unbiased for any m) or "gaussian".
    optimizer: "rmsprop" (the paper's), "adam" (bias-corrected) or "sgd".
    coordinates: "unit" (linear box), "log" (variances on a log scale) or
      "logit" (also rule weights as softmax logits, probabilities as log-odds).
    rmsprop_decay: RMSprop's decay, and Adam's b2.
    rmsprop_eps: RMSprop's and Adam's epsilon.
    momentum: heavy-ball momentum of rmsprop and sgd; Adam's b1 if > 0 (else 0.9).
    frozen: fnmatch patterns of beta's names kept at beta0: the estimate and
      the step act on the other dimensions only.
    trust_radius: > 0 keeps u within this L2 distance of beta0's u.
  """

  num_perturbations: int = 4
  sigma: float = 0.05
  learning_rate: float = 0.02
  estimator: str = "hybrid"
  directions: str = "orthogonal"
  optimizer: str = "rmsprop"
  coordinates: str = "unit"
  rmsprop_decay: float = 0.9
  rmsprop_eps: float = 1e-8
  momentum: float = 0.0
  frozen: tuple[str, ...] = ()
  trust_radius: float = 0.0

  def __post_init__(self):
    if self.estimator not in estimators.ESTIMATORS:
      raise ValueError(f"OuterConfig.estimator must be one of {sorted(estimators.ESTIMATORS)}, "
                       f"got {self.estimator!r}")
    if not 0.0 <= self.momentum < 1.0:
      raise ValueError(f"OuterConfig.momentum must be in [0, 1), got {self.momentum}")
    if self.directions not in estimators.DIRECTIONS:
      raise ValueError(f"OuterConfig.directions must be one of {estimators.DIRECTIONS}, "
                       f"got {self.directions!r}")
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"OuterConfig.optimizer must be one of {OPTIMIZERS}, got "
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

  def make_estimator(self) -> estimators.Estimator:
    """The configured estimator with its hyperparameters bound."""
    return estimators.ESTIMATORS[self.estimator](self.num_perturbations, self.sigma,
                                                  self.directions)


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
  """Everything an outer or plain step reads and writes (what a checkpoint holds).

  Attributes:
    u: (d,) beta in the optimizer's coordinates, in [0, 1] per dimension.
    beta_opt_state: the beta optimizer's state (on u).
    inner: the network's parameters and inner-optimizer state (warm start).
    step: the global step count (int32).
    last_grad: (d,) the last estimate, for the cosine between successive ones.
    average: the EMA of the network's parameters (`InnerConfig.ema_decay` > 0), else ().
    trust_center: (d,) beta0's u, the trust region's centre (`trust_radius` > 0), else ().
  """

  u: jax.Array
  beta_opt_state: Any
  inner: unroll.InnerState
  step: jax.Array
  last_grad: jax.Array
  average: Any = ()
  trust_center: Any = ()


def device_mesh() -> Mesh:
  """A 1-D mesh of every device, the axis the samples are sharded over."""
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


class InnerProblem:
  """The network's side: K inner steps on generated samples, L on real data, an EMA.

  Args:
    train_loss: `train_loss(params, batch) -> scalar`, the loss of one inner
      step on a batch of B samples.
    eval_loss: `eval_loss(params) -> scalar`, L: e.g. the error on real
      validation data; what the estimate descends.
    config: K, B, remat, the EMA and (unless `optimizer` is given) the inner optimizer.
    optimizer: an optax transformation in place of `config`'s.
    mesh: devices to shard the sample axis over (default: all).
  """

  def __init__(self, train_loss: Callable[[Any, Any], jax.Array],
               eval_loss: Callable[[Any], jax.Array], config: unroll.InnerConfig,
               optimizer: optax.GradientTransformation | None = None, mesh: Mesh | None = None):
    self.train_loss, self.eval_loss, self.config = train_loss, eval_loss, config
    self.optimizer = optimizer or unroll.inner_optimizer(config)
    self.mesh = mesh or device_mesh()

  @property
  def averages(self) -> bool:
    """Whether L is scored on (and a run delivers) an EMA of the weights."""
    return self.config.ema_decay > 0

  def init(self, params: Any) -> unroll.InnerState:
    """The inner state before any step: `params` and the inner optimizer's fresh state."""
    params = jax.tree.map(jnp.asarray, params)
    return unroll.InnerState(params, self.optimizer.init(params))

  def train(self, state: unroll.InnerState, data: Any, *, remat: bool
            ) -> tuple[unroll.InnerState, jax.Array]:
    """K inner steps on the n = K * B samples of `data` (sample i in step i % K)."""
    batches = shard_axis(unroll.split_steps(data, self.config.steps), 1, self.mesh)
    return unroll.unroll(self.train_loss, self.optimizer, state, batches, remat=remat)

  def loss_of_data(self, state: unroll.InnerState) -> Callable[[Any], Any]:
    """data -> (L after K steps from `state` on data, (trained state, train losses))."""
    def loss(data):
      trained, train_losses = self.train(state, data, remat=self.config.remat)
      return self.eval_loss(trained.params), (trained, train_losses)
    return loss

  def update_average(self, average: Any, params: Any, step: jax.Array) -> Any:
    """The EMA after a step that trained the network to `params` (() without an EMA)."""
    if not self.averages:
      return ()
    return unroll.update_average(average, params, self.config.ema_decay, step)


class BetaUpdate:
  """The beta side, optax-style on u: free dimensions -> optimizer -> trust region -> box.

  Args:
    layout: beta's names, box and defaults.
    config: coordinates, frozen dimensions, trust radius and (unless
      `optimizer` is given) the beta optimizer.
    optimizer: an optax transformation on u in place of `config`'s.
  """

  def __init__(self, layout: ParamLayout, config: OuterConfig,
               optimizer: optax.GradientTransformation | None = None):
    self.layout, self.config = layout, config
    self.free = free_dimensions(layout, tuple(config.frozen))
    self.optimizer = optimizer or make_beta_optimizer(config)

  def to_beta(self, u: jax.Array) -> jax.Array:
    """beta in the layout's units from u (jax or numpy)."""
    return self.layout.from_coords(u, self.config.coordinates)

  def to_u(self, beta) -> np.ndarray:
    """u of a beta (checked where it enters), clipped to [0, 1]."""
    return np.clip(self.layout.to_coords(beta, self.config.coordinates), 0.0, 1.0)

  def init(self, u0: jax.Array) -> tuple[Any, Any]:
    """(optimizer state, trust-region centre) for a run that starts at u0."""
    return self.optimizer.init(u0), (u0 if self.config.trust_radius > 0 else ())

  def restrict(self, u: jax.Array) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
    """(v, expand): u's free dimensions, and v -> u with them replaced (identity if none is
    frozen)."""
    if len(self.free) == self.layout.dim:
      return u, lambda v: v
    free = jnp.asarray(self.free)
    return u[free], lambda v: u.at[free].set(v)

  def full_gradient(self, grad_v: jax.Array, u: jax.Array) -> jax.Array:
    """The estimate on the free dimensions as a gradient on u: zero on the frozen ones (so
    rmsprop, adam and sgd leave them in place)."""
    if len(self.free) == self.layout.dim:
      return grad_v
    return jnp.zeros_like(u).at[jnp.asarray(self.free)].set(grad_v)

  def apply(self, grad: jax.Array, u: jax.Array, opt_state: Any, center: Any
            ) -> tuple[jax.Array, Any]:
    """(new u, new optimizer state) after one step along `grad` (a gradient on u)."""
    updates, opt_state = self.optimizer.update(grad, opt_state, u)
    return self.project(optax.apply_updates(u, updates), center), opt_state

  def project(self, u: jax.Array, center: Any) -> jax.Array:
    """u into the trust region around `center` (if configured), then into the box.

    The ball comes first: the centre lies in the box, so clipping to the box
    then moves no coordinate away from it and u stays in both.
    """
    radius = self.config.trust_radius
    if radius > 0:
      offset = u - center
      norm = jnp.linalg.norm(offset)
      u = center + offset * jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-30))
    return jnp.clip(u, 0.0, 1.0)


def make_beta_optimizer(config: OuterConfig) -> optax.GradientTransformation:
  """The beta optimizer `config.optimizer` names, on u."""
  momentum = config.momentum or None
  if config.optimizer == "sgd":
    return optax.sgd(config.learning_rate, momentum=momentum)
  if config.optimizer == "adam":     # bias-corrected: the first steps are ~lr, not 2-3x lr
    return optax.adam(config.learning_rate, b1=config.momentum or 0.9, b2=config.rmsprop_decay,
                      eps=config.rmsprop_eps)
  return optax.rmsprop(config.learning_rate, decay=config.rmsprop_decay, eps=config.rmsprop_eps,
                       momentum=momentum)


class OuterTrainer:
  """Tunes beta with an estimator while the network trains: the jitted outer and plain steps.

  Args:
    generate: a `hgrad.Generator` (its layout, and its host statistics and
      `close()` for the run loop, come with it), or any single-sample
      `generate(beta, key) -> X` (a pytree), vmappable, no gradient needed.
    layout: beta's layout (names and box); a Generator's own by default.
    train_loss: `train_loss(params, batch) -> scalar`, the inner loss on a
      batch of B samples of X.
    eval_loss: `L(params) -> scalar`, e.g. the error on real validation data.
    inner: the unroll's shape (K steps of B samples, remat, EMA) and, unless
      `inner_optimizer` is given, its optimizer.
    outer: how beta moves (`OuterConfig`); `beta_optimizer` overrides its
      optimizer, `estimator` its estimator (an `hgrad.core.estimator.Estimator`).
    mesh: devices to shard over (default: all).
    deferred: `generate` split into render-now / start / collect (e.g. a
      `hgrad.Generator`'s `.deferred`): the 2m perturbed renders then run while
      the unroll and its VJP compute; the same estimate.
  """

  def __init__(self, generate: Any, layout: ParamLayout | None = None, *,
               train_loss: Callable[[Any, Any], jax.Array], eval_loss: Callable[[Any], jax.Array],
               inner: unroll.InnerConfig, outer: OuterConfig,
               inner_optimizer: optax.GradientTransformation | None = None,
               beta_optimizer: optax.GradientTransformation | None = None,
               estimator: estimators.Estimator | None = None,
               mesh: Mesh | None = None, deferred: estimators.Deferred | None = None):
    # A hgrad.Generator (anything with .generate and .layout) or a bare generate function.
    self.generator = generate if hasattr(generate, "generate") else None
    if self.generator is not None:
      generate, layout = self.generator.generate, layout or self.generator.layout
    if layout is None:
      raise ValueError("OuterTrainer needs beta's layout: pass layout= with a generate function")
    self.layout, self.inner, self.outer = layout, inner, outer
    self.problem = InnerProblem(train_loss, eval_loss, inner, inner_optimizer, mesh)
    self.update = BetaUpdate(layout, outer, beta_optimizer)
    self.estimator = estimator or outer.make_estimator()
    self._generate_batch = batch_generator(generate, inner.num_samples)
    self._deferred = None if deferred is None else self._deferred_in_u(deferred)
    self._jitted_outer = jax.jit(self._outer_step)
    self._jitted_train = jax.jit(self._train_step)
    self._jitted_evaluate = jax.jit(eval_loss)

  # --- The API -----------------------------------------------------------------------------

  def init(self, beta0, params, *, what: str = "beta0") -> OuterState:
    """The state before any step (also the structure a checkpoint is restored into).

    beta0 (an array, or {name: value} as a run's results hold it) is checked
    here, where a user's beta enters the engine (a bad value names `what`),
    and clipped to the box.
    """
    u0 = jnp.asarray(self.update.to_u(self.layout.check(beta0, what=what)), jnp.float32)
    inner = self.problem.init(params)
    opt_state, center = self.update.init(u0)
    return OuterState(u=u0, beta_opt_state=opt_state, inner=inner,
                      step=jnp.zeros((), jnp.int32), last_grad=jnp.zeros(u0.shape, jnp.float32),
                      average=inner.params if self.averages else (), trust_center=center)

  def outer_step(self, state: OuterState, key: jax.Array) -> tuple[OuterState, dict]:
    """One outer step (jitted): estimate dL/du at the state's u, train, move u.

    Returns:
      (next state, metrics): "L" (L after the K inner steps, at the raw
      trained weights: what the estimate differentiates), "train_loss",
      "grad_norm", "grad_cosine" (with the last estimate) and, with a trust
      region, "trust_distance" (u's distance from beta0's).
    """
    return self._jitted_outer(state, key)

  def train_step(self, state: OuterState, key: jax.Array) -> tuple[OuterState, dict]:
    """K plain inner steps on fresh samples at the state's beta (jitted): {"train_loss"}."""
    return self._jitted_train(state, key)

  def evaluate(self, params: Any) -> jax.Array:
    """L of `params` (jitted `eval_loss`)."""
    return self._jitted_evaluate(params)

  def compile(self, state: OuterState, key: jax.Array, *, outer: bool = True,
              plain: bool = True) -> None:
    """Compiles the step functions (and L) ahead of the first step; jit's cache keeps them."""
    if outer:
      self._jitted_outer.lower(state, key).compile()
    if plain:
      self._jitted_train.lower(state, key).compile()
    self._jitted_evaluate.lower(self.eval_params(state)).compile()

  def beta(self, state: OuterState) -> jax.Array:
    """beta in the layout's units (inside the box)."""
    return self.update.to_beta(state.u)

  @property
  def averages(self) -> bool:
    """Whether the state keeps an EMA of the weights (InnerConfig.ema_decay > 0)."""
    return self.problem.averages

  def eval_params(self, state: OuterState) -> Any:
    """The weights L is evaluated on and the run delivers: the EMA if configured, else the latest."""
    return state.average if self.averages else state.inner.params

  def samples(self, u: jax.Array, key: jax.Array) -> Any:
    """The n = K * B training samples of one step at u (the optimizer's coordinates)."""
    return self._generate_batch(self.update.to_beta(u), key)

  def advance(self, state: OuterState, trained: unroll.InnerState) -> OuterState:
    """The state after a global step that trained the network to `trained` and left beta
    alone: for the step functions of other methods (e.g. Shape Evolution's)."""
    return state._replace(inner=trained, step=state.step + 1,
                          average=self.problem.update_average(state.average, trained.params,
                                                              state.step))

  # --- The steps -----------------------------------------------------------------------------

  def _outer_step(self, state: OuterState, key: jax.Array):
    key = jax.random.fold_in(key, state.step)
    v, expand = self.update.restrict(state.u)
    deferred = None if self._deferred is None else estimators.Deferred(
        lambda v, key: self._deferred.generate(expand(v), key),
        lambda v, key, after: self._deferred.submit(expand(v), key, after),
        self._deferred.collect)
    (value, (trained, train_losses)), grad_v = self.estimator(
        lambda v, key: self.samples(expand(v), key), self.problem.loss_of_data(state.inner), v,
        key, has_aux=True, shard=lambda d: shard_axis(d, 1, self.problem.mesh), deferred=deferred)
    grad = self.update.full_gradient(grad_v, state.u)
    new_u, beta_opt_state = self.update.apply(grad, state.u, state.beta_opt_state,
                                              state.trust_center)
    new_state = self.advance(state, trained)._replace(u=new_u, beta_opt_state=beta_opt_state,
                                                      last_grad=grad)
    return new_state, self._metrics(value, train_losses, grad, state, new_u)

  def _metrics(self, value, train_losses, grad, state: OuterState, new_u) -> dict:
    grad_norm = jnp.linalg.norm(grad)
    last_norm = jnp.linalg.norm(state.last_grad)
    cosine = jnp.where(last_norm > 0, jnp.vdot(grad, state.last_grad) /
                       jnp.maximum(grad_norm * last_norm, 1e-30), 0.0)
    metrics = {"L": value, "grad_norm": grad_norm, "grad_cosine": cosine,
               "train_loss": jnp.mean(train_losses)}
    if self.outer.trust_radius > 0:   # how far beta has gone: at trust_radius, the ball holds it
      metrics["trust_distance"] = jnp.linalg.norm(new_u - state.trust_center)
    return metrics

  def _train_step(self, state: OuterState, key: jax.Array):
    key = jax.random.fold_in(key, state.step)
    data = jax.lax.stop_gradient(self._generate_batch(self.beta(state), key))
    trained, train_losses = self.problem.train(
        state.inner, shard_axis(data, 0, self.problem.mesh), remat=False)
    return self.advance(state, trained), {"train_loss": jnp.mean(train_losses)}

  def _deferred_in_u(self, deferred: estimators.Deferred) -> estimators.Deferred:
    """`deferred` taking u and drawing n samples per call (as `samples`)."""
    n = self.inner.num_samples

    def submit(u, key, after):
      beta = self.update.to_beta(u)
      return jax.vmap(deferred.submit, (None, 0, None))(beta, jax.random.split(key, n), after)

    def collect(ticket, after):
      return jax.vmap(deferred.collect, (0, None))(ticket, after)
    return estimators.Deferred(self.samples, submit, collect)
