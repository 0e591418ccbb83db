"""Throughput of the full f(beta, r) through the JAX bridge, in batches.

  python -m benchmarks.render [--resolution=64] [--batch=256] [--num_batches=8] [--num_workers=-1]
                             [--backend=local|ray] [--address=] [--after_large=0]

Prints the time per stage and, as its last line, JSON with `samples_per_s`.
Stage times are CPU seconds per sample summed over workers; `bridge` is the
wall time per sample spent outside the host renderer (JAX dispatch, callback
marshalling), `host_ipc` the host wall time not spent in the stages.
`--after_large=K` then renders one batch K times larger (an outer step's 2m+1
renders) and times the same batches again: a renderer that keeps state from
large batches (as a never-shrinking texture did on the H200) shows as a lower
`samples_per_s_after_large`.
"""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments import script
from hgrad.core.bridge import RenderConfig
from hgrad.generators.csg import CSGConfig
from hgrad.generators.csg_host import csg_generator

_RESOLUTION = flags.DEFINE_integer("resolution", 64, "Image size (square).")
_BATCH = flags.DEFINE_integer("batch", 256, "Samples per host call (n seeds x 2m betas).")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 8, "Timed batches.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", -1, "Render workers; -1 = one per core.")
_BACKEND = flags.DEFINE_enum("backend", "local", ["local", "ray"], "Where renders run.")
_ADDRESS = flags.DEFINE_string("address", "", "Ray cluster address; empty = a local Ray.")
_AFTER_LARGE = flags.DEFINE_integer("after_large", 0, "Then one batch this many times larger, "
                                    "and the timed batches again (0: skip).")


def main():
  num_workers = None if _NUM_WORKERS.value < 0 else _NUM_WORKERS.value
  generator = csg_generator(CSGConfig(resolution=_RESOLUTION.value), num_workers=num_workers,
                            render=RenderConfig(backend=_BACKEND.value, address=_ADDRESS.value))
  num_betas = 8
  num_seeds = max(1, _BATCH.value // num_betas)

  def generator_of(seeds):
    @jax.jit
    def generate(beta, key):
      betas = beta + 0.02 * jax.random.normal(jax.random.fold_in(key, 1), (num_betas, beta.size))
      keys = jax.random.split(key, seeds)
      return jax.vmap(jax.vmap(generator.generate, (None, 0)), (0, None))(betas, keys)
    return generate

  generate = generator_of(num_seeds)
  beta0 = jnp.asarray(generator.beta0)

  def timed():
    start = time.perf_counter()
    for step in range(_NUM_BATCHES.value):
      jax.block_until_ready(generate(beta0, jax.random.key(step + 1)))
    return time.perf_counter() - start

  jax.block_until_ready(generate(beta0, jax.random.key(0)))  # compile, start workers
  generator.reset_stats()
  wall = timed()
  stats = generator.reset_stats()
  after_large = {}
  if _AFTER_LARGE.value > 0:
    jax.block_until_ready(generator_of(num_seeds * _AFTER_LARGE.value)(beta0, jax.random.key(0)))
    after_large = {"samples_per_s_after_large": round(stats["samples"] / timed(), 1),
                   "large_batch": num_betas * num_seeds * _AFTER_LARGE.value}
  num_workers = generator.num_workers
  generator.close()
  samples = stats["samples"]
  ms = lambda seconds: 1e3 * seconds / samples  # noqa: E731
  stages = {
      "grammar": ms(stats["grammar_s"]),
      "csg": ms(stats["csg_s"]),
      "render": ms(stats["render_s"]),
      "host_ipc": ms(stats["host_wall_s"]) - (ms(stats["grammar_s"] + stats["csg_s"] + stats["render_s"])
                                             / max(num_workers, 1)),
      "bridge": ms(wall - stats["host_wall_s"]),
  }
  print(f"{int(samples)} samples of {_RESOLUTION.value}x{_RESOLUTION.value} in "
        f"{_NUM_BATCHES.value} host calls of {num_betas} betas x {num_seeds} seeds, "
        f"{num_workers} render workers ({_BACKEND.value})")
  for name, value in stages.items():
    print(f"  {name:9s} {value:7.3f} ms/sample")
  print(f"  degenerate booleans: {int(stats['degenerate_booleans'])} of {int(stats['booleans'])}")
  print(json.dumps({
      "samples_per_s": round(samples / wall, 1),
      "resolution": _RESOLUTION.value,
      "batch": int(samples // _NUM_BATCHES.value),
      "num_workers": num_workers,
      "backend": _BACKEND.value,
      "ms_per_sample": {k: round(v, 3) for k, v in stages.items()},
      **after_large,
  }))


if __name__ == "__main__":
  script.run(main)
