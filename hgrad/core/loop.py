"""The run loop shared by every experiment: schedule, metrics.jsonl, checkpoints, resume.

A run is a sequence of global steps: `warmup_steps` plain training steps at
beta0 (the network learns the task before beta moves), then `outer_steps`
hybrid-gradient steps, each followed by `train_steps_per_outer` plain
training steps at the current beta (cheap training between the expensive
beta updates), then `final_steps` plain steps at the final beta (training on
the learned distribution, which is what it was learned for). Every step's key is `fold_in(seed key, global step)` and the
schedule is a function of the step alone, so a run restored from a checkpoint
replays exactly what an uninterrupted run does. `time_budget_s` > 0 ends the
run once that much step time has passed (the fixed-beta yardstick uses it).
SIGINT and SIGTERM end the run after the current step and save it (`Interrupted`).

Outputs while it runs: at a checkpoint (at most once every
`INTERIM_EVERY_S` seconds) and when it is interrupted, the run writes the
task's outputs so far (curve.png, samples.png, ...) and a `results.json`
marked `"partial": true`; `finished_results(workdir)` tells a finished run
from one in progress. metrics.jsonl logs beta by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import logging as std_logging

import jax
import numpy as np
from absl import flags
from absl import logging

from hgrad.core import distributed
from hgrad.core import eta
from hgrad.core import run_lock
from hgrad.core.checkpoint import Checkpointer
from hgrad.core.events import EventWriter
from hgrad.core.outer import HybridGradient, OuterState

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
INTERIM_EVERY_S = 60.0


def finished_results(workdir: str) -> dict | None:
  """The results of a finished run in `workdir`; None while it is missing or partial."""
  path = os.path.join(workdir, RESULTS_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    results = json.load(f)
  return None if results.get("partial") else results


class Interrupted(Exception):
  """SIGINT or SIGTERM stopped a run; everything up to `step` is checkpointed."""

  def __init__(self, signum: int, step: int, workdir: str):
    self.signum, self.step, self.workdir = signum, step, workdir
    super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}; saved step "
                     f"{step} in {workdir}: run the same command to resume")


class _Stop(Exception):
  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum


class _StopRequest:
  """Set by SIGINT / SIGTERM; the loop honours it at the next step boundary."""
  signum: int | None = None
  saving: bool = False


@contextlib.contextmanager
def _stop_on_signals():
  """The first SIGINT / SIGTERM asks the loop to stop after the current step (it then saves);
  a second one stops at once, except during a checkpoint save (orbax must not be cut)."""
  request = _StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request
    return

  def handler(signum, frame):
    del frame
    if request.signum is not None and not request.saving:
      raise _Stop(signum)
    request.signum = signum
  previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield request
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


@dataclasses.dataclass(frozen=True)
class Schedule:
  warmup_steps: int = 0
  outer_steps: int = 10
  train_steps_per_outer: int = 0
  final_steps: int = 0
  checkpoint_every: int = 10       # global steps
  eval_every: int = 10             # global steps; L on the real images during plain steps
  time_budget_s: float = 0.0       # > 0: stop after this much step time
  freeze_beta: bool = False        # outer steps become plain steps (the fixed-beta ablation)
  kill_at_step: int = -1           # testing only: SIGKILL this process after that global step
  log_every: int = 1               # a progress line every this many steps (and at every L)

  def __post_init__(self):
    for name in ("warmup_steps", "outer_steps", "train_steps_per_outer", "final_steps"):
      if getattr(self, name) < 0:
        raise ValueError(f"Schedule.{name} must be >= 0, got {getattr(self, name)}")
    for name in ("checkpoint_every", "eval_every", "log_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"Schedule.{name} must be >= 1, got {getattr(self, name)}")
    if self.total_steps < 1:
      raise ValueError("the schedule has no steps")

  @property
  def total_steps(self) -> int:
    return self.warmup_steps + self.outer_steps * (1 + self.train_steps_per_outer) + self.final_steps

  def describe(self) -> str:
    """The phase plan in words, e.g. '200 warm-up, 100 outer (+2 plain each), 400 final = 900 steps'."""
    parts = [f"{self.warmup_steps} warm-up"] if self.warmup_steps else []
    if self.outer_steps:
      plain = f" (+{self.train_steps_per_outer} plain each)" if self.train_steps_per_outer else ""
      parts.append(f"{self.outer_steps} {'plain (beta frozen)' if self.freeze_beta else 'outer'}"
                   f"{plain}")
    if self.final_steps:
      parts.append(f"{self.final_steps} final")
    budget = f", stop after {self.time_budget_s:.0f} s" if self.time_budget_s > 0 else ""
    return f"{', '.join(parts)} = {self.total_steps} steps{budget}"

  def outer_steps_from(self, step: int) -> int:
    """How many of the global steps step, step + 1, ... are outer steps."""
    if self.freeze_beta:
      return 0
    period = 1 + self.train_steps_per_outer
    done = min(max(-(-(step - self.warmup_steps) // period), 0), self.outer_steps)
    return self.outer_steps - done

  def phase(self, step: int) -> str:
    """'warmup', 'outer', 'train' or 'final' for the global step about to run."""
    if step < self.warmup_steps:
      return "warmup"
    if step >= self.total_steps - self.final_steps:
      return "final"
    outer = (step - self.warmup_steps) % (1 + self.train_steps_per_outer) == 0
    return "outer" if outer and not self.freeze_beta else "train"


StepFn = Callable[[OuterState, str, jax.Array], tuple[OuterState, dict]]


class Task(NamedTuple):
  """What the loop needs from an experiment (only `name`, `hg`, `params0`, `beta0` are required)."""

  name: str
  hg: HybridGradient
  params0: Any
  beta0: np.ndarray
  evaluate: Callable[[Any], dict] = lambda params: {}   # params -> {split: metrics}, at the end
  finish: Callable[[str, OuterState, list[dict], dict], None] | None = None  # task's own outputs
  # The host generator, if any: its `reset_stats()` gives render time per step, `close()` ends it.
  generator: Any = None
  step: StepFn | None = None           # default: hg.outer_step / hg.train_step by phase
  # Host-side state of a method (e.g. an evolving population) kept in checkpoints as JSON.
  save_host_state: Callable[[], Any] | None = None
  load_host_state: Callable[[Any], None] | None = None


def hybrid_step(hg: HybridGradient) -> StepFn:
  def step(state: OuterState, phase: str, key: jax.Array):
    return hg.outer_step(state, key) if phase == "outer" else hg.train_step(state, key)
  return step


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _truncate_metrics(workdir: str, last_step: int, write: bool = True) -> list[dict]:
  """Drops lines written after the checkpoint we resume from (they will be redone)."""
  kept = [r for r in read_metrics(workdir) if r["step"] <= last_step]
  if not write:
    return kept
  with open(os.path.join(workdir, METRICS_FILE), "w") as f:
    for record in kept:
      f.write(json.dumps(record) + "\n")
  return kept


def show_progress() -> None:
  """Progress lines for a run started from Python (a notebook, a user's script).

  Under `absl.app` the flags decide what is logged; without it absl's INFO
  lines go nowhere, so hgrad's (absl's) logger gets a readable line format on
  stderr, unless it has a handler already.
  """
  logger = std_logging.getLogger("absl")
  if flags.FLAGS.is_parsed() or logger.handlers:
    return
  handler = std_logging.StreamHandler()
  handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname).1s %(message)s",
                                             "%H:%M:%S"))
  logger.addHandler(handler)
  logger.propagate = False
  logging.set_verbosity(logging.INFO)


def compile_ahead(hg: HybridGradient, state: OuterState, key: jax.Array, schedule: Schedule
                  ) -> float:
  """Compiles the jitted steps the rest of the schedule runs and L; returns the seconds it took.

  Done before the first step so that no step's time hides a compile (the ETA
  prices steps from their times) and the outer step's compile, the longest,
  is paid at start rather than when the warm-up ends. jit's cache keeps the
  executables (`lower(...).compile()` fills it).
  """
  step = int(state.step)
  outer_left = schedule.outer_steps_from(step)
  start = time.perf_counter()
  if outer_left:
    hg.outer_step.lower(state, key).compile()
  if schedule.total_steps - step > outer_left:
    hg.train_step.lower(state, key).compile()
  hg.evaluate.lower(hg.eval_params(state)).compile()
  return time.perf_counter() - start


def run(task: Task, schedule: Schedule, workdir: str, seed: int) -> dict:
  """Runs (or resumes) the schedule in `workdir`; returns the results dict.

  Raises run_lock.WorkdirInUse if another process is running in `workdir`.
  """
  show_progress()
  os.makedirs(workdir, exist_ok=True)
  primary = distributed.is_primary()      # several JAX processes: only process 0 writes
  with run_lock.hold(workdir) if primary else contextlib.nullcontext():
    return _run(task, schedule, workdir, seed, primary)


def _run(task: Task, schedule: Schedule, workdir: str, seed: int, primary: bool) -> dict:
  hg = task.hg
  reset_stats = getattr(task.generator, "reset_stats", dict)
  checkpointer = Checkpointer(workdir)
  state = hg.init(task.beta0, task.params0, what="beta0")
  meta = {"elapsed_s": 0.0, "host_render_s": 0.0, "cpu_s": 0.0}
  if checkpointer.latest_step() is not None:
    state, meta = checkpointer.restore(state)
    if jax.device_count() > 1:   # restored onto one device: host copies, so jit places them
      state = distributed.to_local(state)
    if task.load_host_state is not None:
      task.load_host_state(meta["host_state"])
    history = _truncate_metrics(workdir, int(state.step), write=primary)
    logging.info("resumed %s from step %d (%.0f s of steps done)", workdir, int(state.step),
                 meta["elapsed_s"])
  else:
    history = _truncate_metrics(workdir, -1, write=primary)
  key = jax.random.key(seed)
  step_fn = task.step or hybrid_step(hg)
  logging.info("%s in %s: %s; outputs: metrics.jsonl, checkpoints/, TensorBoard events, then "
               "results.json and the task's plots (interim ones at checkpoints)", task.name,
               workdir, schedule.describe())
  compiled = task.step is None and int(state.step) < schedule.total_steps
  if compiled:
    # Compile time is run time: it counts in elapsed_s (and so in a time budget), as it did
    # when the first step of each kind compiled.
    compile_s = compile_ahead(hg, state, key, schedule)
    meta["elapsed_s"] += compile_s
    logging.info("compiled the step functions in %.1f s", compile_s)

  def save(step: int):
    if task.save_host_state is not None:
      meta["host_state"] = task.save_host_state()
    checkpointer.save(step, state, meta)

  saved_step = int(state.step)
  last_interim = time.monotonic()
  costs = eta.StepCosts(history, 2 * hg.outer.num_perturbations + 1,
                        first_step_compiles=not compiled)
  last_record_time = None
  stopped_by = None
  with EventWriter(workdir, int(state.step), write=primary) as events:
    try:
      with _stop_on_signals() as stop, \
          open(os.path.join(workdir, METRICS_FILE) if primary else os.devnull, "a") as metrics_file:
        while int(state.step) < schedule.total_steps:
          # Agreed by every process (one process each step), so none runs a step others skip.
          signalled, over_budget = distributed.agree([
              stop.signum is not None,
              schedule.time_budget_s > 0 and meta["elapsed_s"] >= schedule.time_budget_s])
          if signalled:
            stopped_by = stop.signum or signal.SIGTERM
            break
          if over_budget:
            logging.info("time budget of %.0f s reached at step %d", schedule.time_budget_s,
                         int(state.step))
            break
          step = int(state.step)
          phase = schedule.phase(step)
          reset_stats()
          start, cpu_start = time.perf_counter(), time.process_time()
          new_state, metrics = step_fn(state, phase, key)
          metrics = jax.device_get(metrics)
          wall = time.perf_counter() - start
          host_stats = reset_stats()
          cpu = time.process_time() - cpu_start + float(host_stats.get("worker_cpu_s", 0.0))
          record, new_meta = _step_record(hg, schedule, step, phase, new_state, metrics, meta,
                                          wall, cpu, host_stats)
          now = time.monotonic()
          if last_record_time is not None:
            # Since the last record: its checkpoint and interim outputs, this step, its L.
            record["overhead_s"] = max(now - last_record_time - wall, 0.0)
          last_record_time = now
          costs.add(record)
          outer_left = schedule.outer_steps_from(step + 1)
          remaining, estimated = costs.remaining(
              outer_left, schedule.total_steps - step - 1 - outer_left,
              budget_left_s=(schedule.time_budget_s - new_meta["elapsed_s"]
                             if schedule.time_budget_s > 0 else None))
          record.update(eta_s=remaining, time=time.time())
          metrics_file.write(json.dumps(record) + "\n")
          metrics_file.flush()
          events.record(record)
          # The step counts from here: a stop before this line leaves the previous state (and
          # its line is dropped on resume), a stop after it saves this state with its line.
          state, meta = new_state, new_meta
          history.append(record)
          if (step + 1) % schedule.log_every == 0 or "L" in record:
            logging.info("%s step %d/%d (%s)%s train_loss=%.4f %.2fs (render %.2fs) ETA %s",
                         task.name, step + 1, schedule.total_steps, phase,
                         f" L={record['L']:.3f}" if "L" in record else "", record["train_loss"],
                         wall, record["host_render_s"], eta.format_eta(remaining, estimated))
          if (step + 1) % schedule.checkpoint_every == 0:
            stop.saving = True
            save(step + 1)
            saved_step, stop.saving = step + 1, False
            if time.monotonic() - last_interim >= INTERIM_EVERY_S and step + 1 < schedule.total_steps:
              write_outputs(task, state, history, meta, workdir, partial=True, events=events)
              last_interim = time.monotonic()
          if step + 1 == schedule.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
    except _Stop as immediate:
      stopped_by = immediate.signum
    finally:
      if int(state.step) != saved_step:
        save(int(state.step))
      checkpointer.close()
    if stopped_by is not None:
      write_outputs(task, state, history, meta, workdir, partial=True,
                    interrupted=signal.Signals(stopped_by).name, events=events)
      raise Interrupted(stopped_by, int(state.step), workdir)
    return write_outputs(task, state, history, meta, workdir, partial=False, events=events)


def _step_record(hg: HybridGradient, schedule: Schedule, step: int, phase: str,
                 new_state: OuterState, metrics: dict, meta: dict, wall: float, cpu: float,
                 host_stats: dict) -> tuple[dict, dict]:
  """The metrics line of one step (L where it is due) and the run's totals after it."""
  host = float(host_stats.get("host_wall_s", 0.0))
  new_meta = dict(meta, elapsed_s=meta["elapsed_s"] + wall,
                  host_render_s=meta["host_render_s"] + host, cpu_s=meta["cpu_s"] + cpu)
  record = {"step": step + 1, "phase": phase, "wall_s": wall, "host_render_s": host,
            "device_s": max(wall - host, 0.0), "cpu_s": cpu,
            "elapsed_s": new_meta["elapsed_s"], "train_loss": float(metrics["train_loss"]),
            "beta": hg.layout.as_dict(hg.beta(new_state))}
  record.update({k: float(metrics[k]) for k in ("grad_norm", "grad_cosine", "trust_distance")
                 if k in metrics})
  if "host_overlapped_s" in host_stats:   # renders that ran beside the unroll
    record["render_overlapped_s"] = float(host_stats["host_overlapped_s"])
  if phase == "outer" and "L" in metrics:
    # The objective the estimate differentiates: L at the unrolled (raw) weights.
    record["L_unroll" if hg.averages else "L"] = float(metrics["L"])
  if "L" not in record and ((step + 1) % schedule.eval_every == 0 or
                            step + 1 == schedule.total_steps):
    record["L"] = float(hg.evaluate(hg.eval_params(new_state)))
    if hg.averages:
      record["L_raw"] = float(hg.evaluate(new_state.inner.params))
  return record, new_meta


