"""Class weights for imbalanced segmentation, computed from per-class pixel counts."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

WEIGHTING_METHODS = ("inverse", "inverse_sqrt", "median_freq")


def count_class_pixels(masks: Iterable[np.ndarray], num_classes: int, ignore_index: int | None = None) -> list[int]:
    """Pixels per label over ``masks`` (class-index arrays); one count per label, 2 for a binary task."""
    num_labels = max(int(num_classes), 2)
    counts = np.zeros(num_labels, dtype=np.int64)
    for mask in masks:
        values = np.asarray(mask).ravel().astype(np.int64)
        if ignore_index is not None:
            values = values[values != ignore_index]
        if values.size and (values.min() < 0 or values.max() >= num_labels):
            bad = values[(values < 0) | (values >= num_labels)][0]
            raise ValueError(
                f"mask value {bad} is outside [0, {num_labels}) and not ignore_index={ignore_index}; "
                "set ignore_index or fix num_classes"
            )
        counts += np.bincount(values, minlength=num_labels)
    return counts.tolist()


def class_weights_from_counts(counts: Sequence[float], method: str = "median_freq") -> list[float]:
    """Class weights from per-class pixel counts; classes with no pixels get weight 0.

    With ``f_c`` the pixel frequency of class c (count / total):

    * ``inverse``: ``1 / f_c``, scaled so the classes present average 1;
    * ``inverse_sqrt``: ``1 / sqrt(f_c)``, scaled the same way (a milder correction);
    * ``median_freq``: ``median(f) / f_c`` over present classes (Eigen & Fergus 2015, used by SegNet).

    The scale does not change seglab's weighted losses, which divide by the sum of pixel weights.
    """
    if method not in WEIGHTING_METHODS:
        raise ValueError(f"unknown class weighting method {method!r}; choose one of {', '.join(WEIGHTING_METHODS)}")
    values = np.asarray(counts, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
        raise ValueError(f"counts must be a non-empty list of finite counts >= 0 with a positive total; got {counts!r}")
    present = values > 0
    freq = values[present] / values.sum()
    if method == "median_freq":
        present_weights = np.median(freq) / freq
    else:
        raw = 1.0 / freq if method == "inverse" else 1.0 / np.sqrt(freq)
        present_weights = raw / raw.mean()
    weights = np.zeros_like(values)
    weights[present] = present_weights
    return weights.tolist()
