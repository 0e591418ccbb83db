"""The CSG shape grammar of the MIT-Berkeley experiment (docs/design.md §3), 29-d beta.

Two layouts (`CSGConfig.layout`): "paper", the paper's 29-d grammar beta (the
lighting is fixed by `CSGConfig`); "lighting", the same 29 dimensions and
three more for the illumination (light cone, ambient mean and spread), so
beta can act on the lighting gap between renders and photographs.

    S => E;  E => C(E, T(E)) | P;  C => union | subtract;
    P => sphere | cube | truncated_cone | tetrahedron;
    T => attach * translate * rotate * scale

Two stages, timed separately by the benchmark:

* `sample_tree(beta, noise, config)`: the grammar. Pure numpy. Every random
  number is drawn up front from the seed in a fixed heap layout (`draw_noise`),
  so the draws do not depend on beta. Discrete choices are inverse CDFs of
  those uniforms, continuous values are `mu + std * z`: a small change of beta
  moves a sample smoothly or not at all.
* `build_mesh(tree, config)`: the geometry, through manifold3d booleans.
  Primitives carry vertex normals (sharp edges kept sharp) that manifold
  carries through transforms and booleans, so the rendered normals are the
  surfaces' own normals, not image derivatives.
* `build_parts(tree, config)`: the same shape as closed parts whose union it
  is, for the renderer. A union is not computed: a z-buffer draws the union
  of closed surfaces seen from outside exactly (a surface inside another
  part is behind that part's surface), and its bounding box is the union of
  the parts' boxes; only a subtraction needs the boolean (its operands'
  unions first). At beta0 this skips about half of the booleans, the
  renderer's largest cost.

Degenerate-boolean policy: a subtraction (or, in `build_mesh`, a union) whose
result is empty or invalid is skipped, i.e. the node evaluates to its base
operand; this is deterministic in (beta, seed) and counted in
`MeshStats.degenerate_booleans`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Union

import manifold3d
import numpy as np

from hgrad.core.layout import ParamLayout, ParamSpec
from hgrad.generators import meshes as mesh_lib

PRIMITIVES = ("sphere", "cube", "truncated_cone", "tetrahedron")
OPERATIONS = ("union", "subtract")

_VAR_LOW = 1e-4


def _spec(name, low, high, default, doc):
  """Variances (`*_var`, `*_logvar`) are positive and relative: log scale for the optimizer;
  p_expand is a probability, the other p_* are rule weights (logits in "logit" coordinates)."""
  kind = "probability" if name == "p_expand" else "weight" if name.startswith("p_") else ""
  group = ("operation" if name in ("p_union", "p_subtract") else "primitive") if kind == "weight" else ""
  return ParamSpec(name, low, high, default, doc, log_scale=name.endswith("var"), kind=kind,
                   group=group)


CSG_LAYOUT = ParamLayout("csg", [
    _spec("p_sphere", 0.0, 1.0, 0.25, "weight of P => sphere (weights are normalized; all zero = uniform)"),
    _spec("p_cube", 0.0, 1.0, 0.25, "weight of P => cube"),
    _spec("p_truncated_cone", 0.0, 1.0, 0.25, "weight of P => truncated_cone"),
    _spec("p_tetrahedron", 0.0, 1.0, 0.25, "weight of P => tetrahedron"),
    _spec("p_union", 0.0, 1.0, 0.5, "weight of C => union (normalized with p_subtract; both zero = uniform)"),
    _spec("p_subtract", 0.0, 1.0, 0.5, "weight of C => subtract"),
    _spec("p_expand", 0.0, 1.0, 0.5, "probability of E => C(E, T(E)) rather than E => P, above the depth bound"),
    _spec("translate_x_mean", -1.0, 1.0, 0.0, "mean offset from the attach point, in units of the base's mean half-extent"),
    _spec("translate_y_mean", -1.0, 1.0, 0.0, "as translate_x_mean, y axis"),
    _spec("translate_z_mean", -1.0, 1.0, 0.0, "as translate_x_mean, z axis"),
    _spec("translate_x_var", _VAR_LOW, 1.0, 0.05, "variance of the x offset"),
    _spec("translate_y_var", _VAR_LOW, 1.0, 0.05, "variance of the y offset"),
    _spec("translate_z_var", _VAR_LOW, 1.0, 0.05, "variance of the z offset"),
    _spec("scale_x_logmean", -1.5, 1.5, -0.3, "mean of log scale of the attached part, x"),
    _spec("scale_y_logmean", -1.5, 1.5, -0.3, "mean of log scale, y"),
    _spec("scale_z_logmean", -1.5, 1.5, -0.3, "mean of log scale, z"),
    _spec("scale_x_logvar", _VAR_LOW, 1.0, 0.1, "variance of log scale, x"),
    _spec("scale_y_logvar", _VAR_LOW, 1.0, 0.1, "variance of log scale, y"),
    _spec("scale_z_logvar", _VAR_LOW, 1.0, 0.1, "variance of log scale, z"),
    _spec("sphere_radius_logmean", -1.5, 1.0, -0.3, "mean of log sphere radius"),
    _spec("sphere_radius_logvar", _VAR_LOW, 1.0, 0.05, "variance of log sphere radius"),
    _spec("box_length_mean", 0.1, 3.0, 1.2, "mean cube side length (clipped below at min_size)"),
    _spec("box_length_var", _VAR_LOW, 1.0, 0.05, "variance of cube side length"),
    _spec("cone_radius_logmean", -1.5, 1.0, -0.5, "mean of log radius; bottom and top radius are two draws"),
    _spec("cone_radius_logvar", _VAR_LOW, 1.0, 0.1, "variance of log radius"),
    _spec("cone_height_logmean", -1.5, 1.5, 0.0, "mean of log height"),
    _spec("cone_height_logvar", _VAR_LOW, 1.0, 0.05, "variance of log height"),
    _spec("tetra_length_logmean", -1.5, 1.5, 0.3, "mean of log edge length"),
    _spec("tetra_length_logvar", _VAR_LOW, 1.0, 0.05, "variance of log edge length"),
])

# The illumination as beta (the "lighting" layout). Its defaults are `CSGConfig`'s
# lighting (a 60 degree cone, ambient uniform on [0, 0.3]): beta0 renders the same images.
LIGHTING_SPECS = (
    ParamSpec("light_max_angle_deg", 0.0, 90.0, 60.0,
              "half-angle of the cone around the view axis the light direction is drawn from"),
    ParamSpec("ambient_mean", 0.0, 0.6, 0.15, "mean of the ambient term"),
    ParamSpec("ambient_spread", 0.0, 0.3, 0.15,
              "half-width of the ambient term's uniform draw (clipped to [0, 0.95])"),
)
CSG_LIGHTING_LAYOUT = ParamLayout("csg_lighting", CSG_LAYOUT.specs + LIGHTING_SPECS)
LAYOUTS = {"paper": CSG_LAYOUT, "lighting": CSG_LIGHTING_LAYOUT}

_IDX = {n: i for i, n in enumerate(CSG_LAYOUT.names)}
# Per heap node: uniforms (expand, operation, primitive) and normals
# (3 size, 3 translate, 3 scale, 4 rotation quaternion, 3 attach direction).
_NODE_UNIFORMS = 3
_NODE_NORMALS = 16


@dataclasses.dataclass(frozen=True)
class CSGConfig:
  """Settings of the CSG generator that beta does not control."""

  resolution: int = 64
  max_depth: int = 3
  sphere_segments: int = 32
  cone_segments: int = 32
  sharp_angle_deg: float = 45.0
  min_size: float = 0.05
  fill: float = 0.9
  light_max_angle_deg: float = 60.0
  ambient_low: float = 0.0
  ambient_high: float = 0.3
  # "paper": the 29-d beta, lighting from the three fields above; "lighting": 32-d, the
  # lighting from beta's last three dimensions (the fields above are then unused).
  layout: str = "paper"
  # True: unions computed by manifold3d too (the exact solid; slower). The images differ
  # only on the parts' intersection curves (docs/benchmarks.md, "Rendering through the bridge").
  exact_unions: bool = False

  def __post_init__(self):
    checks = {
        "resolution": self.resolution >= 8,
        "max_depth": 0 <= self.max_depth <= 6,
        "sphere_segments": self.sphere_segments >= 8,
        "cone_segments": self.cone_segments >= 3,
        "sharp_angle_deg": 0.0 < self.sharp_angle_deg < 180.0,
        "min_size": self.min_size > 0.0,
        "fill": 0.0 < self.fill <= 1.0,
        "light_max_angle_deg": 0.0 <= self.light_max_angle_deg <= 90.0,
        "ambient_low": 0.0 <= self.ambient_low <= self.ambient_high,
        "ambient_high": self.ambient_low <= self.ambient_high < 1.0,
    }
    for name, ok in checks.items():
      if not ok:
        raise ValueError(f"CSGConfig.{name} is out of range: {getattr(self, name)!r}")
    if self.layout not in LAYOUTS:
      raise ValueError(f"CSGConfig.layout must be one of {sorted(LAYOUTS)}, got {self.layout!r}")
    own = {f: getattr(self, f) for f in ("light_max_angle_deg", "ambient_low", "ambient_high")}
    defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in own}
    if self.layout == "lighting" and own != defaults:
      raise ValueError(f"CSGConfig: under the 'lighting' layout beta sets the light; {own} would "
                       "be ignored (set the light through beta0, or use layout='paper')")

  @property
  def param_layout(self) -> ParamLayout:
    """The beta layout this config renders from."""
    return LAYOUTS[self.layout]


class Noise(NamedTuple):
  """All randomness of one sample, drawn from its seed before beta is read."""

  node_u: np.ndarray      # (nodes, 3) uniforms
  node_z: np.ndarray      # (nodes, 16) standard normals
  camera_q: np.ndarray    # (4,) normals -> uniform random rotation
  light_u: np.ndarray     # (3,) uniforms -> light direction and ambient


class Primitive(NamedTuple):
  kind: int                 # index into PRIMITIVES
  size: tuple[float, ...]   # sphere (r,), cube (L,), cone (r_bottom, r_top, h), tetra (L,)


class Combine(NamedTuple):
  operation: int            # index into OPERATIONS
  base: "Tree"
  part: "Tree"
  attach_dir: np.ndarray    # (3,) unit vector: where on the base the part attaches
  translation: np.ndarray   # (3,) in units of the base's mean half-extent
  rotation: np.ndarray      # (3, 3)
  scale: np.ndarray         # (3,)


Tree = Union[Primitive, Combine]


class MeshStats(NamedTuple):
  degenerate_booleans: int
  booleans: int


def num_nodes(max_depth: int) -> int:
  return 2 ** (max_depth + 1) - 1


def draw_noise(seed: int, max_depth: int) -> Noise:
  """Fixed-layout draws: the same seed gives the same numbers for every beta."""
  rng = np.random.default_rng(np.uint64(seed))
  n = num_nodes(max_depth)
  return Noise(
      node_u=rng.random((n, _NODE_UNIFORMS)),
      node_z=rng.standard_normal((n, _NODE_NORMALS)),
      camera_q=rng.standard_normal(4),
      light_u=rng.random(3),
  )


def rotation_from_quaternion(q: np.ndarray) -> np.ndarray:
  """Normalized Gaussian 4-vector -> uniformly random rotation matrix."""
  w, x, y, z = q / max(np.linalg.norm(q), 1e-12)
  return np.array([
      [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
  ])


def inverse_cdf(weights: np.ndarray, u: float) -> int:
  """Index chosen by uniform u under (unnormalized) weights; all-zero = uniform."""
  total = float(weights.sum())
  if total <= 0.0:
    return min(int(u * len(weights)), len(weights) - 1)
  cdf = np.cumsum(weights) / total
  return min(int(np.searchsorted(cdf, u, side="right")), len(weights) - 1)


def _lognormal(beta, name: str, z: float) -> float:
  return float(np.exp(beta[_IDX[name + "_logmean"]] + np.sqrt(beta[_IDX[name + "_logvar"]]) * z))


def _primitive(beta, z, config: CSGConfig, kind: int) -> Primitive:
  if kind == 0:
    size = (_lognormal(beta, "sphere_radius", z[0]),)
  elif kind == 1:
    length = beta[_IDX["box_length_mean"]] + np.sqrt(beta[_IDX["box_length_var"]]) * z[0]
    size = (float(length),)
  elif kind == 2:
    size = (_lognormal(beta, "cone_radius", z[0]), _lognormal(beta, "cone_radius", z[1]),
            _lognormal(beta, "cone_height", z[2]))
  else:
    size = (_lognormal(beta, "tetra_length", z[0]),)
  return Primitive(kind, tuple(max(s, config.min_size) for s in size))


def sample_tree(beta: np.ndarray, noise: Noise, config: CSGConfig) -> Tree:
  """The grammar: expands S from the heap root with the pre-drawn noise."""
  p_prim = beta[0:4]
  p_op = beta[4:6]
  p_expand = beta[_IDX["p_expand"]]
  t_mean, t_std = beta[7:10], np.sqrt(beta[10:13])
  s_mean, s_std = beta[13:16], np.sqrt(beta[16:19])

  def expand(node: int, depth: int) -> Tree:
    u, z = noise.node_u[node], noise.node_z[node]
    if depth >= config.max_depth or u[0] >= p_expand:
      return _primitive(beta, z[0:3], config, inverse_cdf(p_prim, u[2]))
    return Combine(
        operation=inverse_cdf(p_op, u[1]),
        base=expand(2 * node + 1, depth + 1),
        part=expand(2 * node + 2, depth + 1),
        attach_dir=z[13:16] / max(np.linalg.norm(z[13:16]), 1e-12),
        translation=t_mean + t_std * z[3:6],
        rotation=rotation_from_quaternion(z[9:13]),
        scale=np.exp(s_mean + s_std * z[6:9]),
    )

  return expand(0, 0)


def tree_depth(tree: Tree) -> int:
  if isinstance(tree, Primitive):
    return 0
  return 1 + max(tree_depth(tree.base), tree_depth(tree.part))


@functools.lru_cache(maxsize=16)
def _unit_primitive(kind: int, segments: int, sharp_angle_deg: float) -> manifold3d.Manifold:
  """A unit sphere (radius 1), cube (side 1) or tetrahedron (edge 1) with vertex normals.

  Built once per process: scaling a cached shape costs ~0.03 ms, building a
  32-segment sphere and its normals ~0.4 ms (manifolds are immutable, so
  sharing one is safe).
  """
  if kind == 0:
    shape = manifold3d.Manifold.sphere(1.0, segments)
  elif kind == 1:
    shape = manifold3d.Manifold.cube((1.0, 1.0, 1.0), True)
  else:
    # manifold's tetrahedron has edge length 2*sqrt(2).
    shape = manifold3d.Manifold.tetrahedron().scale([1 / (2 * np.sqrt(2))] * 3)
  return shape.calculate_normals(0, sharp_angle_deg)


def primitive_manifold(prim: Primitive, config: CSGConfig) -> manifold3d.Manifold:
  """A centered primitive with vertex normals (edges sharper than the threshold stay sharp)."""
  if prim.kind == 2:     # a truncated cone's shape depends on its radii's ratio: built each time
    r_bottom, r_top, height = prim.size
    shape = manifold3d.Manifold.cylinder(height, r_bottom, r_top, config.cone_segments, True)
    return shape.calculate_normals(0, config.sharp_angle_deg)
  unit = _unit_primitive(prim.kind, config.sphere_segments if prim.kind == 0 else 0,
                         config.sharp_angle_deg)
  return unit.scale([float(prim.size[0])] * 3)


def _affine(linear: np.ndarray, offset: np.ndarray) -> np.ndarray:
  return np.concatenate([linear, offset[:, None]], axis=1)


def _degenerate(shape: manifold3d.Manifold) -> bool:
  return shape.is_empty() or shape.status() != manifold3d.Error.NoError or shape.num_tri() < 4


def _union(parts: list[manifold3d.Manifold]) -> manifold3d.Manifold:
  return parts[0] if len(parts) == 1 else manifold3d.Manifold.batch_boolean(
      parts, manifold3d.OpType.Add)


def _evaluate(tree: Tree, config: CSGConfig, exact_unions: bool
              ) -> tuple[list[manifold3d.Manifold], MeshStats]:
  counts = [0, 0]

  def evaluate(node: Tree) -> list[manifold3d.Manifold]:
    if isinstance(node, Primitive):
      return [primitive_manifold(node, config)]
    base = evaluate(node.base)
    part = evaluate(node.part)
    boxes = np.array([s.bounding_box() for s in base])
    lo, hi = boxes[:, :3].min(axis=0), boxes[:, 3:].max(axis=0)
    center, half = (lo + hi) / 2, (hi - lo) / 2
    anchor = center + half * node.attach_dir + half.mean() * node.translation
    affine = _affine(node.rotation * node.scale[None, :], anchor)
    part = [shape for p in part if not (shape := p.transform(affine)).is_empty()]
    counts[1] += 1
    if not part:
      return base
    if node.operation == 0 and not exact_unions:
      return base + part
    base_shape = _union(base)
    result = base_shape + _union(part) if node.operation == 0 else base_shape - _union(part)
    if _degenerate(result):
      counts[0] += 1
      return base
    return [result]

  parts = evaluate(tree)
  return parts, MeshStats(degenerate_booleans=counts[0], booleans=counts[1])


def build_mesh(tree: Tree, config: CSGConfig) -> tuple[manifold3d.Manifold, MeshStats]:
  """Evaluates the CSG tree with manifold3d; applies the degenerate-boolean policy."""
  parts, stats = _evaluate(tree, config, exact_unions=True)
  return _union(parts), stats


def build_parts(tree: Tree, config: CSGConfig) -> tuple[list[manifold3d.Manifold], MeshStats]:
  """The shape as closed parts whose union it is (unions left to the z-buffer; module doc)."""
  return _evaluate(tree, config, exact_unions=False)


class CameraMesh(NamedTuple):
  """A mesh in the orthographic camera frame: x right, y up, z toward the viewer."""

  verts: np.ndarray     # (V, 3) float32, x and y within [-fill, fill]
  normals: np.ndarray   # (V, 3) float32, unit
  tris: np.ndarray      # (T, 3) uint32


def to_camera(shape: manifold3d.Manifold | list[manifold3d.Manifold], noise: Noise,
              config: CSGConfig) -> CameraMesh:
  """Rotates by the seed's camera, scales and centers the shape (or its parts) to fill the view."""
  parts = []
  for shape_part in [shape] if isinstance(shape, manifold3d.Manifold) else shape:
    mesh = shape_part.to_mesh()
    tris = np.asarray(mesh.tri_verts, np.uint32).reshape(-1, 3)
    if not len(tris):
      continue
    props = np.asarray(mesh.vert_properties, np.float64)
    if props.ndim != 2 or props.shape[1] < 6:
      raise ValueError("CSG produced a mesh without normals")
    parts.append((props[:, :3], props[:, 3:6], tris))
  if not parts:
    raise ValueError("CSG produced a mesh without triangles")
  verts, normals, tris = mesh_lib.concatenate(parts)
  rot = rotation_from_quaternion(noise.camera_q)
  verts = verts @ rot.T
  normals = normals @ rot.T
  normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
  lo, hi = verts.min(axis=0), verts.max(axis=0)
  extent = float(max(hi[0] - lo[0], hi[1] - lo[1]))
  if not np.isfinite(extent) or extent <= 1e-9:
    raise ValueError(f"CSG produced a degenerate shape (projected extent {extent})")
  verts = (verts - (lo + hi) / 2) * (2 * config.fill / extent)
  return CameraMesh(verts.astype(np.float32), normals.astype(np.float32), tris.astype(np.uint32))


