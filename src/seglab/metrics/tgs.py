"""The TGS Salt Identification Challenge (Kaggle 2018) metric.

Per image, with one object per mask: at each IoU threshold t in 0.50, 0.55, ..., 0.95 the prediction is
a true positive when IoU > t (precision TP / (TP + FP + FN) = 1), else a false positive plus a false
negative (precision 0); the image score is the mean over the ten thresholds. Both masks empty scores 1;
exactly one empty scores 0 (its IoU is 0). The dataset score is the mean over images.

"IoU > k/20" is tested as ``20 * intersection > k * union`` in integers, so scores are exact and the
numpy and torch versions agree bit for bit.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

THRESHOLD_STEPS = np.arange(10, 20)  # threshold k / 20 for k = 10..19, i.e. 0.50 ... 0.95
THRESHOLDS = THRESHOLD_STEPS / 20.0


def _as_binary(mask: np.ndarray, name: str, ndim: int) -> np.ndarray:
    """``mask`` as a bool array, after checking its rank and that it holds only 0/1 (or bool)."""
    array = np.asarray(mask)
    if array.ndim != ndim:
        layout = "(H, W)" if ndim == 2 else "(N, H, W)"
        raise ValueError(f"{name} must be a {layout} mask; got shape {array.shape}")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must be a binary mask (bool or 0/1); threshold probabilities or labels first")
    return array.astype(bool)


def _scores_from_counts(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """Per-image scores from integer intersection and union pixel counts."""
    hits = 20 * intersection[..., None] > THRESHOLD_STEPS * union[..., None]
    return np.where(union == 0, 1.0, hits.mean(-1))


def tgs_image_score(pred: np.ndarray, target: np.ndarray) -> float:
    """TGS score of one ``(H, W)`` binary prediction against its binary target."""
    pred_mask = _as_binary(pred, "pred", 2)
    target_mask = _as_binary(target, "target", 2)
    if pred_mask.shape != target_mask.shape:
        raise ValueError(f"pred shape {pred_mask.shape} differs from target shape {target_mask.shape}")
    intersection = np.count_nonzero(pred_mask & target_mask)
    union = np.count_nonzero(pred_mask | target_mask)
    return float(_scores_from_counts(np.asarray(intersection), np.asarray(union)))


def tgs_score(preds: np.ndarray, targets: np.ndarray) -> float:
    """Mean TGS score over ``(N, H, W)`` binary predictions and targets."""
    pred_masks = _as_binary(preds, "preds", 3)
    target_masks = _as_binary(targets, "targets", 3)
    if pred_masks.shape != target_masks.shape:
        raise ValueError(f"preds shape {pred_masks.shape} differs from targets shape {target_masks.shape}")
    if pred_masks.shape[0] == 0:
        raise ValueError("tgs_score needs at least one image; got N = 0")
    intersection = (pred_masks & target_masks).sum(axis=(1, 2))
    union = (pred_masks | target_masks).sum(axis=(1, 2))
    return float(_scores_from_counts(intersection, union).mean())


def tgs_scores_torch(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image TGS scores ``(N,)`` float32 of ``(N, H, W)`` binary (bool or 0/1) tensors, on their device."""
    if pred.ndim != 3 or pred.shape != target.shape:
        raise ValueError(
            "pred and target must be (N, H, W) masks of the same shape; "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    for name, mask in (("pred", pred), ("target", target)):
        if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{name} must be a binary mask (bool or 0/1); threshold probabilities or labels first")
    pred_mask, target_mask = pred.bool(), target.bool()
    intersection = (pred_mask & target_mask).flatten(1).sum(1)
    union = (pred_mask | target_mask).flatten(1).sum(1)
    steps = torch.as_tensor(THRESHOLD_STEPS, device=pred.device)
    hits = 20 * intersection[:, None] > steps * union[:, None]
    return torch.where(union == 0, 1.0, hits.float().mean(1))


# Bins of true foreground coverage for the breakdown: the competition's hard cases are the empty images (one stray
# pixel scores 0) and the small-object ones (a few pixels off fails the high IoU thresholds).
COVERAGE_EDGES = (0.0, 0.02, 0.1, 0.3, 0.7, 1.0)
COVERAGE_BIN_NAMES = ("empty",) + tuple(f"{lo:g}-{hi:g}" for lo, hi in zip(COVERAGE_EDGES[:-1], COVERAGE_EDGES[1:]))
BY_COVERAGE_HEADERS = ("coverage", "images", "TGS", "emptiness wrong", "score lost")  # titles of BY_COVERAGE_KEYS
BY_COVERAGE_KEYS = ("bin", "images", "tgs", "emptiness_errors", "lost")
BY_COVERAGE_NOTE = ("Emptiness wrong: an object predicted on an empty image, or none on an image with an object (each "
                    "scores 0). Score lost: the bin's share of 1 - TGS over all images.")


def coverage_bin_of(coverage: Sequence[float]) -> np.ndarray:
    """Index into ``COVERAGE_BIN_NAMES`` per image: 0 = empty, then one per ``COVERAGE_EDGES`` interval (lo, hi]."""
    cov = np.asarray(coverage, dtype=float)
    return np.where(cov <= 0, 0, np.searchsorted(np.asarray(COVERAGE_EDGES[1:]), cov, side="left") + 1)


def emptiness_counts(coverage: Sequence[float], pred_coverage: Sequence[float]) -> dict[str, int]:
    """Binary tasks in plain words: empty images, those predicted with an object, images with an object, those whose
    object was missed (nothing predicted), from each image's true and predicted foreground fraction."""
    cov, pred = np.asarray(coverage, dtype=float), np.asarray(pred_coverage, dtype=float)
    empty = cov <= 0
    return {"empty_images": int(empty.sum()), "empty_predicted_with_object": int((empty & (pred > 0)).sum()),
            "images_with_object": int((~empty).sum()), "object_missed": int((~empty & (pred <= 0)).sum())}


def tgs_by_coverage(scores: Sequence[float], coverage: Sequence[float], pred_coverage: Sequence[float]) -> list[dict]:
    """Where the TGS score is lost: per coverage bin (empty first), images, mean score (None if no image), share lost.

    ``coverage``/``pred_coverage`` are each image's true/predicted foreground fraction. ``emptiness_errors`` counts
    the images whose emptiness is wrong (empty bin: predicted an object; other bins: predicted nothing), which score 0.
    ``lost`` is the bin's sum of (1 - score) over all images, so the rows' ``lost`` add up to 1 - the mean score.
    """
    s, cov, pred = (np.asarray(v, dtype=float) for v in (scores, coverage, pred_coverage))
    if not (len(s) == len(cov) == len(pred)) or len(s) == 0:
        raise ValueError(f"need one score, coverage and pred_coverage per image; got {len(s)}, {len(cov)}, {len(pred)}")
    bins = coverage_bin_of(cov)
    rows = []
    for b, name in enumerate(COVERAGE_BIN_NAMES):
        members, wrong = bins == b, (pred > 0) if b == 0 else (pred <= 0)
        n = int(members.sum())
        rows.append({"bin": name, "images": n, "tgs": float(s[members].mean()) if n else None,
                     "emptiness_errors": int((members & wrong).sum()),
                     "lost": float((1 - s[members]).sum() / len(s))})
    return rows
