"""Headless batched rasterization of camera-space meshes: normals, depth, mask.

pyrender provides the headless OpenGL context (its EGL and OSMesa platforms).
The draw itself is one small shader pass rather than pyrender's scene
renderer, because that renderer multisamples its colour buffer and reads it
back as 8 bits: multisampling would blend normals across triangle and
silhouette edges, and 8 bits would quantize them. Here every mesh of a batch is
drawn into its own layer of one float32 texture (RGBA32F: camera-space normal,
depth), read back with a single call.

Camera frame, written down once for the whole project: x right, y up, z toward
the viewer; image row 0 is the top row. Normals face the camera (n_z > 0 on
visible surfaces); depth is the distance along the view axis (> 0 on the
mask, 0 off it).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import sys
from typing import NamedTuple, Sequence

import numpy as np

from hgrad.core.errors import RenderError  # noqa: F401  (raised here, re-raised by the pool)

INSTALL_HINT = (
    "Install an EGL driver (Debian/Ubuntu: apt-get install libegl1 libegl-mesa0 "
    "libgl1-mesa-dri) or OSMesa (apt-get install libosmesa6) and set "
    "PYOPENGL_PLATFORM=osmesa before hgrad is imported; render workers "
    "(num_workers > 0) try OSMesa by themselves when EGL fails.")

_VERTEX_SHADER = """#version 330 core
layout(location = 0) in vec3 position;
layout(location = 1) in vec3 normal;
#ifdef WITH_COLOR
layout(location = 2) in vec3 color;
out vec3 v_color;
#endif
uniform mat4 projection;
out vec3 v_normal;
out vec3 v_position;
void main() {
  v_normal = normal;
  v_position = position;
#ifdef WITH_COLOR
  v_color = color;
#endif
  gl_Position = projection * vec4(position, 1.0);
}
"""

_FRAGMENT_SHADER = """#version 330 core
in vec3 v_normal;
in vec3 v_position;
uniform float perspective;
layout(location = 0) out vec4 out_normal_depth;
#ifdef WITH_COLOR
in vec3 v_color;
layout(location = 1) out vec4 out_color;
#endif
void main() {
  // Interpolated vertex normals can turn slightly away from the viewer at a
  // silhouette; clamp them to (just past) grazing, their true limit there.
  vec3 to_viewer = perspective > 0.5 ? normalize(-v_position) : vec3(0.0, 0.0, 1.0);
  vec3 n = normalize(v_normal);
  float facing = dot(n, to_viewer);
  if (facing < 1e-3) n = normalize(n + (1e-3 - facing) * to_viewer);
  out_normal_depth = vec4(n, -v_position.z);
#ifdef WITH_COLOR
  out_color = vec4(v_color, 1.0);
#endif
}
"""


def ensure_platform() -> str:
  """Sets PYOPENGL_PLATFORM=egl unless the user chose one; must run before OpenGL is imported."""
  return os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


_pyglet_made_headless = False


def _pyglet_headless(headless: bool) -> None:
  """Importing pyrender defines its Viewer on pyglet's window class, and pyglet's default X11
  backend loads libX11 / libXrender on import: absent on a bare GPU server, where the import
  then fails although EGL works (BUILD_NOTES.md, "Build"). pyglet's headless backend needs
  only libEGL. Set before pyrender's first import, never over a pyglet the user imported."""
  global _pyglet_made_headless
  if "pyrender" in sys.modules or ("pyglet" in sys.modules and not _pyglet_made_headless):
    return
  import pyglet  # pylint: disable=g-import-not-at-top
  pyglet.options["headless"] = headless
  _pyglet_made_headless = headless


def check_pyopengl(pyopengl_version: str, python_version: tuple = sys.version_info) -> None:
  """pyrender pins PyOpenGL 3.1.0, whose ctypes handlers predate Python 3.12 (CArgObject moved
  to _ctypes; fixed in 3.1.7): there the first glGenTextures fails with "No array-type handler
  for type _ctypes.type" (seen on Python 3.12; BUILD_NOTES.md, "Build")."""
  if tuple(python_version[:2]) >= (3, 12) and pyopengl_version.split(".")[:3] == ["3", "1", "0"]:
    raise RenderError(
        f"PyOpenGL {pyopengl_version} (pyrender's pin) does not work on Python "
        f"{python_version[0]}.{python_version[1]}: install PyOpenGL>=3.1.7 after pyrender "
        "(pip install 'PyOpenGL>=3.1.7'; pip warns about pyrender's pin, hgrad uses only its "
        "EGL/OSMesa context), or use Python 3.11")


