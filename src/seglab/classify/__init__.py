"""Image classification on the segmentation engine: the all-convolutional study, timm models, a fast default net."""
from .data import (
           ClassificationData,
           ImageSplit,
           load_dataset,
           read_cifar_batch,
           read_idx,
)
from .models import count_parameters, create_classifier, list_classifiers

__all__ = [
           "ClassificationData",
           "ImageSplit",
           "count_parameters",
           "create_classifier",
           "list_classifiers",
           "load_dataset",
           "read_cifar_batch",
           "read_idx",
]
