"""hgrad: learning to generate 3D training data through hybrid gradient.

The package follows the pipeline (docs/design.md §1):

  hgrad.generators  grammar -> render: f(beta, r) on the host (CSG, scenes, faces)
  hgrad.core        bridge (pure_callback), estimator, unroll, outer step, run loop
  hgrad.tasks       networks, losses, data and metrics of the paper's experiments; registry
  hgrad.baselines   Basic Random Search / Shape Evolution comparisons
"""

from hgrad.core.bridge import Generator, RenderConfig
from hgrad.core.estimator import Deferred, hybrid_grad, hybrid_value_and_grad, hybrid_vjp
from hgrad.core.layout import ParamLayout, ParamSpec
from hgrad.core.loop import Schedule, Task, run
from hgrad.core.outer import HybridGradient, OuterConfig, OuterState
from hgrad.core.unroll import InnerConfig, InnerState, unroll
from hgrad.generators.csg import CSG_LAYOUT, CSGConfig
from hgrad.generators.csg_host import csg_generator
from hgrad.generators.sample import Sample

__all__ = ["CSG_LAYOUT", "CSGConfig", "Deferred", "Generator", "HybridGradient", "InnerConfig",
           "InnerState", "OuterConfig", "OuterState", "ParamLayout", "ParamSpec", "RenderConfig",
           "Sample", "Schedule", "Task", "csg_generator", "hybrid_grad", "hybrid_value_and_grad",
           "hybrid_vjp", "run", "unroll"]
__version__ = "0.2.0"