def _open_platform(width: int, height: int):
  platform_name = ensure_platform()
  try:
    import OpenGL  # pylint: disable=g-import-not-at-top
    check_pyopengl(OpenGL.__version__)
    _pyglet_headless(platform_name == "egl")   # OSMesa (the fallback) may not have libEGL
    if platform_name == "egl":
      from pyrender.platforms.egl import EGLPlatform
      platform = EGLPlatform(width, height)
    elif platform_name == "osmesa":
      from pyrender.platforms.osmesa import OSMesaPlatform
      platform = OSMesaPlatform(width, height)
    else:
      raise RenderError(f"PYOPENGL_PLATFORM={platform_name!r}: hgrad renders headless "
                        "with 'egl' or 'osmesa'")
    platform.init_context()
    platform.make_current()
  except RenderError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise RenderError(f"could not open a headless OpenGL context with PYOPENGL_PLATFORM="
                      f"{platform_name}: {type(e).__name__}: {e}. {INSTALL_HINT}") from e
  return platform


def _release(platform) -> None:
  """Destroys the context only: pyrender's EGL delete_context also calls
  eglTerminate, which would kill every other context on the shared display."""
  if type(platform).__name__ != "EGLPlatform":
    platform.delete_context()
    return
  from OpenGL import EGL  # pylint: disable=import-outside-toplevel
  display, context = platform._egl_display, platform._egl_context  # pylint: disable=protected-access
  if display is not None and context is not None:
    EGL.eglMakeCurrent(display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)
    EGL.eglDestroyContext(display, context)


class Meshes(NamedTuple):
  """Geometry for one tile, already in the camera frame."""

  verts: np.ndarray        # (V, 3) float32
  normals: np.ndarray      # (V, 3) float32
  tris: np.ndarray         # (T, 3) uint32
  projection: np.ndarray   # (4, 4) float32, camera frame -> clip space
  colors: np.ndarray | None = None   # (V, 3) per-vertex attribute (e.g. albedo), interpolated


class Rasters(NamedTuple):
  normals: np.ndarray   # (B, H, W, 3) float32 unit on the mask, 0 off it
  depth: np.ndarray     # (B, H, W) float32 > 0 on the mask, 0 off it
  mask: np.ndarray      # (B, H, W) float32 in {0, 1}
  color: np.ndarray | None = None   # (B, H, W, 3) interpolated colors, with_color only


def orthographic(half_width: float, half_height: float, near: float, far: float) -> np.ndarray:
  """OpenGL orthographic projection; the camera looks down -z."""
  proj = np.zeros((4, 4), np.float32)
  proj[0, 0] = 1.0 / half_width
  proj[1, 1] = 1.0 / half_height
  proj[2, 2] = -2.0 / (far - near)
  proj[2, 3] = -(far + near) / (far - near)
  proj[3, 3] = 1.0
  return proj


def perspective(fov_y_rad: float, aspect: float, near: float, far: float) -> np.ndarray:
  """OpenGL perspective projection; the camera looks down -z."""
  f = 1.0 / np.tan(fov_y_rad / 2)
  proj = np.zeros((4, 4), np.float32)
  proj[0, 0] = f / aspect
  proj[1, 1] = f
  proj[2, 2] = (far + near) / (near - far)
  proj[2, 3] = 2 * far * near / (near - far)
  proj[3, 2] = -1.0
  return proj


