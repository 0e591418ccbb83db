"""How should a black-box outer step run its trainings: all at once, or one at a time?

  python -m benchmarks.black_box [--config=configs/study.py:screen] [--evaluations=9] \
      [--config.base.data.dir=/path/to/MIT-Berkeley/train]

Basic Random Search and Shape Evolution score each candidate beta (or shape)
by K training steps of the network from the same weights, then L: so each of
the n evaluations trains weights of its own. `hgrad.core.estimator.map_evaluations`
runs them `at_once` at a time. This times, on the config's task and one
process, the n train-and-evaluate runs (on renders at beta0) with every
`--at_once` value, interleaved, and checks they give the same L. The last line
is JSON with each time and `ratio` = time all at once / time one at a time
(above 1: one at a time is faster).
"""

import json
import time

from absl import flags
from ml_collections import config_flags

from experiments import script

_CONFIG = config_flags.DEFINE_config_file("config", "configs/study.py:screen",
                                          "Task config, or a study config (its base).")
_EVALUATIONS = flags.DEFINE_integer("evaluations", 9, "n: trainings per outer step (2m + 1).")
_AT_ONCE = flags.DEFINE_list("at_once", ["1", "all"], "Group sizes to time ('all': n).")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed repeats of each (median).")


def main():
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from hgrad.core import estimator  # pylint: disable=g-import-not-at-top

  config, module = common.task_config(_CONFIG.value)
  task, _ = module.build(config.copy_and_resolve_references())
  trainer = task.trainer
  state = trainer.init(task.beta0, task.params0)
  n, samples = _EVALUATIONS.value, trainer.inner.num_samples
  betas = np.repeat(np.asarray(trainer.beta(state))[None], n * samples, axis=0)
  data = jax.tree.map(lambda x: jax.numpy.asarray(x).reshape((n, samples) + x.shape[1:]),
                      trainer.generator.render(betas, np.arange(n * samples)))
  trainer.generator.close()
  loss_of_data = lambda x: trainer.problem.loss_of_data(state.inner)(x)[0]
  sizes = [n if size == "all" else int(size) for size in _AT_ONCE.value]
  runs = {size: jax.jit(lambda x, size=size: estimator.map_evaluations(loss_of_data, x, size))
          for size in sizes}
  times, losses, compile_s = {size: [] for size in sizes}, {}, {}
  for size, run in runs.items():
    start = time.perf_counter()
    losses[size] = np.asarray(run(data))
    compile_s[size] = time.perf_counter() - start
  for _ in range(_REPEATS.value):
    for size, run in runs.items():
      start = time.perf_counter()
      jax.block_until_ready(run(data))
      times[size].append(time.perf_counter() - start)
  for size in sizes[1:]:
    np.testing.assert_allclose(losses[size], losses[sizes[0]], rtol=1e-3)
  result = {f"at_once_{size}_s": round(float(np.median(times[size])), 3) for size in sizes}
  result.update({f"at_once_{size}_compile_s": round(compile_s[size], 1) for size in sizes})
  for size in sizes:
    print(f"{n} trainings and evaluations, {size} at a time: {np.median(times[size]):.2f} s "
          f"(first call, with compilation: {compile_s[size]:.1f} s)")
  if 1 in times and n in times:
    result["ratio"] = round(float(np.median(times[n]) / np.median(times[1])), 2)
  result.update(evaluations=n, backend=jax.default_backend(), repeats=_REPEATS.value)
  print(json.dumps(result))


if __name__ == "__main__":
  script.run(main)
