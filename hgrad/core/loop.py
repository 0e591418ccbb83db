"""The run loop shared by every experiment: schedule, metrics, checkpoints, resume.

A run is a sequence of global steps: `warmup_steps` plain training steps at
beta0 (the network learns the task before beta moves), then `outer_steps`
outer steps, each followed by `train_steps_per_outer` plain training steps at
the current beta, then `final_steps` plain steps at the final beta (training
on the learned distribution, which is what it was learned for). Every step's
key is `fold_in(seed key, global step)` and the schedule is a function of the
step alone, so a run restored from a checkpoint replays exactly what an
uninterrupted run does.

`run` reads top to bottom: restore, compile, then per step: stop?, step,
record, periodic actions (checkpoint, interim outputs); then the outputs.
The pieces around the step: `_Stops` (SIGINT / SIGTERM, the time budget,
`stop_after_step`, agreed by every process), `_Record` (metrics.jsonl,
TensorBoard events, the progress line and its ETA).

Outputs while it runs: at a checkpoint (at most once every `INTERIM_EVERY_S`
seconds) and when it stops early, the run writes the task's outputs so far
(curve.png, samples.png, ...) and a `results.json` marked `"partial": true`;
`finished_results(workdir)` tells a finished run from one in progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging as std_logging
import os
import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from absl import logging

from hgrad.core import bridge
from hgrad.core import distributed
from hgrad.core import eta
from hgrad.core import run_lock
from hgrad.core.checkpoint import Checkpointer
from hgrad.core.events import EventWriter
from hgrad.core.outer import OuterState, OuterTrainer

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


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The global steps of a run, by phase.

  Attributes:
    warmup_steps: plain training steps at beta0 first.
    outer_steps: outer steps (beta moves), each followed by
      `train_steps_per_outer` plain steps at the current beta.
    train_steps_per_outer: plain steps after each outer step.
    final_steps: plain steps at the final beta.
    checkpoint_every: global steps between checkpoints.
    eval_every: global steps between evaluations of L (and at the last step).
    time_budget_s: > 0 ends the run once that much step time has passed.
    freeze_beta: outer steps become plain steps (the fixed-beta yardstick).
    stop_after_step: > 0 ends the run after that global step, saved and
      marked partial: the same command without it continues (e.g. to branch a
      measurement from a run's network at that step).
    log_every: a progress line every this many steps (and at every L).
  """

  warmup_steps: int = 0
  outer_steps: int = 10
  train_steps_per_outer: int = 0
  final_steps: int = 0
  checkpoint_every: int = 10
  eval_every: int = 10
  time_budget_s: float = 0.0
  freeze_beta: bool = False
  stop_after_step: int = -1
  log_every: int = 1

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
    """The run's global steps, every phase together."""
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
# finish(workdir, state, history, results): a task's own outputs (plots, extra results entries).
Finish = Callable[[str, OuterState, list, dict], None]


class Task(NamedTuple):
  """What the loop needs from an experiment.

  Attributes:
    name: the run's name in progress lines and results.
    trainer: the `OuterTrainer` (its generator, network and losses).
    params0: the network's initial parameters.
    beta0: the starting beta (an array or {name: value}).
    evaluate: `evaluate(params) -> dict` of entries added to results.json at
      the end (and at interim outputs), e.g. `{"L": ...}` or `{split: metrics}`.
    finish: `finish(workdir, state, history, results)` writes the task's own
      outputs and may add entries to `results` before it is written; it runs
      at the end, at interim outputs and when a run stops early (then
      `results["interrupted"]` names why).
    generator: the host generator, if the trainer was not built on it: its
      `reset_stats()` gives render time per step (default: `trainer.generator`).
    step: `step(state, phase, key) -> (state, metrics)` in place of the
      trainer's outer and plain steps (e.g. Shape Evolution's generations).
    save_host_state / load_host_state: host-side state of a method (e.g. an
      evolving population) kept in checkpoints as JSON.
  """

  name: str
  trainer: OuterTrainer
  params0: Any
  beta0: Any
  evaluate: Callable[[Any], dict] = lambda params: {}
  finish: Finish | None = None
  generator: Any = None
  step: StepFn | None = None
  save_host_state: Callable[[], Any] | None = None
  load_host_state: Callable[[Any], None] | None = None


