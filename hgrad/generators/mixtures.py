"""Mixtures of 3 Gaussians or 3 von Mises, reparameterized from uniforms (scene and face grammars).

A mixture dimension has 9 beta entries: 3 weights (normalized; all zero =
uniform), 3 means and 3 spreads (variances for Gaussians, concentrations
kappa for von Mises). A draw takes two uniforms from the seed: one picks the
component by inverse CDF of the weights, the other is mapped through the
component's inverse CDF. Both maps are continuous in beta, so beta +- delta
with one seed gives nearby values (or the same component switch).

The von Mises inverse CDF is computed by integrating exp(kappa cos t) on a
fixed grid and interpolating, which is exact to ~1e-4 rad and smooth in kappa.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.special

from hgrad.core.layout import ParamSpec

COMPONENTS = 3
_GRID = np.linspace(-np.pi, np.pi, 4097)


def mixture_specs(name: str, kind: str, mean_range: tuple[float, float],
                  spread_range: tuple[float, float], mean_default: Sequence[float],
                  spread_default: float, doc: str) -> list[ParamSpec]:
  """The 9 ParamSpecs of one mixture dimension: weights, means, spreads."""
  spread = "var" if kind == "gaussian" else "kappa"
  specs = [ParamSpec(f"{name}_w{k}", 0.0, 1.0, 1.0 / COMPONENTS,
                     f"{doc}: weight of component {k}", kind="weight", group=name) for k in range(COMPONENTS)]
  specs += [ParamSpec(f"{name}_mean{k}", mean_range[0], mean_range[1], float(mean_default[k]),
                      f"{doc}: mean of component {k}") for k in range(COMPONENTS)]
  specs += [ParamSpec(f"{name}_{spread}{k}", spread_range[0], spread_range[1], spread_default,
                      f"{doc}: {'variance' if kind == 'gaussian' else 'concentration'} of "
                      f"component {k}") for k in range(COMPONENTS)]
  return specs


def choose(weights_Nx3: np.ndarray, u_N: np.ndarray) -> np.ndarray:
  """Component index by inverse CDF of the (unnormalized) weights."""
  weights = np.asarray(weights_Nx3, np.float64)
  total = weights.sum(-1, keepdims=True)
  weights = np.where(total > 0, weights / np.maximum(total, 1e-30), 1.0 / weights.shape[-1])
  cdf = np.cumsum(weights, -1)
  return np.minimum((u_N[..., None] >= cdf).sum(-1), weights.shape[-1] - 1)


def vonmises_icdf(u: np.ndarray, kappa: np.ndarray) -> np.ndarray:
  """Inverse CDF of the zero-mean von Mises(kappa) on (-pi, pi], elementwise."""
  u, kappa = np.broadcast_arrays(np.asarray(u, np.float64), np.asarray(kappa, np.float64))
  out = np.empty(u.shape)
  for k in np.unique(kappa):
    sel = kappa == k
    # exp(k (cos t - 1)) avoids overflow; the normalization cancels.
    density = np.exp(k * (np.cos(_GRID) - 1.0))
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2)])
    out[sel] = np.interp(u[sel], cdf / cdf[-1], _GRID)
  return out


def sample(params_9: np.ndarray, kind: str, u_component: np.ndarray,
           noise: np.ndarray) -> np.ndarray:
  """Draws from one mixture dimension.

  `noise` is a standard normal (gaussian) or a uniform (von Mises) per draw;
  von Mises draws are wrapped to (-pi, pi].
  """
  params_9 = np.asarray(params_9, np.float64)
  k = choose(params_9[:COMPONENTS][None], np.atleast_1d(u_component)).reshape(np.shape(u_component))
  mean = params_9[COMPONENTS:2 * COMPONENTS][k]
  spread = params_9[2 * COMPONENTS:][k]
  if kind == "gaussian":
    return mean + np.sqrt(spread) * noise
  return np.angle(np.exp(1j * (mean + vonmises_icdf(noise, spread))))


def circular_stats(angles: np.ndarray) -> tuple[float, float]:
  """(circular mean, maximum-likelihood kappa) of samples: for tests and reports."""
  resultant = np.mean(np.exp(1j * angles))
  r = float(np.abs(resultant))
  # Solve A1(kappa) = I1/I0 = r by bisection (monotone in kappa).
  lo, hi = 1e-6, 1e3
  for _ in range(200):
    mid = np.sqrt(lo * hi)
    if scipy.special.i1e(mid) / scipy.special.i0e(mid) < r:
      lo = mid
    else:
      hi = mid
  return float(np.angle(resultant)), float(np.sqrt(lo * hi))
