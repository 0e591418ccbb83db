"""hgrad: learning to generate 3D training data through hybrid gradient.

The engine, which names no task, network or loss:

  Generator, GeneratorError, host_errors   a host renderer f(beta, r) behind jax.pure_callback
  ParamLayout, ParamSpec                   beta's names, box, defaults and random-beta prior
  hybrid_vjp, hybrid_grad, ...             the hybrid-gradient estimate through a generator
  estimators                               Estimator factories: hybrid, random_search, placebo
  OuterTrainer, OuterConfig, InnerConfig   tune beta while the network trains (jitted steps)
  Task, Schedule, run                      the run loop: phases, metrics, checkpoints, resume

Subpackages (imported on first use): `hgrad.generators` (the paper's grammars:
CSG shapes, indoor scenes, faces), `hgrad.tasks` (the paper's experiments and
their registry), `hgrad.baselines`, `hgrad.study` and `hgrad.random_starts`
(studies). docs/design.md has the math, README.md the tour.
"""

import importlib

from hgrad.core import estimator as estimators
from hgrad.core.bridge import Generator, RenderConfig, host_errors
from hgrad.core.estimator import Deferred, Estimator, hybrid_grad, hybrid_value_and_grad, hybrid_vjp
from hgrad.core.layout import ParamLayout, ParamSpec
from hgrad.core.loop import Schedule, Task, run
from hgrad.core.outer import BetaUpdate, InnerProblem, OuterConfig, OuterState, OuterTrainer
from hgrad.core.errors import DataError, GeneratorError, RenderError
from hgrad.core.unroll import InnerConfig, InnerState, unroll

__all__ = ["BetaUpdate", "DataError", "Deferred", "Estimator", "Generator", "GeneratorError", "InnerConfig",
           "InnerProblem", "InnerState", "OuterConfig", "OuterState", "OuterTrainer",
           "ParamLayout", "ParamSpec", "RenderConfig", "RenderError", "Schedule", "Task",
           "estimators", "host_errors", "hybrid_grad", "hybrid_value_and_grad", "hybrid_vjp",
           "run", "unroll"]
__version__ = "0.3.0"

_SUBMODULES = ("generators", "tasks", "baselines", "study", "random_starts")


def __getattr__(name: str):
  """`hgrad.tasks.registry`, `hgrad.generators`, ... without importing them at `import hgrad`."""
  if name in _SUBMODULES:
    return importlib.import_module(f"hgrad.{name}")
  raise AttributeError(f"module 'hgrad' has no attribute {name!r}")
