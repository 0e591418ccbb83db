"""The gallery job: samples of f(beta0, r) as shading | normals | depth | mask."""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from hgrad import viz
from hgrad.core.config import to_dataclass
from hgrad.generators.csg import CSGConfig
from hgrad.generators.csg_host import csg_generator


def run(config, workdir: str) -> str:
  """Renders `config.num_samples` samples at beta0 and writes DIR/gallery.png."""
  if config.num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {config.num_samples}")
  os.makedirs(workdir, exist_ok=True)
  csg_config = to_dataclass(CSGConfig, config.csg, where="config.csg")
  with csg_generator(csg_config, num_workers=config.num_workers) as generator:
    seeds = config.seed + np.arange(config.num_samples)
    beta = np.tile(generator.beta0, (config.num_samples, 1))
    batch = generator.render(beta, seeds)
    stats = generator.reset_stats()
  path = os.path.join(workdir, "gallery.png")
  viz.save_png(viz.sample_grid(batch, config.columns), path, scale=config.scale)
  logging.info("wrote %s (%d samples, %d of %d booleans degenerate)", path,
               config.num_samples, stats["degenerate_booleans"], stats["booleans"])
  return path
