"""The CSG grammar and its renders (host side)."""

import dataclasses

import numpy as np
import pytest

from hgrad.generators import csg
from hgrad.core.config import to_dataclass

LAYOUT = csg.CSG_LAYOUT


def test_layout_has_29_named_dims_with_defaults_in_box():
  assert LAYOUT.dim == 29
  assert len(set(LAYOUT.names)) == 29
  assert np.all(LAYOUT.low <= LAYOUT.default) and np.all(LAYOUT.default <= LAYOUT.high)
  assert np.all(LAYOUT.low[[10, 11, 12, 16, 17, 18, 20, 22, 24, 26, 28]] > 0), "variances > 0"
  assert "| 28 | tetra_length_logvar |" in LAYOUT.table()


def test_same_seed_same_sample_other_seed_differs(csg_gen):
  beta = np.tile(csg_gen.beta0, (3, 1))
  a = csg_gen.render(beta, [7, 7, 8])
  b = csg_gen.render(beta[:1], [7])
  for field_a, field_b in zip(a, b):
    np.testing.assert_array_equal(field_a[0], field_a[1])
    np.testing.assert_array_equal(field_a[0], field_b[0])
  assert not np.array_equal(a.mask[0], a.mask[2]) or not np.array_equal(a.image[0], a.image[2])


def test_normals_unit_facing_camera_and_depth_positive(csg_gen):
  n = 32
  x = csg_gen.render(np.tile(csg_gen.beta0, (n, 1)), np.arange(n))
  on = x.mask > 0
  off = ~on
  assert on.sum() > 0.2 * on.size, "shapes should fill a good part of the view"
  norms = np.linalg.norm(x.normals, axis=-1)
  np.testing.assert_allclose(norms[on], 1.0, atol=1e-5)
  assert np.all(x.normals[..., 2][on] > 0), "visible normals face the viewer (+z)"
  assert np.all(x.depth[on] > 0)
  assert np.all(x.depth[off] == 0) and np.all(x.normals[off] == 0) and np.all(x.image[off] == 0)
  assert x.image.min() >= 0 and x.image.max() <= 1
  assert set(np.unique(x.mask)) <= {0.0, 1.0}


def _sphere_only_beta():
  beta = LAYOUT.default.copy()
  beta[0:4] = [1, 0, 0, 0]
  beta[LAYOUT.index("p_expand")] = 0.0
  return beta


