"""A model that works at a fraction of its input's resolution and answers at the input's size.

``scale=0.5``: the input is averaged over 2x2 blocks before the model and its logits are up-sampled (bilinear) back
to the input's size, so the data, the masks, the loss, the metrics and the predictions all stay at full resolution
while a step costs about a quarter. Where a CPU time budget holds a few hundred full-resolution steps of a few large
images, that buys four times the steps (the training plan's ``scale`` rule).

Done with forward hooks rather than a wrapper module so that the state-dict keys and the layer names (explain's
``layer=``) stay those of the model itself; a checkpoint restores it through the model's spec (``seglab_spec``).
Block averaging is the exact anti-aliasing filter of a halving, and exports to ONNX at any opset (bilinear
``antialias=True`` does not).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..choices import SCALES
from ..errors import ConfigError
from .blocks import pad_to_multiple


def _up(logits: torch.Tensor, factor: int, size: tuple[int, int]) -> torch.Tensor:
    """``logits`` of the padded, down-sampled input up-sampled ``factor`` times and cropped to the input's ``size``."""
    return F.interpolate(logits, scale_factor=factor, mode="bilinear", align_corners=False)[..., : size[0], : size[1]]


def input_stride(model: nn.Module, default: int = 32) -> int:
    """The factor a model's input sides must be multiples of: its ``stride`` (else ``default``), times the
    down-sampling of a model that works at a fraction of the resolution."""
    return int(getattr(model, "input_stride", getattr(model, "stride", default)))


def work_at_scale(model: nn.Module, scale: float) -> nn.Module:
    """Make ``model`` (in place) run on its inputs down-sampled to ``scale`` and answer at the input's size."""
    if scale not in SCALES:
        raise ConfigError(f"scale={scale!r}: must be one of {', '.join(f'{s:g}' for s in SCALES)}")
    if getattr(model, "seglab_scale", 1.0) != 1.0:
        raise ConfigError(f"the model already works at scale {model.seglab_scale:g}")
    model.seglab_scale = float(scale)
    if scale == 1.0:
        return model
    factor = round(1 / scale)
    # Inputs are mirror-padded (bottom/right) to a multiple of this stride before down-sampling, as export's
    # DeployModel pads them, so every path sees the same pixels and the features keep exact sizes.
    stride = input_stride(model) * factor
    sizes: list[tuple[int, int]] = []  # the input size of the call in progress (pushed by shrink, popped by grow)

    def shrink(module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        sizes.append(tuple(x.shape[-2:]))
        return (F.avg_pool2d(pad_to_multiple(x, stride), factor), *args[1:])

    def grow(module: nn.Module, args: tuple, out: Any) -> Any:
        size = sizes.pop()
        if isinstance(out, torch.Tensor):
            return _up(out, factor, size)
        if isinstance(out, dict) and "out" in out:  # deep supervision: its loss resizes the aux maps itself
            return {**out, "out": _up(out["out"], factor, size)}
        return out

    model.register_forward_pre_hook(shrink)
    model.register_forward_hook(grow)
    model.input_stride = stride  # not ``stride``: the models pad their own (down-sampled) input to that one
    if hasattr(model, "seglab_spec"):
        model.seglab_spec = {**model.seglab_spec, "scale": float(scale)}
    return model
