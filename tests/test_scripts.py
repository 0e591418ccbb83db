"""The experiment and benchmark entry points run end to end (small sizes)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, mbii_train_dir


def _run(*args, timeout=300):
  result = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def _smoke_run(tmp_path, *, warmup_steps: int, outer_steps: int) -> str:
  """A finished mbii smoke run (synthetic target) in tmp_path/run."""
  run_dir = str(tmp_path / "run")
  _run("experiments.mbii", "--config=configs/mbii.py:smoke", f"--workdir={run_dir}",
       f"--config.schedule.warmup_steps={warmup_steps}",
       f"--config.schedule.outer_steps={outer_steps}", "--config.schedule.final_steps=0")
  return run_dir


def test_gallery_writes_png(tmp_path):
  _run("experiments.gallery", f"--workdir={tmp_path}", "--config.csg.resolution=32",
       "--config.scale=1")
  image = Image.open(os.path.join(tmp_path, "gallery.png"))
  # 4 x 4 samples, each 4 panels of 32 px, with a 2 px gutter.
  assert image.size == (4 * (4 * 32 + 2) + 2, 4 * (32 + 2) + 2)


def test_gallery_rejects_unknown_config_key(tmp_path):
  result = subprocess.run([sys.executable, "-m", "experiments.gallery", f"--workdir={tmp_path}",
                           "--config.csg.resolutoin=32"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode != 0 and "resolutoin" in result.stderr


def test_render_benchmark_prints_json():
  out = _run("benchmarks.render", "--batch=16", "--num_batches=1", "--num_workers=0",
             "--after_large=4")
  figures = json.loads(out.strip().splitlines()[-1])
  assert figures["resolution"] == 64 and figures["samples_per_s"] > 0
  assert figures["large_batch"] == 64 and figures["samples_per_s_after_large"] > 0


def test_black_box_benchmark_prints_json():
  out = _run("benchmarks.black_box", "--config=configs/mbii.py:smoke", "--evaluations=3",
             "--at_once=1,2,all", "--repeats=1")
  figures = json.loads(out.strip().splitlines()[-1])
  assert figures["evaluations"] == 3 and figures["ratio"] > 0
  assert {"at_once_1_s", "at_once_2_s", "at_once_3_s"} <= set(figures)


@pytest.mark.slow
def test_gradient_noise_benchmark_prints_json():
  out = _run("benchmarks.gradient_noise", "--config=configs/mbii.py:smoke",
             f"--config.data.dir={mbii_train_dir()}", "--keys=2", "--num_perturbations=2",
             "--directions=orthogonal", "--blocks=all,discrete,continuous,p_expand",
             "--dimensions=p_expand")
  figures = json.loads(out.strip().splitlines()[-1])
  blocks = figures["blocks"]
  assert set(blocks) == {"all", "discrete", "continuous", "p_expand"}
  assert blocks["discrete"]["dims"] == 7 and blocks["all"]["dims"] == 29
  assert blocks["p_expand"]["dims"] == 1
  for block in (blocks["all"], blocks["discrete"], blocks["continuous"]):
    assert -1.0 <= block["cross_key_cosine"] <= 1.0 and block["grad_norm"] > 0
  for block in blocks.values():
    assert 0.0 <= block["zero_share"] <= 1.0
  # p_expand's component is reported in every block that holds it, and only there.
  assert set(blocks["continuous"]["components"]) == set()
  for name in ("all", "discrete", "p_expand"):
    c = blocks[name]["components"]["p_expand"]
    assert np.isfinite(c["mean"]) and c["se"] >= 0
  assert "p_expand in block all: mean" in out


@pytest.mark.slow
def test_gradient_noise_benchmark_runs_for_another_task():
  """The registry: the benchmark takes the task from the config (here the NYU scenes)."""
  out = _run("benchmarks.gradient_noise", "--config=configs/nyu.py:smoke", "--keys=2",
             "--num_perturbations=2", "--blocks=all,discrete")
  figures = json.loads(out.strip().splitlines()[-1])
  assert figures["blocks"]["all"]["dims"] == 108 and figures["blocks"]["discrete"]["dims"] == 36


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["features", "gradient_distance"])
def test_match_signal_benchmark_prints_json(monkeypatch, objective):
  """Synthetic smoke target: D at beta0 and beta*, and a short descent toward lower D."""
  monkeypatch.delenv("HGRAD_MBII_DIR", raising=False)
  out = _run("benchmarks.match_signal", "--config=configs/mbii.py:smoke", "--keys=2", "--steps=5",
             "--nets=2", f"--objective={objective}")
  figures = json.loads(out.strip().splitlines()[-1])
  assert figures["objective"] == objective and all(
      np.isfinite(figures[where]["D"]) for where in ("beta0", "beta_star"))
  assert set(figures["progress"]) >= {"p_sphere", "p_expand"}
  for where in ("beta0", "beta_star"):
    assert -1.0 <= figures[where]["cross_key_cosine"] <= 1.0
  assert figures["distance_beta0"] > 0 and len(figures["descent"]) == 1
  assert set(figures["final_beta"]) >= {"p_sphere", "p_expand"}


@pytest.mark.slow
def test_horizon_benchmark_probes_the_estimates_direction(tmp_path, monkeypatch):
  """Synthetic smoke target: estimates at a trained network, the t statistic toward beta*,
  and betas moved along the estimate, a random direction and the way to beta*."""
  monkeypatch.delenv("HGRAD_MBII_DIR", raising=False)
  run_dir = _smoke_run(tmp_path, warmup_steps=2, outer_steps=0)
  out = _run("benchmarks.horizon", "--config=configs/mbii.py:smoke", f"--workdir={run_dir}",
             "--keys=2", "--long_steps=0", "--nofresh", "--probe_step=0.2")
  figures = json.loads(out.strip().splitlines()[-1])
  assert set(figures["mean_estimate"]) == {"warm"}
  assert set(figures["probes"]) == {"warm", "random", "toward_beta_star"}
  assert all(0 < p["moved"] <= 0.2 + 1e-6 for p in figures["probes"].values())
  assert figures["toward_beta_star"]["warm"]["projection_t"] == pytest.approx(
      figures["toward_beta_star"]["warm"]["projection_t"])      # a number, not NaN
  from hgrad.tasks import mbii
  from hgrad.generators.csg import CSG_LAYOUT
  start = CSG_LAYOUT.unit_distance(CSG_LAYOUT.default, mbii.beta_star())
  moved = CSG_LAYOUT.unit_distance(figures["probes"]["toward_beta_star"]["beta"], mbii.beta_star())
  assert moved == pytest.approx(start - 0.2, abs=1e-4)
  assert '--config.base.beta0="(' in out


@pytest.mark.slow
def test_line_benchmark_pairs_values_over_shared_keys(monkeypatch):
  """L along ambient_mean at two horizons: the reference value's paired difference is 0,
  horizon 1 of the long branches is one of the short ones, and the values' data differ."""
  monkeypatch.delenv("HGRAD_MBII_DIR", raising=False)
  out = _run("benchmarks.line", "--config=configs/mbii.py:smoke", "--config.csg.layout=lighting",
             "--warm_steps=2", "--values=0.05,0.15,0.45", "--horizons=2", "--repeats=2",
             "--short_repeats=0")
  figures = json.loads(out.strip().splitlines()[-1])
  assert figures["reference_value"] == 0.15 and figures["horizon1_keys"] == 2
  assert figures["horizon1"]["minus_reference"][1] == 0.0
  raw = figures["long"]["raw"]
  assert set(raw) == {"1", "2"} and raw["2"]["minus_reference"][1] == 0.0
  assert np.all(np.isfinite(raw["2"]["L"])) and len(set(raw["2"]["L"])) == 3
  # without extra keys, horizon 1 is exactly the long branches' first step
  assert figures["horizon1"]["L"] == raw["1"]["L"] and np.isfinite(figures["horizon1"]["se"][0])


