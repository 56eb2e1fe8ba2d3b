"""Per-pixel losses: cross-entropy, BCE with logits, focal, OHEM cross-entropy.

All work in both modes (see ``seglab.losses.base``) except ``BCEWithLogitsLoss`` (binary only). Class
weights are one per label (``[background, foreground]`` in binary mode) and, as in
``torch.nn.CrossEntropyLoss``, the weighted sum is divided by the sum of the weights of the valid pixels.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .base import SegmentationLoss, check_class_weights, pixel_weights, target_log_probability, weighted_mean


class CrossEntropyLoss(SegmentationLoss):
    """Cross-entropy with optional class weights; softmax CE for C >= 2, sigmoid (binary) CE for C == 1."""

    def __init__(
        self, num_classes: int, ignore_index: int | None = None, class_weights: Sequence[float] | None = None
    ) -> None:
        super().__init__(num_classes, ignore_index)
        self.register_buffer("class_weights", check_class_weights(class_weights, num_classes), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean (class-weighted) cross-entropy over non-ignored pixels."""
        inputs = self.prepare(logits, target)
        return weighted_mean(-target_log_probability(inputs), pixel_weights(inputs, self.class_weights))


class BCEWithLogitsLoss(SegmentationLoss):
    """Binary cross-entropy on one logit channel, ``pos_weight`` as in ``torch.nn.BCEWithLogitsLoss``."""

    def __init__(self, num_classes: int = 1, ignore_index: int | None = None, pos_weight: float | None = None) -> None:
        super().__init__(num_classes, ignore_index)
        if not self.binary:
            raise ConfigError(
                f"bce is the binary loss (num_classes=1); got num_classes={num_classes}: use 'ce' for multi-class"
            )
        if pos_weight is not None and not pos_weight > 0:
            raise ConfigError(f"pos_weight must be > 0; got {pos_weight!r}")
        self.pos_weight = None if pos_weight is None else float(pos_weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean BCE over non-ignored pixels (positives' term multiplied by ``pos_weight``)."""
        inputs = self.prepare(logits, target)
        pos_weight = None if self.pos_weight is None else inputs.logits.new_tensor(self.pos_weight)
        per_pixel = F.binary_cross_entropy_with_logits(
            inputs.logits[:, 0], inputs.target.float(), pos_weight=pos_weight, reduction="none"
        )
        return weighted_mean(per_pixel, inputs.valid.float())

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"{super().extra_repr()}, pos_weight={self.pos_weight}"


class FocalLoss(SegmentationLoss):
    """Focal loss (Lin et al. 2017): ``-(1 - p_t)**gamma * log(p_t)``, both modes, optional class weights.

    Class weights play the role of the paper's alpha. With ``gamma=0`` it equals ``CrossEntropyLoss``.
    ``torchvision.ops.sigmoid_focal_loss`` covers only the binary case and has no ignore mask, so one
    log-probability formulation serves both modes here.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
        gamma: float = 2.0,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0; got {gamma!r}")
        self.gamma = float(gamma)
        self.register_buffer("class_weights", check_class_weights(class_weights, num_classes), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean (class-weighted) focal loss over non-ignored pixels."""
        inputs = self.prepare(logits, target)
        log_pt = target_log_probability(inputs)
        modulation = (1.0 - log_pt.exp()).clamp_min(0.0) ** self.gamma
        return weighted_mean(-modulation * log_pt, pixel_weights(inputs, self.class_weights))

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"{super().extra_repr()}, gamma={self.gamma}"


class OhemCrossEntropyLoss(SegmentationLoss):
    """Online hard example mining CE (as in HRNet / mmsegmentation): average only over the hard pixels.

    A valid pixel is hard when its true-class probability is below ``threshold``; when fewer than
    ``min_kept`` pixels are hard, the ``min_kept`` pixels with the lowest true-class probability are
    kept instead (or all valid pixels when there are fewer). Selection is over the whole batch and
    carries no gradient.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
        threshold: float = 0.7,
        min_kept: int = 100_000,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold is a probability in (0, 1]; got {threshold!r}")
        if min_kept < 0:
            raise ValueError(f"min_kept must be >= 0; got {min_kept!r}")
        self.threshold = float(threshold)
        self.min_kept = int(min_kept)
        self.register_buffer("class_weights", check_class_weights(class_weights, num_classes), persistent=False)

    def hard_pixel_mask(self, log_pt: Tensor, valid: Tensor) -> Tensor:
        """Boolean mask of the pixels the loss keeps (see the class docstring)."""
        pt = log_pt.detach().exp()
        hard = valid & (pt < self.threshold)
        num_kept = min(self.min_kept, int(valid.sum()))
        if int(hard.sum()) >= num_kept:
            return hard
        # Too few pixels under the threshold: keep the num_kept least confident valid pixels.
        hardness = torch.where(valid, -pt, float("-inf")).flatten()
        keep = torch.zeros_like(hardness, dtype=torch.bool)
        keep[hardness.topk(num_kept).indices] = True
        return keep.view_as(valid)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean (class-weighted) cross-entropy over the kept hard pixels."""
        inputs = self.prepare(logits, target)
        log_pt = target_log_probability(inputs)
        weights = pixel_weights(inputs, self.class_weights) * self.hard_pixel_mask(log_pt, inputs.valid)
        return weighted_mean(-log_pt, weights)

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"{super().extra_repr()}, threshold={self.threshold}, min_kept={self.min_kept}"
