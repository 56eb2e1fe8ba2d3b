"""Model size and cost: parameter counts and GFLOPs for one forward pass, used by ``seglab models``.

Convention: GFLOPs = 2 x multiply-accumulates / 1e9 (a multiply and an add count as two FLOPs),
which is what ``torch.utils.flop_counter.FlopCounterMode`` reports; ``gmacs`` is half of it. Only
matmul/convolution-like operators are counted (element-wise ops, norms and interpolation are
ignored, as in most published FLOP figures).

A model built on the meta device (``with torch.device("meta"): create_model(...)``) gives the same
numbers with no memory and no arithmetic: the fast way to tabulate big models.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_summary(model: nn.Module, input_size: tuple[int, int, int] = (3, 256, 256)) -> dict:
    """Parameters and GFLOPs (2 x MACs) of one eval-mode forward of a batch of one ``input_size`` (C, H, W) image."""
    if len(input_size) != 3 or min(input_size) < 1:
        raise ConfigError(f"input_size must be (channels, height, width), got {input_size}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
    flops = counter.get_total_flops()
    return {
        "params": count_parameters(model),
        "trainable_params": count_parameters(model, trainable_only=True),
        "gflops": flops / 1e9,
        "gmacs": flops / 2e9,
        "input_size": tuple(input_size),
    }
