"""Morphable face models: Basel-Face-Model-format .mat files and an embedded procedural stand-in.

File layout (the one the face3d project reads): a struct `model` (or top-level
variables) with `shapeMU` (3n x 1, x y z interleaved), `shapePC` (3n x ks),
`shapeEV` (ks x 1), `expPC` (3n x ke), `expEV` (ke x 1), `texMU` (3n x 1, r g
b in 0..255), `texPC` (3n x kt), `texEV` (kt x 1) and `tri` (t x 3 or 3 x t,
1-based as in MATLAB). EVs are the standard deviations of the coefficients.

`procedural_model()` builds a head-like mesh with smooth deformation bases for
shape, expression and texture. It is a stand-in for the licensed BFM, so that
the face experiment runs on a fresh machine; it is not a model of real faces.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import scipy.io

from hgrad.core.errors import DataError


class MorphableModel(NamedTuple):
  shape_mu: np.ndarray    # (n, 3)
  shape_pc: np.ndarray    # (n, 3, ks)
  shape_ev: np.ndarray    # (ks,)
  exp_pc: np.ndarray      # (n, 3, ke)
  exp_ev: np.ndarray      # (ke,)
  tex_mu: np.ndarray      # (n, 3) albedo in [0, 1]
  tex_pc: np.ndarray      # (n, 3, kt)
  tex_ev: np.ndarray      # (kt,)
  tri: np.ndarray         # (t, 3) 0-based, counter-clockwise seen from outside

  @property
  def num_vertices(self) -> int:
    return len(self.shape_mu)

  def vertices(self, shape_coef: np.ndarray, exp_coef: np.ndarray) -> np.ndarray:
    return self.shape_mu + self.shape_pc @ shape_coef + self.exp_pc @ exp_coef

  def albedo(self, tex_coef: np.ndarray) -> np.ndarray:
    return np.clip(self.tex_mu + self.tex_pc @ tex_coef, 0.0, 1.0)


_FIELDS = ("shapeMU", "shapePC", "shapeEV", "expPC", "expEV", "texMU", "texPC", "texEV", "tri")


def load_bfm(path: str) -> MorphableModel:
  """Reads a BFM-format .mat file; a missing field or a shape mismatch names the file and field."""
  if not os.path.isfile(path):
    raise DataError(f"missing file {path} (Basel-Face-Model-format .mat)")
  try:
    contents = scipy.io.loadmat(path)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"cannot read MATLAB file {path}: {e}") from e
  if "model" in contents:
    struct = contents["model"][0, 0]
    get = lambda name: struct[name] if name in struct.dtype.names else None  # noqa: E731
  else:
    get = contents.get
  fields = {}
  for name in _FIELDS:
    value = get(name)
    if value is None:
      raise DataError(f"{path}: missing field '{name}'")
    fields[name] = np.asarray(value, np.float64)
  n3 = fields["shapeMU"].size
  if n3 % 3:
    raise DataError(f"{path}: shapeMU has {n3} values, not a multiple of 3")
  n = n3 // 3

  def basis(name: str, ev_name: str) -> tuple[np.ndarray, np.ndarray]:
    pc, ev = fields[name], fields[ev_name].reshape(-1)
    if pc.ndim != 2 or pc.shape[0] != n3 or pc.shape[1] != ev.size:
      raise DataError(f"{path}: {name} must be ({n3}, {ev.size}) to match shapeMU and {ev_name}, "
                      f"got {pc.shape}")
    return pc.reshape(n, 3, -1), ev

  shape_pc, shape_ev = basis("shapePC", "shapeEV")
  exp_pc, exp_ev = basis("expPC", "expEV")
  tex_pc, tex_ev = basis("texPC", "texEV")
  if fields["texMU"].size != n3:
    raise DataError(f"{path}: texMU has {fields['texMU'].size} values, shapeMU {n3}")
  tri = fields["tri"]
  if tri.ndim != 2 or 3 not in tri.shape:
    raise DataError(f"{path}: tri must be (t, 3) or (3, t), got {tri.shape}")
  if tri.shape[1] != 3:
    tri = tri.T
  tri = tri.astype(np.int64) - 1
  if tri.min() < 0 or tri.max() >= n:
    raise DataError(f"{path}: tri indices must be 1-based vertex indices in 1..{n}")
  scale = 255.0 if fields["texMU"].max() > 1.5 else 1.0
  return MorphableModel(fields["shapeMU"].reshape(n, 3), shape_pc, shape_ev, exp_pc, exp_ev,
                        fields["texMU"].reshape(n, 3) / scale, tex_pc / scale, tex_ev,
                        tri.astype(np.uint32))


def save_bfm(model: MorphableModel, path: str) -> None:
  """Writes a model in the same layout (used by tests and to export the stand-in)."""
  n = model.num_vertices
  struct = {"shapeMU": model.shape_mu.reshape(-1, 1), "shapePC": model.shape_pc.reshape(3 * n, -1),
            "shapeEV": model.shape_ev.reshape(-1, 1), "expPC": model.exp_pc.reshape(3 * n, -1),
            "expEV": model.exp_ev.reshape(-1, 1), "texMU": 255.0 * model.tex_mu.reshape(-1, 1),
            "texPC": 255.0 * model.tex_pc.reshape(3 * n, -1), "texEV": model.tex_ev.reshape(-1, 1),
            "tri": model.tri.astype(np.float64) + 1}
  scipy.io.savemat(path, {"model": struct})


def _sphere_grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
  """A latitude-longitude sphere (poles included) and its outward-wound triangles."""
  theta = np.linspace(0, np.pi, rows)              # from +y (top) to -y
  phi = np.linspace(-np.pi, np.pi, cols, endpoint=False)
  t, p = np.meshgrid(theta, phi, indexing="ij")
  verts = np.stack([np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)], -1).reshape(-1, 3)
  tris = []
  for r in range(rows - 1):
    for c in range(cols):
      a, b = r * cols + c, r * cols + (c + 1) % cols
      d, e = (r + 1) * cols + c, (r + 1) * cols + (c + 1) % cols
      tris += [(a, d, b), (b, d, e)]
  return verts, np.array(tris)


def procedural_model(seed: int = 0, rows: int = 32, cols: int = 48, num_shape: int = 20,
                     num_exp: int = 10, num_tex: int = 10) -> MorphableModel:
  """A head-like mesh (face toward +z) with smooth shape, expression and albedo bases."""
  rng = np.random.default_rng(seed)
  unit, tri = _sphere_grid(rows, cols)
  x, y, z = unit.T
  front = np.clip(z, 0, None)
  head = unit * np.array([0.78, 1.0, 0.88])
  nose = 0.3 * np.exp(-((x / 0.16) ** 2 + ((y + 0.05) / 0.25) ** 2)) * front
  brow = 0.05 * np.exp(-((y - 0.3) / 0.08) ** 2) * front
  chin = -0.08 * np.exp(-((y + 0.75) / 0.2) ** 2) * (1 - front)
  eyes = -0.05 * (np.exp(-(((np.abs(x) - 0.3) / 0.12) ** 2 + ((y - 0.15) / 0.08) ** 2)) * front)
  mu = head + unit * (nose + brow + eyes + chin)[:, None]

  mirrored = unit * np.array([-1.0, 1.0, 1.0])

  def fields(count: int, width: float, weight: np.ndarray) -> np.ndarray:
    """(n, count) smooth, left-right symmetric scalar fields on the head (sums of Gaussian
    bumps), orthonormalized and scaled to unit RMS per vertex."""
    out = []
    for _ in range(count):
      centers = unit[rng.integers(len(unit), size=3)]
      amplitude = rng.standard_normal(3)
      bump = lambda p: sum(a * np.exp(-np.sum((p - c) ** 2, -1) / (2 * width ** 2))  # noqa: E731
                           for a, c in zip(amplitude, centers))
      out.append(weight * (bump(unit) + bump(mirrored)))
    q, _ = np.linalg.qr(np.stack(out, -1))
    return q * np.sqrt(len(unit))

  along_normal = lambda f: unit[:, :, None] * f[:, None, :]  # noqa: E731
  shape_pc = along_normal(fields(num_shape, 0.6, np.ones(len(unit))))
  mouth = np.exp(-((x / 0.35) ** 2 + ((y + 0.4) / 0.25) ** 2)) * front
  exp_pc = along_normal(fields(num_exp, 0.3, 0.3 + mouth))
  tex_mu = np.tile([0.78, 0.6, 0.5], (len(unit), 1)) * (0.85 + 0.15 * front)[:, None]
  colors = rng.uniform(0.5, 1.0, (3, num_tex))
  tex_pc = fields(num_tex, 0.6, np.ones(len(unit)))[:, None, :] * colors[None]
  decay = lambda k, scale: scale * 0.85 ** np.arange(k)  # noqa: E731
  return MorphableModel(mu, shape_pc, decay(num_shape, 0.015), exp_pc, decay(num_exp, 0.012),
                        tex_mu, tex_pc, decay(num_tex, 0.06), tri.astype(np.uint32))
