"""Figures of a run: the L curve and samples before/after (matplotlib, Agg)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hgrad import viz  # noqa: E402


def finish(fig, axes, xlabels, ylabel: str, path: str) -> None:
  """Labels, grid and legend of a row of L plots, then saves and closes the figure."""
  for ax, xlabel in zip(axes, xlabels):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def curve(history: list[dict], path: str, *, ylabel: str = "L (mean angle error, deg)",
          reference: dict[str, float] | None = None, title: str = "") -> None:
  """L against global step and against wall time; outer steps and plain-step evaluations."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.4 if title else 4))
  if title:
    fig.suptitle(title, fontsize=9)
  for phase, style in (("outer", "-"), ("warmup", "o"), ("train", "s"), ("final", "^")):
    # An outer step's L is its objective, L after its K inner steps at the raw weights.
    key = "L_unroll" if phase == "outer" else "L"
    rows = [r for r in history if r["phase"] == phase and key in r]
    if not rows:
      continue
    steps = [r["step"] for r in rows]
    minutes = [r["elapsed_s"] / 60 for r in rows]
    values = [r[key] for r in rows]
    label = {"outer": "outer steps (L after their unroll)", "warmup": "warm-up at beta0",
             "train": "plain steps at current beta", "final": "final training at the learned beta"}[phase]
    axes[0].plot(steps, values, style, label=label, markersize=3)
    axes[1].plot(minutes, values, style, label=label, markersize=3)
  for name, value in (reference or {}).items():
    for ax in axes:
      ax.axhline(value, color="gray", linestyle="--", linewidth=1)
      ax.text(ax.get_xlim()[0], value, f" {name}", va="bottom", color="gray", fontsize=8)
  finish(fig, axes, ("global step", "wall time (min)"), ylabel, path)


def samples(left, right, titles: tuple[str, str], title: str, path: str,
            input_name: str = "input", per_row: int = 2) -> None:
  """Two batches of samples (e.g. at beta0 | at the current beta) side by side, each sample
  as a strip input | normals | depth | mask with its columns named, under a title."""
  grids = [viz.sample_grid(batch, per_row) for batch in (left, right)]
  width = np.asarray(left.image).shape[2]
  names = (input_name,) + viz.STRIP_COLUMNS[1:]
  centers = [viz.GUTTER + c * (len(names) * width + viz.GUTTER) + j * width + width / 2
             for c in range(per_row) for j in range(len(names))]
  height = grids[0].shape[0]
  fig, axes = plt.subplots(1, 2, figsize=(2 * grids[0].shape[1] / 60, height / 60 + 0.8))
  for ax, image, subtitle in zip(axes, grids, titles):
    ax.imshow(np.clip(image, 0, 1), interpolation="nearest")
    ax.set_title(subtitle, fontsize=9)
    ax.set_xticks(centers, list(names) * per_row, fontsize=6)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_yticks([])
    for spine in ax.spines.values():
      spine.set_visible(False)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
