"""The study harness at smoke scale: every arm, paired seeds, intervals, resume without redoing."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, mbii_train_dir

from hgrad import study


def _study(workdir, *extra):
  return subprocess.run([sys.executable, "-m", "experiments.study", "--config=configs/study.py:smoke",
                         f"--workdir={workdir}", f"--config.base.data.dir={mbii_train_dir()}",
                         *extra], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("study")
  result = _study(workdir)
  assert result.returncode == 0, result.stderr[-4000:]
  return workdir


@pytest.mark.slow
def test_study_writes_every_arm_with_paired_seeds_and_intervals(smoke_study):
  with open(smoke_study / "study.json") as f:
    summary = json.load(f)
  real_arms = set(study.ARMS) - {"oracle"}            # oracle: synthetic testbed only
  assert set(summary["arms"]) == real_arms | {"hybrid_log_adam"}
  for arm in real_arms:
    assert len(summary["arms"][arm]["scores"]) == 2
    for seed in (0, 1):
      assert (smoke_study / arm / f"seed{seed}" / "results.json").exists()
  d = summary["differences"]["hybrid − fixed_steps"]["final_L"]
  assert d["n"] == 2 and d["t95"][0] <= d["mean"] <= d["t95"][1]
  assert len(d["diffs"]) == 2
  assert (smoke_study / "study.png").stat().st_size > 0
  assert "placebo" in (smoke_study / "study.md").read_text()


@pytest.mark.slow
def test_arms_are_paired_and_do_what_they_say(smoke_study):
  def rows(arm, seed=0):
    with open(smoke_study / arm / f"seed{seed}" / "metrics.jsonl") as f:
      return [json.loads(line) for line in f]
  hybrid, fixed, placebo = rows("hybrid"), rows("fixed_steps"), rows("placebo")
  assert len(hybrid) == len(fixed) == len(placebo)
  # Same seed: identical until beta first moves (warm-up), then the arms part.
  assert hybrid[0]["train_loss"] == pytest.approx(fixed[0]["train_loss"], rel=1e-6)
  assert all(r["beta"] == fixed[0]["beta"] for r in fixed)
  assert hybrid[-1]["beta"] != fixed[-1]["beta"] and placebo[-1]["beta"] != hybrid[-1]["beta"]
  # The placebo moves beta as far per step as hybrid gradient does (same estimate norms).
  h_norms = [r["grad_norm"] for r in hybrid if r["phase"] == "outer"]
  p_norms = [r["grad_norm"] for r in placebo if r["phase"] == "outer"]
  np.testing.assert_allclose(p_norms[0], h_norms[0], rtol=1e-4)   # same state, same key
  with open(smoke_study / "hybrid" / "seed0" / "results.json") as f:
    learned = json.load(f)["beta"]
  with open(smoke_study / "retrain" / "seed0" / "results.json") as f:
    retrained = json.load(f)
  assert retrained["beta0"] == pytest.approx(learned, rel=1e-5)
  timed = rows("fixed_time")
  assert timed[-1]["elapsed_s"] <= hybrid[-1]["elapsed_s"] + max(r["wall_s"] for r in timed)


@pytest.mark.slow
def test_a_variant_arm_runs_hybrid_with_its_overrides(smoke_study):
  with open(smoke_study / "hybrid_log_adam" / "seed0" / "config.json") as f:
    config = json.load(f)
  assert config["outer"]["coordinates"] == "log" and config["outer"]["optimizer"] == "adam"
  assert config["outer"]["estimator"] == "hybrid"


def test_unknown_arms_and_variant_fields_are_named():
  import configs.study as study_configs
  config = study_configs.get_config("smoke")
  with pytest.raises(ValueError, match="unknown arm 'hybrid_nope'"):
    study.run_arm(config, "hybrid_nope", 0, "/nonexistent")
  config.arms = ("hybrid", "placebo", "hybrid")
  with pytest.raises(ValueError, match=r"config.arms lists \['hybrid'\] more than once"):
    study.run(config, "/nonexistent")
  config.arms, config.seeds = ("hybrid",), (0, 1, 0)
  with pytest.raises(ValueError, match=r"config.seeds lists \[0\] more than once"):
    study.run(config, "/nonexistent")
  config.variants.typo = {"outer": {"lr": 0.1}}
  with pytest.raises(ValueError, match="no field 'lr'"):
    study.run_arm(config, "hybrid_typo", 0, "/nonexistent")


@pytest.mark.parametrize("variant", ["screen", "cpu"])
def test_every_hybrid_variant_is_a_valid_training_config(variant):
  """A variant's overrides name real fields with valid values (else its arm fails hours in)."""
  import copy
  import configs.study as study_configs
  from hgrad.core import outer
  from hgrad.tasks import mbii
  config = study_configs.get_config(variant)
  parsed = {}
  for name, overrides in config.variants.items():
    base = copy.deepcopy(config.base)
    base.csg.layout = "lighting"                       # the layout the study runs content under
    study._merge(base, overrides, f"hybrid_{name}")
    parsed[name] = mbii.parse_config(base).training.outer
    outer.free_dimensions(mbii.layout_for(base), tuple(parsed[name].frozen))
  assert parsed["content_trust"].trust_radius == 0.5
  assert parsed["content"].trust_radius == config.base.outer.trust_radius   # the base's
  assert parsed["content_trust"].frozen == parsed["content"].frozen
  layout = mbii.layout_for(base)
  free = outer.free_dimensions(layout, tuple(parsed["light"].frozen))
  assert [layout.names[i] for i in free] == ["light_max_angle_deg", "ambient_mean",
                                             "ambient_spread"]
  assert parsed["light"].num_perturbations == len(free)


