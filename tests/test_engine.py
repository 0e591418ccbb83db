"""The engine (outer step, unroll, run loop, resume) on a pure-JAX toy task: no OpenGL, no task code.

The toy: X = (x, y) with x = beta_0 + exp(beta_1) z(key), y = sin(3x); a linear
model on sin/cos features is trained on X; L is its error on data around x = 1.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrad.core import loop
from hgrad.core import outer
from hgrad.core import run_lock
from hgrad.core import unroll
from hgrad.core.layout import ParamLayout, ParamSpec

from conftest import REPO_ROOT

LAYOUT = ParamLayout("toy", [ParamSpec("x_mean", -2.0, 2.0, -1.0),
                             ParamSpec("x_log_std", -3.0, 0.5, -1.0)])
X_REAL = np.random.default_rng(7).normal(1.0, 0.3, (64, 1)).astype(np.float32)
REAL = {"x": X_REAL, "y": np.sin(3 * X_REAL)}


def generate(beta, key):
  x = beta[0] + jnp.exp(beta[1]) * jax.random.normal(key, (1,))
  return {"x": x, "y": jnp.sin(3 * x)}


def features(x):
  return jnp.concatenate([jnp.sin(k * x) for k in (1, 2, 3)] + [jnp.cos(k * x) for k in (1, 2, 3)]
                         + [x, jnp.ones_like(x)], axis=-1)


def train_loss(params, batch):
  return jnp.mean((features(batch["x"]) @ params["w"] - batch["y"]) ** 2)


def make_trainer(**outer_overrides):
  config = dict(num_perturbations=2, sigma=0.05, learning_rate=0.05, directions="orthogonal")
  config.update(outer_overrides)
  return outer.OuterTrainer(
      generate, LAYOUT, train_loss=train_loss, eval_loss=lambda p: train_loss(p, REAL),
      inner=unroll.InnerConfig(steps=4, batch_size=8, optimizer="adam", learning_rate=0.05),
      outer=outer.OuterConfig(**config))


PARAMS0 = {"w": jnp.zeros((8, 1))}


def test_outer_step_moves_beta_toward_the_data_and_stays_in_box():
  trainer = make_trainer()
  beta0 = LAYOUT.default.copy()
  beta0[1] = LAYOUT.high[1]                        # on the upper edge
  state = trainer.init(beta0, PARAMS0)
  key = jax.random.key(0)
  first_L = None
  for _ in range(40):
    state, metrics = trainer.outer_step(state, key)
    first_L = first_L if first_L is not None else float(metrics["L"])
  assert trainer._jitted_outer._cache_size() == 1
  beta = np.asarray(trainer.beta(state))
  assert np.all(beta >= LAYOUT.low) and np.all(beta <= LAYOUT.high)
  assert np.all((np.asarray(state.u) >= 0) & (np.asarray(state.u) <= 1))
  assert abs(beta[0] - 1.0) < abs(beta0[0] - 1.0) - 0.5, beta
  assert float(metrics["L"]) < first_L


def test_init_checks_beta0_once_with_its_name():
  trainer = make_trainer()
  with pytest.raises(ValueError, match="my beta0 must have trailing dimension 2"):
    trainer.init(np.zeros(3), PARAMS0, what="my beta0")
  with pytest.raises(ValueError, match=r"NaN or infinite in dimension\(s\) 1 \(x_log_std\)"):
    trainer.init(np.array([0.0, np.nan]), PARAMS0)


def test_custom_optimizers_are_used():
  """A researcher's own optax transformations replace the configured ones."""
  import optax
  trainer = outer.OuterTrainer(
      generate, LAYOUT, train_loss=train_loss, eval_loss=lambda p: train_loss(p, REAL),
      inner=unroll.InnerConfig(steps=2, batch_size=4), outer=outer.OuterConfig(),
      inner_optimizer=optax.sgd(0.0), beta_optimizer=optax.sgd(0.0))
  state = trainer.init(LAYOUT.default, PARAMS0)
  new, _ = trainer.outer_step(state, jax.random.key(1))
  np.testing.assert_array_equal(new.u, state.u)
  np.testing.assert_array_equal(new.inner.params["w"], PARAMS0["w"])


