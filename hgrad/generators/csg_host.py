"""f(beta, r) for the CSG grammar, on the host: grammar -> CSG -> raster -> shading.

The CSG stage builds the shape as parts (`csg.build_parts`): unions are drawn
by the z-buffer, not computed (`CSGConfig.exact_unions` computes them).
"""

from __future__ import annotations

import time

import numpy as np

from hgrad.generators import csg
from hgrad.generators import raster
from hgrad.core.bridge import Generator, RenderConfig
from hgrad.generators.host import RasterHost
from hgrad.generators.sample import Sample, normalize_shading



class CSGHost(RasterHost):
  """Renders batches of CSG samples; one long-lived GL context per instance."""

  layout = csg.CSG_LAYOUT       # the default; an instance renders from its config's layout

  def __init__(self, config: csg.CSGConfig):
    self.config = config
    self.layout = config.param_layout
    self.height = self.width = config.resolution

  def render_batch(self, beta_Bxd: np.ndarray, seeds_B: np.ndarray) -> Sample:
    """Renders sample i from (clip(beta[i]), seeds[i]); deterministic in both."""
    seeds_B = self.seeds_for(beta_Bxd, seeds_B)
    start = time.perf_counter()
    noises = [csg.draw_noise(int(seed), self.config.max_depth) for seed in seeds_B]
    trees = [csg.sample_tree(beta.astype(np.float64), noise, self.config)
             for beta, noise in zip(beta_Bxd, noises)]
    self.count(grammar_s=time.perf_counter() - start)
    return self._render(trees, noises, [csg.lighting(self.config, beta) for beta in beta_Bxd])

  def render_trees(self, trees: list, seeds_B: np.ndarray) -> Sample:
    """Renders explicit CSG trees (e.g. Shape Evolution's); seeds give camera and light.

    The lighting is the config's (under the "lighting" layout: its default beta's).
    """
    seeds_B = np.asarray(seeds_B).reshape(-1)
    if len(seeds_B) != len(trees):
      raise ValueError(f"{len(trees)} trees but {len(seeds_B)} seeds")
    return self._render(list(trees), [csg.draw_noise(int(s), self.config.max_depth) for s in seeds_B],
                        [csg.lighting(self.config)] * len(trees))

  def _render(self, trees: list, noises: list, lightings: list) -> Sample:
    booleans = degenerate = 0
    cfg = self.config
    meshes, lights = [], []
    start = time.perf_counter()
    for tree, noise, setting in zip(trees, noises, lightings):
      shape, mesh_stats = (csg.build_mesh if cfg.exact_unions else csg.build_parts)(tree, cfg)
      cam = csg.to_camera(shape, noise, cfg)
      z_far = float(np.abs(cam.verts[:, 2]).max()) + 1.0
      # The camera sits 1 unit (half the view width is 1) in front of the shape.
      verts = cam.verts - np.array([0, 0, z_far], np.float32)
      meshes.append(raster.Meshes(verts, cam.normals, cam.tris,
                                  raster.orthographic(1.0, 1.0, 0.5, 2 * z_far + 0.5)))
      lights.append(csg.light(noise, setting))
      booleans += mesh_stats.booleans
      degenerate += mesh_stats.degenerate_booleans
    csg_s = time.perf_counter() - start
    start = time.perf_counter()
    rasters = self._raster().render(meshes)
    image = np.stack([normalize_shading(raster.lambertian(n, m, d, a), m)
                      for n, m, (d, a) in zip(rasters.normals, rasters.mask, lights)])
    self.count(csg_s=csg_s, render_s=time.perf_counter() - start, samples=len(meshes),
               booleans=booleans, degenerate_booleans=degenerate)
    return Sample(image[..., None], rasters.normals, rasters.depth, rasters.mask)


def csg_generator(config: csg.CSGConfig | None = None, num_workers: int | None = None,
                  render: RenderConfig | None = None):
  """The MIT-Berkeley CSG generator f(beta, r) with its JAX entry point."""
  return Generator(CSGHost, config or csg.CSGConfig(), num_workers, render)