def write_outputs(task: Task, state: OuterState, history: list[dict], meta: dict, workdir: str,
                  *, partial: bool, interrupted: str | None = None,
                  events: EventWriter | None = None) -> dict:
  """results.json (marked partial before the end) and the task's own outputs (plots, samples).

  `interrupted` (the signal's name) is recorded in the results; a task's
  `finish` should then skip what needs the renderer (its workers may have
  received the same signal). With several JAX processes the final results
  are evaluated by every process on a host copy of the (replicated) state, so
  nothing here needs the others; only process 0 scores interim outputs, runs
  `finish` and writes.
  """
  hg = task.hg
  layout = hg.layout
  primary = distributed.is_primary()
  if jax.process_count() > 1:
    state = distributed.to_local(state)
  results = {"task": task.name, "steps": int(state.step), "elapsed_s": meta["elapsed_s"],
             "host_render_s": meta["host_render_s"], "cpu_s": meta["cpu_s"],
             "beta": layout.as_dict(hg.beta(state)), "beta0": layout.as_dict(task.beta0)}
  if partial:
    results["partial"] = True
  if interrupted:
    results["interrupted"] = interrupted
  if not primary and partial:       # interim outputs are process 0's to write; nothing to score
    return results
  results.update(task.evaluate(hg.eval_params(state)))
  if not primary:                   # scored for its own summary line; process 0 writes
    return results
  if task.finish is not None:
    task.finish(workdir, state, history, results)
  with open(os.path.join(workdir, RESULTS_FILE), "w") as f:
    json.dump(results, f, indent=2)
  if events is not None:
    events.image("samples", os.path.join(workdir, "samples.png"), int(state.step))
    events.flush()
  return results
