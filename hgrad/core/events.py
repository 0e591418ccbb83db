"""TensorBoard event files next to metrics.jsonl (tensorboardX), so a run can be watched live.

  tensorboard --logdir runs/        # every run directory under it is a run

Every number of a metrics line is a scalar at its global step (L, L_raw,
L_unroll, train_loss, grad_norm, grad_cosine, wall_s, host_render_s,
device_s, eta_s, ...; not the unix `time`), each beta dimension is
`beta/<name>`, and the sample grid (samples.png) is an image whenever the
run writes its outputs. A resumed run purges what the previous process
logged past its checkpoint, as metrics.jsonl does.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from tensorboardX import SummaryWriter


NOT_SCALARS = ("step", "time")


class EventWriter:
  """Writes a run's metrics lines (and images) as TensorBoard events in `workdir`."""

  def __init__(self, workdir: str, resume_step: int = 0, write: bool = True):
    """`write=False`: a writer that writes nothing (processes other than the run's writer)."""
    self._writer = SummaryWriter(logdir=workdir, purge_step=resume_step + 1 if resume_step else None,
                                 flush_secs=30) if write else None

  def record(self, record: dict) -> None:
    """A metrics line: every number a scalar at its step, beta as beta/<name>."""
    if self._writer is None:
      return
    step = int(record["step"])
    for key, value in record.items():
      if key == "beta":
        for name, b in value.items():
          self._writer.add_scalar(f"beta/{name}", float(b), step)
      elif (key not in NOT_SCALARS and isinstance(value, (int, float))
            and not isinstance(value, bool)):
        self._writer.add_scalar(key, float(value), step)

  def image(self, tag: str, path: str, step: int) -> None:
    """A PNG the run wrote (e.g. samples.png), if it exists."""
    if self._writer is not None and os.path.exists(path):
      with Image.open(path) as image:
        self._writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()

  def __enter__(self) -> "EventWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
