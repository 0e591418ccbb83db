"""The scene (108-d) and face (204-d) generators: layouts, determinism, reparameterization."""

import numpy as np
import pytest

from hgrad.generators import faces
from hgrad.generators import mixtures
from hgrad.generators import scenes


@pytest.fixture(scope="module")
def scene_gen():
  generator = scenes.scene_generator(scenes.SceneConfig(height=24, width=32), num_workers=0)
  yield generator
  generator.close()


@pytest.fixture(scope="module")
def face_gen():
  generator = faces.face_generator(faces.FaceConfig(resolution=32), num_workers=0)
  yield generator
  generator.close()


@pytest.mark.parametrize("layout, dim", [(scenes.SCENE_LAYOUT, 108), (faces.FACE_LAYOUT, 204)])
def test_layouts_have_their_dimension_names_and_box(layout, dim):
  assert layout.dim == dim and len(set(layout.names)) == dim
  assert np.all(layout.low < layout.high)
  assert np.all((layout.low <= layout.default) & (layout.default <= layout.high))


def test_scene_layout_groups():
  names = scenes.SCENE_LAYOUT.names
  assert names[:9] == tuple([f"object_dx_w{k}" for k in range(3)] +
                            [f"object_dx_mean{k}" for k in range(3)] +
                            [f"object_dx_var{k}" for k in range(3)])
  assert "camera_roll_kappa2" == names[-1]


def test_face_layout_groups():
  names = faces.FACE_LAYOUT.names
  assert sum(n.startswith("coef_") for n in names) == 183
  assert sum(n.startswith("pose_") for n in names) == 21
  assert "coef_mean2_tex9" in names and "pose_kappa1_pitch" in names


@pytest.mark.parametrize("which", ["scene", "face"])
def test_sampling_is_deterministic_in_beta_and_seed(which, scene_gen, face_gen):
  gen = scene_gen if which == "scene" else face_gen
  beta = np.tile(gen.beta0, (3, 1))
  a = gen.render(beta, [4, 4, 5])
  b = gen.render(beta[:1], [4])
  for fa, fb in zip(a, b):
    np.testing.assert_array_equal(fa[0], fa[1])
    np.testing.assert_array_equal(fa[0], fb[0])
  assert not np.array_equal(a.depth[0], a.depth[2])


@pytest.mark.parametrize("which", ["scene", "face"])
def test_beta_plus_minus_delta_gives_nearby_samples(which, scene_gen, face_gen):
  """Every draw is reparameterized from the seed: a small step in beta moves a sample a little."""
  gen = scene_gen if which == "scene" else face_gen
  rng = np.random.default_rng(0)
  span = gen.layout.high - gen.layout.low
  delta = 3e-4 * span * rng.standard_normal(gen.layout.dim)
  seeds = np.arange(6)
  plus = gen.render(np.tile(gen.beta0 + delta, (6, 1)), seeds)
  minus = gen.render(np.tile(gen.beta0 - delta, (6, 1)), seeds)
  other = gen.render(np.tile(gen.beta0, (6, 1)), seeds + 100)
  both = (plus.mask > 0) & (minus.mask > 0)
  # Medians: pixels on a depth edge may switch surface, which is the renderer's (not beta's) jump.
  near = np.median(np.abs(plus.depth - minus.depth)[both])
  far = np.median(np.abs(plus.depth - other.depth)[(plus.mask > 0) & (other.mask > 0)])
  assert near < 0.02 * far, (near, far)


def test_von_mises_sampling_recovers_mean_and_concentration():
  rng = np.random.default_rng(1)
  for mean, kappa in ((0.7, 4.0), (-2.5, 20.0), (3.0, 1.0)):
    params = np.array([1.0, 0.0, 0.0, mean, 0.0, 0.0, kappa, 1.0, 1.0])
    draws = mixtures.sample(params, "vonmises", rng.random(20000), rng.random(20000))
    est_mean, est_kappa = mixtures.circular_stats(draws)
    assert abs(np.angle(np.exp(1j * (est_mean - mean)))) < 0.05
    assert est_kappa == pytest.approx(kappa, rel=0.08)
    assert np.all(np.abs(draws) <= np.pi)


def test_mixture_weights_and_gaussian_components():
  rng = np.random.default_rng(2)
  params = np.array([0.2, 0.0, 0.8, -1.0, 5.0, 2.0, 0.01, 1.0, 0.25])
  draws = mixtures.sample(params, "gaussian", rng.random(40000), rng.standard_normal(40000))
  high = draws > 0.0
  assert np.mean(high) == pytest.approx(0.8, abs=0.01)
  assert np.mean(draws[high]) == pytest.approx(2.0, abs=0.02)
  assert np.std(draws[high]) == pytest.approx(0.5, abs=0.02)
  assert np.std(draws[~high]) == pytest.approx(0.1, abs=0.01)


def test_scene_renders_are_4_by_3_with_positive_depth(scene_gen):
  x = scene_gen.render(np.tile(scene_gen.beta0, (4, 1)), np.arange(4))
  assert x.image.shape == (4, 24, 32, 1) and x.normals.shape == (4, 24, 32, 3)
  on = x.mask > 0
  assert on.mean() > 0.95, "the room surrounds the camera"
  assert np.all(x.depth[on] > 0)
  np.testing.assert_allclose(np.linalg.norm(x.normals[on], axis=-1), 1.0, atol=1e-5)
  # Facing the camera under perspective: n . (-p) > 0 (p is the view ray), so n_z > 0 mostly.
  assert np.mean(x.normals[..., 2][on] > -0.2) > 0.95


def test_face_renders_rgb_and_protocol(face_gen):
  x = face_gen.render(np.tile(face_gen.beta0, (2, 1)), [0, 1])
  assert x.image.shape == (2, 32, 32, 3)
  on = x.mask > 0
  assert 0.2 < on.mean() < 0.8
  assert np.all(x.depth[on] > 3.0) and np.all(x.depth[on] < 6.0)
  params, identity = faces.protocol_params(face_gen._host.model, identities=10)
  assert len(params) == 270 and np.bincount(identity).tolist() == [27] * 10
