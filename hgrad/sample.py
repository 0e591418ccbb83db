"""The training sample X = f(beta, r) shared by every generator and the engine."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Sample(NamedTuple):
  """One rendered sample (or a batch, with leading axes).

  image:   (H, W, 1) shading in [0, 1], 0 off the mask
  normals: (H, W, 3) camera-frame unit normals (x right, y up, z toward viewer), 0 off the mask
  depth:   (H, W) distance along the view axis, > 0 on the mask, 0 off it
  mask:    (H, W) 1 on the object, 0 elsewhere
  """

  image: np.ndarray
  normals: np.ndarray
  depth: np.ndarray
  mask: np.ndarray


def sample_shapes(height: int, width: int, batch_shape: tuple[int, ...] = ()) -> Sample:
  """Shapes of every field, for building ShapeDtypeStructs and empty buffers."""
  b = tuple(batch_shape)
  return Sample(b + (height, width, 1), b + (height, width, 3), b + (height, width), b + (height, width))


def concatenate(samples: list[Sample]) -> Sample:
  return Sample(*(np.concatenate(parts) for parts in zip(*samples)))
