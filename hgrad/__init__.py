"""hgrad: learning to generate 3D training data through hybrid gradient."""

from hgrad.bridge import Generator
from hgrad.csg import CSG_LAYOUT, CSGConfig
from hgrad.csg_host import csg_generator
from hgrad.estimator import hybrid_grad, hybrid_value_and_grad
from hgrad.layout import ParamLayout, ParamSpec
from hgrad.sample import Sample

__all__ = ["CSG_LAYOUT", "CSGConfig", "Generator", "ParamLayout", "ParamSpec", "Sample",
           "csg_generator", "hybrid_grad", "hybrid_value_and_grad"]
__version__ = "0.1.0"
