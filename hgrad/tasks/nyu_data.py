"""NYU Depth V2 (the official labeled file) for surface-normal evaluation.

`nyu_depth_v2_labeled.mat` is MATLAB v7.3, i.e. HDF5, read with h5py; MATLAB
stores arrays column-major, so h5py sees them transposed: `images` as
(N, 3, 640, 480) uint8 and `depths` as (N, 640, 480) metres. The official
train/test split is `splits.mat` (`trainNdxs`, `testNdxs`, 1-based).

Normals from depth with the RGB camera intrinsics of the NYU toolbox
(`camera_params.m`: fx = 518.857901, fy = 519.469611, cx = 325.582449,
cy = 253.736166): back-project every pixel, take central differences along
rows and columns, cross them, orient toward the camera and convert to the
project's camera frame (x right, y up, z toward the viewer). A pixel is valid
where its depth and its four neighbours' depths are positive.

Evaluation crop (Eigen et al. 2014, used by most NYU normal/depth papers):
rows 45..470, columns 41..600 of the 480 x 640 frame; the crop is then
area-resampled to the network resolution (4:3). The input is the luminance
of the RGB image in [0, 1], normalized like the renders.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image

from hgrad.core.errors import DataError
from hgrad.generators.sample import Sample, normalize_shading

INTRINSICS = {"fx": 518.857901, "fy": 519.469611, "cx": 325.582449, "cy": 253.736166}
FRAME = (480, 640)
EVAL_CROP = (45, 471, 41, 601)   # row start, row end, column start, column end
CROP_FOV_Y_DEG = float(np.degrees(2 * np.arctan((EVAL_CROP[1] - EVAL_CROP[0]) / 2 / INTRINSICS["fy"])))
DATA_ENV = "HGRAD_NYU_FILE"


def _open(path: str):
  import h5py  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise DataError(f"missing file {path} (NYU Depth V2 nyu_depth_v2_labeled.mat)")
  try:
    return h5py.File(path, "r")
  except OSError as e:
    raise DataError(f"{path} is not a MATLAB v7.3 (HDF5) file: {e}") from e


def frame_count(path: str) -> int:
  with _open(path) as f:
    if "images" not in f:
      raise DataError(f"{path} has no dataset 'images' (found {sorted(f.keys())})")
    return int(f["images"].shape[0])


def read_labeled(path: str, indices: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(images N x 480 x 640 x 3 uint8, depths N x 480 x 640 float) of the given 0-based indices."""
  with _open(path) as f:
    for name in ("images", "depths"):
      if name not in f:
        raise DataError(f"{path} has no dataset '{name}' (found {sorted(f.keys())})")
    images, depths = f["images"], f["depths"]
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2:] != FRAME[::-1]:
      raise DataError(f"{path}: 'images' must be stored as (N, 3, 640, 480), got {images.shape}")
    if depths.shape != (images.shape[0],) + FRAME[::-1]:
      raise DataError(f"{path}: 'depths' must be stored as (N, 640, 480) matching 'images', "
                      f"got {depths.shape}")
    count = images.shape[0]
    indices = list(range(count)) if indices is None else [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
      raise DataError(f"{path}: indices {bad[:5]} outside 0..{count - 1}")
    order = np.argsort(indices)
    sorted_idx = np.asarray(indices)[order]
    rgb = np.asarray(images[sorted_idx]).transpose(0, 3, 2, 1)
    depth = np.asarray(depths[sorted_idx], np.float64).transpose(0, 2, 1)
    inverse = np.argsort(order)
    return rgb[inverse], depth[inverse]


def read_split(path: str, split: str) -> list[int]:
  """0-based indices of the official split in splits.mat."""
  import scipy.io  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise DataError(f"missing file {path} (NYU Depth V2 splits.mat)")
  key = {"train": "trainNdxs", "test": "testNdxs"}[split]
  contents = scipy.io.loadmat(path)
  if key not in contents:
    raise DataError(f"{path} has no variable '{key}'")
  return [int(i) - 1 for i in np.asarray(contents[key]).reshape(-1)]


def normals_from_depth(depth_HxW: np.ndarray, intrinsics: dict = INTRINSICS):
  """Camera-frame unit normals (x right, y up, z toward viewer) and their valid mask."""
  h, w = depth_HxW.shape
  v, u = np.mgrid[0:h, 0:w].astype(np.float64)
  z = depth_HxW
  points = np.stack([(u - intrinsics["cx"]) * z / intrinsics["fx"],
                     (v - intrinsics["cy"]) * z / intrinsics["fy"], z], -1)   # x right, y down, z forward
  du = np.zeros_like(points)
  dv = np.zeros_like(points)
  du[:, 1:-1] = points[:, 2:] - points[:, :-2]
  dv[1:-1] = points[2:] - points[:-2]
  normals = np.cross(du, dv)
  facing = np.sum(normals * points, -1) > 0
  normals[facing] *= -1.0                                   # toward the camera
  normals = normals * np.array([1.0, -1.0, -1.0])           # -> x right, y up, z toward viewer
  positive = z > 0
  valid = positive.copy()
  valid[1:-1, 1:-1] &= (positive[:-2, 1:-1] & positive[2:, 1:-1] & positive[1:-1, :-2] &
                        positive[1:-1, 2:])
  valid[[0, -1], :] = False
  valid[:, [0, -1]] = False
  norm = np.linalg.norm(normals, axis=-1, keepdims=True)
  valid &= norm[..., 0] > 0
  return np.where(valid[..., None], normals / np.maximum(norm, 1e-12), 0.0), valid


def _box(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  img = Image.fromarray(channel.astype(np.float32), mode="F")
  return np.asarray(img.resize((size[1], size[0]), Image.BOX), np.float64)


def prepare(rgb: np.ndarray, depth: np.ndarray, resolution: tuple[int, int]) -> Sample:
  """Eval crop, area-resample to (H, W); normals from the full-resolution depth."""
  normals, valid = normals_from_depth(depth)
  r0, r1, c0, c1 = EVAL_CROP
  crop = lambda a: a[r0:r1, c0:c1]  # noqa: E731
  gray = crop(rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0)
  valid_c = crop(valid).astype(np.float64)
  valid_r = _box(valid_c, resolution)
  n = np.stack([_box(crop(normals[..., c]) * valid_c, resolution) for c in range(3)], -1)
  norm = np.linalg.norm(n, axis=-1, keepdims=True)
  keep = (valid_r >= 0.5) & (norm[..., 0] > 1e-6)
  n = np.where(keep[..., None], n / np.maximum(norm, 1e-12), 0.0)
  z = _box(crop(np.where(valid, depth, 0.0)) * valid_c, resolution) / np.maximum(valid_r, 1e-12)
  image = normalize_shading(_box(gray, resolution), np.ones(resolution))
  return Sample(image[..., None].astype(np.float32), n.astype(np.float32),
                np.where(keep, z, 0.0).astype(np.float32), keep.astype(np.float32))


def load(path: str, indices: Sequence[int] | None = None,
         resolution: tuple[int, int] = (48, 64)) -> Sample:
  """A batch of prepared frames (N, H, W, ...)."""
  rgb, depth = read_labeled(path, indices)
  samples = [prepare(rgb[i], depth[i], resolution) for i in range(len(rgb))]
  return Sample(*(np.stack(parts) for parts in zip(*samples)))
