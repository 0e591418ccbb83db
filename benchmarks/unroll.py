"""Cost of differentiating through training: unroll_overhead = (b) / (a).

  (a) K plain inner steps of the default network (one jitted lax.scan);
  (b) value and gradient of L = l_eval(train(w0, X), X_real) with respect to X
      through the same K-step unroll.

  python -m benchmarks.unroll [--width=24 --stacks=2 --depth=3 --steps=8 --batch_size=8]

Prints the timings and, as its last line, JSON with `unroll_overhead`.
"""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments import script
from hgrad.tasks import losses
from hgrad.tasks import network
from hgrad.core import unroll
from hgrad.generators.sample import Sample

_RESOLUTION = flags.DEFINE_integer("resolution", 64, "Image size (square).")
_WIDTH = flags.DEFINE_integer("width", network.NetworkConfig.width, "Network width.")
_STACKS = flags.DEFINE_integer("stacks", network.NetworkConfig.stacks, "Hourglass stacks.")
_DEPTH = flags.DEFINE_integer("depth", network.NetworkConfig.depth, "Hourglass depth.")
_STEPS = flags.DEFINE_integer("steps", unroll.InnerConfig.steps, "K, unrolled steps.")
_BATCH = flags.DEFINE_integer("batch_size", unroll.InnerConfig.batch_size, "Batch per step.")
_REMAT = flags.DEFINE_bool("remat", unroll.InnerConfig.remat, "Checkpoint each step.")
_NUM_REAL = flags.DEFINE_integer("num_real", 10, "Real validation images in L.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats (median is reported).")


def random_samples(key, shape_prefix, resolution):
  k1, k2 = jax.random.split(key)
  normals = jax.random.normal(k1, shape_prefix + (resolution, resolution, 3))
  normals = normals / jnp.linalg.norm(normals, axis=-1, keepdims=True)
  image = jax.random.uniform(k2, shape_prefix + (resolution, resolution, 1))
  ones = jnp.ones(shape_prefix + (resolution, resolution))
  return Sample(image, normals, ones, ones)


def interleaved_median_times(*calls):
  """Median wall time of each (fn, args) call, alternating them so drift hits all alike."""
  for fn, args in calls:
    jax.block_until_ready(fn(*args))
  times = [[] for _ in calls]
  for _ in range(_REPEATS.value):
    for (fn, args), record in zip(calls, times):
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      record.append(time.perf_counter() - start)
  return [float(np.median(t)) for t in times]


def main():
  res = _RESOLUTION.value
  net = network.NetworkConfig(width=_WIDTH.value, stacks=_STACKS.value, depth=_DEPTH.value)
  inner = unroll.InnerConfig(steps=_STEPS.value, batch_size=_BATCH.value, remat=_REMAT.value)
  params = network.init_params(net, jax.random.key(0), res)
  optimizer = unroll.inner_optimizer(inner)
  state = unroll.InnerState(params, optimizer.init(params))
  loss_fn = losses.train_loss_fn(net, losses.LossConfig())
  batches = random_samples(jax.random.key(1), (inner.steps, inner.batch_size), res)
  real = random_samples(jax.random.key(2), (_NUM_REAL.value,), res)

  plain = jax.jit(lambda s, b: unroll.unroll(loss_fn, optimizer, s, b, remat=False))

  def eval_loss(batches):
    trained, _ = unroll.unroll(loss_fn, optimizer, state, batches, remat=inner.remat)
    pred = network.predict(net, trained.params, real.image)
    return losses.mean_angle_error(pred.normals, real.normals, real.mask)

  vjp = jax.jit(jax.value_and_grad(eval_loss))
  t_plain, t_vjp = interleaved_median_times((plain, (state, batches)), (vjp, (batches,)))
  num_params = sum(x.size for x in jax.tree.leaves(params))
  print(f"network width={net.width} stacks={net.stacks} depth={net.depth} ({num_params} params), "
        f"{res}x{res}, K={inner.steps}, B={inner.batch_size}, remat={inner.remat}")
  print(f"  (a) K plain inner steps:        {t_plain:.3f} s  ({1e3 * t_plain / inner.steps:.1f} ms/step)")
  print(f"  (b) value+grad of L wrt X:    {t_vjp:.3f} s")
  print(json.dumps({
      "unroll_overhead": round(t_vjp / t_plain, 2),
      "K": inner.steps, "batch_size": inner.batch_size, "resolution": res,
      "network": {"width": net.width, "stacks": net.stacks, "depth": net.depth,
                  "params": int(num_params)},
      "plain_s": round(t_plain, 4), "vjp_s": round(t_vjp, 4), "remat": inner.remat,
  }))


if __name__ == "__main__":
  script.run(main)