class Lighting(NamedTuple):
  """The distribution of one sample's light: a cone around the view axis and an ambient range."""

  max_angle_deg: float
  ambient_low: float
  ambient_high: float


def lighting(config: CSGConfig, beta: np.ndarray | None = None) -> Lighting:
  """The config's lighting, or beta's under the "lighting" layout (beta None: its default)."""
  if config.layout == "paper":
    return Lighting(config.light_max_angle_deg, config.ambient_low, config.ambient_high)
  beta = CSG_LIGHTING_LAYOUT.default if beta is None else beta
  angle, mean, spread = (float(b) for b in beta[CSG_LAYOUT.dim:])    # LIGHTING_SPECS' order
  return Lighting(angle, max(mean - spread, 0.0), min(mean + spread, 0.95))


def lighting_beta(setting: Lighting) -> dict[str, float]:
  """The "lighting" layout's dimensions that give `setting` (the inverse of `lighting`)."""
  return {"light_max_angle_deg": setting.max_angle_deg,
          "ambient_mean": (setting.ambient_low + setting.ambient_high) / 2,
          "ambient_spread": (setting.ambient_high - setting.ambient_low) / 2}


def light(noise: Noise, setting: Lighting) -> tuple[np.ndarray, float]:
  """Directional light within a cone around the view axis, and the ambient term."""
  cos_max = np.cos(np.radians(setting.max_angle_deg))
  cos_t = 1.0 - noise.light_u[0] * (1.0 - cos_max)
  sin_t = np.sqrt(max(0.0, 1.0 - cos_t * cos_t))
  phi = 2 * np.pi * noise.light_u[1]
  direction = np.array([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], np.float32)
  ambient = setting.ambient_low + noise.light_u[2] * (setting.ambient_high - setting.ambient_low)
  return direction, float(ambient)
