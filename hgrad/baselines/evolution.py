"""Shape Evolution (Yang & Deng 2018), re-implemented on CSG meshes as the paper did.

A population of explicit CSG trees is the training set. Each generation makes
candidates by mutation (perturb one node's transform or size, or replace a
subtree with a fresh one from the grammar) and combination (union or
subtraction of two members), trains the warm-started network on the current
dataset plus each candidate's renders, and scores each candidate by the
network's validation loss L. The fittest candidates join the population and
the network keeps the weights trained with the best one.

Operators respect the depth bound, and every candidate is built once with
manifold3d before it is used: one whose mesh is empty or degenerate is
rejected and drawn again (counted in `rejected`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from hgrad.core import estimator
from hgrad.core.outer import InnerProblem
from hgrad.generators import csg
from hgrad.generators.sample import Sample

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class EvolutionConfig:
  initial_population: int = 16    # shapes sampled from the grammar at the run's beta0
  max_population: int = 64        # oldest members leave beyond this
  candidates: int = 9             # evaluated per generation (BRS evaluates 2m + 1)
  survivors: int = 2              # fittest candidates joining the population per generation
  mutation_prob: float = 0.7      # otherwise combination
  perturb_std: float = 0.25
  at_once: int | None = None      # candidates trained at once (estimator.map_evaluations)

  def __post_init__(self):
    estimator.check_at_once(self.at_once)
    if self.candidates < 1 or not 1 <= self.survivors <= self.candidates:
      raise ValueError("EvolutionConfig needs candidates >= 1 and 1 <= survivors <= candidates")
    if self.initial_population < 2 or self.max_population < self.initial_population:
      raise ValueError("EvolutionConfig needs 2 <= initial_population <= max_population")


def node_paths(tree: csg.Tree, path: Path = ()) -> list[Path]:
  if isinstance(tree, csg.Primitive):
    return [path]
  return [path] + node_paths(tree.base, path + ("base",)) + node_paths(tree.part, path + ("part",))


def get_node(tree: csg.Tree, path: Path) -> csg.Tree:
  for field in path:
    tree = getattr(tree, field)
  return tree


def replace_node(tree: csg.Tree, path: Path, new: csg.Tree) -> csg.Tree:
  if not path:
    return new
  child = getattr(tree, path[0])
  return tree._replace(**{path[0]: replace_node(child, path[1:], new)})


def _small_rotation(rng: np.random.Generator, std: float) -> np.ndarray:
  q = np.concatenate([[1.0], std * rng.standard_normal(3)])
  return csg.rotation_from_quaternion(q)


def perturb(tree: csg.Tree, rng: np.random.Generator, std: float) -> csg.Tree:
  """Perturbs one node: a primitive's size, or a combination's transform of its part."""
  path = node_paths(tree)[rng.integers(len(node_paths(tree)))]
  node = get_node(tree, path)
  if isinstance(node, csg.Primitive):
    size = tuple(float(s * np.exp(std * rng.standard_normal())) for s in node.size)
    return replace_node(tree, path, node._replace(size=size))
  return replace_node(tree, path, node._replace(
      translation=node.translation + std * rng.standard_normal(3),
      rotation=_small_rotation(rng, std) @ node.rotation,
      scale=node.scale * np.exp(std * rng.standard_normal(3))))


def replace_subtree(tree: csg.Tree, rng: np.random.Generator,
                    sample_subtree: Callable[[np.random.Generator, int], csg.Tree],
                    max_depth: int) -> csg.Tree:
  """Replaces a random node by a fresh grammar sample that fits under the depth bound."""
  path = node_paths(tree)[rng.integers(len(node_paths(tree)))]
  return replace_node(tree, path, sample_subtree(rng, max_depth - len(path)))


def combine(a: csg.Tree, b: csg.Tree, rng: np.random.Generator, max_depth: int) -> csg.Tree:
  """Union or subtraction of two shapes; deeper operands are cut down to fit the bound."""
  while 1 + max(csg.tree_depth(a), csg.tree_depth(b)) > max_depth:
    if csg.tree_depth(a) >= csg.tree_depth(b):
      a = a.base if rng.random() < 0.5 else a.part
    else:
      b = b.base if rng.random() < 0.5 else b.part
  direction = rng.standard_normal(3)
  return csg.Combine(
      operation=int(rng.integers(2)), base=a, part=b,
      attach_dir=direction / np.linalg.norm(direction),
      translation=0.2 * rng.standard_normal(3),
      rotation=csg.rotation_from_quaternion(rng.standard_normal(4)),
      scale=np.exp(-0.3 + 0.3 * rng.standard_normal(3)))


def is_valid(tree: csg.Tree, config: csg.CSGConfig) -> bool:
  """Builds the mesh: non-empty, and projects to a non-degenerate image."""
  try:
    shape, _ = csg.build_mesh(tree, config)
    csg.to_camera(shape, csg.draw_noise(0, config.max_depth), config)
  except ValueError:
    return False
  return not shape.is_empty()


class ShapeEvolution:
  """The evolutionary baseline on the same generator, network, data and budget.

  `step(inner_state, step) -> (inner_state, metrics)` runs one generation;
  `train(inner_state, step)` a plain training step on population renders.
  `beta0` is the grammar's parameters that the initial population and every
  fresh subtree are sampled at: the run's start (e.g. a random beta of Table 1),
  not necessarily the generator's defaults.
  """

  def __init__(self, generator, problem: InnerProblem, config: EvolutionConfig, seed: int, *,
               beta0):
    self.generator, self.problem, self.config = generator, problem, config
    self.beta0 = generator.layout.check(beta0, what="ShapeEvolution beta0").astype(np.float64)
    if self.beta0.ndim != 1:
      raise ValueError(f"ShapeEvolution beta0 must be one beta, shape ({generator.layout.dim},); "
                       f"got shape {self.beta0.shape}")
    self.csg_config: csg.CSGConfig = generator.config
    self.seed = seed
    self.num_samples = problem.config.num_samples
    self.rejected = 0
    rng = np.random.default_rng([seed, 0])
    self.population = [self._sample_subtree(rng, self.csg_config.max_depth)
                       for _ in range(config.initial_population)]

    def train_and_eval(inner, data):
      trained, losses = problem.train(inner, data, remat=False)
      return problem.eval_loss(trained.params), trained, losses.mean()

    self._evaluate_candidates = jax.jit(lambda inner, data: estimator.map_evaluations(
        lambda one: train_and_eval(inner, one), data, config.at_once))
    self._train_on = jax.jit(train_and_eval)

  def _sample_subtree(self, rng: np.random.Generator, max_depth: int) -> csg.Tree:
    config = dataclasses.replace(self.csg_config, max_depth=max(0, max_depth))
    while True:
      noise = csg.draw_noise(int(rng.integers(2 ** 32)), config.max_depth)
      tree = csg.sample_tree(self.beta0, noise, config)
      if is_valid(tree, self.csg_config):
        return tree

  def offspring(self, rng: np.random.Generator) -> csg.Tree:
    """One valid candidate from the population (rejected draws are counted and redrawn)."""
    cfg = self.config
    while True:
      parent = self.population[rng.integers(len(self.population))]
      if rng.random() < cfg.mutation_prob:
        if rng.random() < 0.5:
          child = perturb(parent, rng, cfg.perturb_std)
        else:
          child = replace_subtree(parent, rng, self._sample_subtree, self.csg_config.max_depth)
      else:
        other = self.population[rng.integers(len(self.population))]
        child = combine(parent, other, rng, self.csg_config.max_depth)
      if csg.tree_depth(child) <= self.csg_config.max_depth and is_valid(child, self.csg_config):
        return child
      self.rejected += 1

  def _render(self, trees: list, rng: np.random.Generator, groups: int) -> Sample:
    data = self.generator.render_trees(trees, rng.integers(2 ** 32, size=len(trees), dtype=np.uint64))
    return Sample(*(x.reshape((groups, self.num_samples) + x.shape[1:]) for x in data))

  def step(self, inner, step: int) -> tuple[Any, dict]:
    """One generation: candidates, their renders, train-and-evaluate each, selection."""
    rng = np.random.default_rng([self.seed, 1, step])
    cfg, n = self.config, self.num_samples
    candidates = [self.offspring(rng) for _ in range(cfg.candidates)]
    trees = []
    for candidate in candidates:
      own = n // 2
      trees += [candidate] * own
      trees += [self.population[i] for i in rng.integers(len(self.population), size=n - own)]
    data = self._render(trees, rng, cfg.candidates)
    losses, trained, train_losses = jax.device_get(self._evaluate_candidates(inner, data))
    order = np.argsort(losses)
    best = int(order[0])
    inner = jax.tree.map(lambda x: x[best], trained)
    self.population.extend(candidates[i] for i in order[:cfg.survivors])
    del self.population[:max(0, len(self.population) - cfg.max_population)]
    return inner, {"L": float(losses[best]), "train_loss": float(train_losses[best]),
                   "population": len(self.population), "rejected": self.rejected}

  def train(self, inner, step: int) -> tuple[Any, dict]:
    """A plain training step on renders of the current population."""
    rng = np.random.default_rng([self.seed, 2, step])
    trees = [self.population[i] for i in rng.integers(len(self.population), size=self.num_samples)]
    data = jax.tree.map(lambda x: x[0], self._render(trees, rng, 1))
    loss, trained, train_loss = self._train_on(inner, data)
    return trained, {"L": float(loss), "train_loss": float(train_loss)}
