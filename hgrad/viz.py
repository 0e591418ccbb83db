"""Images for people: sample panels and grids (PNG via Pillow)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from hgrad.generators.sample import Sample


def normals_rgb(normals_HxWx3: np.ndarray, mask_HxW: np.ndarray) -> np.ndarray:
  """Camera-frame normals as colours: (n + 1) / 2, black off the mask."""
  return (normals_HxWx3 + 1.0) / 2.0 * mask_HxW[..., None]


def depth_gray(depth_HxW: np.ndarray, mask_HxW: np.ndarray) -> np.ndarray:
  """Depth normalized over the mask, near = bright, black off the mask."""
  on = mask_HxW > 0
  if not on.any():
    return np.zeros_like(depth_HxW)
  near, far = depth_HxW[on].min(), depth_HxW[on].max()
  scaled = 1.0 - 0.8 * (depth_HxW - near) / max(far - near, 1e-6)
  return np.where(on, scaled, 0.0)


STRIP_COLUMNS = ("input", "normals", "depth", "mask")   # a sample strip, left to right
GUTTER = 2                                               # pixels between the tiles of a grid


def sample_strip(sample: Sample) -> np.ndarray:
  """One sample as input image | normals | depth | mask, float RGB in [0, 1]."""
  gray = lambda x: np.repeat(np.clip(x, 0, 1)[..., None], 3, axis=-1)  # noqa: E731
  image = np.clip(sample.image, 0, 1) if sample.image.shape[-1] == 3 else gray(sample.image[..., 0])
  return np.concatenate([
      image,
      normals_rgb(sample.normals, sample.mask),
      gray(depth_gray(sample.depth, sample.mask)),
      gray(sample.mask),
  ], axis=1)


def grid(tiles: list[np.ndarray], columns: int, pad: int = GUTTER) -> np.ndarray:
  """Lays equal-size RGB tiles out row by row with a white gutter."""
  h, w, _ = tiles[0].shape
  rows = -(-len(tiles) // columns)
  out = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), np.float32)
  for k, tile in enumerate(tiles):
    r, c = divmod(k, columns)
    out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = tile
  return out


def save_png(rgb: np.ndarray, path: str, scale: int = 1) -> None:
  img = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
  if scale > 1:
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
  img.save(path)


def sample_grid(batch: Sample, columns: int = 4) -> np.ndarray:
  """A batch of samples, each as a strip, laid out `columns` strips per row."""
  strips = [sample_strip(Sample(*(np.asarray(x[i]) for x in batch)))
            for i in range(len(batch.image))]
  return grid(strips, columns)
