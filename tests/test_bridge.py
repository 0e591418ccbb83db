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
      pool.call("render_batch", CSGHost.layout.default[None], np.zeros((1, 2), np.uint32))
    sample, stats = pool.call("render_batch", CSGHost.layout.default[None], np.zeros(1, np.uint32))
    assert sample.image.shape == (1, 16, 16, 1) and stats["samples"] == 1
  finally:
    pool.close()
  monkeypatch.setenv("PYOPENGL_PLATFORM", "bogus")
  with pytest.raises(raster.RenderError, match="'egl' or 'osmesa'"):
    RenderPool(CSGHost, CSGConfig(resolution=16), 1).call(
        "render_batch", CSGHost.layout.default[None], np.zeros(1, np.uint32))


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
  pool.call("render_batch", CSGHost.layout.default[None], np.zeros(1, np.uint32))
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


# --- The output contract: every bad output is one hgrad error that names it ----------------

def _toy_generator(render):
  import hgrad
  layout = hgrad.ParamLayout("toy", [hgrad.ParamSpec("radius_mean", 0.0, 1.0, 0.5)])
  spec = {"image": jax.ShapeDtypeStruct((16, 16, 1), jnp.float32),
          "label": jax.ShapeDtypeStruct((2,), jnp.float32)}
  return hgrad.Generator.from_function(render, layout, spec)


def _good(beta, seeds):
  n = len(seeds)
  return {"image": np.zeros((n, 16, 16, 1), np.float32), "label": np.ones((n, 2), np.float32)}


BAD_OUTPUTS = {
    "batch-last, same size": (
        lambda b, s: dict(_good(b, s), image=np.zeros((16, 16, 1, len(s)), np.float32)),
        r"output 'image' has shape \(16, 16, 1, 2\), expected \(2, 16, 16, 1\).*batch axis first"),
    "channels first, same size": (
        lambda b, s: dict(_good(b, s), image=np.zeros((len(s), 1, 16, 16), np.float32)),
        r"output 'image' has shape \(2, 1, 16, 16\), expected \(2, 16, 16, 1\)"),
    "wrong size": (
        lambda b, s: dict(_good(b, s), image=np.zeros((len(s), 8, 16, 1), np.float32)),
        r"output 'image' has shape \(2, 8, 16, 1\), expected \(2, 16, 16, 1\)"),
    "NaN": (
        lambda b, s: dict(_good(b, s), label=np.where(np.arange(len(s))[:, None] == 1, np.nan,
                                                      np.ones((len(s), 2), np.float32))),
        r"output 'label' is NaN or infinite in sample 1 \(seed \d+\) at beta \{'radius_mean'"),
    "missing key": (
        lambda b, s: {"image": _good(b, s)["image"]},
        r"declares \['image', 'label'\]: missing \['label'\]"),
    "extra key": (
        lambda b, s: dict(_good(b, s), depth=np.zeros(len(s), np.float32)),
        r"unexpected \['depth'\]"),
    "(outputs, stats) tuple": (
        lambda b, s: (_good(b, s), {"samples": len(s)}),
        r"returned a tuple \(outputs, stats\): return the outputs only"),
    "a dtype that does not cast": (
        lambda b, s: dict(_good(b, s), label=np.ones((len(s), 2), np.complex64)),
        r"output 'label' has dtype complex64, which does not cast to the spec's float32"),
}


@pytest.mark.parametrize("case", sorted(BAD_OUTPUTS))
def test_a_bad_output_is_one_hgrad_error_naming_it(case, capfd):
  import hgrad
  render, message = BAD_OUTPUTS[case]
  generator = _toy_generator(render)
  betas = jnp.full((2, 1), 0.4)
  keys = jax.random.split(jax.random.key(0), 2)
  try:
    with pytest.raises(hgrad.GeneratorError, match=message):      # the host path
      generator.render(np.asarray(betas), np.arange(2))
    capfd.readouterr()
    with pytest.raises(hgrad.GeneratorError, match=message):      # under jit and vmap
      with hgrad.host_errors():
        jax.block_until_ready(jax.jit(jax.vmap(generator.generate))(betas, keys))
    assert "Traceback" not in capfd.readouterr().err, "reported once, by the exception"
  finally:
    generator.close()


def test_good_outputs_pass_and_a_nan_check_can_be_turned_off():
  import hgrad
  generator = _toy_generator(_good)
  out = jax.jit(jax.vmap(jax.vmap(generator.generate)))(jnp.full((2, 3, 1), 0.4),
                                                         jax.random.split(jax.random.key(0), 6).reshape(2, 3))
  assert out["image"].shape == (2, 3, 16, 16, 1) and out["label"].dtype == jnp.float32
  generator.close()
  unchecked = hgrad.Generator.from_function(BAD_OUTPUTS["NaN"][0], generator.layout,
                                            generator.output_spec, check_finite=False)
  assert np.isnan(unchecked.render(np.full((2, 1), 0.4), np.arange(2))["label"]).any()
  unchecked.close()
