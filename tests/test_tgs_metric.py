"""TGS Salt metric: empty-mask rules, exact partial-overlap values, numpy and torch agree."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays

from seglab.metrics.tgs import THRESHOLDS, tgs_by_coverage, tgs_image_score, tgs_score, tgs_scores_torch

EMPTY = np.zeros((6, 6), dtype=bool)
BLOCK = np.zeros((6, 6), dtype=bool)
BLOCK[1:4, 1:4] = True


def test_thresholds_are_the_competition_ones():
    assert np.allclose(THRESHOLDS, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])


@pytest.mark.parametrize(
    "pred,target,expected",
    [(EMPTY, EMPTY, 1.0), (BLOCK, EMPTY, 0.0), (EMPTY, BLOCK, 0.0), (BLOCK, BLOCK, 1.0)],
    ids=["both-empty", "false-positive-on-empty", "missed-object", "perfect"],
)
def test_empty_and_non_empty_combinations(pred, target, expected):
    assert tgs_image_score(pred, target) == expected


def test_partial_overlaps_exact_values():
    target = np.zeros((10, 10), dtype=np.uint8)
    target[0, :] = 1  # 10 pixels
    pred = target.copy()
    pred[0, 8:] = 0  # 8 of them: IoU 0.8 exceeds 0.50..0.75 (6 thresholds) but not 0.80 (strict ">")
    assert tgs_image_score(pred, target) == pytest.approx(0.6)
    over = np.zeros((10, 10), dtype=np.uint8)
    over[0, :4] = 1
    grown = over.copy()
    grown[1, :2] = 1  # IoU 4/6 = 0.667 exceeds 0.50, 0.55, 0.60, 0.65
    assert tgs_image_score(grown, over) == pytest.approx(0.4)
    big = np.zeros((10, 10), dtype=bool)
    big[:5, :] = True  # 50 pixels
    part = np.zeros_like(big)
    part.flat[:31] = True  # 31 of them: IoU 0.62 exceeds 0.50, 0.55, 0.60
    assert tgs_image_score(part, big) == pytest.approx(0.3)


def test_dataset_score_is_mean_over_images():
    preds = np.stack([EMPTY, BLOCK, EMPTY, BLOCK])
    targets = np.stack([EMPTY, EMPTY, BLOCK, BLOCK])
    assert tgs_score(preds, targets) == pytest.approx(0.5)
    assert tgs_scores_torch(torch.from_numpy(preds), torch.from_numpy(targets)).tolist() == [1.0, 0.0, 0.0, 1.0]


@settings(max_examples=40, deadline=None)
@given(
    preds=arrays(bool, (4, 7, 5)),
    targets=arrays(bool, (4, 7, 5)),
)
def test_torch_version_matches_numpy(preds, targets):
    per_image = np.array([tgs_image_score(p, t) for p, t in zip(preds, targets)])
    torch_scores = tgs_scores_torch(torch.from_numpy(preds), torch.from_numpy(targets).to(torch.uint8))
    assert torch_scores.dtype == torch.float32
    assert np.allclose(torch_scores.numpy(), per_image)
    assert tgs_score(preds, targets) == pytest.approx(per_image.mean())


def test_rejects_probabilities_and_shape_mismatch():
    with pytest.raises(ValueError, match="binary mask"):
        tgs_image_score(np.full((3, 3), 0.7), EMPTY[:3, :3])
    with pytest.raises(ValueError, match="differs"):
        tgs_image_score(EMPTY, EMPTY[:3])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        tgs_score(EMPTY, EMPTY)
    with pytest.raises(ValueError, match="binary mask"):
        tgs_scores_torch(torch.full((1, 3, 3), 0.5), torch.zeros(1, 3, 3))


def test_by_coverage_bins_scores_emptiness_errors_and_lost_share():
    # two empty images (one false alarm), a 1% object missed entirely, a 50% object at 0.8, a 90% object at 1.0
    scores = [1.0, 0.0, 0.0, 0.8, 1.0]
    coverage = [0.0, 0.0, 0.01, 0.5, 0.9]
    pred_coverage = [0.0, 0.003, 0.0, 0.45, 0.9]
    rows = {r["bin"]: r for r in tgs_by_coverage(scores, coverage, pred_coverage)}
    assert list(rows) == ["empty", "0-0.02", "0.02-0.1", "0.1-0.3", "0.3-0.7", "0.7-1"]
    assert rows["empty"] == {"bin": "empty", "images": 2, "tgs": 0.5, "emptiness_errors": 1, "lost": 0.2}
    assert rows["0-0.02"] == {"bin": "0-0.02", "images": 1, "tgs": 0.0, "emptiness_errors": 1, "lost": 0.2}
    assert rows["0.3-0.7"]["tgs"] == 0.8 and rows["0.3-0.7"]["emptiness_errors"] == 0
    assert rows["0.3-0.7"]["lost"] == pytest.approx(0.04)
    assert rows["0.02-0.1"]["images"] == 0 and rows["0.02-0.1"]["tgs"] is None  # None, not NaN: valid JSON
    assert sum(r["lost"] for r in rows.values()) == pytest.approx(1 - np.mean(scores))
    with pytest.raises(ValueError, match="one score, coverage and pred_coverage per image"):
        tgs_by_coverage([1.0], [0.0, 0.1], [0.0])
