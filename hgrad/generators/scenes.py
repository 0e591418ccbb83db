"""Indoor scenes and their 108-d perturbation grammar (the NYU Depth experiment).

The paper perturbs SUNCG scenes, which are no longer distributed. Here a
procedural source plays the role of the original configurations (E0, P0):
from the seed, a room (floor, walls, ceiling), furniture-like boxes and
cylinders standing on the floor (some against walls), and a camera at a
plausible height looking into the room. beta then perturbs every object and
the camera (docs/design.md §3): 12 degrees of freedom (objects: x, y, z displacement
in metres, yaw, pitch, roll; camera: the same six), each a mixture of 3
components (Gaussians for displacements, von Mises for angles) with weights,
means and variances (concentrations for von Mises) in beta: 12 x 9 = 108.

Rendering: perspective, 4:3, vertical field of view of the NYU Kinect RGB
camera (fy = 519.47 px at 480 rows -> 49.6 degrees). Camera frame as
everywhere: x right, y up, z toward the viewer; depth in metres along the
view axis. Shading: Lambertian from one directional light (from the seed)
plus ambient, the network's grayscale input.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from hgrad.generators import meshes
from hgrad.generators import mixtures
from hgrad.generators import raster
from hgrad.core.bridge import Generator, RenderConfig
from hgrad.generators.host import RasterHost
from hgrad.core.layout import ParamLayout
from hgrad.generators.sample import Sample, normalize_shading

DISPLACEMENTS = ("dx", "dy", "dz")
ANGLES = ("yaw", "pitch", "roll")
DOFS = tuple(f"{who}_{dof}" for who in ("object", "camera") for dof in DISPLACEMENTS + ANGLES)
NYU_FOV_Y_DEG = float(np.degrees(2 * np.arctan(240.0 / 519.469611)))


def _layout() -> ParamLayout:
  specs = []
  for dof in DOFS:
    if dof.endswith(DISPLACEMENTS):
      specs += mixtures.mixture_specs(dof, "gaussian", (-1.0, 1.0), (1e-4, 0.5),
                                      (-0.15, 0.0, 0.15), 0.01, f"{dof} (m)")
    else:
      specs += mixtures.mixture_specs(dof, "vonmises", (-np.pi, np.pi), (0.5, 400.0),
                                      (-0.1, 0.0, 0.1), 100.0, f"{dof} (rad)")
  return ParamLayout("scene", specs)


SCENE_LAYOUT = _layout()


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  height: int = 48
  width: int = 64
  fov_y_deg: float = NYU_FOV_Y_DEG
  min_objects: int = 3
  max_objects: int = 8
  ambient: float = 0.25
  near: float = 0.05
  far: float = 30.0

  def __post_init__(self):
    if self.height < 8 or self.width < 8:
      raise ValueError(f"SceneConfig size must be >= 8x8, got {self.height}x{self.width}")
    if not 1 <= self.min_objects <= self.max_objects:
      raise ValueError("SceneConfig needs 1 <= min_objects <= max_objects")
    if not 0.0 < self.fov_y_deg < 170.0:
      raise ValueError(f"SceneConfig.fov_y_deg out of range: {self.fov_y_deg}")

  @property
  def resolution(self) -> tuple[int, int]:
    return (self.height, self.width)


@dataclasses.dataclass
class SceneObject:
  mesh: meshes.Mesh          # in the object's frame, centered
  position: np.ndarray       # world, center
  yaw: float


@dataclasses.dataclass
class BaseScene:
  """E0, P0: the unperturbed room, objects and camera drawn from the seed."""

  room: meshes.Mesh
  objects: list[SceneObject]
  camera_position: np.ndarray
  camera_yaw: float
  camera_pitch: float
  light: np.ndarray          # unit direction toward the light, world frame


def base_scene(seed: int, config: SceneConfig) -> BaseScene:
  rng = np.random.default_rng([seed, 0])
  w, d, h = rng.uniform(3.0, 6.0), rng.uniform(3.0, 6.0), rng.uniform(2.4, 3.0)
  room = meshes.transform(meshes.box([w, h, d], inward=True), np.eye(3), np.array([w / 2, h / 2, d / 2]))
  objects = []
  for _ in range(rng.integers(config.min_objects, config.max_objects + 1)):
    if rng.random() < 0.7:
      size = np.array([rng.uniform(0.4, 2.0), rng.uniform(0.4, 1.8), rng.uniform(0.4, 1.2)])
      mesh, footprint = meshes.box(size), size[[0, 2]] / 2
    else:
      radius, height = rng.uniform(0.15, 0.5), rng.uniform(0.3, 1.6)
      size = np.array([2 * radius, height, 2 * radius])
      mesh, footprint = meshes.cylinder(radius, height), np.array([radius, radius])
    if rng.random() < 0.5:   # against a wall (not the camera's, z = d), facing into the room
      wall = (0, 1, 3)[rng.integers(3)]
      yaw = wall * np.pi / 2
      along = rng.uniform(0.2, 0.8)
      inset = footprint[1] + 0.02
      x, z = [(along * w, inset), (w - inset, along * (d - 1.0)), None,
              (inset, along * (d - 1.0))][wall]
    else:
      yaw = rng.uniform(-np.pi, np.pi)
      x, z = rng.uniform(0.8, w - 0.8), rng.uniform(0.8, d - 1.5)   # clear of the camera
    objects.append(SceneObject(mesh, np.array([x, size[1] / 2, z]), float(yaw)))
  camera = np.array([rng.uniform(0.3 * w, 0.7 * w), rng.uniform(1.1, 1.7), d - 0.3])
  look = np.array([w / 2, 0.8, d / 2]) - camera
  yaw = float(np.arctan2(-look[0], -look[2]) + rng.uniform(-0.4, 0.4))
  pitch = float(np.radians(rng.uniform(-20.0, 0.0)))
  light = np.array([rng.uniform(-1, 1), rng.uniform(0.5, 1.5), rng.uniform(-1, 1)])
  return BaseScene(room, objects, camera, yaw, pitch, light / np.linalg.norm(light))


def perturbations(beta: np.ndarray, seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-object (count, 6) and camera (6,) perturbations: dx, dy, dz, yaw, pitch, roll."""
  rng = np.random.default_rng([seed, 1])
  u_component = rng.random((len(DOFS), 64))   # fixed layout: up to 63 objects + the camera
  noise_gauss = rng.standard_normal((len(DOFS), 64))
  noise_unif = rng.random((len(DOFS), 64))
  values = np.zeros((len(DOFS), 64))
  for i, dof in enumerate(DOFS):
    params = beta[9 * i:9 * (i + 1)]
    kind = "gaussian" if dof.endswith(DISPLACEMENTS) else "vonmises"
    noise = noise_gauss[i] if kind == "gaussian" else noise_unif[i]
    values[i] = mixtures.sample(params, kind, u_component[i], noise)
  return values[:6, :count].T, values[6:, 63]