class BatchRasterizer:
  """One long-lived GL context; renders a batch into the layers of one texture.

  Every mesh is drawn with the same viewport into its own layer of a float32
  2D-array texture, and the whole batch is read back with one call. The same
  viewport for every sample makes the raster independent of where a sample
  sits in a batch (tiling one big framebuffer would not: the tile offset
  changes floating-point rounding at edges), so results do not depend on
  batch size or on how a batch is split over workers.

  A GL context is current on one thread only, and XLA runs host callbacks on
  threads of its own, so all GL work runs on one thread owned by this object.
  """

  def __init__(self, width: int, height: int, max_layers: int = 256, with_color: bool = False):
    if width < 1 or height < 1:
      raise ValueError(f"render size must be positive, got {width}x{height}")
    self.width, self.height = int(width), int(height)
    self.max_layers = int(max_layers)
    self.with_color = bool(with_color)
    self._layers = 0
    self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hgrad-gl")
    self._platform = None
    self._thread.submit(self._init_gl).result()

  def _init_gl(self):
    self._platform = _open_platform(self.width, self.height)
    from OpenGL import GL  # pylint: disable=import-outside-toplevel
    self._gl = GL
    self._program = self._link()
    self._projection_loc = GL.glGetUniformLocation(self._program, "projection")
    self._perspective_loc = GL.glGetUniformLocation(self._program, "perspective")
    self._fbo = GL.glGenFramebuffers(1)
    GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._fbo)
    depth = GL.glGenRenderbuffers(1)
    GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, depth)
    GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_DEPTH_COMPONENT32F, self.width, self.height)
    GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, GL.GL_RENDERBUFFER, depth)
    self._textures = [GL.glGenTextures(1) for _ in range(2 if self.with_color else 1)]
    if self.with_color:
      GL.glDrawBuffers(2, [GL.GL_COLOR_ATTACHMENT0, GL.GL_COLOR_ATTACHMENT1])
    self._fit_layers(1)
    self._vao = GL.glGenVertexArrays(1)
    GL.glBindVertexArray(self._vao)
    self._vbo, self._ebo = GL.glGenBuffers(2)
    GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self._vbo)
    GL.glBindBuffer(GL.GL_ELEMENT_ARRAY_BUFFER, self._ebo)
    attributes = 3 if self.with_color else 2
    for loc in range(attributes):
      GL.glEnableVertexAttribArray(loc)
      GL.glVertexAttribPointer(loc, 3, GL.GL_FLOAT, False, 12 * attributes,
                               ctypes.c_void_p(12 * loc))
    GL.glEnable(GL.GL_DEPTH_TEST)
    GL.glDepthFunc(GL.GL_LESS)
    # Meshes are closed and wound counter-clockwise outward: back faces are never
    # visible, and culling them stops them winning depth ties at silhouettes.
    GL.glEnable(GL.GL_CULL_FACE)
    GL.glCullFace(GL.GL_BACK)
    GL.glDisable(GL.GL_MULTISAMPLE)
    GL.glClearColor(0.0, 0.0, 0.0, 0.0)
    GL.glViewport(0, 0, self.width, self.height)
    GL.glUseProgram(self._program)

  @property
  def allocated_layers(self) -> int:
    """Samples the layered texture holds now (the readback reads all of them)."""
    return self._layers

  def _fit_layers(self, count: int):
    """(Re)allocates the layered colour texture to the power of two that holds `count` samples.

    It shrinks too: glGetTexImage reads back every layer, so a texture left at an
    outer step's 256 layers made each later 13-sample render read back 16x its data
    (plain steps 4x slower on an H200 after the first outer step; docs/benchmarks.md).
    """
    layers = min(self.max_layers, 1 << (count - 1).bit_length())
    if layers == self._layers:
      return
    GL = self._gl
    for attachment, texture in enumerate(self._textures):
      GL.glBindTexture(GL.GL_TEXTURE_2D_ARRAY, texture)
      GL.glTexImage3D(GL.GL_TEXTURE_2D_ARRAY, 0, GL.GL_RGBA32F, self.width, self.height, layers, 0,
                      GL.GL_RGBA, GL.GL_FLOAT, None)
      GL.glTexParameteri(GL.GL_TEXTURE_2D_ARRAY, GL.GL_TEXTURE_MIN_FILTER, GL.GL_NEAREST)
      GL.glTexParameteri(GL.GL_TEXTURE_2D_ARRAY, GL.GL_TEXTURE_MAG_FILTER, GL.GL_NEAREST)
      GL.glFramebufferTextureLayer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0 + attachment, texture,
                                   0, 0)
    if GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER) != GL.GL_FRAMEBUFFER_COMPLETE:
      raise RenderError("float32 layered framebuffer is not supported by this OpenGL driver")
    self._layers = layers

  def _link(self):
    GL = self._gl
    program = GL.glCreateProgram()
    define = "#define WITH_COLOR\n" if self.with_color else ""
    for source, kind in ((_VERTEX_SHADER, GL.GL_VERTEX_SHADER),
                         (_FRAGMENT_SHADER, GL.GL_FRAGMENT_SHADER)):
      shader = GL.glCreateShader(kind)
      version, body = source.split("\n", 1)
      GL.glShaderSource(shader, f"{version}\n{define}{body}")
      GL.glCompileShader(shader)
      if not GL.glGetShaderiv(shader, GL.GL_COMPILE_STATUS):
        raise RenderError(f"shader compile failed: {GL.glGetShaderInfoLog(shader)}")
      GL.glAttachShader(program, shader)
    GL.glLinkProgram(program)
    if not GL.glGetProgramiv(program, GL.GL_LINK_STATUS):
      raise RenderError(f"shader link failed: {GL.glGetProgramInfoLog(program)}")
    return program

  def render(self, meshes: Sequence[Meshes]) -> Rasters:
    """Rasterizes each mesh into its own H x W image."""
    if not meshes:
      raise ValueError("render() needs at least one mesh")
    if self.with_color and any(m.colors is None for m in meshes):
      raise ValueError("this rasterizer renders colors: every mesh needs per-vertex colors")
    chunks = [self._thread.submit(self._render_chunk, meshes[i:i + self.max_layers]).result()
              for i in range(0, len(meshes), self.max_layers)]
    return Rasters(*(None if parts[0] is None else np.concatenate(parts) for parts in zip(*chunks)))

  def _render_chunk(self, meshes: Sequence[Meshes]) -> Rasters:
    GL = self._gl
    from OpenGL.raw.GL.VERSION import GL_1_1 as raw_gl  # pylint: disable=import-outside-toplevel
    self._fit_layers(len(meshes))
    offsets = np.cumsum([0] + [len(m.verts) for m in meshes])
    vertex_data = np.concatenate(
        [np.concatenate([m.verts, m.normals] + ([m.colors] if self.with_color else []), axis=1)
         for m in meshes]).astype(np.float32)
    index_data = np.concatenate(
        [m.tris.reshape(-1).astype(np.uint32) + np.uint32(o) for m, o in zip(meshes, offsets)])
    GL.glBufferData(GL.GL_ARRAY_BUFFER, vertex_data.nbytes, vertex_data, GL.GL_STREAM_DRAW)
    GL.glBufferData(GL.GL_ELEMENT_ARRAY_BUFFER, index_data.nbytes, index_data, GL.GL_STREAM_DRAW)
    start = 0
    for layer, m in enumerate(meshes):
      for attachment, texture in enumerate(self._textures):
        GL.glFramebufferTextureLayer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0 + attachment,
                                     texture, 0, layer)
      GL.glClear(GL.GL_COLOR_BUFFER_BIT | GL.GL_DEPTH_BUFFER_BIT)
      GL.glUniformMatrix4fv(self._projection_loc, 1, GL.GL_TRUE, m.projection.astype(np.float32))
      GL.glUniform1f(self._perspective_loc, float(m.projection[3, 2] != 0))
      count = m.tris.size
      GL.glDrawElements(GL.GL_TRIANGLES, count, GL.GL_UNSIGNED_INT, ctypes.c_void_p(4 * start))
      start += count
    readback = []
    for texture in self._textures:
      layers = np.empty((self._layers, self.height, self.width, 4), np.float32)
      GL.glBindTexture(GL.GL_TEXTURE_2D_ARRAY, texture)
      # PyOpenGL 3.1.0's glGetTexImage wrapper cannot size 3D textures; the raw call writes into ours.
      raw_gl.glGetTexImage(GL.GL_TEXTURE_2D_ARRAY, 0, GL.GL_RGBA, GL.GL_FLOAT,
                           layers.ctypes.data_as(ctypes.c_void_p))
      # GL rows run bottom to top; image row 0 is the top.
      readback.append(layers[:len(meshes), ::-1])
    tiles = readback[0]
    # The shader writes unit normals and the view depth (> 0); the clear colour is 0, so the
    # background reads back as 0 in every channel and needs no masking here.
    depth = np.ascontiguousarray(tiles[..., 3])
    mask = (depth > 0).astype(np.float32)
    normals = np.ascontiguousarray(tiles[..., :3])
    color = np.ascontiguousarray(readback[1][..., :3]) if self.with_color else None
    return Rasters(normals, depth, mask, color)

  def close(self):
    def delete():
      if self._platform is not None:
        _release(self._platform)
        self._platform = None
    self._thread.submit(delete).result()
    self._thread.shutdown()


def lambertian(normals: np.ndarray, mask: np.ndarray, light_dir: np.ndarray,
               ambient: float) -> np.ndarray:
  """Shading in [0, 1]: ambient + (1 - ambient) * max(0, n . l) on the mask, 0 off it."""
  diffuse = np.maximum(normals @ light_dir.astype(np.float32), 0.0)
  return ((ambient + (1.0 - ambient) * diffuse) * mask).astype(np.float32)
