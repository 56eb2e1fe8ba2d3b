"""Lovász hinge (binary) and Lovász-softmax (multi-class): convex surrogates of the Jaccard loss.

Follows Berman, Rannen Triki & Blaschko, "The Lovász-Softmax loss" (CVPR 2018) and their reference
code (github.com/bermanmaxim/LovaszSoftmax, ``pytorch/lovasz_losses.py``: ``lovasz_grad``,
``lovasz_hinge_flat``, ``lovasz_softmax_flat``). Written by hand because no maintained pip package
ships it standalone: the reference is a file to copy, not a package, and the ports live inside large
model zoos (segmentation-models-pytorch, mmsegmentation) that we do not want as a loss dependency.

Differences from the reference, none of which change its values on images with valid pixels:

* batched: images (and classes) are sorted in one ``torch.sort`` call instead of a Python loop;
  ignored pixels are given an error that sorts last and are masked out of the dot product, which leaves
  every prefix sum of ``lovasz_grad`` over the valid pixels unchanged;
* in per-image mode, images with no valid pixel are left out of the mean (the reference averages in
  a 0 for them, diluting the loss).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import SegmentationLoss

LOVASZ_CLASS_CHOICES = ("present", "all")


def lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. errors sorted in decreasing order (Alg. 1).

    ``gt_sorted`` holds the 0/1 labels in that order along the last dimension; leading dimensions are batches.
    """
    gt_sorted = gt_sorted.float()
    gts = gt_sorted.sum(-1, keepdim=True)
    intersection = gts - gt_sorted.cumsum(-1)
    union = gts + (1.0 - gt_sorted).cumsum(-1)  # >= 1 everywhere, so no division by zero
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


def _check_pair(scores: Tensor, labels: Tensor, scores_ndim: int, name: str) -> None:
    """Raise a ValueError unless ``scores`` has ``scores_ndim`` dims and matches ``labels`` on (N, H, W)."""
    expected_labels = (scores.shape[0], *scores.shape[-2:]) if scores.ndim == scores_ndim else None
    if scores.ndim != scores_ndim or labels.ndim != 3 or tuple(labels.shape) != expected_labels:
        layout = "(N, H, W)" if scores_ndim == 3 else "(N, C, H, W)"
        raise ValueError(
            f"{name} expects {layout} scores and (N, H, W) labels of the same N, H, W; "
            f"got {tuple(scores.shape)} and {tuple(labels.shape)}"
        )


def lovasz_hinge(
    logits: Tensor, labels: Tensor, per_image: bool = True, ignore_index: int | None = None
) -> Tensor:
    """Binary Lovász hinge loss of ``(N, H, W)`` logits against 0/1 ``(N, H, W)`` labels.

    ``per_image=True`` averages the loss of each image (as the TGS Salt solutions did);
    ``per_image=False`` computes one loss over all pixels of the batch.
    """
    _check_pair(logits, labels, 3, "lovasz_hinge")
    valid = labels != ignore_index if ignore_index is not None else torch.ones_like(labels, dtype=torch.bool)
    fg = (labels == 1) & valid
    group_rows = logits.shape[0] if per_image else 1
    logits_rows = logits.float().reshape(group_rows, -1)
    fg_rows = fg.reshape(group_rows, -1)
    valid_rows = valid.reshape(group_rows, -1)
    signs = 2.0 * fg_rows.float() - 1.0
    errors = 1.0 - logits_rows * signs
    errors = torch.where(valid_rows, errors, float("-inf"))  # ignored pixels sort last
    errors_sorted, perm = torch.sort(errors, dim=-1, descending=True)
    grad = lovasz_grad(fg_rows.gather(-1, perm))
    # relu(-inf) = 0 with zero gradient: ignored pixels drop out of the dot product.
    losses = (torch.relu(errors_sorted) * grad).sum(-1)
    has_valid = valid_rows.any(-1).float()
    return (losses * has_valid).sum() / has_valid.sum().clamp_min(1.0)


def lovasz_softmax(
    probas: Tensor,
    labels: Tensor,
    classes: str = "present",
    per_image: bool = False,
    ignore_index: int | None = None,
) -> Tensor:
    """Multi-class Lovász-softmax loss of ``(N, C, H, W)`` probabilities against ``(N, H, W)`` class labels.

    ``classes="present"`` averages over the classes present in the (per-image or batch) labels, as the
    reference does by default; ``"all"`` averages over every class except ``ignore_index``.
    """
    _check_pair(probas, labels, 4, "lovasz_softmax")
    if classes not in LOVASZ_CLASS_CHOICES:
        raise ValueError(f"classes must be one of {', '.join(LOVASZ_CLASS_CHOICES)}; got {classes!r}")
    num_classes = probas.shape[1]
    valid = labels != ignore_index if ignore_index is not None else torch.ones_like(labels, dtype=torch.bool)
    group_rows = probas.shape[0] if per_image else 1
    # (groups, C, P): one row of pixels per image (or one for the batch) and class.
    probas_rows = probas.float().movedim(1, 0).reshape(num_classes, group_rows, -1).transpose(0, 1)
    labels_rows = labels.reshape(group_rows, 1, -1)
    valid_rows = valid.reshape(group_rows, 1, -1)
    class_ids = torch.arange(num_classes, device=labels.device).view(1, -1, 1)
    fg = (labels_rows == class_ids) & valid_rows
    errors = (fg.float() - probas_rows).abs()
    errors = torch.where(valid_rows, errors, -1.0)  # errors live in [0, 1]; ignored pixels sort last
    errors_sorted, perm = torch.sort(errors, dim=-1, descending=True)
    kept_sorted = valid_rows.expand_as(errors).gather(-1, perm)
    grad = lovasz_grad(fg.gather(-1, perm))
    losses = (torch.where(kept_sorted, errors_sorted, 0.0) * grad).sum(-1)  # (groups, C)
    if classes == "present":
        class_used = fg.any(-1)
    else:
        class_used = valid_rows.any(-1).expand(-1, num_classes).clone()
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            class_used[:, ignore_index] = False
    used = class_used.float()
    group_losses = (losses * used).sum(-1) / used.sum(-1).clamp_min(1.0)
    has_classes = class_used.any(-1).float()
    return (group_losses * has_classes).sum() / has_classes.sum().clamp_min(1.0)


class LovaszLoss(SegmentationLoss):
    """Lovász loss on logits: hinge on the single logit in binary mode, Lovász-softmax on softmax otherwise.

    ``per_image`` defaults to the reference choices: per image for the binary hinge (TGS Salt practice),
    over the whole batch for the softmax.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        per_image: bool | None = None,
        classes: str = "present",
    ) -> None:
        super().__init__(num_classes, ignore_index)
        if classes not in LOVASZ_CLASS_CHOICES:
            raise ValueError(f"classes must be one of {', '.join(LOVASZ_CLASS_CHOICES)}; got {classes!r}")
        self.per_image = self.binary if per_image is None else bool(per_image)
        self.classes = classes

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Lovász hinge (binary) or Lovász-softmax (multi-class) of the logits."""
        inputs = self.prepare(logits, target)
        labels = torch.where(inputs.valid, inputs.target, -1)  # -1 marks ignored pixels for the functions
        if self.binary:
            return lovasz_hinge(inputs.logits[:, 0], labels, per_image=self.per_image, ignore_index=-1)
        probas = inputs.logits.softmax(dim=1)
        return lovasz_softmax(probas, labels, classes=self.classes, per_image=self.per_image, ignore_index=-1)

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"{super().extra_repr()}, per_image={self.per_image}, classes={self.classes}"