@pytest.mark.parametrize("variant,outer_steps,last_outer", [("cpu_trust_cheap", 25, 488),
                                                            ("cpu_trust_cheap10", 10, 470)])
def test_the_cheap_outer_phase_spans_the_same_steps_and_shares_fixed_steps(
    variant, outer_steps, last_outer):
  """The cheap variants reuse cpu_trust's fixed_steps runs: with beta frozen, every step must
  have the same phase (and so the same key and batch) under both schedules."""
  import configs.study as study_configs
  from hgrad.baselines import compare
  from hgrad.core import loop
  from hgrad.tasks import mbii
  full, cheap = (study_configs.get_config(v) for v in ("cpu_trust", variant))
  schedules = {}
  for name, config in (("full", full), ("cheap", cheap)):
    for method in ("hybrid", "fixed"):
      task_config = compare.method_config(config.base, method, 0)
      schedules[name, method] = loop.Schedule(**task_config.schedule.to_dict())
      mbii.parse_config(task_config)                      # a valid training config
  assert schedules["full", "hybrid"].total_steps == schedules["cheap", "hybrid"].total_steps
  outer_of = lambda s: [k for k in range(s.total_steps) if s.phase(k) == "outer"]
  full_outer, cheap_outer = outer_of(schedules["full", "hybrid"]), outer_of(schedules["cheap", "hybrid"])
  assert (len(full_outer), len(cheap_outer)) == (100, outer_steps)
  assert (full_outer[0], full_outer[-1]) == (200, 497)
  assert (cheap_outer[0], cheap_outer[-1]) == (200, last_outer)
  # The same reach: outer steps x step size.
  assert 100 * full.base.outer.learning_rate == pytest.approx(
      outer_steps * cheap.base.outer.learning_rate)
  # Every other field of the base config is cpu_trust's.
  differs = {f"{block}.{key}" for block, fields in full.base.to_dict().items()
             if isinstance(fields, dict) for key in fields
             if fields[key] != cheap.base.to_dict()[block][key]}
  assert differs == {"schedule.outer_steps", "schedule.train_steps_per_outer",
                     "outer.learning_rate"}
  assert {k: v for k, v in full.base.to_dict().items() if not isinstance(v, dict)} == {
      k: v for k, v in cheap.base.to_dict().items() if not isinstance(v, dict)}
  frozen_full, frozen_cheap = schedules["full", "fixed"], schedules["cheap", "fixed"]
  assert [frozen_full.phase(k) for k in range(900)] == [frozen_cheap.phase(k) for k in range(900)]
  assert "outer" not in {frozen_cheap.phase(k) for k in range(900)}


