"""beta's layouts and the optimizer's coordinates (unit box, log scale for variances)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrad.core import outer
from hgrad.core import unroll
from hgrad.core.layout import LOGIT_FLOOR, ParamLayout, ParamSpec
from hgrad.generators.csg import CSG_LAYOUT

SIGMA = 0.05


@pytest.mark.parametrize("coordinates", ["unit", "log", "logit"])
def test_coordinates_round_trip_numpy_and_jax(coordinates):
  rng = np.random.default_rng(0)
  betas = CSG_LAYOUT.low + rng.uniform(size=(50, CSG_LAYOUT.dim)) * (CSG_LAYOUT.high - CSG_LAYOUT.low)
  betas = np.vstack([betas, CSG_LAYOUT.low, CSG_LAYOUT.high, CSG_LAYOUT.default]).astype(np.float32)
  if coordinates == "logit":      # weights and probabilities live in [floor, 1 - floor] there
    ruled = CSG_LAYOUT.kind != ""
    betas[:, ruled] = betas[:, ruled].clip(LOGIT_FLOOR, 1 - LOGIT_FLOOR)
  u = CSG_LAYOUT.to_coords(betas, coordinates)
  assert np.all((u >= -1e-6) & (u <= 1 + 1e-6))
  np.testing.assert_allclose(CSG_LAYOUT.from_coords(u, coordinates), betas, rtol=1e-4, atol=1e-6)
  u_jax = jax.jit(lambda b: CSG_LAYOUT.to_coords(b, coordinates))(jnp.asarray(betas))
  np.testing.assert_allclose(u_jax, u, rtol=1e-5, atol=1e-6)


def test_log_coordinates_keep_every_dimensions_meaning():
  """Only the variances change scale; the means, probabilities and their units do not."""
  names = [s.name for s in CSG_LAYOUT.specs if s.log_scale]
  assert names and all(n.endswith("var") for n in names) and len(names) == 11
  u_unit = CSG_LAYOUT.to_coords(CSG_LAYOUT.default, "unit")
  u_log = CSG_LAYOUT.to_coords(CSG_LAYOUT.default, "log")
  np.testing.assert_allclose(u_log[~CSG_LAYOUT.log_scale], u_unit[~CSG_LAYOUT.log_scale])
  assert "(log scale)" in CSG_LAYOUT.table()


def test_logit_coordinates_are_softmax_logits_and_log_odds():
  """A weight moves as a logit (normalized weights = softmax of the coordinates' logs), a
  probability as its log-odds; everything else as in "log" coordinates."""
  weights = [s.name for s in CSG_LAYOUT.specs if s.kind == "weight"]
  assert weights == ["p_sphere", "p_cube", "p_truncated_cone", "p_tetrahedron", "p_union",
                     "p_subtract"]
  assert [s.name for s in CSG_LAYOUT.specs if s.kind == "probability"] == ["p_expand"]
  u_log = CSG_LAYOUT.to_coords(CSG_LAYOUT.default, "log")
  u_logit = CSG_LAYOUT.to_coords(CSG_LAYOUT.default, "logit")
  ruled = CSG_LAYOUT.kind != ""
  np.testing.assert_allclose(u_logit[~ruled], u_log[~ruled])
  span = np.log(1.0 / LOGIT_FLOOR)
  primitives = slice(0, 4)
  beta = CSG_LAYOUT.default.copy()
  beta[primitives] = [0.6, 0.01, 0.3, 0.09]
  logits = CSG_LAYOUT.to_coords(beta, "logit")[primitives] * span
  np.testing.assert_allclose(jax.nn.softmax(jnp.asarray(logits)), beta[primitives] / beta[primitives].sum(),
                             rtol=1e-5)
  # The same step of u multiplies the odds of p_expand by the same factor at 0.02 and at 0.5.
  i = CSG_LAYOUT.index("p_expand")
  odds = lambda p: p / (1 - p)
  factors = []
  for p in (0.02, 0.5):
    beta = CSG_LAYOUT.default.copy()
    beta[i] = p
    u = CSG_LAYOUT.to_coords(beta, "logit")
    u[i] += 0.05
    factors.append(odds(CSG_LAYOUT.from_coords(u, "logit")[i]) / odds(p))
  np.testing.assert_allclose(factors[0], factors[1], rtol=1e-3)
  assert factors[0] > 1.5
  assert "| p_expand |" in CSG_LAYOUT.table() and "(log-odds in logit coordinates)" in CSG_LAYOUT.table()


@pytest.mark.parametrize("coordinates", ["log", "logit"])
def test_no_plus_minus_pair_is_clipped_at_the_defaults(coordinates):
  """+-2 sigma around beta0 stays in the box for every dimension; in the unit box it does not."""
  def clipped(coordinates):
    u = CSG_LAYOUT.to_coords(CSG_LAYOUT.default, coordinates)
    return [CSG_LAYOUT.names[i] for i in np.nonzero((u - 2 * SIGMA < 0) | (u + 2 * SIGMA > 1))[0]]
  assert clipped(coordinates) == []
  assert "translate_x_var" in clipped("unit")        # the paper's parameterization cuts them


def test_log_scale_needs_a_positive_lower_bound():
  with pytest.raises(ValueError, match="log_scale needs a positive lower bound for 0 \\(v\\)"):
    ParamLayout("bad", [ParamSpec("v", 0.0, 1.0, 0.5, log_scale=True)])
  with pytest.raises(ValueError, match="coordinates must be one of"):
    CSG_LAYOUT.to_coords(CSG_LAYOUT.default, "logits")
  with pytest.raises(ValueError, match="kind must be one of"):
    ParamLayout("bad", [ParamSpec("w", 0.0, 1.0, 0.5, kind="weights")])
  with pytest.raises(ValueError, match="must lie in \\[0, 1\\]: 0 \\(w\\)"):
    ParamLayout("bad", [ParamSpec("w", 0.0, 2.0, 0.5, kind="weight")])


@pytest.mark.parametrize("coordinates", ["log", "logit"])
def test_engine_optimizes_log_coordinates_with_adam(coordinates):
  layout = ParamLayout("toy", [ParamSpec("x_mean", -2.0, 2.0, -1.0),
                               ParamSpec("x_var", 1e-3, 1.0, 0.01, log_scale=True),
                               ParamSpec("p_flip", 0.0, 1.0, 0.2, kind="probability")])

  def generate(beta, key):
    k1, k2 = jax.random.split(key)
    sign = jnp.where(jax.random.uniform(k2) < beta[2], -1.0, 1.0)
    x = sign * (beta[0] + jnp.sqrt(beta[1]) * jax.random.normal(k1, (1,)))
    return {"x": x, "y": jnp.sin(3 * x)}
  x_real = jnp.linspace(0.5, 1.5, 32)[:, None]

  def train_loss(params, batch):
    return jnp.mean((jnp.sin(batch["x"]) * params["w"] + params["b"] - batch["y"]) ** 2)
  trainer = outer.OuterTrainer(
      generate, layout, train_loss=train_loss,
      eval_loss=lambda p: train_loss(p, {"x": x_real, "y": jnp.sin(3 * x_real)}),
      inner=unroll.InnerConfig(steps=2, batch_size=4),
      outer=outer.OuterConfig(num_perturbations=2, sigma=0.05, learning_rate=0.05,
                              optimizer="adam", coordinates=coordinates,
                              directions="orthogonal"))
  state = trainer.init(layout.default, {"w": jnp.zeros(()), "b": jnp.zeros(())})
  np.testing.assert_allclose(trainer.beta(state), layout.default, rtol=1e-5)
  np.testing.assert_allclose(state.u[1], np.log(0.01 / 1e-3) / np.log(1.0 / 1e-3), rtol=1e-5)
  logit = lambda p: np.log(p / (1 - p))
  np.testing.assert_allclose(
      state.u[2], 0.2 if coordinates == "log" else
      (logit(0.2) - logit(LOGIT_FLOOR)) / (logit(1 - LOGIT_FLOOR) - logit(LOGIT_FLOOR)), rtol=1e-5)
  first, _ = trainer.outer_step(state, jax.random.key(0))
  # Adam's first step moves every coordinate by ~lr (bias-corrected), not 2-3x lr.
  np.testing.assert_allclose(np.abs(first.u - state.u), 0.05, rtol=0.05)
  beta = np.asarray(trainer.beta(first))
  assert np.all((beta >= layout.low) & (beta <= layout.high))


def test_bad_outer_config_values_are_named():
  with pytest.raises(ValueError, match="OuterConfig.coordinates"):
    outer.OuterConfig(coordinates="logits")
  with pytest.raises(ValueError, match="OuterConfig.optimizer"):
    outer.OuterConfig(optimizer="lion")


# --- The random-beta prior (the paper's Table 1 starts) -----------------------------------

def test_prior_draws_inside_the_box_reproducibly_per_seed():
  from hgrad.generators.csg import CSG_LIGHTING_LAYOUT
  for layout in (CSG_LAYOUT, CSG_LIGHTING_LAYOUT):
    betas = layout.sample(3, 500)
    assert betas.shape == (500, layout.dim) and betas.dtype == np.float32
    assert np.all((betas >= layout.low) & (betas <= layout.high))
    np.testing.assert_array_equal(layout.sample(3, 500), betas)
    assert not np.array_equal(layout.sample(4, 500), betas)
  np.testing.assert_array_equal(CSG_LAYOUT.sample(np.random.default_rng(7), 5),
                                CSG_LAYOUT.sample(7, 5))
  with pytest.raises(ValueError, match="n must be a whole number"):
    CSG_LAYOUT.sample(0, -1)


def test_prior_has_its_documented_moments():
  """Dirichlet(1) per rule, log-uniform variances, uniform elsewhere: means and variances
  over 200,000 draws within 4 standard errors."""
  n = 200_000
  betas = CSG_LAYOUT.sample(0, n).astype(np.float64)
  low, high = CSG_LAYOUT.low.astype(np.float64), CSG_LAYOUT.high.astype(np.float64)
  groups = CSG_LAYOUT.weight_groups
  assert {g: i.tolist() for g, i in groups.items()} == {"primitive": [0, 1, 2, 3],
                                                        "operation": [4, 5]}
  for indices in groups.values():
    k = len(indices)
    np.testing.assert_allclose(betas[:, indices].sum(1), 1.0, atol=1e-5)
    mean, var = 1 / k, (k - 1) / (k * k * (k + 1))
    for i in indices:
      assert abs(betas[:, i].mean() - mean) < 4 * np.sqrt(var / n)
      assert abs(betas[:, i].var() - var) < 0.02 * var
  for i, spec in enumerate(CSG_LAYOUT.specs):
    if spec.kind == "weight":
      continue
    if spec.log_scale:      # log beta is uniform on [log low, log high]
      logs = np.log(betas[:, i])
      mean, var = (np.log(low[i]) + np.log(high[i])) / 2, (np.log(high[i] / low[i])) ** 2 / 12
      assert abs(betas[:, i].mean() - (high[i] - low[i]) / np.log(high[i] / low[i])) < 0.01
      values = logs
    else:
      mean, var = (low[i] + high[i]) / 2, (high[i] - low[i]) ** 2 / 12
      values = betas[:, i]
    assert abs(values.mean() - mean) < 4 * np.sqrt(var / n), spec.name
    assert abs(values.var() - var) < 0.02 * var, spec.name


def test_every_prior_draw_renders(csg_gen):
  """The ten starts of the Table 1 protocol's default draw render objects, not empty frames."""
  import configs.table1 as table1_configs
  config = table1_configs.get_config("synthetic")
  betas = CSG_LAYOUT.sample(config.table1.prior_seed, config.table1.num_betas)
  samples = csg_gen.render(betas, np.arange(len(betas)))
  masks = np.asarray(samples.mask).reshape(len(betas), -1)
  assert np.all(masks.mean(1) > 0.02), masks.mean(1)
  assert np.all(np.isfinite(np.asarray(samples.normals)))