def world_to_camera(position: np.ndarray, yaw: float, pitch: float, roll: float) -> np.ndarray:
  """4x4 view matrix of a camera at `position` with the given heading, tilt and roll."""
  rotation = meshes.rotation_yxz(yaw, pitch, roll)
  view = np.eye(4)
  view[:3, :3] = rotation.T
  view[:3, 3] = -rotation.T @ position
  return view


def perturbed_scene(beta: np.ndarray, seed: int, config: SceneConfig):
  """The whole scene mesh in the camera frame, and the light in the camera frame."""
  scene = base_scene(seed, config)
  objects, camera = perturbations(beta, seed, len(scene.objects))
  parts = [scene.room]
  for obj, (dx, dy, dz, yaw, pitch, roll) in zip(scene.objects, objects):
    rotation = meshes.rotation_yxz(obj.yaw + yaw, pitch, roll)
    parts.append(meshes.transform(obj.mesh, rotation, obj.position + [dx, dy, dz]))
  verts, normals, tris = meshes.concatenate(parts)
  dx, dy, dz, yaw, pitch, roll = camera
  view = world_to_camera(scene.camera_position + [dx, dy, dz], scene.camera_yaw + yaw,
                         scene.camera_pitch + pitch, roll)
  verts = verts @ view[:3, :3].T + view[:3, 3]
  normals = normals @ view[:3, :3].T
  return (verts.astype(np.float32), normals.astype(np.float32), tris.astype(np.uint32),
          (view[:3, :3] @ scene.light).astype(np.float32))


class SceneHost(RasterHost):
  """Renders batches of perturbed scenes; one long-lived GL context per instance."""

  layout = SCENE_LAYOUT

  def __init__(self, config: SceneConfig):
    self.config = config
    self.height, self.width = config.height, config.width
    aspect = config.width / config.height
    self._projection = raster.perspective(np.radians(config.fov_y_deg), aspect, config.near,
                                          config.far)

  def render_batch(self, beta_Bxd: np.ndarray, seeds_B: np.ndarray) -> Sample:
    seeds_B = self.seeds_for(beta_Bxd, seeds_B)
    start = time.perf_counter()
    tiles, lights = [], []
    for beta, seed in zip(beta_Bxd, seeds_B):
      verts, normals, tris, light = perturbed_scene(beta.astype(np.float64), int(seed), self.config)
      tiles.append(raster.Meshes(verts, normals, tris, self._projection))
      lights.append(light)
    scene_s = time.perf_counter() - start
    start = time.perf_counter()
    rasters = self._raster().render(tiles)
    image = np.stack([normalize_shading(raster.lambertian(n, m, l, self.config.ambient), m)
                      for n, m, l in zip(rasters.normals, rasters.mask, lights)])
    self.count(grammar_s=scene_s, render_s=time.perf_counter() - start, samples=len(tiles))
    return Sample(image[..., None], rasters.normals, rasters.depth, rasters.mask)


def scene_generator(config: SceneConfig | None = None, num_workers: int | None = None,
                    render: RenderConfig | None = None) -> Generator:
  """The scene-perturbation generator f(beta, r) with its JAX entry point."""
  return Generator(SceneHost, config or SceneConfig(), num_workers, render)
