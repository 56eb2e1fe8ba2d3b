"""Reproducible train/val/test splits and k folds (stratified by foreground coverage for binary masks)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError
from .formats import Sample


def parse_ratios(text: str) -> tuple[float, float, float]:
    """'8:1:1' or '0.8,0.1,0.1' or '80/20' -> normalised (train, val, test) fractions."""
    parts = [p for p in text.replace(",", ":").replace("/", ":").split(":") if p.strip()]
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"split={text!r}: expected ratios like 8:1:1 or 80:20") from None
    if not 2 <= len(nums) <= 3 or any(n < 0 for n in nums) or sum(nums) <= 0 or nums[0] == 0:
        raise ConfigError(f"split={text!r}: expected 2 or 3 non-negative ratios with a non-zero train part, like 8:1:1")
    nums += [0.0] * (3 - len(nums))
    total = sum(nums)
    return nums[0] / total, nums[1] / total, nums[2] / total


def split_samples(samples: Sequence[Sample], ratios: str = "8:1:1", seed: int = 0) -> dict[str, list[Sample]]:
    """Shuffle with a seed and cut into train/val/test by ratio (each non-empty part gets >= 1 sample)."""
    tr, va, te = parse_ratios(ratios)
    n = len(samples)
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * va)) if va > 0 and n >= 3 else 0
    n_test = max(1, round(n * te)) if te > 0 and n >= 3 else 0
    if n - n_val - n_test < 1:
        raise ConfigError(f"cannot split {n} samples by {ratios}: too few samples")
    ordered = [samples[i] for i in order]
    return {"train": ordered[n_val + n_test:], "val": ordered[:n_val], "test": ordered[n_val:n_val + n_test]}


def coverage_bins(coverages: Sequence[float], n_bins: int = 10) -> np.ndarray:
    """Stratum of each sample: 0 for empty masks, 1..n_bins by foreground coverage."""
    cov = np.asarray(coverages, dtype=float)
    return np.where(cov <= 0, 0, 1 + np.minimum((cov * n_bins).astype(int), n_bins - 1))


def kfold_indices(n: int, k: int, seed: int = 0, strata: Sequence[int] | None = None) -> list[np.ndarray]:
    """Fold index arrays; with strata, each stratum is dealt round-robin so folds match in composition."""
    if k < 2 or k > n:
        raise ConfigError(f"folds={k}: need 2 <= folds <= number of samples ({n})")
    rng = np.random.default_rng(seed)
    strata = np.zeros(n, dtype=int) if strata is None else np.asarray(strata)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for s in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == s))
        for j, idx in enumerate(members):
            folds[(j + offset) % k].append(int(idx))
        offset += len(members)  # continue the deal where the last stratum stopped, keeping fold sizes even
    return [np.sort(np.array(f, dtype=int)) for f in folds]
