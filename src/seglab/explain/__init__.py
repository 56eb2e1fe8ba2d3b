"""Explanations of segmentation predictions: Grad-CAM per class and layer, with heatmap overlays and layer sweeps.

Needs pytorch-grad-cam (``pip install seglab[explain]``).
"""
from .layers import cam_layers, conv_layers, resolve_layer
from .run import Explainer, explain_image

__all__ = ["Explainer", "explain_image", "explain_main", "cam_layers", "conv_layers", "resolve_layer"]


def __getattr__(name: str):
    """``explain_main`` on first use (PEP 562): the CLI module imports the prediction helpers."""
    if name == "explain_main":
        from .cli import explain_main

        return explain_main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
