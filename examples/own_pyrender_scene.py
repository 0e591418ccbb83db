"""Your own pyrender scene behind hgrad's bridge: a sphere whose position beta controls.

The host below builds its pyrender scene and OffscreenRenderer lazily, on the
thread hgrad gives it: every in-process host call runs on one thread owned by
the `hgrad.Generator` (a worker process serves its host from one thread too),
so the GL context stays current; hgrad sets PYOPENGL_PLATFORM=egl unless you
chose one. The network regresses the sphere's image position from a 16x16
render; L is its error on "real" renders around a position the grammar does
not start at, so beta moves toward it. With `num_workers > 0` each worker
process builds its own SphereHost: the class must then be importable by name
(this module on the path), not defined in a notebook cell or `__main__`.

  python examples/own_pyrender_scene.py [WORKDIR]
"""

import sys
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import hgrad
from hgrad.generators import ensure_platform

RES = 16
LAYOUT = hgrad.ParamLayout("sphere", [
    hgrad.ParamSpec("x_mean", -0.6, 0.6, -0.3, "mean horizontal position of the sphere"),
    hgrad.ParamSpec("y_mean", -0.6, 0.6, -0.3, "mean vertical position of the sphere"),
])
SPREAD = 0.15          # position noise around the mean (not optimized)


class SphereHost:
  """render_batch(beta_Bxd, seeds_B) -> {"image": (B, RES, RES, 1), "center": (B, 2)}."""

  layout = LAYOUT
  output_spec = {"image": jax.ShapeDtypeStruct((RES, RES, 1), jnp.float32),
                 "center": jax.ShapeDtypeStruct((2,), jnp.float32)}

  def __init__(self, config=None):
    del config
    self._renderer = None

  def _scene(self):
    if self._renderer is None:                 # first call: on hgrad's host thread
      ensure_platform()
      import pyrender   # pylint: disable=import-outside-toplevel
      import trimesh    # pylint: disable=import-outside-toplevel
      self._pyrender = pyrender
      self._scene_obj = pyrender.Scene(ambient_light=[0.3, 0.3, 0.3])
      camera_pose = np.eye(4)
      camera_pose[2, 3] = 3.0                    # 3 units toward the viewer, looking down -z
      self._scene_obj.add(pyrender.OrthographicCamera(xmag=1.0, ymag=1.0), pose=camera_pose)
      self._scene_obj.add(pyrender.DirectionalLight(intensity=3.0), pose=np.eye(4))
      sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
      self._node = self._scene_obj.add(pyrender.Mesh.from_trimesh(sphere))
      self._renderer = pyrender.OffscreenRenderer(RES, RES)
    return self._scene_obj

  def render_batch(self, beta_Bxd, seeds_B):
    scene = self._scene()
    images, centers = [], []
    for beta, seed in zip(beta_Bxd, seeds_B):
      center = beta + SPREAD * np.random.default_rng(int(seed)).standard_normal(2)
      pose = np.eye(4)
      pose[:2, 3] = center
      scene.set_pose(self._node, pose)
      color, _ = self._renderer.render(scene)
      images.append(color[..., :1].astype(np.float32) / 255.0)
      centers.append(center.astype(np.float32))
    return {"image": np.stack(images), "center": np.stack(centers)}

  def close(self):
    if self._renderer is not None:
      self._renderer.delete()
      self._renderer = None


class Regressor(nn.Module):
  @nn.compact
  def __call__(self, image):
    return nn.Dense(2)(nn.relu(nn.Dense(64)(image.reshape(image.shape[0], -1))))


def main(workdir: str, outer_steps: int = 20, num_workers: int = 0) -> dict:
  generator = hgrad.Generator(SphereHost, None, num_workers=num_workers)
  beta_star = np.array([0.3, 0.3], np.float32)
  real = generator.render(np.tile(beta_star, (32, 1)), 10_000 + np.arange(32))
  model = Regressor()

  def train_loss(params, batch):
    return jnp.mean((model.apply(params, batch["image"]) - batch["center"]) ** 2)

  trainer = hgrad.OuterTrainer(
      generator, train_loss=train_loss,
      eval_loss=lambda params: train_loss(params, real),
      inner=hgrad.InnerConfig(steps=4, batch_size=8, optimizer="adam", learning_rate=3e-3),
      outer=hgrad.OuterConfig(num_perturbations=2, sigma=0.05, learning_rate=0.05))
  params0 = model.init(jax.random.key(0), jnp.zeros((1, RES, RES, 1)))
  task = hgrad.Task("own_pyrender_scene", trainer, params0, LAYOUT.default,
                    evaluate=lambda params: {"L": float(trainer.evaluate(params))})
  schedule = hgrad.Schedule(warmup_steps=10, outer_steps=outer_steps, train_steps_per_outer=1,
                            eval_every=10, checkpoint_every=20)
  try:
    return hgrad.run(task, schedule, workdir, seed=0)
  finally:
    generator.close()


if __name__ == "__main__":
  out = main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="own-scene-"))
  print({"beta0": out["beta0"], "beta": out["beta"], "L": out["L"]})
