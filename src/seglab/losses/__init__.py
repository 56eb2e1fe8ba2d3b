"""Segmentation losses, all in one place, for binary (``num_classes == 1``) and multi-class tasks.

Every loss takes ``(logits, target)`` with logits ``(N, C, H, W)`` and an int64 target ``(N, H, W)``,
computes in float32 whatever the logits' dtype, drops ``ignore_index`` pixels from value and gradient,
and gives finite gradients on all-empty and all-ignored batches. ``build_loss("0.5*bce+1.0*lovasz", ...)``
is the usual entry point; its module also accepts the deep-supervision output dict of a model.
"""
from .base import SegmentationLoss
from .class_weights import WEIGHTING_METHODS, class_weights_from_counts, count_class_pixels
from .deep_supervision import DeepSupervisionLoss, has_foreground
from .factory import LOSS_BUILDERS, WeightedSumLoss, auto_loss, build_loss
from .lovasz import LovaszLoss, lovasz_grad, lovasz_hinge, lovasz_softmax
from .overlap import SoftDiceLoss, SoftJaccardLoss, TverskyLoss
from .pixelwise import BCEWithLogitsLoss, CrossEntropyLoss, FocalLoss, OhemCrossEntropyLoss
from .spec import parse_loss_spec

__all__ = [
    "LOSS_BUILDERS",
    "WEIGHTING_METHODS",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "FocalLoss",
    "LovaszLoss",
    "OhemCrossEntropyLoss",
    "SegmentationLoss",
    "SoftDiceLoss",
    "SoftJaccardLoss",
    "TverskyLoss",
    "WeightedSumLoss",
    "auto_loss",
    "build_loss",
    "class_weights_from_counts",
    "count_class_pixels",
    "has_foreground",
    "lovasz_grad",
    "lovasz_hinge",
    "lovasz_softmax",
    "parse_loss_spec",
]