def test_the_oracle_arm_trains_at_beta_star_and_only_where_it_is_known(monkeypatch):
  import configs.study as study_configs
  from hgrad.tasks import mbii
  monkeypatch.delenv("HGRAD_MBII_DIR", raising=False)
  config = study_configs.get_config("smoke")
  config.arms = ("hybrid", "oracle")
  assert study._oracle_beta(config) == pytest.approx(mbii.beta_star().tolist())
  config.base.csg.layout = "lighting"                  # the oracle is lit like the target too
  from hgrad.generators.csg import CSG_LIGHTING_LAYOUT
  oracle = dict(zip(CSG_LIGHTING_LAYOUT.names, study._oracle_beta(config)))
  assert oracle["light_max_angle_deg"] == 35.0 and oracle["ambient_mean"] == pytest.approx(0.2)
  assert oracle["p_expand"] == pytest.approx(0.8)
  config.base.data.dir = mbii_train_dir()
  with pytest.raises(ValueError, match="arm 'oracle' needs a synthetic target"):
    study.run(config, "/nonexistent")                  # before any run starts


@pytest.mark.slow
def test_rerunning_a_finished_study_redoes_nothing(smoke_study):
  before = {p: os.path.getmtime(p) for p in smoke_study.glob("*/seed*/results.json")}
  result = _study(smoke_study)
  assert result.returncode == 0, result.stderr[-3000:]
  assert {p: os.path.getmtime(p) for p in smoke_study.glob("*/seed*/results.json")} == before


def test_paired_intervals():
  out = study.paired([1.0, 2.0, 3.0], [0.4, 1.5, 2.6])      # differences 0.6, 0.5, 0.4
  assert out["mean"] == pytest.approx(0.5)
  assert out["t95"][0] < 0.5 < out["t95"][1]
  assert 0.4 - 1e-9 <= out["bootstrap95"][0] <= 0.5 <= out["bootstrap95"][1] <= 0.6 + 1e-9
  assert out["t95"] == pytest.approx([0.5 - 4.303 * 0.1 / 3 ** 0.5, 0.5 + 4.303 * 0.1 / 3 ** 0.5], rel=1e-3)


def test_seeds_to_resolve_matches_the_paired_t_test_power_tables():
  """Cohen's tables for a two-sided paired t-test at 0.05 and power 0.8: d = 0.2, 0.5, 0.8
  need 199, 34, 15 pairs; the sign does not matter; no difference is never resolved."""
  assert [study.seeds_to_resolve(d, 1.0) for d in (0.2, 0.5, -0.8)] == [199, 34, 15]
  assert study.seeds_to_resolve(0.0, 1.0) is None and study.seeds_to_resolve(0.01, 1.0) is None
  assert study.paired([1.0, 2.0, 3.0], [0.4, 1.5, 2.6])["seeds_to_resolve"] == 4   # d = 5


@pytest.mark.slow
def test_report_only_summarizes_finished_runs_and_pairs_common_seeds(smoke_study, tmp_path):
  import shutil
  import configs.study as study_configs
  copy = tmp_path / "partial"
  shutil.copytree(smoke_study, copy)
  shutil.rmtree(copy / "placebo" / "seed1")                    # as if it had not finished
  summary = study.run(study_configs.get_config("smoke"), str(copy), report_only=True)
  assert summary["arms"]["placebo"]["seeds"] == [0]
  assert summary["arms"]["hybrid"]["seeds"] == [0, 1]
  assert summary["differences"]["fixed_steps − placebo"]["final_L"]["n"] == 1
  assert "placebo − fixed_steps" not in summary["differences"]          # each pair once
  assert summary["differences"]["hybrid − fixed_steps"]["final_L"]["n"] == 2
  assert not (copy / "placebo" / "seed1").exists()              # nothing was run
  assert "progress toward beta*" not in (copy / "study.md").read_text()   # real data: no beta*


