"""What every host-side generator shares: one lazily opened rasterizer, input checks, stats."""

from __future__ import annotations

import numpy as np

from hgrad import render
from hgrad.layout import ParamLayout

STAT_KEYS = ("grammar_s", "csg_s", "render_s", "samples", "booleans", "degenerate_booleans")


class RasterHost:
  """Base of the CSG, scene and face hosts: a subclass sets layout, height and width.

  The GL context is opened on first use (or by `warm_up`, so that a missing
  driver fails at start-up) and lives as long as the host.
  """

  layout: ParamLayout
  height: int
  width: int
  with_color = False
  _rasterizer: render.BatchRasterizer | None = None

  def _raster(self) -> render.BatchRasterizer:
    if self._rasterizer is None:
      self._rasterizer = render.BatchRasterizer(self.width, self.height,
                                                with_color=self.with_color)
    return self._rasterizer

  def warm_up(self):
    """Opens the GL context now."""
    self._raster()

  def checked(self, beta_Bxd: np.ndarray, seeds_B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """beta validated (shape, NaN) and clipped to the box, one seed per beta."""
    beta_Bxd = self.layout.clip(self.layout.check(beta_Bxd).reshape(-1, self.layout.dim))
    seeds_B = np.asarray(seeds_B).reshape(-1)
    if len(seeds_B) != len(beta_Bxd):
      raise ValueError(f"{len(beta_Bxd)} betas but {len(seeds_B)} seeds")
    return beta_Bxd, seeds_B

  def close(self):
    if self._rasterizer is not None:
      self._rasterizer.close()
      self._rasterizer = None
