"""NYU Depth V2 and Basel-Face-Model loaders on tiny fixtures written in the real layouts."""

import h5py
import numpy as np
import pytest
import scipy.io

from hgrad.generators import bfm
from hgrad.tasks import nyu_data
from hgrad.tasks.mbii_data import DataError


def _write_nyu(path, count=3):
  """The labeled file's layout: MATLAB column-major, so stored transposed."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (count, 480, 640, 3), dtype=np.uint8)
  v, u = np.mgrid[0:480, 0:640]
  depths = np.stack([np.full((480, 640), 2.0 + i) for i in range(count)])
  depths[1] = 2.0 + 0.002 * (v - 240)            # a plane tilted about the x axis
  with h5py.File(path, "w") as f:
    f.create_dataset("images", data=images.transpose(0, 3, 2, 1))
    f.create_dataset("depths", data=depths.transpose(0, 2, 1))
  scipy.io.savemat(str(path) + ".splits.mat", {"trainNdxs": np.array([[1], [2]]),
                                               "testNdxs": np.array([[3]])})
  return images, depths


def test_nyu_reads_transposed_layout_and_split(tmp_path):
  path = tmp_path / "nyu.mat"
  images, depths = _write_nyu(path)
  rgb, depth = nyu_data.read_labeled(str(path), [2, 0])
  np.testing.assert_array_equal(rgb[0], images[2])
  np.testing.assert_array_equal(depth[1], depths[0])
  assert nyu_data.read_split(str(path) + ".splits.mat", "train") == [0, 1]
  assert nyu_data.read_split(str(path) + ".splits.mat", "test") == [2]
  assert nyu_data.frame_count(str(path)) == 3


def test_nyu_normals_of_planes(tmp_path):
  path = tmp_path / "nyu.mat"
  _write_nyu(path)
  data = nyu_data.load(str(path), [0, 1], resolution=(24, 32))
  assert data.image.shape == (2, 24, 32, 1) and data.normals.shape == (2, 24, 32, 3)
  valid = data.mask[0] > 0
  assert valid.mean() > 0.9
  # A fronto-parallel wall faces the camera: (0, 0, 1).
  np.testing.assert_allclose(data.normals[0][valid], np.tile([0, 0, 1], (valid.sum(), 1)), atol=1e-4)
  # Depth growing toward the bottom rows: dZ/dY = 0.002 / (Z / fy) ~ 0.52 at the centre, so the
  # normal tilts down (y up in the camera frame) by ~27 degrees.
  centre = data.normals[1][12, 16]
  np.testing.assert_allclose(centre, np.array([0.0, -0.52, 1.0]) / np.sqrt(1 + 0.52 ** 2), atol=0.03)


def test_nyu_rejects_malformed_files(tmp_path):
  with pytest.raises(DataError, match="missing file"):
    nyu_data.read_labeled(str(tmp_path / "nope.mat"))
  not_hdf5 = tmp_path / "v5.mat"
  scipy.io.savemat(str(not_hdf5), {"images": np.zeros((1, 2))})
  with pytest.raises(DataError, match="not a MATLAB v7.3"):
    nyu_data.read_labeled(str(not_hdf5))
  wrong = tmp_path / "wrong.mat"
  with h5py.File(wrong, "w") as f:
    f.create_dataset("images", data=np.zeros((2, 3, 480, 640), np.uint8))
    f.create_dataset("depths", data=np.zeros((2, 480, 640)))
  with pytest.raises(DataError, match=r"'images' must be stored as \(N, 3, 640, 480\)"):
    nyu_data.read_labeled(str(wrong))
  missing = tmp_path / "missing.mat"
  with h5py.File(missing, "w") as f:
    f.create_dataset("images", data=np.zeros((1, 3, 640, 480), np.uint8))
  with pytest.raises(DataError, match="no dataset 'depths'"):
    nyu_data.read_labeled(str(missing))


def _small_model():
  return bfm.procedural_model(seed=1, rows=8, cols=10, num_shape=12, num_exp=11, num_tex=10)


def test_bfm_round_trip(tmp_path):
  model = _small_model()
  path = str(tmp_path / "bfm.mat")
  bfm.save_bfm(model, path)
  loaded = bfm.load_bfm(path)
  for a, b in zip(model, loaded):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
  coef = np.zeros(12)
  coef[0] = 1.0
  moved = loaded.vertices(coef, np.zeros(11))
  np.testing.assert_allclose(moved - loaded.shape_mu, loaded.shape_pc[:, :, 0])


def _struct(model):
  n = model.num_vertices
  return {"shapeMU": model.shape_mu.reshape(-1, 1), "shapePC": model.shape_pc.reshape(3 * n, -1),
          "shapeEV": model.shape_ev.reshape(-1, 1), "expPC": model.exp_pc.reshape(3 * n, -1),
          "expEV": model.exp_ev.reshape(-1, 1), "texMU": model.tex_mu.reshape(-1, 1) * 255,
          "texPC": model.tex_pc.reshape(3 * n, -1) * 255, "texEV": model.tex_ev.reshape(-1, 1),
          "tri": model.tri.T.astype(np.float64) + 1}


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("expEV"), "missing field 'expEV'"),
    (lambda s: s.__setitem__("shapePC", s["shapePC"][:, :5]), r"shapePC must be \("),
    (lambda s: s.__setitem__("tri", s["tri"] - 1), "1-based vertex indices"),
    (lambda s: s.__setitem__("shapeMU", s["shapeMU"][:-1]), "not a multiple of 3"),
])
def test_bfm_rejects_malformed_models(tmp_path, edit, message):
  struct = _struct(_small_model())
  edit(struct)
  path = str(tmp_path / "bad.mat")
  scipy.io.savemat(path, struct)          # top-level variables are accepted too
  with pytest.raises(DataError, match=message):
    bfm.load_bfm(path)


def test_bfm_accepts_top_level_variables_and_transposed_tri(tmp_path):
  model = _small_model()
  path = str(tmp_path / "top.mat")
  scipy.io.savemat(path, _struct(model))
  loaded = bfm.load_bfm(path)
  np.testing.assert_array_equal(loaded.tri, model.tri)