def test_evaluation_noise_ignores_the_trend():
  trend = list(np.linspace(30.0, 20.0, 12))
  assert study.evaluation_noise(trend) == pytest.approx(0.0, abs=1e-9)
  jitter = [t + (0.5 if i % 2 else -0.5) for i, t in enumerate(trend)]
  assert study.evaluation_noise(jitter) == pytest.approx(np.sqrt(2) * 0.5, rel=0.1)
  assert np.isnan(study.evaluation_noise([1.0, 2.0]))


def test_progress_toward_beta_star_per_dimension():
  out = study.progress_toward({"a": 0.0, "b": 1.0, "c": 0.5}, {"a": 0.5, "b": 1.2, "c": 0.0},
                              {"a": 1.0, "b": 1.0, "c": 1.0})
  assert out["a"] == {"progress": 0.5} and out["c"] == {"progress": -1.0}
  assert out["b"]["drift"] == pytest.approx(0.2)


def test_the_per_dimension_table_lists_only_arms_that_move_beta():
  def scores(progress):
    return [{"final_L": 20.0, "last_k_L": 20.0, "steps": 10, "elapsed_s": 1.0, "L_noise": 0.1,
             "unit_distance_final": 0.5, "per_dimension": {"p_sphere": {"progress": progress}}}]
  summary = {"moved_dimensions": ["p_sphere"], "name": "t", "task": "mbii", "split": "train split",
             "metric": "MAE (°)", "seeds": [0], "last_k": 2, "differences": {},
             "arms": {"oracle": {"seeds": [0], "scores": scores(0.0)},
                      "fixed_steps": {"seeds": [0], "scores": scores(0.0)}}}
  assert "Per dimension" not in study.table(summary)          # no arm moves beta: no table
  summary["arms"]["hybrid"] = {"seeds": [0], "scores": scores(0.25)}
  text = study.table(summary)
  per_dimension = text[text.index("Per dimension"):text.index("Paired differences")]
  assert "| p_sphere |" in per_dimension and "+0.25 |" in per_dimension
  assert "beta*" in per_dimension and per_dimension.count("\n| ") == 2     # header + hybrid


def test_frozen_arms_are_labelled_by_the_beta_they_hold(tmp_path):
  """A study started elsewhere than the hand-set beta0 (Table 1's random starts) says so in
  study.md and study.png: "fixed at the start", never "fixed beta0"."""
  scores = [{"final_L": 20.0, "last_k_L": 20.0, "steps": 10, "elapsed_s": 1.0, "L_noise": 0.1}]
  summary = {"moved_dimensions": [], "name": "t", "task": "mbii", "split": "train split",
             "metric": "MAE (°)", "seeds": [0], "last_k": 2, "differences": {},
             "arms": {arm: {"seeds": [0], "scores": scores} for arm in ("hybrid", "fixed_time")}}
  assert "| fixed beta0, equal wall time |" in study.table(summary)
  summary["start"] = "the start"
  assert "| fixed at the start, equal wall time |" in study.table(summary)
  assert "fixed beta0" not in study.table(summary)
  assert study.label("hybrid", "the start") == "hybrid gradient"
  curve = {"L": [21.0, 20.0], "step": [10, 20], "wall": [1.0, 2.0], "cpu": [1.5, 3.0]}
  study.figure({"fixed_time": [curve]}, str(tmp_path / "study.png"), "the start")
  assert (tmp_path / "study.png").stat().st_size > 0


def test_the_baseline_arms_run_the_papers_baselines_with_their_settings(monkeypatch):
  """Table 2 in a study: `random_search` and `evolution` arms are those methods, on the study's
  schedule and seed, with the baselines' settings (configs/compare.add_baselines)."""
  import configs.study as study_configs
  calls = []
  monkeypatch.setattr(study.compare, "run_method",
                      lambda task, base, method, seed, run_dir, beta0, schedule:
                      calls.append((method, seed, base, beta0, schedule)) or {})
  config = study_configs.get_config("screen")
  for arm in ("random_search", "evolution"):
    study.run_arm(config, arm, 2, "/tmp/study")
  (rs, rs_seed, rs_base, rs_beta0, rs_schedule), (evo, *_ , evo_base, _, _) = calls
  assert (rs, rs_seed, evo) == ("random_search", 2, "evolution")
  assert rs_beta0 is None and rs_schedule is None            # beta0 and the hybrid's schedule
  assert rs_base.random_search.num_perturbations == 4
  assert evo_base.evolution.candidates == 9 and rs_base.schedule.outer_steps == 20


