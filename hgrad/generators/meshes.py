"""Small mesh builders in numpy (boxes, cylinders, rooms) for the scene generator.

Every builder returns (verts Vx3, normals Vx3, tris Tx3) wound counter-clockwise
seen from the side the normals point to, which is the side the rasterizer
keeps (it culls back faces).
"""

from __future__ import annotations

import numpy as np

Mesh = tuple[np.ndarray, np.ndarray, np.ndarray]

# Unit cube faces: (normal, two in-plane axes u, v with u x v = normal).
_FACES = [
    (np.array(n, float), np.array(u, float), np.array(v, float)) for n, u, v in (
        ((1, 0, 0), (0, 1, 0), (0, 0, 1)), ((-1, 0, 0), (0, 0, 1), (0, 1, 0)),
        ((0, 1, 0), (0, 0, 1), (1, 0, 0)), ((0, -1, 0), (1, 0, 0), (0, 0, 1)),
        ((0, 0, 1), (1, 0, 0), (0, 1, 0)), ((0, 0, -1), (0, 1, 0), (1, 0, 0)))]


def box(size: np.ndarray, inward: bool = False) -> Mesh:
  """Axis-aligned box centered at the origin; `inward` flips it to be seen from inside (a room)."""
  half = np.asarray(size, float) / 2
  verts, normals, tris = [], [], []
  for normal, u, v in _FACES:
    corners = [normal + su * u + sv * v for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    base = len(verts)
    verts += [c * half for c in corners]
    normals += [(-normal if inward else normal)] * 4
    quad = [(0, 1, 2), (0, 2, 3)] if not inward else [(0, 2, 1), (0, 3, 2)]
    tris += [(base + a, base + b, base + c) for a, b, c in quad]
  return np.array(verts), np.array(normals), np.array(tris)


def cylinder(radius: float, height: float, segments: int = 24) -> Mesh:
  """Upright (y axis) cylinder centered at the origin: smooth side, flat caps."""
  angles = np.linspace(0, 2 * np.pi, segments, endpoint=False)
  ring = np.stack([np.cos(angles), np.zeros_like(angles), np.sin(angles)], -1)
  h = height / 2
  side_v = np.concatenate([ring * radius + [0, -h, 0], ring * radius + [0, h, 0]])
  side_n = np.concatenate([ring, ring])
  tris = []
  for i in range(segments):
    j = (i + 1) % segments
    tris += [(i, segments + j, j), (i, segments + i, segments + j)]
  verts, normals = [side_v], [side_n]
  for y, n in ((h, 1.0), (-h, -1.0)):
    center = len(np.concatenate(verts))
    verts.append(np.concatenate([[[0, y, 0]], ring * radius + [0, y, 0]]))
    normals.append(np.tile([0, n, 0], (segments + 1, 1)))
    for i in range(segments):
      j = (i + 1) % segments
      a, b = center + 1 + i, center + 1 + j
      tris.append((center, b, a) if n > 0 else (center, a, b))
  return np.concatenate(verts), np.concatenate(normals), np.array(tris)


def transform(mesh: Mesh, rotation: np.ndarray, translation: np.ndarray) -> Mesh:
  verts, normals, tris = mesh
  return verts @ rotation.T + translation, normals @ rotation.T, tris


def concatenate(meshes: list[Mesh]) -> Mesh:
  offsets = np.cumsum([0] + [len(m[0]) for m in meshes])
  return (np.concatenate([m[0] for m in meshes]), np.concatenate([m[1] for m in meshes]),
          np.concatenate([m[2] + o for m, o in zip(meshes, offsets)]))


def rotation_yxz(yaw: float, pitch: float, roll: float) -> np.ndarray:
  """R = R_y(yaw) R_x(pitch) R_z(roll): heading about the up axis, then tilt, then roll."""
  cy, sy, cp, sp, cr, sr = (np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch),
                            np.cos(roll), np.sin(roll))
  r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  r_x = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
  r_z = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
  return r_y @ r_x @ r_z
