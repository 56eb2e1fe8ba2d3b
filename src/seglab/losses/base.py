"""Shared input handling for every seglab loss: shape checks, float32 cast, ignore mask.

Modes (decided by ``num_classes``, the same everywhere in seglab):

* binary, ``num_classes == 1``: logits ``(N, 1, H, W)``, sigmoid probabilities, target values {0, 1};
* multi-class, ``num_classes >= 2``: logits ``(N, C, H, W)``, softmax probabilities, target values in [0, C).

Targets are ``(N, H, W)`` integer class indices (``(N, 1, H, W)`` is accepted and squeezed); pixels equal
to ``ignore_index`` are dropped from the loss and receive no gradient.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

EPS = 1e-7


@dataclass(frozen=True)
class LossInputs:
    """Validated loss inputs: float32 logits, target with ignored pixels set to 0, and the valid-pixel mask."""

    logits: Tensor  # (N, C, H, W) float32
    target: Tensor  # (N, H, W) int64, ignored pixels replaced by 0 so it can index classes safely
    valid: Tensor  # (N, H, W) bool, False at ignored pixels


def check_num_classes(num_classes: int) -> int:
    """Return ``num_classes`` or raise a ValueError when it is not a positive int."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1 (1 = binary with one logit channel); got {num_classes!r}")
    return num_classes


def prepare_inputs(logits: Tensor, target: Tensor, num_classes: int, ignore_index: int | None) -> LossInputs:
    """Validate ``(logits, target)`` against the seglab conventions and return float32 logits plus the ignore mask."""
    if not isinstance(logits, Tensor) or logits.ndim != 4 or logits.shape[1] != num_classes:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"logits must be a (N, C, H, W) tensor with C == num_classes == {num_classes}; got {shape}"
        )
    if not isinstance(target, Tensor):
        raise ValueError(f"target must be a torch.Tensor of class indices; got {type(target).__name__}")
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != tuple(expected):
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits (N, H, W) = {tuple(expected)}; "
            "resize one of them (auxiliary heads: upsample the logits to the target size)"
        )
    if target.is_floating_point() or target.is_complex():
        raise ValueError(
            f"target must hold integer class indices, got dtype {target.dtype}; convert 0/1 masks with .long()"
        )
    target = target.long()
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    num_labels = max(num_classes, 2)  # a binary task has the two labels 0 and 1
    out_of_range = valid & ((target < 0) | (target >= num_labels))
    if target.is_cuda:  # reading the flag would be a host sync per loss term per step: the device checks it instead
        torch._assert_async(~out_of_range.any(), f"target holds a value outside [0, {num_labels}) and not "
                            f"ignore_index={ignore_index}; set ignore_index to that value or fix the mask decoding")
    elif bool(out_of_range.any()):
        example = int(target[out_of_range][0])
        raise ValueError(
            f"target contains {example}, outside [0, {num_labels}) and not ignore_index={ignore_index}; "
            "set ignore_index to that value or fix the mask decoding"
        )
    return LossInputs(logits.float(), torch.where(valid, target, 0), valid)


def class_probabilities(inputs: LossInputs) -> tuple[Tensor, Tensor]:
    """Per-class probabilities and one-hot target, both ``(N, K, H, W)`` and zero at ignored pixels.

    Binary mode has K = 1 (the foreground), multi-class mode K = C.
    """
    logits, target, valid = inputs.logits, inputs.target, inputs.valid
    if logits.shape[1] == 1:
        probs = torch.sigmoid(logits)
        one_hot = target.unsqueeze(1).float()
    else:
        probs = logits.softmax(dim=1)
        one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    keep = valid.unsqueeze(1)
    # torch.where (not a multiply) so ignored pixels pass back an exact zero gradient.
    return torch.where(keep, probs, 0.0), torch.where(keep, one_hot, 0.0)


def target_log_probability(inputs: LossInputs) -> Tensor:
    """log p(true class) per pixel, ``(N, H, W)``; binary logits use log-sigmoid of the signed logit."""
    logits, target = inputs.logits, inputs.target
    if logits.shape[1] == 1:
        signed = logits[:, 0] * (2.0 * target.float() - 1.0)
        return F.logsigmoid(signed)
    return logits.log_softmax(dim=1).gather(1, target.unsqueeze(1))[:, 0]


def pixel_weights(inputs: LossInputs, class_weights: Tensor | None) -> Tensor:
    """Per-pixel weight: 0 at ignored pixels, else ``class_weights[target]`` (or 1 without class weights)."""
    weights = inputs.valid.float()
    if class_weights is not None:
        weights = weights * class_weights[inputs.target]
    return weights


def weighted_mean(per_pixel: Tensor, weights: Tensor) -> Tensor:
    """Sum of ``weights * per_pixel`` divided by the sum of weights (as torch's weighted CE); 0 if all weights are 0."""
    per_pixel = torch.where(weights > 0, per_pixel, 0.0)
    return (per_pixel * weights).sum() / weights.sum().clamp_min(EPS)


def check_class_weights(class_weights: Sequence[float] | None, num_classes: int) -> Tensor | None:
    """Validate class weights (one per label: 2 for binary, C for multi-class) and return them as a float32 tensor."""
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
    num_labels = max(num_classes, 2)
    if weights.numel() != num_labels:
        raise ConfigError(
            f"class_weights needs one weight per label ({num_labels}: "
            f"{'[background, foreground]' if num_classes == 1 else 'one per class'}); got {weights.numel()}"
        )
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()) or float(weights.sum()) <= 0:
        raise ConfigError(f"class_weights must be finite, >= 0 and not all zero; got {weights.tolist()}")
    return weights


class SegmentationLoss(nn.Module):
    """Base class: stores the mode (``num_classes``) and ``ignore_index`` and validates inputs in ``prepare``."""

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise ValueError(f"ignore_index must be an int or None; got {ignore_index!r}")
        self.ignore_index = ignore_index

    @property
    def binary(self) -> bool:
        """True in binary mode (one logit channel)."""
        return self.num_classes == 1

    def prepare(self, logits: Tensor, target: Tensor) -> LossInputs:
        """Validate inputs and cast logits to float32 (losses never compute in bf16/fp16)."""
        return prepare_inputs(logits, target, self.num_classes, self.ignore_index)

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"num_classes={self.num_classes}, ignore_index={self.ignore_index}"
