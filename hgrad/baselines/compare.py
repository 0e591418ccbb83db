"""The paper's comparisons: hybrid gradient vs Basic Random Search vs Shape Evolution vs fixed beta.

Every method runs one task (MIT-Berkeley, NYU scenes or faces) with the same
generator, network, inner training, image size, data and schedule (warm-up,
outer steps, plain steps between them, final steps); only what an outer step
does differs:

* hybrid: the hybrid-gradient step (`OuterConfig.estimator = "hybrid"`);
* random_search: Basic Random Search V1, 2m + 1 trainings and evaluations;
* evolution: a Shape Evolution generation (`hgrad.baselines.evolution`; CSG only);
* fixed: beta frozen at beta0, outer steps replaced by plain steps;
* random_beta: like fixed, at a beta drawn uniformly from the box (per seed).

Each (method, seed) is an ordinary resumable run under `WORKDIR/<method>/seed<k>`;
per step it records wall, CPU (this process and the render workers) and
accelerator seconds (jitted computation around `block_until_ready`, i.e. wall
minus host rendering), and L on the validation (train-split) images.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import pickle
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

from hgrad import plots  # noqa: E402
from hgrad.baselines import evolution  # noqa: E402
from hgrad.core import loop  # noqa: E402
from hgrad.core.config import to_dataclass  # noqa: E402
from hgrad.tasks import common  # noqa: E402
from hgrad.tasks import registry  # noqa: E402

METHODS = ("hybrid", "random_search", "evolution", "fixed", "random_beta", "placebo")
LABELS = {"hybrid": "hybrid gradient", "random_search": "Basic Random Search",
          "evolution": "Shape Evolution", "fixed": "fixed beta0", "random_beta": "random beta",
          "placebo": "placebo (random direction, same norm)"}


def method_config(base, method: str, seed: int, beta0=None, layout=None,
                  schedule_overrides=None):
  """The task config of one method and seed (with `schedule_overrides` of config.schedule)."""
  config = copy.deepcopy(base)
  config.seed = int(seed)
  if schedule_overrides:
    config.schedule.update(dict(schedule_overrides))
  layout = layout or registry.layout(config)
  if method == "random_beta" and beta0 is None:
    beta0 = np.random.default_rng([seed, 99]).uniform(layout.low, layout.high)
  if beta0 is not None:
    config.beta0 = tuple(float(b) for b in beta0)
  if method == "random_search":
    config.outer.estimator = "random_search"
    if "random_search" in config:
      config.outer.update(config.random_search)
  elif method == "placebo":
    config.outer.estimator = "placebo"
  elif method in ("fixed", "random_beta"):
    config.schedule.freeze_beta = True
  elif method not in ("hybrid", "evolution"):
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
  return config


def _evolution_task(task: loop.Task, config) -> loop.Task:
  evo_config = to_dataclass(evolution.EvolutionConfig, config.evolution, where="config.evolution")
  evo = evolution.ShapeEvolution(task.trainer.generator, task.trainer.problem, evo_config,
                                 config.seed, beta0=task.beta0)

  def step(state, phase: str, key):
    del key
    index = int(state.step)
    inner, metrics = evo.step(state.inner, index) if phase == "outer" else evo.train(state.inner, index)
    return task.trainer.advance(state, inner), metrics

  def save_host_state():
    return base64.b64encode(pickle.dumps((evo.population, evo.rejected))).decode("ascii")

  def load_host_state(blob):
    evo.population, evo.rejected = pickle.loads(base64.b64decode(blob))

  return task._replace(name="evolution", step=step, save_host_state=save_host_state,
                       load_host_state=load_host_state)


def run_method(task_name: str, base, method: str, seed: int, workdir: str, beta0=None,
               schedule_overrides=None) -> dict:
  """One resumable run; a finished one (a results.json not marked partial) is read back.

  Raises:
    ValueError: `workdir` holds a run made with other settings
      (`common.check_same_run`).
  """
  config = method_config(base, method, seed, beta0, registry.layout(base), schedule_overrides)
  finished = loop.finished_results(workdir)
  if finished is not None:
    common.check_same_run(workdir, config)    # common.run checks a run it resumes
    return finished
  task_module = registry.get(task_name)
  if method == "evolution" and task_name != "mbii":
    raise ValueError("Shape Evolution evolves CSG shapes: it runs on the mbii task only")

  def build(config):
    task, schedule = task_module.build(config)
    return (_evolution_task(task, config) if method == "evolution" else task), schedule
  return common.run(build, config, workdir)


def curve(workdir: str) -> dict[str, np.ndarray]:
  """Validation L against the global step and cumulative wall, CPU and accelerator seconds."""
  rows = loop.read_metrics(workdir)
  cpu = np.cumsum([r.get("cpu_s", 0.0) for r in rows])
  device = np.cumsum([r["device_s"] for r in rows])
  keep = [i for i, r in enumerate(rows) if "L" in r]
  return {"L": np.array([rows[i]["L"] for i in keep]),
          "step": np.array([rows[i]["step"] for i in keep]),
          "wall": np.array([rows[i]["elapsed_s"] for i in keep]),
          "cpu": cpu[keep], "device": device[keep]}


def time_to_target(curve: dict[str, np.ndarray], target: float, window: int = 1) -> float | None:
  """Wall seconds at which L first reached `target` (None if it never did).

  With `window` > 1, L is the mean of the last `window` evaluations, from the
  `window`-th evaluation on: the same smoothing as a target that is itself
  such a mean.
  """
  means = np.convolve(np.asarray(curve["L"], np.float64), np.ones(window) / window, "valid")
  hits = np.nonzero(means <= target)[0]
  return float(curve["wall"][hits[0] + window - 1]) if hits.size else None


def split_of(results: dict) -> str:
  """The split a results dict reports on: test, else validation, else train."""
  return next(s for s in ("test", "validation", "train") if s in results)


def _stats(values: list[float]) -> str:
  values = np.asarray(values, np.float64)
  return f"{values.mean():.2f} ± {values.std():.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def results_table(task_name: str, per_method: dict[str, list[dict]]) -> str:
  task_module = registry.get(task_name)
  columns, table = task_module.INFO.columns, task_module.INFO.paper_table
  split = split_of(next(iter(per_method.values()))[0])
  seeds = len(next(iter(per_method.values())))
  lines = [f"{table.capitalize()} analogue: {task_name}, {split} split, image-mean metrics "
           f"(mean ± std over {seeds} seed(s)).", "",
           "| method | " + " | ".join(label for _, label in columns) + " |",
           "|---" * (len(columns) + 1) + "|"]
  for method, runs in per_method.items():
    cells = [_stats([r[split]["image_mean"][key] for r in runs]) for key, _ in columns]
    lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def fig4(curves: dict[str, list[dict]], path: str) -> None:
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for method, runs in curves.items():
    for i, curve in enumerate(runs):
      for ax, axis in zip(axes, ("cpu", "device", "wall")):
        ax.plot(curve[axis] / 60, curve["L"], color=f"C{METHODS.index(method)}", alpha=0.8,
                linewidth=1, label=LABELS[method] if i == 0 else None)
  plots.finish(fig, axes, ("CPU time (min, incl. render workers)",
                           "accelerator time (min, jitted compute)", "total wall time (min)"),
               "validation L", path)


def run(config, workdir: str) -> dict:
  """All methods x seeds and the output files (Table 1's random starts: hgrad.random_starts)."""
  os.makedirs(workdir, exist_ok=True)
  per_method: dict[str, list[dict]] = {}
  curves: dict[str, list[dict]] = {}
  for method in config.methods:
    for seed in config.seeds:
      run_dir = os.path.join(workdir, method, f"seed{seed}")
      logging.info("compare: %s, seed %d -> %s", method, seed, run_dir)
      per_method.setdefault(method, []).append(
          run_method(config.task, config.base, method, seed, run_dir))
      curves.setdefault(method, []).append(curve(run_dir))
  table_name = registry.get(config.task).INFO.paper_table
  with open(os.path.join(workdir, f"{table_name}.md"), "w") as f:
    f.write(results_table(config.task, per_method))
  fig4(curves, os.path.join(workdir, "fig4.png"))
  summary: dict[str, Any] = {"task": config.task,
                             "split": split_of(next(iter(per_method.values()))[0]), "methods": {}}
  columns = registry.get(config.task).INFO.columns
  brs_final = ([c["L"][-1] for c in curves["random_search"]] if "random_search" in curves else None)
  for method, runs in per_method.items():
    split = split_of(runs[0])
    entry = {"final": {key: [r[split]["image_mean"][key] for r in runs] for key, _ in columns},
             "final_validation_L": [float(c["L"][-1]) for c in curves[method]],
             "wall_s": [r["elapsed_s"] for r in runs], "cpu_s": [r["cpu_s"] for r in runs]}
    if brs_final is not None:
      entry["time_to_target"] = [time_to_target(c, target)
                                 for c, target in zip(curves[method], brs_final)]
    summary["methods"][method] = entry
  with open(os.path.join(workdir, "compare.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary
