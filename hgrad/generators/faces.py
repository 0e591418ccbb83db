"""3DMM faces and their 204-d sampling grammar (the Basel Face experiment: depth from a face image).

beta (docs/design.md §3): the first 10 principal dimensions each of shape, expression
and texture (30 coefficients, in units of each dimension's standard
deviation) are drawn from a mixture of 3 diagonal Gaussians: 3 weights, 3 x 30
means, 3 x 30 variances = 183. The pose (yaw, pitch, roll) is drawn from a
mixture of 3 von Mises: 3 weights, 3 x 3 means, 3 x 3 concentrations = 21.
183 + 21 = 204. The remaining principal dimensions come from the model's
prior N(0, EV^2) and are not optimized.

Light: one white directional light on the hemisphere the face looks into
(the camera's side: +z in the camera frame, which is the model's -z side
when the face looks down -z, as in the paper), drawn from the seed, plus
ambient. Rendering: perspective (30 degrees), the head centred 4.5 units in
front of the camera; image = albedo * (ambient + (1 - ambient) max(0, n.l)),
RGB in [0, 1]; depth in model units along the view axis.
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
from hgrad.generators import bfm
from hgrad.core.layout import ParamLayout, ParamSpec
from hgrad.generators.sample import Sample

GROUPS = ("shape", "exp", "tex")
PER_GROUP = 10
ANGLES = ("yaw", "pitch", "roll")
_DEFAULT_KAPPA = {"yaw": 8.0, "pitch": 20.0, "roll": 60.0}


def _layout() -> ParamLayout:
  k = mixtures.COMPONENTS
  coef_names = [f"{g}{j}" for g in GROUPS for j in range(PER_GROUP)]
  specs = [ParamSpec(f"coef_w{c}", 0.0, 1.0, 1.0 / k, f"weight of coefficient component {c}",
                     kind="weight", group="coef") for c in range(k)]
  specs += [ParamSpec(f"coef_mean{c}_{n}", -3.0, 3.0, (c - 1) * 0.5,
                      f"component {c}: mean of {n} (in prior standard deviations)")
            for c in range(k) for n in coef_names]
  specs += [ParamSpec(f"coef_var{c}_{n}", 0.01, 4.0, 1.0, f"component {c}: variance of {n}")
            for c in range(k) for n in coef_names]
  specs += [ParamSpec(f"pose_w{c}", 0.0, 1.0, 1.0 / k, f"weight of pose component {c}",
                      kind="weight", group="pose") for c in range(k)]
  specs += [ParamSpec(f"pose_mean{c}_{a}", -np.pi / 2, np.pi / 2, (c - 1) * 0.2 if a == "yaw" else 0.0,
                      f"component {c}: mean {a} (rad)") for c in range(k) for a in ANGLES]
  specs += [ParamSpec(f"pose_kappa{c}_{a}", 0.5, 400.0, _DEFAULT_KAPPA[a],
                      f"component {c}: von Mises concentration of {a}")
            for c in range(k) for a in ANGLES]
  return ParamLayout("face", specs)


FACE_LAYOUT = _layout()
_NUM_COEF = len(GROUPS) * PER_GROUP


@dataclasses.dataclass(frozen=True)
class FaceConfig:
  resolution: int = 64
  model_path: str = ""          # a BFM-format .mat; "" = the embedded procedural stand-in
  fov_deg: float = 30.0
  distance: float = 4.5
  ambient_low: float = 0.2
  ambient_high: float = 0.4
  light_max_angle_deg: float = 60.0

  def __post_init__(self):
    if self.resolution < 8:
      raise ValueError(f"FaceConfig.resolution must be >= 8, got {self.resolution}")
    if not 0.0 < self.fov_deg < 120.0 or self.distance <= 0:
      raise ValueError("FaceConfig.fov_deg must be in (0, 120) and distance > 0")


def load_model(config: FaceConfig) -> bfm.MorphableModel:
  return bfm.load_bfm(config.model_path) if config.model_path else bfm.procedural_model()


class FaceParams:
  """Coefficients (full length), pose and light of one sample."""

  def __init__(self, shape, exp, tex, pose, light, ambient):
    self.shape, self.exp, self.tex = shape, exp, tex
    self.pose, self.light, self.ambient = pose, light, ambient


def sample_params(beta: np.ndarray, seed: int, model: bfm.MorphableModel,
                  config: FaceConfig) -> FaceParams:
  """Reparameterized draw: every random number comes from the seed in a fixed layout."""
  rng = np.random.default_rng([seed, 2])
  u_coef, u_pose = rng.random(2)
  z_coef = rng.standard_normal(_NUM_COEF)
  u_angles = rng.random(3)
  z_rest = rng.standard_normal(len(model.shape_ev) + len(model.exp_ev) + len(model.tex_ev))
  u_light = rng.random(3)
  k = mixtures.COMPONENTS
  weights = beta[:k]
  means = beta[k:k + k * _NUM_COEF].reshape(k, _NUM_COEF)
  variances = beta[k + k * _NUM_COEF:k + 2 * k * _NUM_COEF].reshape(k, _NUM_COEF)
  c = int(mixtures.choose(weights[None], np.array([u_coef]))[0])
  coef = means[c] + np.sqrt(variances[c]) * z_coef
  offset = k + 2 * k * _NUM_COEF
  pose_w = beta[offset:offset + k]
  pose_mean = beta[offset + k:offset + 4 * k].reshape(k, 3)
  pose_kappa = beta[offset + 4 * k:offset + 7 * k].reshape(k, 3)
  p = int(mixtures.choose(pose_w[None], np.array([u_pose]))[0])
  pose = np.angle(np.exp(1j * (pose_mean[p] + mixtures.vonmises_icdf(u_angles, pose_kappa[p]))))
  full = []
  start = 0
  for g, ev in zip(range(3), (model.shape_ev, model.exp_ev, model.tex_ev)):
    values = z_rest[start:start + len(ev)].copy()
    n = min(PER_GROUP, len(ev))
    values[:n] = coef[g * PER_GROUP:g * PER_GROUP + n]
    full.append(values * ev)
    start += len(ev)
  cos_max = np.cos(np.radians(config.light_max_angle_deg))
  cos_t = 1.0 - u_light[0] * (1.0 - cos_max)
  sin_t = np.sqrt(max(0.0, 1.0 - cos_t ** 2))
  phi = 2 * np.pi * u_light[1]
  light = np.array([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t])
  ambient = config.ambient_low + u_light[2] * (config.ambient_high - config.ambient_low)
  return FaceParams(full[0], full[1], full[2], pose, light, ambient)


def vertex_normals(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
  """Area-weighted vertex normals of a closed, outward-wound mesh."""
  a, b, c = (verts[tris[:, i]] for i in range(3))
  face = np.cross(b - a, c - a)
  normals = np.zeros_like(verts)
  for i in range(3):
    np.add.at(normals, tris[:, i], face)
  return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


class FaceHost(RasterHost):
  """Renders batches of 3DMM faces (RGB image, normals, depth, mask)."""

  layout = FACE_LAYOUT
  channels = 3
  with_color = True

  def __init__(self, config: FaceConfig):
    self.config = config
    self.height = self.width = config.resolution
    self.model = load_model(config)
    self._projection = raster.perspective(np.radians(config.fov_deg), 1.0, 0.5, 50.0)

  def render_params(self, params: list[FaceParams]) -> Sample:
    """Renders explicit coefficients, poses and lights (e.g. the evaluation protocol)."""
    start = time.perf_counter()
    tiles = []
    for p in params:
      verts = self.model.vertices(p.shape, p.exp)
      rotation = meshes.rotation_yxz(*p.pose)
      verts = verts @ rotation.T - np.array([0.0, 0.0, self.config.distance])
      normals = vertex_normals(verts, self.model.tri)
      tiles.append(raster.Meshes(verts.astype(np.float32), normals.astype(np.float32),
                                 self.model.tri, self._projection,
                                 self.model.albedo(p.tex).astype(np.float32)))
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    rasters = self._raster().render(tiles)
    shading = np.stack([raster.lambertian(n, m, p.light, p.ambient)
                        for n, m, p in zip(rasters.normals, rasters.mask, params)])
    image = np.clip(rasters.color * shading[..., None], 0.0, 1.0)
    self.count(grammar_s=build_s, render_s=time.perf_counter() - start, samples=len(params))
    return Sample(image.astype(np.float32), rasters.normals, rasters.depth, rasters.mask)

  def render_batch(self, beta_Bxd: np.ndarray, seeds_B: np.ndarray) -> Sample:
    seeds_B = self.seeds_for(beta_Bxd, seeds_B)
    start = time.perf_counter()
    params = [sample_params(b.astype(np.float64), int(s), self.model, self.config)
              for b, s in zip(beta_Bxd, seeds_B)]
    self.count(grammar_s=time.perf_counter() - start)
    return self.render_params(params)


def face_generator(config: FaceConfig | None = None, num_workers: int | None = None,
                   render: RenderConfig | None = None) -> Generator:
  """The 3DMM face generator f(beta, r) with its JAX entry point."""
  return Generator(FaceHost, config or FaceConfig(), num_workers, render)


PROTOCOL_LIGHTS = (np.array([-0.5, 0.3, 1.0]), np.array([0.0, 0.3, 1.0]), np.array([0.5, 0.3, 1.0]))
PROTOCOL_POSES = tuple((np.radians(yaw), np.radians(pitch), 0.0)
                       for yaw in (-30, 0, 30) for pitch in (-15, 0, 15))


def protocol_params(model: bfm.MorphableModel, identities: int = 10, seed: int = 4242,
                    ambient: float = 0.3) -> tuple[list[FaceParams], np.ndarray]:
  """The paper's evaluation protocol: identities x 3 lights x 9 poses, and each render's identity.

  Identities are drawn from the model's prior with a seed no training sample
  uses (training seeds come from the run's key).
  """
  rng = np.random.default_rng([seed, 3])
  params, identity_of = [], []
  for i in range(identities):
    shape, exp, tex = (rng.standard_normal(len(ev)) * ev
                       for ev in (model.shape_ev, model.exp_ev, model.tex_ev))
    for light in PROTOCOL_LIGHTS:
      for pose in PROTOCOL_POSES:
        params.append(FaceParams(shape, exp, tex, np.array(pose), light / np.linalg.norm(light),
                                 ambient))
        identity_of.append(i)
  return params, np.array(identity_of)
