"""Named parameter vectors with a valid box: the beta of every grammar.

A layout is data, not code: every generator (CSG, scenes, faces) describes its
beta with one `ParamLayout`, so validation, clipping and reporting are written
once.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class ParamSpec(NamedTuple):
  """One dimension of beta: its name, valid box and documented default.

  `log_scale`: a positive quantity (a variance) whose natural steps are
  relative; in "log" coordinates the optimizer moves its logarithm.
  """

  name: str
  low: float
  high: float
  default: float
  doc: str = ""
  log_scale: bool = False


class ParamLayout:
  """An ordered set of `ParamSpec`s with vector views of names and bounds."""

  def __init__(self, name: str, specs: Sequence[ParamSpec]):
    self.name = name
    self.specs = tuple(specs)
    self.names = tuple(s.name for s in self.specs)
    if len(set(self.names)) != len(self.names):
      raise ValueError(f"{name}: duplicate parameter names in layout")
    self.low = np.array([s.low for s in self.specs], np.float32)
    self.high = np.array([s.high for s in self.specs], np.float32)
    self.default = np.array([s.default for s in self.specs], np.float32)
    bad = np.nonzero((self.low > self.default) | (self.default > self.high))[0]
    if bad.size:
      raise ValueError(f"{name}: default outside the box for {self.describe(bad)}")
    self.log_scale = np.array([s.log_scale for s in self.specs], bool)
    bad = np.nonzero(self.log_scale & (self.low <= 0))[0]
    if bad.size:
      raise ValueError(f"{name}: log_scale needs a positive lower bound for {self.describe(bad)}")
    # Log-box bounds of the log_scale dimensions (placeholders 0 and log 2 elsewhere).
    self._log_low = np.log(np.where(self.log_scale, self.low, 1.0))
    self._log_high = np.log(np.where(self.log_scale, self.high, 2.0))

  @property
  def dim(self) -> int:
    return len(self.specs)

  def index(self, name: str) -> int:
    return self.names.index(name)

  def describe(self, indices) -> str:
    return ", ".join(f"{i} ({self.names[i]})" for i in np.atleast_1d(indices))

  def check(self, beta, *, what: str = "beta") -> np.ndarray:
    """Returns beta as float32 (..., dim); raises ValueError on shape or NaN/inf."""
    beta = np.asarray(beta, np.float32)
    if beta.ndim == 0 or beta.shape[-1] != self.dim:
      raise ValueError(
          f"{what} must have trailing dimension {self.dim} for the {self.name} "
          f"layout, got shape {beta.shape}")
    finite = np.isfinite(beta)
    if not finite.all():
      dims = np.nonzero(~finite.reshape(-1, self.dim).all(axis=0))[0]
      raise ValueError(f"{what} is NaN or infinite in dimension(s) {self.describe(dims)}")
    return beta

  def clip(self, beta):
    """Clips to the valid box; works on numpy and jax arrays alike."""
    return beta.clip(self.low, self.high)

  def to_unit(self, beta):
    """Unit-box coordinates (0 at low, 1 at high); works on numpy and jax arrays alike."""
    return (beta - self.low) / (self.high - self.low)

  def from_unit(self, u):
    return self.low + u * (self.high - self.low)

  def to_coords(self, beta, coordinates: str = "unit"):
    """The optimizer's coordinates, each dimension in [0, 1] over its box.

    "unit": linear, (beta - low) / (high - low). "log": the same for every
    `log_scale` dimension's logarithm, so a step means the same relative
    change of a variance at 1e-3 and at 0.5. Works on numpy and jax arrays.
    """
    if coordinates == "unit":
      return self.to_unit(beta)
    _check_coordinates(coordinates)
    xp = _array_module(beta)
    log_u = ((xp.log(xp.where(self.log_scale, beta, 1.0)) - self._log_low) /
             (self._log_high - self._log_low))
    return xp.where(self.log_scale, log_u, self.to_unit(beta))

  def from_coords(self, u, coordinates: str = "unit"):
    """Inverse of `to_coords`."""
    if coordinates == "unit":
      return self.from_unit(u)
    _check_coordinates(coordinates)
    xp = _array_module(u)
    log_beta = self._log_low + u * (self._log_high - self._log_low)
    return xp.where(self.log_scale, xp.exp(log_beta), self.from_unit(u))

  def unit_distance(self, beta_a, beta_b) -> float:
    """Euclidean distance in unit-box coordinates (how far a run moved beta, or is from beta*)."""
    return float(np.linalg.norm(self.to_unit(np.asarray(beta_a)) - self.to_unit(np.asarray(beta_b))))

  def as_dict(self, beta) -> dict[str, float]:
    beta = np.asarray(beta, np.float64)
    return {n: float(v) for n, v in zip(self.names, beta)}

  def table(self) -> str:
    """Markdown table of the layout, for docs and BUILD_NOTES."""
    rows = ["| # | name | low | high | default | meaning |", "|---|---|---|---|---|---|"]
    for i, s in enumerate(self.specs):
      scale = " (log scale)" if s.log_scale else ""
      rows.append(f"| {i} | {s.name} | {s.low:g} | {s.high:g} | {s.default:g} | {s.doc}{scale} |")
    return "\n".join(rows)


COORDINATES = ("unit", "log")


def _check_coordinates(coordinates: str) -> None:
  if coordinates not in COORDINATES:
    raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")


def _array_module(x):
  """jax.numpy for jax arrays and tracers, numpy otherwise (no jax import for numpy users)."""
  if type(x).__module__.startswith(("jax", "jaxlib")):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    return jnp
  return np