def test_trainer_takes_a_generator_or_a_function_with_its_layout():
  """A hgrad.Generator brings its layout; a bare generate function must name one."""
  import hgrad

  def render(beta, seeds):
    x = beta[:, :1] + np.random.default_rng(seeds).normal(size=(len(seeds), 1)).astype(np.float32)
    return {"x": x.astype(np.float32), "y": np.sin(3 * x).astype(np.float32)}

  spec = {"x": jax.ShapeDtypeStruct((1,), jnp.float32), "y": jax.ShapeDtypeStruct((1,), jnp.float32)}
  generator = hgrad.Generator.from_function(render, LAYOUT, spec)
  kwargs = dict(train_loss=train_loss, eval_loss=lambda p: train_loss(p, REAL),
                inner=unroll.InnerConfig(steps=2, batch_size=4), outer=outer.OuterConfig())
  trainer = outer.OuterTrainer(generator, **kwargs)
  assert trainer.generator is generator and trainer.layout is LAYOUT
  state, metrics = trainer.outer_step(trainer.init(LAYOUT.default, PARAMS0), jax.random.key(0))
  assert np.isfinite(float(metrics["L"]))
  generator.close()
  assert outer.OuterTrainer(generate, LAYOUT, **kwargs).generator is None
  with pytest.raises(ValueError, match="needs beta's layout"):
    outer.OuterTrainer(generate, **kwargs)


class _Interrupt(Exception):
  pass


def _toy_task(interrupt_at: int = -1) -> loop.Task:
  trainer = make_trainer()
  step_fn = loop.trainer_step(trainer)

  def step(state, phase, key):
    if int(state.step) == interrupt_at:
      raise _Interrupt()
    return step_fn(state, phase, key)
  return loop.Task("toy", trainer, PARAMS0, LAYOUT.default, step=step,
                   evaluate=lambda params: {"L_final": float(trainer.evaluate(params))})


@pytest.mark.slow
def test_run_loop_resumes_exactly_after_an_interrupt(tmp_path):
  schedule = loop.Schedule(warmup_steps=2, outer_steps=4, train_steps_per_outer=1, final_steps=2,
                           checkpoint_every=3, eval_every=2)
  reference = loop.run(_toy_task(), schedule, str(tmp_path / "ref"), seed=3)
  with pytest.raises(_Interrupt):
    loop.run(_toy_task(interrupt_at=7), schedule, str(tmp_path / "cut"), seed=3)
  resumed = loop.run(_toy_task(), schedule, str(tmp_path / "cut"), seed=3)
  rows_ref = loop.read_metrics(str(tmp_path / "ref"))
  rows_cut = loop.read_metrics(str(tmp_path / "cut"))
  assert [r["step"] for r in rows_cut] == list(range(1, schedule.total_steps + 1))
  for a, b in zip(rows_ref, rows_cut):
    assert a["phase"] == b["phase"]
    np.testing.assert_allclose(list(a["beta"].values()), list(b["beta"].values()), rtol=1e-6)
  assert resumed["beta"] == pytest.approx(reference["beta"], rel=1e-6)
  assert resumed["L_final"] == pytest.approx(reference["L_final"], rel=1e-5)


def test_a_run_refuses_a_workdir_another_process_runs_in_and_a_killed_one_leaves_no_lock(tmp_path):
  """Two processes on one run would interleave metrics.jsonl and race for checkpoints/."""
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time\nfrom hgrad.core import run_lock\n"
       "with run_lock.hold(sys.argv[1]):\n  print('held', flush=True)\n  time.sleep(600)\n",
       workdir], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    schedule = loop.Schedule(warmup_steps=2, outer_steps=1, train_steps_per_outer=1,
                             final_steps=1, checkpoint_every=2, eval_every=2)
    with pytest.raises(run_lock.WorkdirInUse, match=f"in use by another run \\(pid {holder.pid} on "):
      loop.run(_toy_task(), schedule, workdir, seed=3)
    assert sorted(os.listdir(workdir)) == [run_lock.LOCK_FILE]     # refused before writing
  finally:
    holder.kill()                                                    # SIGKILL: no clean-up runs
    holder.wait()
  assert loop.run(_toy_task(), schedule, workdir, seed=3)["L_final"] > 0


def test_unroll_is_differentiable_in_the_data():
  inner = unroll.InnerConfig(steps=3, batch_size=4, optimizer="adam", learning_rate=0.05)
  optimizer = unroll.inner_optimizer(inner)
  state = unroll.InnerState(PARAMS0, optimizer.init(PARAMS0))
  data = jax.vmap(generate, (None, 0))(jnp.array([0.5, -1.0]), jax.random.split(jax.random.key(0), 12))

  def loss_of_data(d):
    trained, _ = unroll.unroll(train_loss, optimizer, state, unroll.split_steps(d, 3))
    return train_loss(trained.params, REAL)
  grad = jax.grad(loss_of_data)(data)
  eps, i = 1e-3, 5
  bumped = jax.tree.map(lambda a: a, data)
  bumped["x"] = data["x"].at[i, 0].add(eps)
  lowered = dict(data, x=data["x"].at[i, 0].add(-eps))
  numeric = (loss_of_data(bumped) - loss_of_data(lowered)) / (2 * eps)
  assert float(grad["x"][i, 0]) == pytest.approx(float(numeric), rel=0.05, abs=1e-5)