def _fake_finished_run(path, plain_s, outer_s):
  """A finished run's files as the loop writes them: metrics rows and results.json."""
  os.makedirs(path)
  rows, elapsed = [], 0.0
  for step, (phase, wall) in enumerate([("warmup", 5.0)] + [("warmup", plain_s)] * 4
                                       + [("outer", outer_s), ("outer", plain_s)] * 3):
    elapsed += wall
    rows.append({"step": step, "phase": phase, "wall_s": wall, "elapsed_s": elapsed})
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  with open(os.path.join(path, "results.json"), "w") as f:
    json.dump({"steps": len(rows)}, f)
  return elapsed


def test_fixed_time_takes_its_budget_from_the_timing_run_for_every_seed(tmp_path, monkeypatch):
  import configs.study as study_configs
  from hgrad.baselines import compare
  calls = []
  monkeypatch.setattr(compare, "run_method", lambda *args: calls.append(args) or {})
  config = study_configs.get_config("smoke")
  config.arms = ("fixed_time",)
  with pytest.raises(ValueError, match=r"\['fixed_time'\] need the hybrid arm"):
    study.run(config, str(tmp_path / "study"))
  with pytest.raises(FileNotFoundError, match="hybrid run of seed 2"):
    study.run_arm(config, "fixed_time", 2, str(tmp_path / "study"))
  # Measured alone: 1 s per plain step, 4 s per outer step; the seeds' own hybrid runs (none
  # here) are not read.
  elapsed = _fake_finished_run(tmp_path / "alone", plain_s=1.0, outer_s=4.0)
  config.timing_run = str(tmp_path / "alone")
  for seed in (2, 5):
    study.run_arm(config, "fixed_time", seed, str(tmp_path / "study"))
  for (_, _, method, seed, run_dir, beta0, schedule), want_seed in zip(calls, (2, 5)):
    assert (method, seed, beta0) == ("fixed", want_seed, None)
    assert run_dir.endswith(f"fixed_time/seed{want_seed}")
    assert schedule == {"warmup_steps": 1 + round((elapsed - 5.0) / 1.0), "outer_steps": 0,
                        "train_steps_per_outer": 0, "final_steps": 0, "time_budget_s": 0.0}
  config.timing_run = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="from config.timing_run: no finished hybrid run in"):
    study.run_arm(config, "fixed_time", 0, str(tmp_path / "study"))


