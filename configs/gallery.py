"""Gallery of CSG samples at the default beta0.

  python -m experiments.gallery --workdir=/tmp/gallery
  python -m experiments.gallery --workdir=/tmp/gallery --config.csg.max_depth=2
"""

import ml_collections

from configs import mbii as mbii_configs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.num_samples = 16
  config.columns = 4
  config.seed = 0
  config.scale = 2              # upscale factor of the PNG
  config.num_workers = 0        # 16 samples: rendering in-process is fastest
  config.csg = mbii_configs.get_config("cpu").csg     # the grammar the MIT-Berkeley run uses
  return config