def test_engine_needs_no_opengl():
  """Importing and running the engine never loads OpenGL or pyrender."""
  code = ("import sys, test_engine as t, jax\n"
          "trainer = t.make_trainer(); s = trainer.init(t.LAYOUT.default, t.PARAMS0)\n"
          "trainer.outer_step(s, jax.random.key(0))\n"
          "bad = [m for m in ('OpenGL', 'pyrender') if m in sys.modules]\n"
          "assert not bad, bad\nprint('NO_GL_OK')")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(REPO_ROOT, "tests"), REPO_ROOT]))
  result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
  assert "NO_GL_OK" in result.stdout, result.stderr[-3000:]


def test_a_task_missing_a_member_fails_at_registration_naming_it():
  import types
  from hgrad.tasks import mbii, registry
  own = types.SimpleNamespace(INFO=mbii.INFO, build=mbii.build, run=mbii.run,
                              evaluate_data=mbii.evaluate_data)         # no summary
  with pytest.raises(ValueError, match=r"task 'mine' .* lacks \['summary'\]"):
    registry.register("mine", own)
  assert "mine" not in registry.names()
  own.summary = mbii.summary
  registry.register("mine", own)
  try:
    assert registry.get("mine") is own and isinstance(own, registry.TaskModule)
  finally:
    registry._TASKS.pop("mine")
  import hgrad
  assert hgrad.tasks.registry is registry        # reachable after `import hgrad`


def test_one_estimate_through_hybrid_vjp_hybrid_grad_and_the_outer_step():
  """The same key gives the same estimate in all three; sigma is in box units in each (the
  toy's two boxes are 4 and 3.5 wide: sigma in beta's own units would differ by those)."""
  import hgrad
  trainer = make_trainer(num_perturbations=2, sigma=0.05)
  state = trainer.init(LAYOUT.default, PARAMS0)
  key = jax.random.key(11)
  _, metrics = trainer.outer_step(state, key)
  after, _ = trainer.outer_step(state, key)
  grad_u = np.asarray(after.last_grad)                       # the outer step's estimate, on u
  step_key = jax.random.fold_in(key, state.step)             # the key the step used
  samples = lambda beta, k: trainer.samples(LAYOUT.to_unit(beta), k)   # the step's n samples
  loss = lambda data: trainer.problem.loss_of_data(state.inner)(data)[0]
  beta0 = jnp.asarray(LAYOUT.default)
  kwargs = dict(num_perturbations=2, sigma=0.05, layout=LAYOUT)
  grad_beta = np.asarray(hgrad.hybrid_grad(samples, loss, beta0, step_key, **kwargs))
  f = hgrad.hybrid_vjp(samples, **kwargs)
  grad_vjp = np.asarray(jax.grad(lambda b: loss(f(b, step_key)))(beta0))
  np.testing.assert_allclose(grad_vjp, grad_beta, rtol=1e-5)
  width = LAYOUT.high - LAYOUT.low                           # d/dbeta = d/du / width
  np.testing.assert_allclose(grad_beta * width, grad_u, rtol=1e-4, atol=1e-7)
  assert np.all(np.abs(grad_u) > 0)
  estimate = hgrad.estimators.hybrid(2, 0.05)
  _, grad_direct = estimate(lambda u, k: samples(LAYOUT.from_unit(u), k), loss,
                            jnp.asarray(LAYOUT.to_unit(beta0)), step_key)
  np.testing.assert_allclose(np.asarray(grad_direct), grad_u, rtol=1e-4, atol=1e-7)
  assert float(metrics["grad_norm"]) == pytest.approx(float(np.linalg.norm(grad_u)), rel=1e-5)


def test_estimators_check_their_hyperparameters_when_built():
  import hgrad
  with pytest.raises(ValueError, match="directions must be one of"):
    hgrad.estimators.hybrid(4, 0.05, directions="orthonormal")
  with pytest.raises(ValueError, match="directions must be one of"):
    hgrad.hybrid_vjp(generate, num_perturbations=4, sigma=0.05, directions="orthonormal")
  with pytest.raises(ValueError, match="OuterConfig.directions"):
    outer.OuterConfig(directions="orthonormal")
  with pytest.raises(ValueError, match=r"low must be below high for a \(low 1, high 0\)"):
    ParamLayout("bad", [ParamSpec("a", 1.0, 0.0, 0.5)])
