"""Metrics: confusion-matrix segmentation metrics and the TGS competition score."""
from .confusion import ConfusionMatrix, metrics_from_confusion, per_image_iou

__all__ = ["ConfusionMatrix", "metrics_from_confusion", "per_image_iou"]