def test_a_slowed_stretch_of_the_hybrid_run_buys_the_fixed_run_no_extra_steps(tmp_path):
  """Steps priced at the median of their kind: 1 s plain, 4 s outer, whatever one plain step
  that waited 30 s for the machine took."""
  _fake_finished_run(tmp_path / "quiet", plain_s=1.0, outer_s=4.0)
  _fake_finished_run(tmp_path / "busy", plain_s=1.0, outer_s=4.0)
  rows = [json.loads(line) for line in open(tmp_path / "busy" / "metrics.jsonl")]
  rows[3]["wall_s"] = 30.0
  with open(tmp_path / "busy" / "metrics.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  quiet = study._fixed_time_schedule(str(tmp_path / "quiet"))
  assert study._fixed_time_schedule(str(tmp_path / "busy")) == quiet
  assert quiet["warmup_steps"] == 1 + 4 + 3 * 4 + 3


def test_fixed_time_steps_writes_the_budget_as_a_number_and_needs_no_hybrid_run(tmp_path,
                                                                               monkeypatch):
  """A budget measured once (on a machine since lost) still pairs later seeds; a bad or a
  doubly given budget stops the study before any run starts."""
  import configs.study as study_configs
  from hgrad.baselines import compare
  calls = []
  monkeypatch.setattr(compare, "run_method", lambda *args: calls.append(args) or {})
  config = study_configs.get_config("smoke")
  config.arms, config.seeds, config.fixed_time_steps = ("fixed_time",), (3,), 1019
  study.run_arm(config, "fixed_time", 3, str(tmp_path / "study"))   # no hybrid run anywhere
  (_, _, method, seed, run_dir, beta0, schedule), = calls
  assert (method, seed, beta0) == ("fixed", 3, None)
  assert run_dir.endswith("fixed_time/seed3")
  assert schedule == {"warmup_steps": 1019, "outer_steps": 0, "train_steps_per_outer": 0,
                      "final_steps": 0, "time_budget_s": 0.0}

  class Started(Exception):
    pass

  def started(*args):
    raise Started
  monkeypatch.setattr(study, "run_arm", started)
  with pytest.raises(Started):        # without the hybrid arm: the budget is there
    study.run(config, str(tmp_path / "study"))
  config.fixed_time_steps = -5
  with pytest.raises(ValueError, match="fixed_time_steps must be a whole number of steps"):
    study.run(config, str(tmp_path / "study"))
  config.fixed_time_steps, config.timing_run = 1019, str(tmp_path / "alone")
  with pytest.raises(ValueError, match="both give fixed_time's budget: set one"):
    study.run(config, str(tmp_path / "study"))


def test_a_study_asks_for_deterministic_gpu_ops_before_anything_runs_jax(monkeypatch, tmp_path):
  """config.deterministic: XLA's flag is set first (the oracle arm already runs JAX to find
  beta*); off, it is not asked for; --report_only runs nothing and asks for nothing."""
  import configs.study as study_configs   # pylint: disable=g-import-not-at-top
  from hgrad.core import determinism   # pylint: disable=g-import-not-at-top
  calls = []

  def oracle_stops_the_study(config):
    calls.append("oracle")
    raise RuntimeError("stop here")
  monkeypatch.setattr(determinism, "require_deterministic_gpu", lambda: calls.append("flag"))
  monkeypatch.setattr(study, "_oracle_beta", oracle_stops_the_study)
  config = study_configs.get_config("smoke")
  config.arms = ("hybrid", "oracle")
  for deterministic, expected in ((True, ["flag", "oracle"]), (False, ["oracle"])):
    config.deterministic, calls[:] = deterministic, []
    with pytest.raises(RuntimeError, match="stop here"):
      study.run(config, str(tmp_path))
    assert calls == expected
  config.deterministic, calls[:] = True, []
  with pytest.raises(RuntimeError, match="stop here"):
    study.run(config, str(tmp_path), report_only=True)
  assert calls == ["oracle"]


def test_a_run_is_not_read_back_or_resumed_under_other_settings(tmp_path):
  """Runs are found by directory: another seed, beta0 or schedule in the same one is refused
  (naming what differs); how it runs (workers, render backend) may change."""
  import copy   # pylint: disable=g-import-not-at-top
  import configs.study as study_configs   # pylint: disable=g-import-not-at-top
  from hgrad.baselines import compare   # pylint: disable=g-import-not-at-top
  from hgrad.tasks import common   # pylint: disable=g-import-not-at-top
  base = study_configs.get_config("smoke").base
  (tmp_path / "config.json").write_text(compare.method_config(base, "fixed", 0).to_json_best_effort())
  (tmp_path / "results.json").write_text(json.dumps({"steps": 7}))
  assert compare.run_method("mbii", base, "fixed", 0, str(tmp_path)) == {"steps": 7}
  runtime = copy.deepcopy(base)
  runtime.num_workers, runtime.render.backend = 3, "ray"
  assert compare.run_method("mbii", runtime, "fixed", 0, str(tmp_path)) == {"steps": 7}
  with pytest.raises(ValueError, match="other settings: seed: 0 there, 3 now"):
    compare.run_method("mbii", base, "fixed", 3, str(tmp_path))
  with pytest.raises(ValueError, match=r"other settings: schedule\.final_steps"):
    compare.run_method("mbii", base, "fixed", 0, str(tmp_path), schedule_overrides={
        "final_steps": base.schedule.final_steps + 1})
  with pytest.raises(ValueError, match="other settings: beta0"):
    compare.run_method("mbii", base, "fixed", 0, str(tmp_path), beta0=np.full(29, 0.5))
  common.check_same_run(str(tmp_path / "new"), base)          # nothing there: nothing to refuse