@pytest.mark.slow
def test_line_benchmark_follows_a_runs_move(tmp_path, monkeypatch):
  """--toward: the line from beta0 along a finished hybrid run's move (fraction 0 is beta0),
  from a warm-up at beta0 and (--from_run) from the run's own checkpoint."""
  monkeypatch.delenv("HGRAD_MBII_DIR", raising=False)
  run_dir = _smoke_run(tmp_path, warmup_steps=1, outer_steps=2)
  out = _run("benchmarks.line", "--config=configs/mbii.py:smoke", f"--toward={run_dir}",
             "--warm_steps=1", "--values=0,1", "--horizons=1", "--repeats=1", "--short_repeats=1")
  figures = json.loads(out.strip().splitlines()[-1])
  assert figures["line"].startswith("fraction of") and figures["reference_value"] == 0.0
  assert figures["horizon1"]["minus_reference"][0] == 0.0
  assert figures["horizon1"]["minus_reference"][1] != 0.0        # the moved beta's data differ
  bad = subprocess.run([sys.executable, "-m", "benchmarks.line", "--config=configs/mbii.py:smoke",
                        "--config.csg.layout=lighting", f"--toward={run_dir}", "--warm_steps=1"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and "differ from the config's" in bad.stderr
  # --from_run: the same line, branched from the run's last checkpoint (its moved network)
  steps = sorted(int(s) for s in os.listdir(os.path.join(run_dir, "checkpoints")))
  out = _run("benchmarks.line", f"--from_run={run_dir}", f"--toward={run_dir}", "--values=0,1",
             "--horizons=1", "--repeats=1", "--short_repeats=1")
  branched = json.loads(out.strip().splitlines()[-1])
  assert branched["from"] == f"{run_dir} at step {steps[-1]}" and branched["warm_steps"] == 0
  assert branched["reference_value"] == 0.0 and branched["horizon1"]["minus_reference"][0] == 0.0
  assert branched["horizon1"]["L"] != figures["horizon1"]["L"]   # another network, same keys
  for flag, names in [("--from_step=12345", "no checkpoint at step 12345"),
                      ("--seed=3", "drop --warm_steps and --seed")]:
    bad = subprocess.run([sys.executable, "-m", "benchmarks.line", f"--from_run={run_dir}",
                          f"--toward={run_dir}", flag], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode != 0 and names in bad.stderr, bad.stderr[-2000:]


@pytest.mark.parametrize("flag, names", [("--values=0.7", "ambient_mean=0.7 is outside"),
                                         ("--dimension=ambient", "'ambient' is not in")])
@pytest.mark.slow
def test_line_benchmark_rejects_bad_dimension_or_value(monkeypatch, flag, names):
  monkeypatch.delenv("HGRAD_MBII_DIR", raising=False)
  result = subprocess.run([sys.executable, "-m", "benchmarks.line", "--config=configs/mbii.py:smoke",
                           "--config.csg.layout=lighting", "--warm_steps=1", flag],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0 and names in result.stderr


@pytest.mark.parametrize("args, names", [
    (["--workdir={tmp}", "--config.data.dirr=1"], "dirr"),                  # typo'd field
    (["--workdir={tmp}", "--config=configs/mbii.py:nope"], "nope"),         # wrong variant
    (["--workdir={tmp}", "--config.outer.sigma=abc"], "abc"),               # wrong type
    (["--workdir={tmp}", "--config.data.dir=/nonexistent"], "/nonexistent"),  # missing data
    (["--workdir={tmp}", "--config.outer.sigma=-1", "--config.data.dir=/nonexistent/x"], "sigma"),
    (["--workdir="], "--workdir is empty"),
    ([], "--workdir"),                                                        # required flag
    (["--wrkdir={tmp}"], "wrkdir"),                                           # unknown flag
    (["--workdir={tmp}", "stray"], "stray"),                                  # positional
    (["--workdir={tmp}", "--config.outer.frozen=('p_expand',)",             # a tuple field twice:
      "--config.outer.frozen=('*var',)"], "--config.outer.frozen given more than once"),  # appends
])
def test_bad_input_exits_2_with_one_line_that_names_it(tmp_path, args, names):
  args = [a.format(tmp=tmp_path) for a in args]
  result = subprocess.run([sys.executable, "-m", "experiments.mbii", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], lines


def test_a_run_directory_in_use_ends_the_second_command_with_one_line_and_exit_2(tmp_path):
  from hgrad.core import run_lock
  with run_lock.hold(str(tmp_path)):
    result = subprocess.run([sys.executable, "-m", "experiments.mbii", f"--workdir={tmp_path}",
                             "--config=configs/mbii.py:smoke"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and f"in use by another run (pid {os.getpid()} on " in last
  assert not os.path.exists(tmp_path / "metrics.jsonl")


@pytest.mark.parametrize("module, args, names", [
    *[(f"benchmarks.{name}", ["stray"], "unexpected arguments ['stray']")
      for name in ("gradient_noise", "line", "match_signal", "outer_step", "render", "unroll")],
    ("benchmarks.horizon", ["--workdir=unused", "stray"], "unexpected arguments ['stray']"),
    ("benchmarks.moves", ["--runs=unused", "stray"], "unexpected arguments ['stray']"),
    ("benchmarks.gradient_noise", ["--num_perturbations=3"], "--num_perturbations must be even"),
    ("benchmarks.gradient_noise", ["--blocks=al"], "unknown --blocks ['al']"),
    ("benchmarks.gradient_noise", ["--dimensions=p_expnd"], "'p_expnd' is not in the"),
])
@pytest.mark.slow
def test_benchmarks_end_bad_input_with_one_line_and_exit_2(module, args, names):
  """Every benchmark runs under experiments.script.run: a stray argument or a bad value is one
  'error:' line, not a traceback."""
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], lines


@pytest.mark.parametrize("flag", ["--help", "--helpfull"])
def test_help_lists_config_workdir_and_the_config_fields_and_exits_0(flag):
  result = subprocess.run([sys.executable, "-m", "experiments.mbii", flag], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  for text in ("--config:", "--workdir:", "outer.{", "num_perturbations=15"):
    assert text in result.stdout, text


@pytest.mark.slow
def test_a_run_started_from_python_shows_progress(tmp_path):
  """No absl.app (a notebook, a user's script): the step lines still reach stderr, readably."""
  code = ("from configs import mbii\nfrom hgrad.tasks import mbii as task\n"
          "c = mbii.get_config('smoke')\nc.schedule.update(log_every=5, eval_every=100)\n"
          f"task.run(c, {str(tmp_path)!r})\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  steps = [line for line in result.stderr.splitlines() if " mbii step " in line]
  logged = {line.split(" mbii step ")[1].split()[0] for line in steps}
  # Every 5th step, and the outer steps (they carry L); not the plain steps 4, 6, 8.
  assert {"5/10", "10/10", "3/10"} <= logged and not {"4/10", "6/10", "8/10"} & logged
  assert steps[0][:9].count(":") == 2 and " I " in steps[0]          # "HH:MM:SS I ..."


def test_gradient_matching_distances():
  """The cosine distance is 0 for equal gradients, 2 per channel for opposite ones, and its
  derivative is finite at a channel no loss reaches; the split distance is unbiased: noise of
  zero mean in the data's gradient does not raise it (a plain squared distance would)."""
  import jax
  import jax.numpy as jnp
  from benchmarks import match_signal

  rng = np.random.default_rng(0)
  grads = {"w": jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32),
           "b": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}
  assert float(match_signal.channel_cosine_distance(grads, grads)) == pytest.approx(0.0, abs=1e-5)
  opposite = jax.tree.map(jnp.negative, grads)
  assert float(match_signal.channel_cosine_distance(grads, opposite)) == pytest.approx(10.0, abs=1e-4)
  unused = {"w": grads["w"].at[..., 0].set(0.0), "b": grads["b"]}     # a zero output channel
  derivative = jax.grad(match_signal.channel_cosine_distance)(unused, unused)
  assert all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(derivative))

  target = {"w": jnp.ones((4, 6))}
  assert float(match_signal.split_distance(
      {"w": 2 * target["w"]}, {"w": 2 * target["w"]}, target)) == pytest.approx(1.0)
  noise = rng.normal(scale=0.5, size=(2, 4000, 4, 6)).astype(np.float32)
  split = [float(match_signal.split_distance({"w": target["w"] + a}, {"w": target["w"] + b},
                                             target)) for a, b in zip(*noise[:, :400])]
  plain = np.mean(np.sum(noise[0] ** 2, (1, 2)) / 24.0)
  assert abs(np.mean(split)) < 3 * np.std(split) / np.sqrt(len(split)) and plain > 0.2


def _fake_moved_run(run_dir, move, beta_star=None, partial=False):
  """A finished run's config.json / results.json whose beta moved by `move` in logit coordinates
  of the lighting layout."""
  from configs import mbii as mbii_configs
  from hgrad.generators.csg import CSG_LIGHTING_LAYOUT as layout
  config = mbii_configs.get_config("smoke")
  config.csg.layout, config.outer.coordinates = "lighting", "logit"
  beta0 = layout.default.astype(np.float64)
  u0 = np.asarray(layout.to_coords(beta0, "logit"))
  as_dict = lambda u: dict(zip(layout.names, np.asarray(layout.from_coords(u, "logit")).tolist()))
  results = {"beta0": as_dict(u0), "beta": as_dict(u0 + move)}
  if beta_star is not None:
    results["synthetic"] = {"beta_star": as_dict(u0 + beta_star)}
  if partial:
    results["partial"] = True
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, "config.json"), "w") as f:
    f.write(config.to_json())
  with open(os.path.join(run_dir, "results.json"), "w") as f:
    json.dump(results, f)


@pytest.mark.slow
def test_moves_benchmark_tells_a_shared_preference_from_following_the_target(tmp_path):
  from hgrad.generators.csg import CSG_LIGHTING_LAYOUT as layout
  unit = lambda *pairs: sum(v * np.eye(layout.dim)[layout.index(n)] for n, v in pairs)
  toward_a = unit(("p_sphere", 0.2), ("ambient_mean", 0.1))
  # Group A follows its target; group B's target is the opposite, and B follows it too.
  _fake_moved_run(tmp_path / "a" / "seed0", toward_a, beta_star=toward_a)
  _fake_moved_run(tmp_path / "a" / "seed1", toward_a + unit(("p_cube", 0.05)), beta_star=toward_a)
  _fake_moved_run(tmp_path / "b" / "seed0", -toward_a, beta_star=-toward_a)
  out = json.loads(_run("benchmarks.moves", f"--runs={tmp_path}/a/seed*",
                        f"--against={tmp_path}/b/seed*").strip().splitlines()[-1])
  assert out["moved_dimensions"] == ["p_sphere", "p_cube", "ambient_mean"]
  assert out["within_A"] > 0.9 and out["within_B"] is None
  assert out["across"] < -0.9 and out["mean_moves"] < -0.9
  assert out["toward_beta_star_A"][0] == pytest.approx(1.0, abs=1e-4)
  assert out["toward_beta_star_B"] == [pytest.approx(1.0, abs=1e-4)]
  assert out["mean_move_B"]["p_sphere"] == pytest.approx(-0.2, abs=1e-4)
  _fake_moved_run(tmp_path / "c" / "seed0", toward_a, partial=True)
  for runs, names in ((f"{tmp_path}/c/seed*", "has not finished"),
                      (f"{tmp_path}/none*", "no run directory matches")):
    result = subprocess.run([sys.executable, "-m", "benchmarks.moves", f"--runs={runs}"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and names in lines[0], result.stderr[-2000:]