def test_sphere_renders_disc_with_analytic_normals(csg_gen):
  x = csg_gen.render(_sphere_only_beta()[None], [123])
  res = csg_gen.height
  fill = csg_gen.config.fill
  cols, rows = np.meshgrid(np.arange(res), np.arange(res))
  px = (cols + 0.5) / res * 2 - 1          # x right
  py = 1 - (rows + 0.5) / res * 2          # y up, row 0 at the top
  disc = px ** 2 + py ** 2 < fill ** 2
  mask = x.mask[0] > 0
  iou = (disc & mask).sum() / (disc | mask).sum()
  assert iou > 0.97
  both = disc & mask
  analytic = np.stack([px, py, np.sqrt(np.clip(fill ** 2 - px ** 2 - py ** 2, 0, None))], -1) / fill
  cos = np.clip((analytic[both] * x.normals[0][both]).sum(-1), -1, 1)
  mean_angle_error = np.degrees(np.arccos(cos)).mean()
  assert mean_angle_error < 2.0, mean_angle_error
  # Depth is smallest at the centre (nearest the camera) and grows toward the rim.
  centre = x.depth[0][res // 2, res // 2]
  assert centre == pytest.approx(x.depth[0][mask].min(), abs=0.05)


def test_inverse_cdf_follows_weights():
  weights = np.array([0.1, 0.0, 0.6, 0.3])
  u = (np.arange(10000) + 0.5) / 10000
  counts = np.bincount([csg.inverse_cdf(weights, v) for v in u], minlength=4) / len(u)
  np.testing.assert_allclose(counts, weights, atol=1e-3)
  assert csg.inverse_cdf(np.zeros(3), 0.5) == 1, "all-zero weights are uniform"


def test_depth_bound_and_full_expansion():
  config = csg.CSGConfig(max_depth=2)
  beta = LAYOUT.default.copy()
  beta[LAYOUT.index("p_expand")] = 1.0
  for seed in range(20):
    tree = csg.sample_tree(beta, csg.draw_noise(seed, config.max_depth), config)
    assert csg.tree_depth(tree) == 2


def test_small_beta_change_moves_sample_smoothly():
  config = csg.CSGConfig()
  noise = csg.draw_noise(3, config.max_depth)
  beta = LAYOUT.default.astype(np.float64)
  def verts(b):
    shape, _ = csg.build_mesh(csg.sample_tree(b, noise, config), config)
    return np.asarray(shape.to_mesh().vert_properties)[:, :3]
  base = verts(beta)
  nudged = beta.copy()
  nudged[LAYOUT.index("sphere_radius_logmean")] += 1e-4
  nudged[LAYOUT.index("box_length_mean")] += 1e-4
  moved = verts(nudged)
  assert moved.shape == base.shape
  assert 0 < np.abs(moved - base).max() < 1e-2


def test_degenerate_boolean_keeps_base_and_is_counted():
  config = csg.CSGConfig()
  base = csg.Primitive(0, (0.3,))
  part = csg.Primitive(1, (5.0,))
  tree = csg.Combine(operation=1, base=base, part=part, attach_dir=np.array([1.0, 0, 0]),
                     translation=np.zeros(3), rotation=np.eye(3), scale=np.ones(3))
  shape, stats = csg.build_mesh(tree, config)
  assert stats == csg.MeshStats(degenerate_booleans=1, booleans=1)
  expected, _ = csg.build_mesh(base, config)
  assert shape.num_tri() == expected.num_tri()
  assert shape.volume() == pytest.approx(expected.volume())


def test_beta_outside_box_is_clipped(csg_gen):
  beta = csg_gen.beta0.copy()
  beta[LAYOUT.index("p_expand")] = 7.0          # above the box: clipped to 1
  beta[LAYOUT.index("scale_x_logvar")] = -3.0   # below the box: clipped to 1e-4
  clipped = LAYOUT.clip(beta)
  a = csg_gen.render(beta[None], [5])
  b = csg_gen.render(clipped[None], [5])
  for fa, fb in zip(a, b):
    np.testing.assert_array_equal(fa, fb)


@pytest.mark.parametrize("beta, message", [
    (np.zeros(28), "trailing dimension 29"),
    (np.full(29, np.nan), "NaN or infinite in dimension"),
])
def test_bad_beta_raises_value_error(csg_gen, beta, message):
  with pytest.raises(ValueError, match=message):
    csg_gen.render(beta[None], [0])


def test_nan_error_names_the_dimension():
  beta = LAYOUT.default.copy()
  beta[LAYOUT.index("box_length_mean")] = np.nan
  with pytest.raises(ValueError, match=r"21 \(box_length_mean\)"):
    LAYOUT.check(beta)


def test_config_validation_names_the_field():
  with pytest.raises(ValueError, match="CSGConfig.resolution"):
    csg.CSGConfig(resolution=0)
  with pytest.raises(ValueError, match=r"unknown config key\(s\) \['resolutoin'\]"):
    to_dataclass(csg.CSGConfig, {"resolutoin": 32})
  assert to_dataclass(csg.CSGConfig, dataclasses.asdict(csg.CSGConfig())) == csg.CSGConfig()


def test_unions_drawn_by_the_z_buffer_match_exact_unions():
  """build_parts leaves unions to the z-buffer: the same silhouettes and depths as the exact
  solid, normals apart only on the parts' intersection curves."""
  from hgrad.generators.csg_host import CSGHost
  beta = np.tile(LAYOUT.default, (96, 1)).astype(np.float32)
  beta[:, LAYOUT.index("p_expand")] = 0.9                  # mostly deep trees: many unions
  seeds = np.arange(96, dtype=np.uint32)
  renders = []
  for exact in (True, False):
    host = CSGHost(csg.CSGConfig(resolution=32, exact_unions=exact))
    try:
      renders.append((host.render_batch(beta, seeds), host.pop_stats()))
    finally:
      host.close()
  (exact, exact_stats), (drawn, drawn_stats) = renders
  assert exact_stats["booleans"] == drawn_stats["booleans"] > 96
  np.testing.assert_array_equal(drawn.mask, exact.mask)
  np.testing.assert_allclose(drawn.depth, exact.depth, atol=1e-3)
  on = exact.mask > 0
  cosine = np.clip((drawn.normals * exact.normals).sum(-1)[on], -1, 1)
  assert np.mean(np.degrees(np.arccos(cosine)) > 1.0) < 1e-3
  # A union of two parts stays two parts; subtracting from it computes the union first.
  sphere, cube = csg.Primitive(0, (0.5,)), csg.Primitive(1, (0.6,))
  def combine(operation, base, part):
    return csg.Combine(operation=operation, base=base, part=part,
                       attach_dir=np.array([1.0, 0, 0]), translation=np.zeros(3),
                       rotation=np.eye(3), scale=np.ones(3))
  union = combine(0, sphere, cube)
  parts, _ = csg.build_parts(union, csg.CSGConfig())
  assert len(parts) == 2
  parts, stats = csg.build_parts(combine(1, union, sphere), csg.CSGConfig())
  exact, _ = csg.build_mesh(combine(1, union, sphere), csg.CSGConfig())
  assert len(parts) == 1 and stats.degenerate_booleans == 0
  assert parts[0].volume() == pytest.approx(exact.volume(), rel=1e-6)


def test_lighting_layout_extends_the_paper_layout():
  lighting = csg.CSG_LIGHTING_LAYOUT
  assert lighting.dim == 32 and lighting.specs[:29] == LAYOUT.specs
  assert lighting.names[29:] == ("light_max_angle_deg", "ambient_mean", "ambient_spread")
  u = lighting.to_coords(lighting.default, "logit")
  assert np.all(u[29:] - 0.1 > 0) and np.all(u[29:] + 0.1 < 1), "+-2 sigma pairs fit the box"
  assert csg.CSGConfig(layout="lighting").param_layout is lighting
  with pytest.raises(ValueError, match="CSGConfig.layout must be one of"):
    csg.CSGConfig(layout="light")
  with pytest.raises(ValueError, match="under the 'lighting' layout beta sets the light"):
    csg.CSGConfig(layout="lighting", ambient_high=0.25)


def test_lighting_beta_renders_as_the_config_lighting():
  """beta0 of the 32-d layout renders the 29-d images; beta's light equals the config's light."""
  from hgrad.generators.csg_host import csg_generator
  seeds = np.arange(4)
  lit = csg.CSG_LIGHTING_LAYOUT.default.copy()
  lit[29:] = (35.0, 0.2, 0.05)
  with csg_generator(csg.CSGConfig(resolution=32), num_workers=0) as paper, \
       csg_generator(csg.CSGConfig(resolution=32, layout="lighting"), num_workers=0) as extended, \
       csg_generator(csg.CSGConfig(resolution=32, light_max_angle_deg=35.0, ambient_low=0.15,
                                   ambient_high=0.25), num_workers=0) as narrow:
    assert extended.layout.dim == 32
    base = paper.render(np.tile(LAYOUT.default, (4, 1)), seeds)
    same = extended.render(np.tile(extended.beta0, (4, 1)), seeds)
    np.testing.assert_allclose(same.image, base.image, atol=1e-6)
    target = narrow.render(np.tile(LAYOUT.default, (4, 1)), seeds)
    moved = extended.render(np.tile(lit, (4, 1)), seeds)
    np.testing.assert_allclose(moved.image, target.image, atol=1e-5)
    assert np.abs(moved.image - base.image).max() > 0.05
    np.testing.assert_array_equal(moved.normals, base.normals)    # light moves shading only


def test_a_small_batch_after_a_large_one_reads_back_only_its_own_layers():
  """The layered texture shrinks back after a large (outer-step) batch: the readback reads
  every layer, so a texture left large slowed every later plain render; the pixels do not
  depend on what the texture held before."""
  from hgrad.generators.csg_host import CSGHost
  beta = np.tile(LAYOUT.default, (40, 1)).astype(np.float32)
  seeds = np.arange(40, dtype=np.uint32)
  used, fresh = (CSGHost(csg.CSGConfig(resolution=32)) for _ in range(2))
  try:
    used.render_batch(beta, seeds)
    assert used._raster().allocated_layers == 64
    small = used.render_batch(beta[:3], seeds[:3])
    assert used._raster().allocated_layers == 4
    expected = fresh.render_batch(beta[:3], seeds[:3])
  finally:
    used.close()
    fresh.close()
  for got, want in zip(small, expected):
    if want is not None:
      np.testing.assert_array_equal(got, want)
