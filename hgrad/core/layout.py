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
  relative; in "log" and "logit" coordinates the optimizer moves its logarithm.
  `kind`: "weight" (one of a rule's unnormalized weights: the generator
  normalizes them) or "probability" (a Bernoulli probability); in "logit"
  coordinates the optimizer moves a weight's logarithm (softmax logits up to a
  constant) and a probability's logit.
  `group`: for a weight, the rule it belongs to; the weights of one group are
  one categorical choice (the generator normalizes them together, the prior
  draws them together). Weights without a group form one group.
  """

  name: str
  low: float
  high: float
  default: float
  doc: str = ""
  log_scale: bool = False
  kind: str = ""
  group: str = ""


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
    bad = np.nonzero(~(self.low < self.high))[0]
    if bad.size:
      raise ValueError(f"{name}: low must be below high for " + ", ".join(
          f"{self.names[i]} (low {self.low[i]:g}, high {self.high[i]:g})" for i in bad))
    bad = np.nonzero((self.low > self.default) | (self.default > self.high))[0]
    if bad.size:
      raise ValueError(f"{name}: default outside the box for {self.describe(bad)}")
    self.log_scale = np.array([s.log_scale for s in self.specs], bool)
    bad = np.nonzero(self.log_scale & (self.low <= 0))[0]
    if bad.size:
      raise ValueError(f"{name}: log_scale needs a positive lower bound for {self.describe(bad)}")
    kinds = np.array([s.kind for s in self.specs])
    bad = np.nonzero(~np.isin(kinds, KINDS))[0]
    if bad.size:
      raise ValueError(f"{name}: kind must be one of {KINDS} for {self.describe(bad)}")
    self.kind = kinds
    groups = {}
    for i, spec in enumerate(self.specs):
      if spec.kind == "weight":
        groups.setdefault(spec.group, []).append(i)
    self.weight_groups = {group: np.array(indices) for group, indices in groups.items()}
    bad = np.nonzero((kinds != "") & ((self.low < 0) | (self.high > 1)))[0]
    if bad.size:
      raise ValueError(f"{name}: a weight or probability must lie in [0, 1]: {self.describe(bad)}")
    # Per coordinate system: each dimension's transform (0 linear, 1 log, 2 logit) and the
    # transformed box that maps to [0, 1].
    self._transforms = {}
    for coordinates in COORDINATES[1:]:
      transform = np.where(self.log_scale, 1, 0)
      if coordinates == "logit":
        transform = np.where(kinds == "weight", 1, np.where(kinds == "probability", 2, transform))
      floor = np.where(self.log_scale, self.low, LOGIT_FLOOR)
      low = np.where(transform == 0, self.low, np.maximum(self.low, floor))
      high = np.where(transform == 2, np.minimum(self.high, 1 - LOGIT_FLOOR), self.high)
      self._transforms[coordinates] = (transform, _forward(np, transform, low),
                                       _forward(np, transform, high), low, high)

  @property
  def dim(self) -> int:
    """The number of dimensions of beta."""
    return len(self.specs)

  def index(self, name: str) -> int:
    """Position of dimension `name`; an unknown name is an error that lists the layout's names."""
    if name not in self.names:
      raise ValueError(f"{name!r} is not in the {self.name} layout (its names: "
                       f"{', '.join(self.names)})")
    return self.names.index(name)

  def describe(self, indices) -> str:
    """'3 (p_tetrahedron), 7 (...)': dimensions by index and name, for error messages."""
    return ", ".join(f"{i} ({self.names[i]})" for i in np.atleast_1d(indices))

  def check(self, beta, *, what: str = "beta") -> np.ndarray:
    """Returns beta as float32 (..., dim); raises ValueError on shape or NaN/inf.

    beta may also be a {name: value} mapping (how a run's results hold it), with
    every name of the layout and no other.
    """
    if isinstance(beta, dict):
      missing = [n for n in self.names if n not in beta]
      extra = sorted(set(beta) - set(self.names))
      if missing or extra:
        raise ValueError(f"{what} as {{name: value}} does not match the {self.name} layout: "
                         + "; ".join(part for part in (
                             f"missing {missing}" if missing else "",
                             f"not in the layout {extra}" if extra else "") if part))
      beta = [beta[n] for n in self.names]
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
    """Inverse of `to_unit`."""
    return self.low + u * (self.high - self.low)

  def to_coords(self, beta, coordinates: str = "unit"):
    """The optimizer's coordinates, each dimension in [0, 1] over its box.

    "unit": linear, (beta - low) / (high - low). "log": the same for every
    `log_scale` dimension's logarithm, so a step means the same relative
    change of a variance at 1e-3 and at 0.5. "logit": also a weight's
    logarithm and a probability's logit, so a step changes odds by the same
    factor at p = 0.01 and at 0.5; their box is cut at LOGIT_FLOOR (a weight
    or probability below it reads as LOGIT_FLOOR, 1 - LOGIT_FLOOR above).
    Works on numpy and jax arrays.
    """
    if coordinates == "unit":
      return self.to_unit(beta)
    _check_coordinates(coordinates)
    xp = _array_module(beta)
    transform, t_low, t_high, low, high = self._transforms[coordinates]
    t = _forward(xp, transform, xp.clip(beta, low, high))
    return xp.where(transform == 0, self.to_unit(beta), (t - t_low) / (t_high - t_low))

  def from_coords(self, u, coordinates: str = "unit"):
    """Inverse of `to_coords`."""
    if coordinates == "unit":
      return self.from_unit(u)
    _check_coordinates(coordinates)
    xp = _array_module(u)
    transform, t_low, t_high, _, _ = self._transforms[coordinates]
    return _inverse(xp, transform, t_low + u * (t_high - t_low))

  def unit_distance(self, beta_a, beta_b) -> float:
    """Euclidean distance in unit-box coordinates (how far a run moved beta, or is from beta*)."""
    return float(np.linalg.norm(self.to_unit(np.asarray(beta_a)) - self.to_unit(np.asarray(beta_b))))

  def sample(self, seed, n: int) -> np.ndarray:
    """n betas drawn from the layout's random-beta prior, inside the box.

    The paper's Table 1 "samples values of beta in advance"; this is that
    distribution, the same for every layout, read off each dimension's spec:

    * a rule's weights (``kind="weight"``, one ``group``): jointly from the
      flat Dirichlet, Dir(1, ..., 1), uniform over the simplex: each of k
      weights has mean 1/k and variance (k - 1) / (k^2 (k + 1));
    * a ``log_scale`` dimension (a variance): log-uniform on [low, high],
      mean (high - low) / ln(high / low);
    * every other dimension (probabilities, means, angles): uniform on
      [low, high], mean (low + high) / 2, variance (high - low)^2 / 12.

    A weight whose box ends below 1 is clipped to it.

    Args:
      seed: an int, a sequence of ints or a ``np.random.Generator``; the same
        seed draws the same betas.
      n: how many betas.

    Returns:
      float32 array of shape (n, dim).

    >>> layout = ParamLayout("toy", [ParamSpec("w_a", 0, 1, .5, kind="weight"),
    ...                               ParamSpec("w_b", 0, 1, .5, kind="weight"),
    ...                               ParamSpec("var", 1e-3, 1, .1, log_scale=True)])
    >>> betas = layout.sample(0, 4)
    >>> betas.shape, bool(np.allclose(betas[:, :2].sum(1), 1))
    ((4, 3), True)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
      raise ValueError(f"sample: n must be a whole number >= 0, got {n!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    uniform = rng.uniform(size=(n, self.dim))
    betas = self.low + uniform * (self.high - self.low)
    log_low, log_high = np.log(np.where(self.log_scale, self.low, 1.0)), np.log(self.high.clip(1e-30))
    betas = np.where(self.log_scale, np.exp(log_low + uniform * (log_high - log_low)), betas)
    for indices in self.weight_groups.values():
      betas[:, indices] = rng.dirichlet(np.ones(len(indices)), size=n)
    return self.clip(betas).astype(np.float32)

  def as_dict(self, beta) -> dict[str, float]:
    """beta as {name: value} (how results and metrics hold it; `check` takes it back)."""
    beta = np.asarray(beta, np.float64)
    return {n: float(v) for n, v in zip(self.names, beta)}

  def table(self) -> str:
    """Markdown table of the layout, for docs (docs/design.md §3)."""
    rows = ["| # | name | low | high | default | meaning |", "|---|---|---|---|---|---|"]
    for i, s in enumerate(self.specs):
      scale = (" (log scale)" if s.log_scale else
               {"weight": " (a logit in logit coordinates)",
                "probability": " (log-odds in logit coordinates)"}.get(s.kind, ""))
      rows.append(f"| {i} | {s.name} | {s.low:g} | {s.high:g} | {s.default:g} | {s.doc}{scale} |")
    return "\n".join(rows)


COORDINATES = ("unit", "log", "logit")
KINDS = ("", "weight", "probability")
LOGIT_FLOOR = 1e-3     # a weight or probability's smallest value in "logit" coordinates


def _forward(xp, transform, x):
  """x -> log x where transform is 1, logit x where 2, x elsewhere (finite in every branch)."""
  safe = xp.where(transform == 0, 0.5, xp.maximum(x, 1e-30))
  log = xp.log(safe)
  logit = log - xp.log(xp.maximum(1 - xp.where(transform == 2, safe, 0.5), 1e-30))
  return xp.where(transform == 1, log, xp.where(transform == 2, logit, x))


def _inverse(xp, transform, t):
  """Inverse of `_forward`: exp t where transform is 1, sigmoid t where 2, t elsewhere."""
  exp = xp.exp(xp.where(transform == 1, t, 0.0))
  sigmoid = 1 / (1 + xp.exp(-xp.where(transform == 2, t, 0.0)))
  return xp.where(transform == 1, exp, xp.where(transform == 2, sigmoid, t))


def _check_coordinates(coordinates: str) -> None:
  if coordinates not in COORDINATES:
    raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")


def _array_module(x):
  """jax.numpy for jax arrays and tracers, numpy otherwise (no jax import for numpy users)."""
  if type(x).__module__.startswith(("jax", "jaxlib")):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    return jnp
  return np
