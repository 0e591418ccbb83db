"""Evaluation metrics of the paper's appendix A.1, masked, in numpy (float64).

Pooling: every metric is computed per image over its valid pixels
(`mask > 0`) and then averaged over images (`image_mean`, each object counts
the same, as L does); `pixel_pooled` computes it once over the valid pixels of
all images together (large objects weigh more). Angles are in degrees except
`mse_rad2`, the mean squared angle in radians.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

NORMAL_KEYS = ("mae", "median", "within_11_25", "within_22_5", "within_30", "mse_rad2")
DEPTH_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "si_rmse_log")


def angles_deg(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
  pred = pred / np.maximum(np.linalg.norm(pred, axis=-1, keepdims=True), 1e-12)
  cos = np.clip(np.sum(pred * true, axis=-1), -1.0, 1.0)
  return np.degrees(np.arccos(cos))


def normal_metrics_of(theta_deg: np.ndarray) -> dict[str, float]:
  """Metrics of a flat array of per-pixel angle errors (degrees)."""
  theta_rad = np.radians(theta_deg)
  return {
      "mae": float(theta_deg.mean()),
      "median": float(np.median(theta_deg)),
      "within_11_25": float(100.0 * np.mean(theta_deg < 11.25)),
      "within_22_5": float(100.0 * np.mean(theta_deg < 22.5)),
      "within_30": float(100.0 * np.mean(theta_deg < 30.0)),
      "mse_rad2": float(np.mean(theta_rad ** 2)),
  }


def depth_metrics_of(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
  """Metrics of flat arrays of positive predicted and true depths."""
  if np.any(pred <= 0) or np.any(true <= 0):
    raise ValueError("depth metrics need positive depths on the mask")
  diff = pred - true
  log_diff = np.log(pred) - np.log(true)
  return {
      "abs_rel": float(np.mean(np.abs(diff) / true)),
      "sq_rel": float(np.mean(diff ** 2 / true)),
      "rmse": float(np.sqrt(np.mean(diff ** 2))),
      "rmse_log": float(np.sqrt(np.mean(log_diff ** 2))),
      "si_rmse_log": float(np.sqrt(max(np.mean(log_diff ** 2) - np.mean(log_diff) ** 2, 0.0))),
  }


def _pooled(per_pixel: Callable, arrays: list[np.ndarray], mask: np.ndarray) -> dict:
  valid = mask > 0
  if not valid.any(axis=tuple(range(1, valid.ndim))).all():
    raise ValueError("every image needs at least one valid pixel")
  per_image = [per_pixel(*(a[i][valid[i]] for a in arrays)) for i in range(len(mask))]
  return {
      "image_mean": {k: float(np.mean([m[k] for m in per_image])) for k in per_image[0]},
      "pixel_pooled": per_pixel(*(a[valid] for a in arrays)),
      "per_image": per_image,
  }


def normal_metrics(pred_BxHxWx3, true_BxHxWx3, mask_BxHxW) -> dict:
  """Normal metrics per image, averaged over images, and pooled over pixels."""
  theta = angles_deg(np.asarray(pred_BxHxWx3, np.float64), np.asarray(true_BxHxWx3, np.float64))
  return _pooled(normal_metrics_of, [theta], np.asarray(mask_BxHxW))


def depth_metrics(pred_BxHxW, true_BxHxW, mask_BxHxW) -> dict:
  """Depth metrics per image, averaged over images, and pooled over pixels."""
  return _pooled(depth_metrics_of, [np.asarray(pred_BxHxW, np.float64),
                                    np.asarray(true_BxHxW, np.float64)], np.asarray(mask_BxHxW))
