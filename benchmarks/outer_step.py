"""Does the outer step overlap its perturbed renders with the unroll?

  python -m benchmarks.outer_step [--config=configs/mbii.py:paper_cpu] [--steps=2] [--pin]

Times, in one process and on the same beta: the jitted outer step with overlap
(`config.render.overlap`), the same step without it, render-only (the step's
2m + 1 sample sets through the same workers) and unroll-only (the K-step
unroll and its VJP on rendered data, what the step computes besides
rendering). `--pin` gives renders and XLA a core each (workers on the first
allowed core, this process on the others), so that the overlap is not hidden
by both sharing every core. The last line is JSON with outer_s, render_s,
unroll_s and overlap_ratio = outer_s / max(render_s, unroll_s): 1.0 is a
perfect overlap, (render + unroll) / max(render, unroll) none.

Cores share caches and memory bandwidth, so a render and an unroll that run
at the same time each take longer than alone. `concurrent_render_s` and
`concurrent_unroll_s` time the two running side by side (no jit step, two
threads); `contention_ratio` = outer_s / max of those is how close the step
comes to the best the machine allows.
"""

import concurrent.futures

import os
import time

from absl import flags
from ml_collections import config_flags

from experiments import script

_CONFIG = config_flags.DEFINE_config_file("config", "configs/mbii.py:paper_cpu", "Task config.")
_STEPS = flags.DEFINE_integer("steps", 2, "Timed repetitions of each measurement (median).")
_PIN = flags.DEFINE_bool("pin", False, "Render workers on one core, XLA on the others.")


def _pin() -> dict:
  """Workers on the first allowed core, this process (XLA) on the rest; call before JAX runs."""
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < 2:
    raise ValueError(f"--pin needs at least 2 cores, this process may use {cores}")
  os.environ["HGRAD_WORKER_CPUS"] = str(cores[0])
  os.sched_setaffinity(0, set(cores[1:]))
  return {"render_cores": cores[:1], "xla_cores": cores[1:]}


def main():
  import json  # pylint: disable=g-import-not-at-top
  import statistics  # pylint: disable=g-import-not-at-top
  pinning = _pin() if _PIN.value else {}
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import common  # pylint: disable=g-import-not-at-top

  config, module = common.task_config(_CONFIG.value)
  config = config.copy_and_resolve_references()
  if _PIN.value:
    config.num_workers = 1
  times: dict[str, list[float]] = {}

  def timed(name, fn):
    jax.block_until_ready(fn(0))                    # compile, start workers
    for rep in range(_STEPS.value):
      start = time.perf_counter()
      jax.block_until_ready(fn(rep + 1))
      times.setdefault(name, []).append(time.perf_counter() - start)

  for overlap in (True, False):
    config.render.overlap = overlap
    task, _ = module.build(config)
    trainer = task.trainer
    state = trainer.init(task.beta0, task.params0)
    timed("outer_s" if overlap else "outer_serial_s",
          lambda rep, trainer=trainer, state=state: trainer.outer_step(state, jax.random.key(rep))[1])
    if overlap:
      m, n = trainer.outer.num_perturbations, trainer.inner.num_samples
      generator = task.trainer.generator
      beta = np.asarray(trainer.beta(state))
      betas = np.repeat(np.clip(beta + 0.01 * np.random.default_rng(0).standard_normal(
          (2 * m + 1, beta.size)), generator.layout.low, generator.layout.high), n, axis=0)
      timed("render_s", lambda rep: generator.render(betas, np.arange(len(betas)) + rep * 10**6))
      data = jax.tree.map(jax.numpy.asarray, generator.render(betas[:n], np.arange(n)))
      unroll = jax.jit(lambda inner, data: jax.value_and_grad(trainer.problem.loss_of_data(inner),
                                                              has_aux=True)(data))
      timed("unroll_s", lambda rep: unroll(state.inner, data))

      def side_by_side(rep):
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
          rendered = thread.submit(lambda: (generator.render(betas, np.arange(len(betas)) + rep),
                                            time.perf_counter() - start))
          jax.block_until_ready(unroll(state.inner, data))
          times.setdefault("concurrent_unroll_s", []).append(time.perf_counter() - start)
          times.setdefault("concurrent_render_s", []).append(rendered.result()[1])
      for rep in range(_STEPS.value):
        side_by_side(rep)
      samples = len(betas)
    task.trainer.generator.close()
  result = {k: round(statistics.median(v), 3) for k, v in times.items()}
  result["overlap_ratio"] = round(result["outer_s"] / max(result["render_s"],
                                                          result["unroll_s"]), 3)
  result["serial_ratio"] = round(result["outer_serial_s"] / max(result["render_s"],
                                                                result["unroll_s"]), 3)
  result["contention_ratio"] = round(result["outer_s"] / max(result["concurrent_render_s"],
                                                               result["concurrent_unroll_s"]), 3)
  result.update(samples_per_step=samples, steps=_STEPS.value, **pinning)
  print(f"outer step with overlap {result['outer_s']:.2f} s, without {result['outer_serial_s']:.2f}"
        f" s; render only {result['render_s']:.2f} s ({samples} samples), unroll + VJP only "
        f"{result['unroll_s']:.2f} s")
  print(json.dumps(result))


if __name__ == "__main__":
  script.run(main)
