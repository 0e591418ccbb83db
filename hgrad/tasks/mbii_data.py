"""MIT-Berkeley Intrinsic Images (SIRFS 1.5 layout): shading in, surface normals out.

Directory layout (docs/design.md §4): `<root>/<object>/{shading.png, mask.png,
depth_valid.png, Z.mat, L.mat}`. Any subset of objects can be loaded; the
official SIRFS train/test name lists are built in.

Ground-truth normals come from `Z.mat` (`depth`: height toward the viewer,
rows top to bottom) by Sobel derivatives (/8): `gy = dZ/drow`, `gx = dZ/dcol`.
In the camera frame of the whole project (x right, y up, z toward the viewer)
the normal is `normalize(-gx, gy, 1)`; in the SH lights' frame it is
`normalize(-gy, -gx, 1)`. `sh_log_shading` renders log-shading from the SH
lights so the convention can be checked against `shading.png` (docs/design.md §4).

Valid pixels: mask ∧ depth_valid ∧ finite Z, eroded by one pixel so every
Sobel window lies inside. Each object is cropped to its mask, padded to a
square so that its longer side fills `fill` of the view (the framing of the
renders), and area-resampled to the configured resolution. Normals are
averaged over valid sub-pixels and renormalized; a resampled pixel is valid
where at least half of it was valid. The shading input is averaged over the
object and set to 0 where less than half a pixel is object (hard edges, like
the renders), then divided by its 99.5th percentile on the object and clipped
to [0, 1].
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple, Sequence

import numpy as np
import scipy.io
import scipy.ndimage
from PIL import Image, UnidentifiedImageError

from hgrad.core.errors import DataError
from hgrad.generators.sample import Sample, normalize_shading

MIT_TRAIN = ("apple", "box", "cup1", "dinosaur", "frog1", "panther", "paper1", "phone",
             "squirrel", "teabag2")
MIT_TEST = ("cup2", "deer", "frog2", "paper2", "pear", "potato", "raccoon", "sun", "teabag1",
            "turtle")
SPLITS = {"train": MIT_TRAIN, "test": MIT_TEST, "all": MIT_TRAIN + MIT_TEST}
DATA_ENV = "HGRAD_MBII_DIR"

_SH_C = (0.429043, 0.511664, 0.743125, 0.886227, 0.247708)




@dataclasses.dataclass(frozen=True)
class MBIIConfig:
  dir: str = ""               # a directory in the layout above; "" = $HGRAD_MBII_DIR or synthetic
  # What the run trains toward: "auto" (dir, else $HGRAD_MBII_DIR, else the synthetic target),
  # "photographs" (dir or $HGRAD_MBII_DIR, an error without either) or "synthetic" (the
  # synthetic target whatever $HGRAD_MBII_DIR says; an error with dir set).
  target: str = "auto"
  test_dir: str = ""          # optional: where the test split lives (reporting only)
  resolution: int = 64
  fill: float = 0.9
  objects: tuple[str, ...] = MIT_TRAIN


class RawObject(NamedTuple):
  """One object at full resolution."""

  name: str
  shading: np.ndarray       # (H, W) float, linear
  mask: np.ndarray          # (H, W) bool, object
  valid: np.ndarray         # (H, W) bool, normals valid (eroded)
  depth: np.ndarray         # (H, W) float, Z (height toward viewer), NaN outside
  normals: np.ndarray       # (H, W, 3) camera frame, 0 where not valid
  sh_shading: np.ndarray    # (9,) gray_lights.shading


def _path(root: str, name: str, filename: str) -> str:
  path = os.path.join(root, name, filename)
  if not os.path.isfile(path):
    raise DataError(f"missing file {path} (MIT-Berkeley layout: <dir>/<object>/{filename})")
  return path


def _png(path: str) -> np.ndarray:
  try:
    with Image.open(path) as img:
      return np.array(img)
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise DataError(f"cannot decode PNG {path}: {e}") from e


def _mat_var(path: str, var: str, field: str | None = None) -> np.ndarray:
  try:
    contents = scipy.io.loadmat(path)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"cannot read MATLAB file {path}: {e}") from e
  if var not in contents:
    raise DataError(f"{path} has no variable '{var}' (found {sorted(k for k in contents if not k.startswith('__'))})")
  value = contents[var]
  if field is not None:
    if value.dtype.names is None or field not in value.dtype.names:
      raise DataError(f"{path}: '{var}' has no field '{field}'")
    value = value[field][0, 0]
  return np.asarray(value, np.float64)


def normals_from_height(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Camera-frame normals normalize(-gx, gy, 1) and the SH-frame ones normalize(-gy, -gx, 1)."""
  filled = np.where(np.isfinite(z), z, 0.0)
  gy = scipy.ndimage.sobel(filled, axis=0) / 8.0
  gx = scipy.ndimage.sobel(filled, axis=1) / 8.0
  ones = np.ones_like(gx)
  camera = np.stack([-gx, gy, ones], -1)
  sh_frame = np.stack([-gy, -gx, ones], -1)
  unit = lambda n: n / np.linalg.norm(n, axis=-1, keepdims=True)  # noqa: E731
  return unit(camera), unit(sh_frame)


