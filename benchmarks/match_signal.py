"""Signals with no horizon: the hybrid gradient of a matching objective.

Meta-Sim and dataset distillation by distribution matching (Zhao & Bilen 2023)
tune data so that its features match the target's, instead of asking how a
network trained on it scores. `--objective=features` is

  D(beta) = <mu_A - mu_T, mu_B - mu_T>,  mu = mean of phi over a set of samples,

phi = fixed random conv features (`--nets` 3-layer ReLU nets, global-average
pooled at 3 scales) of a sample's ground-truth normals and mask (lighting
does not enter), A and B the two halves of one outer step's renders, T the
target set. Splitting the renders makes D unbiased for ||mu_X - mu_T||^2; the
plain squared distance adds tr(Cov phi) / n, which rewards less varied data.
dD/dX is analytic and dX/dbeta comes from the same antithetic differences as
the hybrid gradient (`hgrad.hybrid_value_and_grad`).

`--objective=gradients` is gradient matching (dataset condensation, Zhao et
al. 2021): the data should give a network the training signal the target
gives it, at networks of every age rather than the one co-trained network:

  G(beta) = mean over `--nets` freshly initialized networks theta and over the
            weight tensors w of  1 - cos(dl(theta; X)/dw, dl(theta; T)/dw),

l the task's training loss, cosines per output channel. The networks are
drawn anew at every evaluation (a new key), so G rewards data that points
training the target's way from anywhere, not data that helps one network's
next K steps (the greedy K-step objective: docs/results.md). dG/dX
differentiates through the weight gradient (second order, as the unroll).

On the task's target (the synthetic beta* where no data is configured), the
script measures at beta0 the cross-key cosine of the estimate and its cosine
with the way to beta*, then descends D with Adam for `--steps` steps and
reports D and the unit-box distance to beta* along the way.

  python -m benchmarks.match_signal --config=configs/study.py:screen [--keys=4 --steps=40]
      [--objective=gradients --nets=4]

Prints a line per measurement and, as its last line, JSON.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags
from ml_collections import config_flags

from benchmarks import common
from experiments import script
from hgrad.tasks import registry
from hgrad import study
from hgrad.core import estimator
from hgrad.tasks import network

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "mbii.py"),
    "Task config, or a study config (its `base` is used).")
_KEYS = flags.DEFINE_integer("keys", 4, "Independent sample sets for the cross-key cosine.")
_STEPS = flags.DEFINE_integer("steps", 40, "Adam steps of the descent on D.")
_LR = flags.DEFINE_float("learning_rate", 0.03, "Adam step on the unit-box coordinates.")
_OBJECTIVE = flags.DEFINE_enum(
    "objective", "features", ["features", "gradients", "gradient_distance"],
    "features: random-feature mean matching; gradients: per-channel cosine gradient matching "
    "at fresh networks; gradient_distance: the unbiased squared gradient distance.")
_NETS = flags.DEFINE_integer("nets", 8, "Random feature nets, or fresh networks per evaluation.")


def random_features(key: jax.Array, nets: int, width: int = 32):
  """Weights of `nets` random 3-layer conv nets on (normals * mask, mask): 4 channels."""
  weights = []
  for k in jax.random.split(key, nets):
    k1, k2, k3 = jax.random.split(k, 3)
    weights.append((jax.random.normal(k1, (3, 3, 4, width)) / np.sqrt(9 * 4),
                    jax.random.normal(k2, (3, 3, width, width)) / np.sqrt(9 * width),
                    jax.random.normal(k3, (3, 3, width, width)) / np.sqrt(9 * width)))
  return weights


def embed(weights, normals_BxHxWx3: jax.Array, mask_BxHxW: jax.Array) -> jax.Array:
  """(B, nets * 3 * width) features: each net's ReLU maps, 2x2-pooled, averaged at 3 scales."""
  x = jnp.concatenate([normals_BxHxWx3 * mask_BxHxW[..., None], mask_BxHxW[..., None]], -1)
  features = []
  for layer_weights in weights:
    h = x
    for w in layer_weights:
      h = jax.nn.relu(jax.lax.conv_general_dilated(h, w, (1, 1), "SAME",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC")))
      b, height, width, c = h.shape
      h = h.reshape(b, height // 2, 2, width // 2, 2, c).mean((2, 4))
      features.append(h.mean((1, 2)))
  return jnp.concatenate(features, -1)


def channel_cosine_distance(grad_a, grad_b) -> jax.Array:
  """Sum over weight tensors (ndim >= 2) and output channels of 1 - cos (Zhao et al. 2021)."""
  total = 0.0
  for a, b in zip(jax.tree.leaves(grad_a), jax.tree.leaves(grad_b)):
    if a.ndim < 2:
      continue                                 # biases: too few numbers for a direction
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    # A channel no loss reaches (the unused depth output) has a zero gradient: the floor keeps
    # its cosine 0 and every derivative finite (a sqrt or 1/y^2 at 0 would make NaN).
    cos = jnp.sum(a * b, 0) * jax.lax.rsqrt(jnp.maximum(jnp.sum(a * a, 0) * jnp.sum(b * b, 0), 1e-24))
    total += jnp.sum(1.0 - cos)
  return total


def split_distance(grad_a, grad_b, grad_target) -> jax.Array:
  """Sum over weight tensors of <a - t, b - t> / |t|^2: a and b are gradients on independent
  halves of the data, so this is unbiased for |E grad - t|^2 / |t|^2 and, unlike a cosine of
  one noisy batch gradient, does not reward data whose samples vary less."""
  total = 0.0
  for a, b, t in zip(*(jax.tree.leaves(g) for g in (grad_a, grad_b, grad_target))):
    if a.ndim >= 2:
      total += jnp.vdot(a - t, b - t) / jnp.maximum(jnp.vdot(t, t), 1e-24)
  return total


def gradient_match_fn(train_loss, init_params, target, nets: int, unbiased: bool = False):
  """(data, key) -> mean over `nets` fresh networks of the gradient-matching distance."""
  target = jax.tree.map(jnp.asarray, target)

  def one(key, data):
    params = init_params(key)
    grad_target = jax.lax.stop_gradient(jax.grad(train_loss)(params, target))
    if not unbiased:
      return channel_cosine_distance(jax.grad(train_loss)(params, data), grad_target)
    half = data.image.shape[0] // 2
    a, b = (jax.grad(train_loss)(params, jax.tree.map(lambda x: x[part], data))
            for part in (slice(None, half), slice(half, 2 * half)))
    return split_distance(a, b, grad_target)

  def loss(data, key):
    return jnp.mean(jax.vmap(one, (0, None))(jax.random.split(key, nets), data))
  return loss


def feature_match_fn(target, nets: int):
  """(data, key) -> <mu_A - mu_T, mu_B - mu_T> of random conv features (key unused)."""
  weights = random_features(jax.random.key(0), nets)
  target_mean = embed(weights, jnp.asarray(target.normals), jnp.asarray(target.mask)).mean(0)

  def loss(data, key):
    del key
    centered = embed(weights, data.normals, data.mask) - target_mean
    half = centered.shape[0] // 2
    return jnp.vdot(centered[:half].mean(0), centered[half:].mean(0))
  return loss


def main():
  config, task_module = common.task_config(_CONFIG.value)
  beta_star = registry.known_beta_star(config)
  if beta_star is None:
    raise ValueError(f"match_signal measures the way to beta*: task {config.task!r} has no "
                     "synthetic target with a known beta* with this config (is a dataset configured?)")
  cfg = task_module.parse_config(config)
  task, _ = task_module.build(config)
  trainer = task.trainer
  target, *_ = task_module.load_real(cfg.data, cfg.csg, cfg.synthetic)
  if _OBJECTIVE.value in ("gradients", "gradient_distance"):
    shape = (task.trainer.generator.height, task.trainer.generator.width)
    match_loss = gradient_match_fn(
        trainer.problem.train_loss, lambda key: network.init_params(cfg.training.network, key, shape), target,
        _NETS.value, unbiased=_OBJECTIVE.value == "gradient_distance")
  else:
    match_loss = feature_match_fn(target, _NETS.value)

  def value_and_grad(u, key):
    data_key, net_key = jax.random.split(key)
    return estimator.hybrid_value_and_grad(
        trainer.samples, lambda data: match_loss(data, net_key), u, data_key,
        num_perturbations=trainer.outer.num_perturbations, sigma=trainer.outer.sigma,
        directions=trainer.outer.directions)

  coords = trainer.outer.coordinates
  u0 = trainer.init(task.beta0, task.params0).u
  u_star = jnp.asarray(trainer.layout.to_coords(beta_star, coords), jnp.float32)
  toward = -(np.asarray(u_star) - np.asarray(u0))
  start = time.perf_counter()
  out = {"objective": _OBJECTIVE.value, "keys": _KEYS.value, "nets": _NETS.value}
  estimate = jax.jit(value_and_grad)
  for name, u in (("beta0", u0), ("beta_star", u_star)):
    values, grads = zip(*[jax.device_get(estimate(u, jax.random.key(2000 + k)))
                          for k in range(_KEYS.value)])
    grads = [np.asarray(g) for g in grads]
    out[name] = {"D": float(np.mean(values)),
                 "cross_key_cosine": common.mean_cross_cosine(grads),
                 "cosine_toward_beta_star": common.cosine(np.mean(grads, 0), toward)}
    print(f"at {name:<9} D {out[name]['D']:.4f}  cross-key cosine "
          f"{out[name]['cross_key_cosine']:+.3f}  cosine toward beta* "
          f"{out[name]['cosine_toward_beta_star']:+.3f}", flush=True)
  optimizer = optax.adam(_LR.value, b1=0.9, b2=0.9)

  @jax.jit
  def step(u, opt_state, key):
    value, grad = value_and_grad(u, key)
    updates, opt_state = optimizer.update(grad, opt_state, u)
    return jnp.clip(optax.apply_updates(u, updates), 0.0, 1.0), opt_state, value

  u, opt_state, values, descent = u0, optimizer.init(u0), [], []
  for k in range(_STEPS.value):
    u, opt_state, value = step(u, opt_state, jax.random.key(5000 + k))
    values.append(float(value))
    if (k + 1) % 5 == 0:
      beta = np.asarray(trainer.layout.from_coords(u, coords))
      descent.append({"step": k + 1, "D": float(np.mean(values[-5:])),
                      "distance_to_beta_star": trainer.layout.unit_distance(beta, beta_star)})
      print(f"descent step {k + 1:3d}  D {descent[-1]['D']:.4f}  distance to beta* "
            f"{descent[-1]['distance_to_beta_star']:.3f}", flush=True)
  task.trainer.generator.close()
  final_beta = trainer.layout.as_dict(np.asarray(trainer.layout.from_coords(u, coords)))
  progress = study.progress_toward(trainer.layout.as_dict(task.beta0), final_beta,
                                   trainer.layout.as_dict(beta_star))
  print("progress toward beta* per dimension: " + ", ".join(
      f"{name} {p['progress']:+.2f}" for name, p in progress.items() if "progress" in p))
  out.update(descent=descent, distance_beta0=trainer.layout.unit_distance(task.beta0, beta_star),
             final_beta=final_beta, progress=progress,
             seconds=round(time.perf_counter() - start, 1))
  print(json.dumps(out))


if __name__ == "__main__":
  script.run(main)
