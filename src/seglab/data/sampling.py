"""Coverage-balanced sampling of training images (``balance=``): draw rare small-object and object images more often.

In datasets such as TGS salt most of the score is lost on the rare images with a small object, while empty images
are common. ``balance=b`` draws each training image with probability proportional to ``(1 / f) ** b``, where ``f``
is the share of training images in its foreground-coverage bin (empty, 0-2%, 2-10%, 10-30%, 30-70%, 70-100%, the
bins of the TGS coverage breakdown). ``b=0`` is plain shuffling, ``b=1`` draws every non-empty bin as often as the
empty images, ``b=0.5`` (square-root balancing) is in between. An epoch still has ``len(dataset)`` draws, made with
replacement. Like Ultralytics' ``--image-weights``; torch's WeightedRandomSampler has no distributed sharding, hence
the small sampler below.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..metrics.tgs import COVERAGE_BIN_NAMES, coverage_bin_of


def coverage_weights(coverage: Sequence[float], balance: float) -> np.ndarray:
    """Sampling probability of each image, proportional to ``(1 / share of its coverage bin) ** balance``."""
    if not 0.0 <= balance <= 1.0:
        raise ConfigError(f"balance={balance!r}: must be between 0 (plain shuffling) and 1 (every bin equally often)")
    bins = coverage_bin_of(coverage)
    if len(bins) == 0:
        raise ValueError("no training images to weight")
    share = np.bincount(bins)[bins] / len(bins)
    weights = share ** -float(balance)
    return weights / weights.sum()


def bin_shares(coverage: Sequence[float], weights: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per coverage bin: (share of the images, share of the draws); for the log line of a balanced run."""
    bins = coverage_bin_of(coverage)
    return {COVERAGE_BIN_NAMES[b]: (float((bins == b).mean()), float(weights[bins == b].sum()))
            for b in np.unique(bins)}


class WeightedEpochSampler(torch.utils.data.Sampler):
    """``len(weights)`` draws with replacement, seeded per epoch; rank r of w ranks takes draws r, r+w, ..."""

    def __init__(self, weights: np.ndarray, seed: int, rank: int = 0, world: int = 1):
        generator = torch.Generator().manual_seed(seed)  # every rank draws the same list, then takes its shard
        draws = torch.multinomial(torch.as_tensor(weights, dtype=torch.float64), len(weights), replacement=True,
                                  generator=generator)
        self.indices = draws[rank::world].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
