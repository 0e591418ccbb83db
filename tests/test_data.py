"""MIT-Berkeley loader: the SH convention check, framing, and clear errors on bad files."""

import os
import re
import shutil

import numpy as np
import pytest
import scipy.io
import scipy.ndimage

from hgrad.tasks import mbii_data


@pytest.mark.parametrize("name", mbii_data.MIT_TRAIN)
def test_sh_rendering_of_loader_normals_matches_shading(mbii_dir, name):
  """docs/design.md §4: log-shading rendered from the loader's normals with L.mat's SH lights
  correlates with log(shading.png) (r >= 0.85); a wrong flip drops it to 0.3-0.6."""
  obj = mbii_data.load_object(mbii_dir, name)
  cam = obj.normals
  sh_frame = np.stack([-cam[..., 1], cam[..., 0], cam[..., 2]], -1)   # camera -> SH lights' frame
  valid = scipy.ndimage.binary_erosion(obj.valid, iterations=1) & (obj.shading > 0)
  rendered = mbii_data.sh_log_shading(sh_frame, obj.sh_shading)
  r = np.corrcoef(rendered[valid], np.log(obj.shading[valid]))[0, 1]
  assert r >= 0.85, r
  flipped = sh_frame * np.array([-1.0, 1.0, 1.0])
  r_flipped = np.corrcoef(mbii_data.sh_log_shading(flipped, obj.sh_shading)[valid],
                          np.log(obj.shading[valid]))[0, 1]
  assert r > r_flipped


def test_prepared_batch_shapes_and_ranges(mbii_dir):
  data, names = mbii_data.load(mbii_dir, mbii_data.MIT_TRAIN[:3], resolution=32)
  assert names == mbii_data.MIT_TRAIN[:3]
  assert data.image.shape == (3, 32, 32, 1) and data.normals.shape == (3, 32, 32, 3)
  valid = data.mask > 0
  assert valid.sum(axis=(1, 2)).min() > 100
  np.testing.assert_allclose(np.linalg.norm(data.normals[valid], axis=-1), 1.0, atol=1e-5)
  assert np.mean(data.normals[..., 2][valid] > 0) > 0.99, "normals face the camera"
  assert data.image.min() >= 0 and data.image.max() == pytest.approx(1.0)
  assert np.all(data.depth[valid] >= 1.0) and np.all(data.depth[~valid] == 0)
  # Framing: the object's longer side fills 0.9 of the view, like the renders.
  on = data.image[0, ..., 0] > 0
  rows, cols = np.nonzero(on)
  extent = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
  assert abs(extent - 0.9 * 32) <= 2


@pytest.fixture
def one_object(tmp_path, mbii_dir):
  shutil.copytree(os.path.join(mbii_dir, "apple"), tmp_path / "apple")
  return str(tmp_path)


def test_missing_file_is_named(one_object):
  os.remove(os.path.join(one_object, "apple", "depth_valid.png"))
  with pytest.raises(mbii_data.DataError, match=r"missing file .*apple/depth_valid\.png"):
    mbii_data.load(one_object, ["apple"])


def test_missing_object_is_named(one_object):
  with pytest.raises(mbii_data.DataError, match=r"lacks the object\(s\) \['box'\]"):
    mbii_data.load(one_object, ["apple", "box"])
  os.makedirs(os.path.join(one_object, "box"))
  with pytest.raises(mbii_data.DataError, match=r"missing file .*box/shading\.png"):
    mbii_data.load(one_object, ["apple", "box"])


def test_the_datasets_root_gets_the_path_to_use(one_object, tmp_path):
  """Pointed at the folder above the object folders (the dataset's root with train/ in it),
  the error names the folder to use instead."""
  train = tmp_path / "dataset" / "train"
  shutil.copytree(os.path.join(one_object, "apple"), train / "apple")
  with pytest.raises(mbii_data.DataError, match=f"use '{re.escape(str(train))}'"):
    mbii_data.load(str(tmp_path / "dataset"), ["apple"])


def test_corrupt_png_is_named(one_object):
  with open(os.path.join(one_object, "apple", "shading.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n this is not an image")
  with pytest.raises(mbii_data.DataError, match=r"cannot decode PNG .*apple/shading\.png"):
    mbii_data.load(one_object, ["apple"])


def test_wrong_shaped_z_is_named(one_object):
  scipy.io.savemat(os.path.join(one_object, "apple", "Z.mat"), {"depth": np.zeros((10, 12))})
  with pytest.raises(mbii_data.DataError, match=r"apple/Z\.mat: shape \(10, 12\) does not match"):
    mbii_data.load(one_object, ["apple"])


def test_z_without_depth_variable_is_named(one_object):
  scipy.io.savemat(os.path.join(one_object, "apple", "Z.mat"), {"height": np.zeros((3, 3))})
  with pytest.raises(mbii_data.DataError, match=r"Z\.mat has no variable 'depth'"):
    mbii_data.load(one_object, ["apple"])


def test_missing_directory_says_how_to_configure(tmp_path):
  with pytest.raises(mbii_data.DataError, match="HGRAD_MBII_DIR"):
    mbii_data.load(str(tmp_path / "nowhere"), ["apple"])


def test_the_target_says_whether_a_directory_is_required_or_ignored(tmp_path, monkeypatch):
  monkeypatch.delenv(mbii_data.DATA_ENV, raising=False)
  config = mbii_data.MBIIConfig
  assert mbii_data.resolve_dir(config()) is None                       # auto: synthetic
  assert mbii_data.resolve_dir(config(dir="/d")) == "/d"
  with pytest.raises(mbii_data.DataError, match="'photographs' but no directory"):
    mbii_data.resolve_dir(config(target="photographs"))
  with pytest.raises(mbii_data.DataError, match="'synthetic' but config.data.dir is set"):
    mbii_data.resolve_dir(config(target="synthetic", dir="/d"))
  with pytest.raises(mbii_data.DataError, match="must be one of"):
    mbii_data.resolve_dir(config(target="real"))
  monkeypatch.setenv(mbii_data.DATA_ENV, str(tmp_path))
  assert mbii_data.resolve_dir(config()) == str(tmp_path)                # auto: the variable
  assert mbii_data.resolve_dir(config(target="photographs")) == str(tmp_path)
  assert mbii_data.resolve_dir(config(target="synthetic")) is None       # the variable ignored
