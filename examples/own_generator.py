"""Your own non-differentiable generator, your own flax model and loss, hgrad's outer step.

The generator is plain numpy (it quantizes its samples, so it has no gradient):
x ~ N(x_mean, exp(x_log_std)^2), y = sin(3 x). A small MLP learns y from x on
its samples; L is its error on "real" validation data drawn around x = 1.
Hybrid gradient moves x_mean from -1 toward 1, where training data helps.

  python examples/own_generator.py [WORKDIR]
"""

import sys
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import hgrad

LAYOUT = hgrad.ParamLayout("toy", [
    hgrad.ParamSpec("x_mean", -2.0, 2.0, -1.0, "mean of the training inputs"),
    hgrad.ParamSpec("x_log_std", -3.0, 0.5, -1.0, "log standard deviation of the inputs"),
])
OUTPUTS = {"x": jax.ShapeDtypeStruct((1,), jnp.float32), "y": jax.ShapeDtypeStruct((1,), jnp.float32)}


def render_batch(beta_Bxd: np.ndarray, seeds_B: np.ndarray) -> dict:
  """Sample i from (beta[i], seed[i]); the same seed gives the same noise (common random numbers)."""
  z = np.array([np.random.default_rng(int(s)).standard_normal() for s in seeds_B])
  x = np.round(beta_Bxd[:, 0] + np.exp(beta_Bxd[:, 1]) * z, 3)      # quantized: no gradient
  return {"x": x[:, None].astype(np.float32), "y": np.sin(3 * x)[:, None].astype(np.float32)}


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(nn.tanh(nn.Dense(32)(nn.tanh(nn.Dense(32)(x)))))


def main(workdir: str, outer_steps: int = 30) -> dict:
  model = MLP()
  x_real = np.random.default_rng(7).normal(1.0, 0.3, (64, 1)).astype(np.float32)
  real = {"x": x_real, "y": np.sin(3 * x_real)}

  def train_loss(params, batch):
    return jnp.mean((model.apply(params, batch["x"]) - batch["y"]) ** 2)

  generator = hgrad.Generator.from_function(render_batch, LAYOUT, OUTPUTS)
  trainer = hgrad.OuterTrainer(
      generator, train_loss=train_loss,
      eval_loss=lambda params: train_loss(params, real),
      inner=hgrad.InnerConfig(steps=8, batch_size=16, optimizer="adam", learning_rate=1e-2),
      outer=hgrad.OuterConfig(num_perturbations=4, sigma=0.05, learning_rate=0.05))
  params0 = model.init(jax.random.key(0), jnp.zeros((1, 1)))
  task = hgrad.Task("own_generator", trainer, params0, LAYOUT.default,
                    evaluate=lambda params: {"L": float(trainer.evaluate(params))})
  schedule = hgrad.Schedule(warmup_steps=10, outer_steps=outer_steps, train_steps_per_outer=1,
                            eval_every=10, checkpoint_every=20)
  results = hgrad.run(task, schedule, workdir, seed=0)
  generator.close()
  return results


if __name__ == "__main__":
  out = main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="own-generator-"))
  print({"beta0": out["beta0"], "beta": out["beta"], "L": out["L"]})
