"""The JAX bridge: generate(beta, key) under jit and (nested) vmap, and the worker pool."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrad.generators import raster
from hgrad.core.bridge import seed_from_key
from hgrad.generators.csg import CSGConfig
from hgrad.generators.csg_host import CSGHost, csg_generator
from hgrad.core.pool import RenderPool


def _nested(generator):
  """n seeds x m betas through two vmaps in one jit, as the estimator uses it."""
  return jax.jit(jax.vmap(jax.vmap(generator.generate, (None, 0)), (0, None)))


def _expected(generator, betas, keys):
  seeds = np.asarray(jax.vmap(seed_from_key)(keys))
  return [generator.render(np.repeat(np.asarray(b)[None], len(seeds), 0), seeds) for b in betas]


def _assert_matches(batch, expected):
  for i, exp in enumerate(expected):
    for got, want in zip(batch, exp):
      np.testing.assert_array_equal(np.asarray(got)[i], want)


def test_jit_and_nested_vmap_match_host(csg_gen):
  betas = jnp.asarray(csg_gen.beta0) + 0.05 * jax.random.normal(jax.random.key(1), (3, 29))
  keys = jax.random.split(jax.random.key(2), 4)
  csg_gen.reset_stats()
  batch = _nested(csg_gen)(betas, keys)
  assert csg_gen.reset_stats()["host_calls"] == 1, "the whole vmapped batch is one host call"
  assert batch.image.shape == (3, 4, 64, 64, 1) and batch.normals.shape == (3, 4, 64, 64, 3)
  _assert_matches(batch, _expected(csg_gen, betas, keys))
  single = jax.jit(csg_gen.generate)(betas[1], keys[2])
  for got, want in zip(single, _expected(csg_gen, betas[1:2], keys[2:3])[0]):
    np.testing.assert_array_equal(np.asarray(got), want[0])


def test_worker_pool_matches_in_process(csg_gen):
  betas = jnp.asarray(csg_gen.beta0) + 0.05 * jax.random.normal(jax.random.key(3), (2, 29))
  keys = jax.random.split(jax.random.key(4), 5)
  with csg_generator(num_workers=2) as pooled:
    batch = _nested(pooled)(betas, keys)
    assert pooled.reset_stats()["samples"] == 10
  _assert_matches(batch, _expected(csg_gen, betas, keys))


def test_generate_rejects_bad_beta(csg_gen):
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"shape \(29,\)"):
    csg_gen.generate(jnp.zeros(30), key)
  bad = csg_gen.beta0.copy()
  bad[3] = np.nan
  with pytest.raises(ValueError, match=r"NaN or infinite in dimension\(s\) 3 \(p_tetrahedron\)"):
    csg_gen.generate(jnp.asarray(bad), key)
  with pytest.raises(Exception, match="NaN or infinite"):
    jax.block_until_ready(jax.jit(csg_gen.generate)(jnp.asarray(bad), key))


def test_pool_reports_value_errors_and_bad_platform(monkeypatch):
  pool = RenderPool(CSGHost, CSGConfig(resolution=16), 1)
  try:
    with pytest.raises(ValueError, match="1 betas but 2 seeds"):     # raised in the worker
      pool.render_batch(CSGHost.layout.default[None], np.zeros((1, 2), np.uint32))
    sample, stats = pool.render_batch(CSGHost.layout.default[None], np.zeros(1, np.uint32))
    assert sample.image.shape == (1, 16, 16, 1) and stats["samples"] == 1
  finally:
    pool.close()
  monkeypatch.setenv("PYOPENGL_PLATFORM", "bogus")
  with pytest.raises(raster.RenderError, match="'egl' or 'osmesa'"):
    RenderPool(CSGHost, CSGConfig(resolution=16), 1).render_batch(
        CSGHost.layout.default[None], np.zeros(1, np.uint32))


def test_no_egl_falls_back_to_osmesa_or_names_both():
  """With EGL broken, workers either render through OSMesa or the error names both."""
  code = """
import numpy as np
from hgrad.generators import raster
from hgrad.generators.csg import CSGConfig
from hgrad.generators.csg_host import CSGHost
from hgrad.core.pool import RenderPool
pool = RenderPool(CSGHost, CSGConfig(resolution=16), 1)
try:
  pool.render_batch(CSGHost.layout.default[None], np.zeros(1, np.uint32))
  print("RENDERED")
except raster.RenderError as e:
  print("ERROR", e)
pool.close()
"""
  env = {k: v for k, v in __import__("os").environ.items() if k != "PYOPENGL_PLATFORM"}
  env["__EGL_VENDOR_LIBRARY_FILENAMES"] = "/nonexistent/egl_vendor.json"
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300, check=True).stdout
  assert "RENDERED" in out or ("EGL failed" in out and "OSMesa failed" in out
                               and "apt-get install" in out), out


def test_closing_one_renderer_leaves_another_working(csg_gen):
  other = csg_generator(CSGConfig(resolution=16), num_workers=0)
  other.render(other.beta0[None], [1])
  other.close()
  again = csg_gen.render(csg_gen.beta0[None], [1])
  assert again.mask.sum() > 0


def test_rendering_under_egl_needs_no_x11_libraries():
  """pyrender's import pulls in pyglet's window class; under EGL hgrad makes pyglet headless
  first, so a server without libX11 / libXrender (a bare GPU machine) renders too."""
  code = """
import sys
import numpy as np
from hgrad.generators.csg import CSGConfig
from hgrad.generators.csg_host import csg_generator
generator = csg_generator(CSGConfig(resolution=16), num_workers=0)
assert generator.render(generator.beta0[None], [1]).mask.sum() > 0
generator.close()
import pyglet
print(pyglet.options["headless"], sorted(m for m in sys.modules
                                       if m.startswith("pyglet") and ("x11" in m or "xlib" in m)))
"""
  env = {**__import__("os").environ, "PYOPENGL_PLATFORM": "egl"}
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().splitlines()[-1] == "True []", out.stdout


def test_pyopengl_3_1_0_on_python_3_12_is_named_not_a_ctypes_error():
  raster.check_pyopengl("3.1.0", (3, 11, 7))
  raster.check_pyopengl("3.1.9", (3, 12, 3))
  with pytest.raises(raster.RenderError, match=r"PyOpenGL 3.1.0 .* Python 3.12: install PyOpenGL>=3.1.7"):
    raster.check_pyopengl("3.1.0", (3, 12, 3))