def trainer_step(trainer: OuterTrainer) -> StepFn:
  """The default step: the trainer's outer step in the outer phase, its plain step otherwise."""
  def step(state: OuterState, phase: str, key: jax.Array):
    return trainer.outer_step(state, key) if phase == "outer" else trainer.train_step(state, key)
  return step


def read_metrics(workdir: str) -> list[dict]:
  """The metrics lines of a run (metrics.jsonl), oldest first; [] before its first step."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _truncate_metrics(workdir: str, last_step: int, write: bool = True) -> list[dict]:
  """Drops lines written after the checkpoint we resume from (they will be redone)."""
  kept = [r for r in read_metrics(workdir) if r["step"] <= last_step]
  if write:
    with open(os.path.join(workdir, METRICS_FILE), "w") as f:
      for record in kept:
        f.write(json.dumps(record) + "\n")
  return kept


def show_progress() -> None:
  """Progress lines for a run started from Python (a notebook, a user's script).

  Under `absl.app` absl's handler (on the root logger) prints them; without
  it absl's INFO lines go nowhere, so hgrad's (absl's) logger gets a readable
  line format on stderr, unless it has a handler already.
  """
  logger = std_logging.getLogger("absl")
  if logger.handlers or logging.get_absl_handler() in std_logging.getLogger().handlers:
    return
  handler = std_logging.StreamHandler()
  handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname).1s %(message)s",
                                             "%H:%M:%S"))
  logger.addHandler(handler)
  logger.propagate = False
  logging.set_verbosity(logging.INFO)


def run(task: Task, schedule: Schedule, workdir: str, seed: int) -> dict:
  """Runs (or resumes) the schedule in `workdir` and returns the run's results.

  Returns:
    The dict written to results.json: "task", "steps" (global steps done),
    "elapsed_s" (step time, compiles included), "host_render_s", "cpu_s",
    "beta" and "beta0" as {name: value} (`ParamLayout.check` and
    `OuterTrainer.init` take that form back), what `task.evaluate` returned,
    what `task.finish` added, and "partial": true (+ "interrupted": why) for a
    run that stopped before its last step.

  Raises:
    Interrupted: SIGINT or SIGTERM stopped the run (it is saved).
    run_lock.WorkdirInUse: another process is running in `workdir`.
  """
  show_progress()
  os.makedirs(workdir, exist_ok=True)
  primary = distributed.is_primary()      # several JAX processes: only process 0 writes
  with run_lock.hold(workdir) if primary else contextlib.nullcontext():
    return _run(task, schedule, workdir, seed, primary)


def _run(task: Task, schedule: Schedule, workdir: str, seed: int, primary: bool) -> dict:
  trainer, key = task.trainer, jax.random.key(seed)
  checkpointer = Checkpointer(workdir)
  state, meta, history = _restore(task, checkpointer, workdir, primary)
  logging.info("%s in %s: %s; outputs: metrics.jsonl, checkpoints/, TensorBoard events, then "
               "results.json and the task's plots (interim ones at checkpoints)", task.name,
               workdir, schedule.describe())
  compiled = task.step is None and int(state.step) < schedule.total_steps
  if compiled:     # compile time is run time: it counts in elapsed_s (and a time budget)
    meta["elapsed_s"] += _compile_ahead(trainer, state, key, schedule)
  step_fn = task.step or trainer_step(trainer)

  def save(state, meta) -> None:
    if task.save_host_state is not None:
      meta["host_state"] = task.save_host_state()
    checkpointer.save(int(state.step), state, meta)

  saved_step, last_interim = int(state.step), time.monotonic()
  with _Record(task, schedule, workdir, history, int(state.step), compiled, primary) as record:
    with _Stops(schedule) as stops:
      try:
        while int(state.step) < schedule.total_steps and not stops.now(state, meta):
          state, meta = record.step(state, meta, lambda s: _timed_step(task, step_fn, s, key,
                                                                        schedule))
          if int(state.step) % schedule.checkpoint_every == 0:
            with stops.saving():
              save(state, meta)
            saved_step = int(state.step)
            if (time.monotonic() - last_interim >= INTERIM_EVERY_S and
                int(state.step) < schedule.total_steps):
              write_outputs(task, state, record.history, meta, workdir, partial=True,
                            events=record.events)
              last_interim = time.monotonic()
      except _Stop as immediate:
        stops.stopped_by(immediate.signum)
      finally:
        if int(state.step) != saved_step:
          save(state, meta)
        checkpointer.close()
    results = write_outputs(task, state, record.history, meta, workdir,
                            partial=stops.reason is not None, interrupted=stops.reason,
                            events=record.events)
  if stops.signum is not None:
    raise Interrupted(stops.signum, int(state.step), workdir)
  return results


def _restore(task: Task, checkpointer: Checkpointer, workdir: str, primary: bool):
  """(state, meta, history): the latest checkpoint and its metrics, or a fresh start."""
  state = task.trainer.init(task.beta0, task.params0, what="beta0")
  meta = {"elapsed_s": 0.0, "host_render_s": 0.0, "cpu_s": 0.0}
  if checkpointer.latest_step() is None:
    return state, meta, _truncate_metrics(workdir, -1, write=primary)
  state, meta = checkpointer.restore(state)
  if jax.device_count() > 1:   # restored onto one device: host copies, so jit places them
    state = distributed.to_local(state)
  if task.load_host_state is not None:
    task.load_host_state(meta["host_state"])
  logging.info("resumed %s from step %d (%.0f s of steps done)", workdir, int(state.step),
               meta["elapsed_s"])
  return state, meta, _truncate_metrics(workdir, int(state.step), write=primary)


def _compile_ahead(trainer: OuterTrainer, state: OuterState, key: jax.Array,
                   schedule: Schedule) -> float:
  """Compiles the jitted steps the rest of the schedule runs and L; returns the seconds.

  Done before the first step so that no step's time hides a compile (the ETA
  prices steps from their times) and the outer step's compile, the longest,
  is paid at start rather than when the warm-up ends.
  """
  step = int(state.step)
  outer_left = schedule.outer_steps_from(step)
  start = time.perf_counter()
  trainer.compile(state, key, outer=outer_left > 0,
                  plain=schedule.total_steps - step > outer_left)
  compile_s = time.perf_counter() - start
  logging.info("compiled the step functions in %.1f s", compile_s)
  return compile_s


def _timed_step(task: Task, step_fn: StepFn, state: OuterState, key: jax.Array,
                schedule: Schedule) -> tuple[OuterState, dict, dict]:
  """One global step: (new state, its metrics on the host, timing and host statistics)."""
  reset_stats = getattr(task.generator or task.trainer.generator, "reset_stats", dict)
  phase = schedule.phase(int(state.step))
  reset_stats()
  start, cpu_start = time.perf_counter(), time.process_time()
  with bridge.host_errors():
    new_state, metrics = step_fn(state, phase, key)
    metrics = jax.device_get(metrics)
  wall = time.perf_counter() - start
  host_stats = reset_stats()
  cpu = time.process_time() - cpu_start + float(host_stats.get("worker_cpu_s", 0.0))
  return new_state, metrics, {"phase": phase, "wall_s": wall, "cpu_s": cpu,
                              "host_render_s": float(host_stats.get("host_wall_s", 0.0)),
                              "host_overlapped_s": host_stats.get("host_overlapped_s")}


class _Stop(Exception):
  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum


class _Stops:
  """Why the run should stop before its next step: a signal, the time budget or
  `stop_after_step`, agreed by every process (one allgather a step) so none runs a step the
  others skip. The first SIGINT / SIGTERM asks for a stop after the current step (the run then
  saves); a second one stops at once, except while a checkpoint is saved."""

  def __init__(self, schedule: Schedule):
    self.schedule = schedule
    self.signum: int | None = None
    self.reason: str | None = None
    self._saving = False
    self._previous: dict = {}

  def __enter__(self) -> "_Stops":
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
    return self

  def __exit__(self, *exc) -> None:
    for s, h in self._previous.items():
      signal.signal(s, h)

  def stopped_by(self, signum: int) -> None:
    self.signum, self.reason = signum, signal.Signals(signum).name

  def _handler(self, signum, frame) -> None:
    del frame
    if self.signum is not None and not self._saving:
      raise _Stop(signum)
    self.signum = signum

  @contextlib.contextmanager
  def saving(self):
    """A checkpoint save in progress: a second signal waits for it (orbax must not be cut)."""
    self._saving = True
    try:
      yield
    finally:
      self._saving = False

  def now(self, state: OuterState, meta: dict) -> bool:
    """Whether to stop before the step `state` is at (and why, in `reason`)."""
    schedule, step = self.schedule, int(state.step)
    signalled, over_budget, at_stop = distributed.agree([
        self.signum is not None,
        schedule.time_budget_s > 0 and meta["elapsed_s"] >= schedule.time_budget_s,
        0 < schedule.stop_after_step <= step])
    if signalled:
      self.stopped_by(self.signum or signal.SIGTERM)
    elif over_budget:
      logging.info("time budget of %.0f s reached at step %d", schedule.time_budget_s, step)
    elif at_stop:
      self.reason = f"stop_after_step {schedule.stop_after_step}"
      logging.info("stopped after step %d (schedule.stop_after_step); the same command without "
                   "it continues", step)
    return signalled or over_budget or at_stop


class _Record:
  """Per step: the metrics line (metrics.jsonl and TensorBoard), L where it is due, the ETA,
  the progress line; the run's totals in `meta`."""

  def __init__(self, task: Task, schedule: Schedule, workdir: str, history: list[dict],
               resume_step: int, compiled: bool, primary: bool):
    self.task, self.schedule, self.workdir, self.history = task, schedule, workdir, history
    self.resume_step, self.primary = resume_step, primary
    self.costs = eta.StepCosts(history, 2 * task.trainer.outer.num_perturbations + 1,
                               first_step_compiles=not compiled)
    self._last_time: float | None = None
    self.events: EventWriter | None = None
    self._file = None

  def __enter__(self) -> "_Record":
    self.events = EventWriter(self.workdir, self.resume_step, write=self.primary).__enter__()
    self._file = open(os.path.join(self.workdir, METRICS_FILE) if self.primary else os.devnull,
                      "a")
    return self

  def __exit__(self, *exc) -> None:
    self._file.close()
    self.events.__exit__(*exc)

  def step(self, state: OuterState, meta: dict, run_step) -> tuple[OuterState, dict]:
    """Runs `run_step(state)` and records it; the step counts from the line written (a stop
    before it leaves the previous state, whose checkpoint holds it)."""
    new_state, metrics, timing = run_step(state)
    record, new_meta = self._line(int(state.step), new_state, metrics, meta, timing)
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    self.events.record(record)
    self.history.append(record)
    self._progress(record)
    return new_state, new_meta

  def _line(self, step: int, new_state: OuterState, metrics: dict, meta: dict, timing: dict
            ) -> tuple[dict, dict]:
    trainer, schedule = self.task.trainer, self.schedule
    new_meta = dict(meta, elapsed_s=meta["elapsed_s"] + timing["wall_s"],
                    host_render_s=meta["host_render_s"] + timing["host_render_s"],
                    cpu_s=meta["cpu_s"] + timing["cpu_s"])
    record = {"step": step + 1, "phase": timing["phase"], "wall_s": timing["wall_s"],
              "host_render_s": timing["host_render_s"],
              "device_s": max(timing["wall_s"] - timing["host_render_s"], 0.0),
              "cpu_s": timing["cpu_s"], "elapsed_s": new_meta["elapsed_s"],
              "train_loss": float(metrics["train_loss"]),
              "beta": trainer.layout.as_dict(trainer.beta(new_state))}
    record.update({k: float(metrics[k]) for k in ("grad_norm", "grad_cosine", "trust_distance")
                   if k in metrics})
    if timing["host_overlapped_s"] is not None:   # renders that ran beside the unroll
      record["render_overlapped_s"] = float(timing["host_overlapped_s"])
    _add_losses(record, trainer, new_state, metrics, schedule, step)
    now = time.monotonic()
    if self._last_time is not None:
      # Since the last line: its checkpoint and interim outputs, this step, its L.
      record["overhead_s"] = max(now - self._last_time - timing["wall_s"], 0.0)
    self._last_time = now
    self.costs.add(record)
    outer_left = schedule.outer_steps_from(step + 1)
    remaining, estimated = self.costs.remaining(
        outer_left, schedule.total_steps - step - 1 - outer_left,
        budget_left_s=(schedule.time_budget_s - new_meta["elapsed_s"]
                       if schedule.time_budget_s > 0 else None))
    record.update(eta_s=remaining, time=time.time())
    self._eta_text = eta.format_eta(remaining, estimated)
    return record, new_meta

  def _progress(self, record: dict) -> None:
    if record["step"] % self.schedule.log_every == 0 or "L" in record:
      logging.info("%s step %d/%d (%s)%s train_loss=%.4f %.2fs (render %.2fs) ETA %s",
                   self.task.name, record["step"], self.schedule.total_steps, record["phase"],
                   f" L={record['L']:.3f}" if "L" in record else "", record["train_loss"],
                   record["wall_s"], record["host_render_s"], self._eta_text)


def _add_losses(record: dict, trainer: OuterTrainer, new_state: OuterState, metrics: dict,
                schedule: Schedule, step: int) -> None:
  """The losses of a metrics line, one name per quantity.

  L_unroll: an outer step's objective, L at the raw weights after its K inner
  steps. L: L of the network the run delivers (the EMA if configured): at
  every eval_every-th and the last step, and at outer steps without an EMA
  (there it is L_unroll). L_raw: with an EMA, L of the raw weights where L is.
  """
  if record["phase"] == "outer" and "L" in metrics:
    record["L_unroll"] = float(metrics["L"])
    if not trainer.averages:
      record["L"] = record["L_unroll"]
  if "L" not in record and ((step + 1) % schedule.eval_every == 0 or
                            step + 1 == schedule.total_steps):
    with bridge.host_errors():
      record["L"] = float(trainer.evaluate(trainer.eval_params(new_state)))
      if trainer.averages:
        record["L_raw"] = float(trainer.evaluate(new_state.inner.params))


def write_outputs(task: Task, state: OuterState, history: list[dict], meta: dict, workdir: str,
                  *, partial: bool, interrupted: str | None = None,
                  events: EventWriter | None = None) -> dict:
  """results.json (marked partial before the end) and the task's own outputs (plots, samples).

  `interrupted` (why the run stopped early) is recorded in the results. With
  several JAX processes the final results are evaluated by every process on a
  host copy of the (replicated) state, so nothing here needs the others; only
  process 0 scores interim outputs, runs `finish` and writes.
  """
  trainer = task.trainer
  layout = trainer.layout
  primary = distributed.is_primary()
  if jax.process_count() > 1:
    state = distributed.to_local(state)
  results = {"task": task.name, "steps": int(state.step), "elapsed_s": meta["elapsed_s"],
             "host_render_s": meta["host_render_s"], "cpu_s": meta["cpu_s"],
             "beta": layout.as_dict(trainer.beta(state)),
             "beta0": layout.as_dict(layout.check(task.beta0))}
  if partial:
    results["partial"] = True
  if interrupted:
    results["interrupted"] = interrupted
  if not primary and partial:       # interim outputs are process 0's to write; nothing to score
    return results
  results.update(task.evaluate(trainer.eval_params(state)))
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
