"""Metrics against hand-computed values on small arrays."""

import numpy as np
import pytest

from hgrad.tasks import metrics


def _unit_at(angle_deg):
  a = np.radians(angle_deg)
  return np.array([np.sin(a), 0.0, np.cos(a)])


def test_normal_metrics_by_hand():
  # Image 0: errors 0, 10, 20, 40 degrees; image 1: 35 and 5 degrees, two masked pixels.
  true = np.zeros((2, 2, 2, 3))
  true[...] = [0.0, 0.0, 1.0]
  pred = np.zeros((2, 2, 2, 3))
  for (i, r, c), angle in zip([(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)],
                              [0, 10, 20, 40, 35, 5, 80, 80]):
    pred[i, r, c] = 2.5 * _unit_at(angle)          # unnormalized on purpose
  mask = np.array([[[1, 1], [1, 1]], [[1, 1], [0, 0]]], np.float32)
  out = metrics.normal_metrics(pred, true, mask)
  img0 = out["per_image"][0]
  assert img0["mae"] == pytest.approx(17.5)
  assert img0["median"] == pytest.approx(15.0)
  assert img0["within_11_25"] == pytest.approx(50.0)
  assert img0["within_22_5"] == pytest.approx(75.0)
  assert img0["within_30"] == pytest.approx(75.0)
  assert img0["mse_rad2"] == pytest.approx(np.mean(np.radians([0, 10, 20, 40]) ** 2))
  img1 = out["per_image"][1]
  assert img1["mae"] == pytest.approx(20.0) and img1["within_30"] == pytest.approx(50.0)
  assert out["image_mean"]["mae"] == pytest.approx(18.75)
  assert out["image_mean"]["within_11_25"] == pytest.approx(50.0)
  pooled = out["pixel_pooled"]
  assert pooled["mae"] == pytest.approx(np.mean([0, 10, 20, 40, 35, 5]))
  assert pooled["median"] == pytest.approx(15.0)
  assert pooled["within_30"] == pytest.approx(100 * 4 / 6)


def test_depth_metrics_by_hand():
  true = np.array([[[1.0, 2.0], [4.0, 9.0]]])
  pred = np.array([[[2.0, 2.0], [2.0, 3.0]]])
  mask = np.array([[[1, 1], [1, 0]]])
  out = metrics.depth_metrics(pred, true, mask)["image_mean"]
  d = np.array([1.0, 0.0, -2.0])
  t = np.array([1.0, 2.0, 4.0])
  log_d = np.log([2.0, 2.0, 2.0]) - np.log(t)
  assert out["abs_rel"] == pytest.approx(np.mean(np.abs(d) / t))          # (1 + 0 + 0.5) / 3
  assert out["sq_rel"] == pytest.approx(np.mean(d ** 2 / t))              # (1 + 0 + 1) / 3
  assert out["rmse"] == pytest.approx(np.sqrt(5 / 3))
  assert out["rmse_log"] == pytest.approx(np.sqrt(np.mean(log_d ** 2)))
  assert out["si_rmse_log"] == pytest.approx(np.sqrt(np.mean(log_d ** 2) - np.mean(log_d) ** 2))
  # Scale-invariant: doubling every prediction changes rmse_log but not si_rmse_log.
  doubled = metrics.depth_metrics(2 * pred, true, mask)["image_mean"]
  assert doubled["si_rmse_log"] == pytest.approx(out["si_rmse_log"])
  assert doubled["rmse_log"] != pytest.approx(out["rmse_log"])


def test_metrics_reject_empty_masks_and_bad_depth():
  with pytest.raises(ValueError, match="at least one valid pixel"):
    metrics.normal_metrics(np.ones((1, 2, 2, 3)), np.ones((1, 2, 2, 3)), np.zeros((1, 2, 2)))
  with pytest.raises(ValueError, match="positive depths"):
    metrics.depth_metrics(np.zeros((1, 2, 2)), np.ones((1, 2, 2)), np.ones((1, 2, 2)))
