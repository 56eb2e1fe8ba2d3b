"""Soft region-overlap losses: Dice, Jaccard (IoU), Tversky.

Each uses soft counts from probabilities ``p`` and the one-hot target ``g`` over non-ignored pixels:
``TP = sum p*g``, ``FP = sum p*(1-g)``, ``FN = sum (1-p)*g``, and returns ``1 - score``:

* Dice: ``(2 TP + s) / (2 TP + FP + FN + s)``
* Jaccard: ``(TP + s) / (TP + FP + FN + s)``
* Tversky: ``(TP + s) / (TP + alpha FP + beta FN + s)``; alpha = beta = 0.5 is Dice, 1 is Jaccard.

Binary mode scores the foreground only; multi-class mode averages over classes (skipping a class whose
index is ``ignore_index``). Counts are summed over the whole batch by default (``per_image=False``), which
keeps empty images from producing a noisy 0-or-1 score each; ``per_image=True`` averages per-image losses
over images with at least one non-ignored pixel. The smoothing ``s`` (default 1) makes an empty prediction
on an empty target score 1 and keeps gradients finite.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from .base import EPS, SegmentationLoss, class_probabilities


class SoftOverlapLoss(SegmentationLoss, ABC):
    """Base for Dice/Jaccard/Tversky: soft TP/FP/FN counts, class and image averaging; subclasses give ``score``."""

    def __init__(
        self, num_classes: int, ignore_index: int | None = None, smooth: float = 1.0, per_image: bool = False
    ) -> None:
        super().__init__(num_classes, ignore_index)
        if not smooth >= 0:
            raise ValueError(f"smooth must be >= 0; got {smooth!r}")
        self.smooth = float(smooth)
        self.per_image = bool(per_image)

    @abstractmethod
    def score(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        """Overlap score in [0, 1] from soft counts (higher is better)."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``1 - score`` averaged over classes (and over images when ``per_image``)."""
        inputs = self.prepare(logits, target)
        probs, one_hot = class_probabilities(inputs)
        dims = (2, 3) if self.per_image else (0, 2, 3)
        tp = (probs * one_hot).sum(dims)
        fp = (probs * (1.0 - one_hot)).sum(dims)  # probs is 0 at ignored pixels, so they add nothing
        fn = ((1.0 - probs) * one_hot).sum(dims)  # one_hot is 0 at ignored pixels
        losses = 1.0 - self.score(tp, fp, fn)  # (K,) or (N, K)
        class_mask = torch.ones(losses.shape[-1], dtype=torch.bool, device=losses.device)
        if not self.binary and self.ignore_index is not None and 0 <= self.ignore_index < self.num_classes:
            class_mask[self.ignore_index] = False
        per_group = losses[..., class_mask].mean(-1)
        if not self.per_image:
            return per_group
        has_valid = inputs.valid.flatten(1).any(1).float()
        return (per_group * has_valid).sum() / has_valid.sum().clamp_min(1.0)

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"{super().extra_repr()}, smooth={self.smooth}, per_image={self.per_image}"


class SoftDiceLoss(SoftOverlapLoss):
    """Soft Dice loss: ``1 - (2 TP + s) / (2 TP + FP + FN + s)``."""

    def score(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        """Soft Dice coefficient."""
        return (2.0 * tp + self.smooth) / (2.0 * tp + fp + fn + self.smooth).clamp_min(EPS)


class SoftJaccardLoss(SoftOverlapLoss):
    """Soft Jaccard (IoU) loss: ``1 - (TP + s) / (TP + FP + FN + s)``."""

    def score(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        """Soft Jaccard index."""
        return (tp + self.smooth) / (tp + fp + fn + self.smooth).clamp_min(EPS)


class TverskyLoss(SoftOverlapLoss):
    """Tversky loss (Salehi et al. 2017): alpha weighs false positives, beta false negatives.

    The default alpha=0.3, beta=0.7 penalises missed foreground more than false alarms.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1.0,
        per_image: bool = False,
    ) -> None:
        super().__init__(num_classes, ignore_index, smooth=smooth, per_image=per_image)
        if not (alpha >= 0 and beta >= 0 and alpha + beta > 0):
            raise ValueError(f"alpha and beta must be >= 0 and not both 0; got alpha={alpha!r}, beta={beta!r}")
        self.alpha = float(alpha)
        self.beta = float(beta)

    def score(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        """Tversky index."""
        return (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth).clamp_min(EPS)

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"{super().extra_repr()}, alpha={self.alpha}, beta={self.beta}"
