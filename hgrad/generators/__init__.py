"""The paper's grammars -> renders: host-side generators f(beta, r) and the headless rasterizer.

  csg_generator, CSGConfig, CSG_LAYOUT, CSG_LIGHTING_LAYOUT   MIT-Berkeley's 29-d CSG grammar
  scene_generator, SceneConfig, SCENE_LAYOUT                  NYU's 108-d scene perturbation
  face_generator, FaceConfig, FACE_LAYOUT                     the 204-d 3DMM face grammar
  Sample                                                      (image, normals, depth, mask)
  ensure_platform                                             headless GL for a host of your own

Each is an `hgrad.Generator`; a generator of your own needs only the host
contract (`hgrad.Generator`'s docstring) or `Generator.from_function`.
"""

from hgrad.generators.csg import CSG_LAYOUT, CSG_LIGHTING_LAYOUT, CSGConfig
from hgrad.generators.csg_host import csg_generator
from hgrad.generators.faces import FACE_LAYOUT, FaceConfig, face_generator
from hgrad.generators.raster import ensure_platform
from hgrad.generators.sample import Sample
from hgrad.generators.scenes import SCENE_LAYOUT, SceneConfig, scene_generator

__all__ = ["CSG_LAYOUT", "CSG_LIGHTING_LAYOUT", "CSGConfig", "FACE_LAYOUT", "FaceConfig",
           "SCENE_LAYOUT", "Sample", "SceneConfig", "csg_generator", "ensure_platform",
           "face_generator", "scene_generator"]
