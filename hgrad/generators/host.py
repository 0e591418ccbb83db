"""What every host-side generator shares: one lazily opened rasterizer, input checks, stats."""

from __future__ import annotations

import jax
import numpy as np

from hgrad.generators import raster
from hgrad.core.layout import ParamLayout
from hgrad.generators.sample import Sample, sample_shapes

STAT_KEYS = ("grammar_s", "csg_s", "render_s", "samples", "booleans", "degenerate_booleans")


class RasterHost:
  """Base of the CSG, scene and face hosts: a subclass sets layout, height and width.

  The GL context is opened on first use (or by `warm_up`, so that a missing
  driver fails at start-up) and lives as long as the host.
  """

  layout: ParamLayout
  height: int
  width: int
  channels = 1
  with_color = False
  _rasterizer: raster.BatchRasterizer | None = None
  _stats: dict | None = None

  def count(self, **values: float) -> None:
    """Adds to the statistics `pop_stats` reports (STAT_KEYS: seconds and counts)."""
    stats = self._stats if self._stats is not None else dict.fromkeys(STAT_KEYS, 0.0)
    for key, value in values.items():
      stats[key] = stats.get(key, 0.0) + float(value)
    self._stats = stats

  def pop_stats(self) -> dict:
    """The statistics since the last call (grammar, CSG and render seconds, samples, booleans)."""
    stats, self._stats = self._stats or dict.fromkeys(STAT_KEYS, 0.0), None
    return stats

  def _raster(self) -> raster.BatchRasterizer:
    if self._rasterizer is None:
      self._rasterizer = raster.BatchRasterizer(self.width, self.height,
                                                with_color=self.with_color)
    return self._rasterizer

  def warm_up(self):
    """Opens the GL context now."""
    self._raster()

  @property
  def output_spec(self) -> Sample:
    """One sample's outputs (`hgrad.Generator` builds the callback's result types from it)."""
    shapes = sample_shapes(self.height, self.width, (), self.channels)
    return Sample(*(jax.ShapeDtypeStruct(s, np.float32) for s in shapes))

  @staticmethod
  def seeds_for(beta_Bxd: np.ndarray, seeds_B: np.ndarray) -> np.ndarray:
    """One seed per beta (beta arrives checked and clipped by `hgrad.Generator.render`)."""
    seeds_B = np.asarray(seeds_B).reshape(-1)
    if len(seeds_B) != len(beta_Bxd):
      raise ValueError(f"{len(beta_Bxd)} betas but {len(seeds_B)} seeds")
    return seeds_B

  def close(self):
    if self._rasterizer is not None:
      self._rasterizer.close()
      self._rasterizer = None
