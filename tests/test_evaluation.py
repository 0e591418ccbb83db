"""Lower-noise evaluation: an EMA of the weights (what L uses when configured) and flip averaging."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrad.core import unroll
from hgrad.tasks import common
from hgrad.tasks import network


def test_update_average_forgets_the_start_then_decays_at_the_configured_rate():
  average, params = {"w": jnp.zeros(3)}, {"w": jnp.ones(3)}
  first = unroll.update_average(average, params, 0.99, jnp.asarray(0))
  np.testing.assert_allclose(first["w"], 0.9)             # rate (1 + 0) / (10 + 0) = 0.1
  late = unroll.update_average(average, params, 0.99, jnp.asarray(10_000))
  np.testing.assert_allclose(late["w"], 0.01, rtol=1e-5)  # the configured decay
  with pytest.raises(ValueError, match="ema_decay"):
    unroll.InnerConfig(ema_decay=1.0)


def test_flip_averaging_makes_the_prediction_mirror_equivariant():
  net = network.NetworkConfig(width=4, stacks=1, depth=2)
  params = network.init_params(net, jax.random.key(0), 16)
  image = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
  mirror = lambda n: jnp.flip(n, 2) * jnp.array([-1.0, 1.0, 1.0])   # noqa: E731
  plain, flipped = common.predict_fn(net), common.predict_fn(net, flip=True)
  # Mirroring the input mirrors the averaged prediction exactly (x of the normals negated) ...
  np.testing.assert_allclose(flipped(params, jnp.flip(image, 2)), mirror(flipped(params, image)),
                             atol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(flipped(params, image), axis=-1), 1.0, atol=1e-4)
  # ... which the plain prediction of an untrained network does not do.
  assert not np.allclose(plain(params, jnp.flip(image, 2)), mirror(plain(params, image)), atol=1e-3)
  depth = common.predict_fn(net, "depth", flip=True)
  np.testing.assert_allclose(depth(params, jnp.flip(image, 2)), jnp.flip(depth(params, image), 2),
                             atol=1e-5)


@pytest.mark.slow
def test_with_ema_L_is_the_averaged_network_and_the_run_delivers_it(tmp_path):
  """A smoke run (synthetic target) with inner.ema_decay: L, L_raw, L_unroll, and the results."""
  from configs import mbii as mbii_configs
  from hgrad.tasks import mbii
  config = mbii_configs.get_config("smoke")
  config.inner.ema_decay = 0.9
  config.schedule.update(warmup_steps=4, outer_steps=2, train_steps_per_outer=1, final_steps=4,
                         eval_every=2)
  results = mbii.run(config, str(tmp_path))
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  evaluated = [r for r in rows if "L" in r]
  assert [r["step"] for r in evaluated] == [2, 4, 6, 8, 10, 12]
  assert all("L_raw" in r for r in evaluated)
  assert any(abs(r["L"] - r["L_raw"]) > 1e-3 for r in evaluated)      # a different network
  outer_rows = [r for r in rows if r["phase"] == "outer"]
  assert outer_rows and all("L_unroll" in r and "L" not in r for r in outer_rows)
  # The delivered network is the average: its final metrics are L's, not the raw weights'.
  assert results["train"]["image_mean"]["mae"] == pytest.approx(evaluated[-1]["L"], rel=1e-4)
  # And the checkpoint hands the average to `experiments.evaluate`.
  from hgrad.tasks import evaluate
  _, params, step = evaluate.load_run(str(tmp_path))
  assert step == 12
  task, _ = mbii.build(config)
  try:
    assert float(task.trainer.evaluate(params)) == pytest.approx(evaluated[-1]["L"], rel=1e-4)
  finally:
    task.trainer.generator.close()
  # Resuming that workdir under other settings names the setting, before anything is built ...
  config.inner.ema_decay = 0.0
  with pytest.raises(ValueError, match="other settings: inner.ema_decay: 0.9 there, 0.0 now"):
    mbii.run(config, str(tmp_path))
  # ... and without its config.json (a run of an older hgrad), the checkpoint names the problem.
  os.remove(os.path.join(tmp_path, "config.json"))
  with pytest.raises(ValueError, match="does not fit this run's state"):
    mbii.run(config, str(tmp_path))