def sh_log_shading(normals_sh: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
  """Order-2 SH irradiance (Ramamoorthi & Hanrahan; SIRFS's ordering), as log-shading."""
  c1, c2, c3, c4, c5 = _SH_C
  L = coefficients
  m = np.array([
      [c1 * L[8], c1 * L[4], c1 * L[7], c2 * L[3]],
      [c1 * L[4], -c1 * L[8], c1 * L[5], c2 * L[1]],
      [c1 * L[7], c1 * L[5], c3 * L[6], c2 * L[2]],
      [c2 * L[3], c2 * L[1], c2 * L[2], c4 * L[0] - c5 * L[6]],
  ])
  n4 = np.concatenate([normals_sh, np.ones(normals_sh.shape[:-1] + (1,))], -1)
  return np.einsum("...i,ij,...j->...", n4, m, n4)


def load_object(root: str, name: str) -> RawObject:
  """Reads and validates one object's files."""
  shading = _png(_path(root, name, "shading.png"))
  mask = _png(_path(root, name, "mask.png"))
  depth_valid = _png(_path(root, name, "depth_valid.png"))
  z_path = _path(root, name, "Z.mat")
  z = _mat_var(z_path, "depth")
  sh = _mat_var(_path(root, name, "L.mat"), "gray_lights", "shading").reshape(-1)
  if shading.ndim != 2:
    raise DataError(f"{os.path.join(root, name, 'shading.png')}: expected a grayscale image, "
                    f"got shape {shading.shape}")
  shape = shading.shape
  for filename, array in (("mask.png", mask), ("depth_valid.png", depth_valid), ("Z.mat", z)):
    if array.shape[:2] != shape:
      raise DataError(f"{os.path.join(root, name, filename)}: shape {array.shape} does not match "
                      f"shading.png {shape}")
  if mask.ndim == 3:
    mask = mask[..., 0]
  if depth_valid.ndim == 3:
    depth_valid = depth_valid[..., 0]
  if z.ndim != 2:
    raise DataError(f"{z_path}: 'depth' must be a 2-D height map, got shape {z.shape}")
  if sh.size != 9:
    raise DataError(f"{os.path.join(root, name, 'L.mat')}: gray_lights.shading must hold 9 SH "
                    f"coefficients, got {sh.size}")
  scale = 65535.0 if shading.dtype == np.uint16 else 255.0
  mask = mask > 0
  valid = scipy.ndimage.binary_erosion(mask & (depth_valid > 0) & np.isfinite(z), iterations=1)
  if valid.sum() < 16:
    raise DataError(f"{os.path.join(root, name)}: fewer than 16 valid pixels")
  normals, _ = normals_from_height(z)
  normals = np.where(valid[..., None], normals, 0.0)
  return RawObject(name, shading.astype(np.float64) / scale, mask, valid, z, normals, sh)


def _box_resize(channel: np.ndarray, size: int) -> np.ndarray:
  img = Image.fromarray(channel.astype(np.float32), mode="F")
  return np.asarray(img.resize((size, size), Image.BOX), np.float64)


def _square_crop(obj: RawObject, fill: float) -> tuple[int, tuple[int, int]]:
  rows, cols = np.nonzero(obj.mask)
  r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
  side = int(np.ceil(max(r1 - r0, c1 - c0) / fill))
  top = (r0 + r1) // 2 - side // 2
  left = (c0 + c1) // 2 - side // 2
  return side, (top, left)


def _framed(array: np.ndarray, side: int, origin: tuple[int, int]) -> np.ndarray:
  """The side x side window at origin, zero-padded where it leaves the image."""
  out = np.zeros((side, side) + array.shape[2:], array.dtype)
  top, left = origin
  h, w = array.shape[:2]
  src_r0, src_c0 = max(top, 0), max(left, 0)
  src_r1, src_c1 = min(top + side, h), min(left + side, w)
  out[src_r0 - top:src_r1 - top, src_c0 - left:src_c1 - left] = array[src_r0:src_r1, src_c0:src_c1]
  return out


def prepare(obj: RawObject, resolution: int, fill: float) -> Sample:
  """Crop, pad to a square, area-resample; see the module docstring for the rules."""
  side, origin = _square_crop(obj, fill)
  frame = lambda a: _framed(a, side, origin)  # noqa: E731
  mask = frame(obj.mask.astype(np.float64))
  valid = frame(obj.valid.astype(np.float64))
  mask_r = _box_resize(mask, resolution)
  valid_r = _box_resize(valid, resolution)
  shading_r = _box_resize(frame(obj.shading) * mask, resolution) / np.maximum(mask_r, 1e-12)
  on_object = mask_r >= 0.5
  shading_r = np.where(on_object, shading_r, 0.0)
  image = normalize_shading(shading_r, on_object)
  normals = np.stack([_box_resize(frame(obj.normals[..., c]) * valid, resolution)
                      for c in range(3)], -1)
  norm = np.linalg.norm(normals, axis=-1, keepdims=True)
  keep = (valid_r >= 0.5) & (norm[..., 0] > 1e-6) & on_object
  normals = np.where(keep[..., None], normals / np.maximum(norm, 1e-12), 0.0)
  height = frame(np.where(obj.valid, obj.depth, 0.0))
  height_r = _box_resize(height * valid, resolution) / np.maximum(valid_r, 1e-12)
  depth = np.where(keep, (height_r[keep].max() if keep.any() else 0.0) - height_r + 1.0, 0.0)
  return Sample(image[..., None].astype(np.float32), normals.astype(np.float32),
                depth.astype(np.float32), keep.astype(np.float32))


TARGETS = ("auto", "photographs", "synthetic")


def resolve_dir(data: MBIIConfig) -> str | None:
  """The photographs' directory `data` names (None: the synthetic target), as `data.target` says.

  Raises:
    DataError: `data.target` is "photographs" with no directory configured, or
      "synthetic" with one, or none of `TARGETS`.
  """
  if data.target not in TARGETS:
    raise DataError(f"config.data.target must be one of {TARGETS}, got {data.target!r}")
  if data.target == "synthetic":
    if data.dir:
      raise DataError(f"config.data.target is 'synthetic' but config.data.dir is set "
                      f"({data.dir!r}): drop one of them")
    return None
  root = data.dir or os.environ.get(DATA_ENV) or None
  if root is None and data.target == "photographs":
    raise DataError(f"config.data.target is 'photographs' but no directory is configured: set "
                    f"config.data.dir (--config.base.data.dir in a study) or ${DATA_ENV}")
  return root


def load(root: str, objects: Sequence[str] = MIT_TRAIN, resolution: int = 64,
         fill: float = 0.9) -> tuple[Sample, tuple[str, ...]]:
  """A batch (N, R, R, ...) of the named objects under `root`, in the given order."""
  if not os.path.isdir(root):
    raise DataError(f"MIT-Berkeley directory {root!r} does not exist (set --config.data.dir or "
                    f"${DATA_ENV})")
  if not objects:
    raise DataError("no objects to load")
  check_objects(root, objects)
  samples = [prepare(load_object(root, name), resolution, fill) for name in objects]
  return Sample(*(np.stack(parts) for parts in zip(*samples))), tuple(objects)


def check_objects(root: str, names: Sequence[str], what: str = "object") -> None:
  """Raises DataError naming the objects missing from `root`; where a folder inside `root`
  (e.g. the dataset's `train/`) holds them, the message names the path to use instead."""
  missing = [n for n in names if not os.path.isdir(os.path.join(root, n))]
  if not missing:
    return
  inside = sorted(d for d in os.listdir(root)
                  if all(os.path.isdir(os.path.join(root, d, n)) for n in missing))
  hint = (f"; it looks like the dataset's root: use {os.path.join(root, inside[0])!r}, the "
          f"folder that holds the object folders" if inside else
          "; the data path names the folder that holds the object folders (apple/, box/, ...)")
  raise DataError(f"{root} lacks the {what}(s) {missing}{hint}")


def objects_present(root: str, names: Sequence[str]) -> tuple[str, ...]:
  return tuple(n for n in names if os.path.isdir(os.path.join(root, n)))
