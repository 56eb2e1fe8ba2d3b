"""Which layers of a segmentation model Grad-CAM can look at, and turning a user's layer name into a module.

Order of preference for the default layer list (shallow to deep):

1. ``model.cam_layers()`` when the model defines it (every seglab model family should);
2. the stages of ``model.encoder``: a ``TimmEncoder``'s feature modules, or the children of any other encoder;
3. otherwise the last ``Conv2d`` of each resolution level on the way down to the coarsest feature map,
   found by running one small dummy batch with forward hooks on every module (the resolution of a
   layer is only known once it has run: pooling is often functional and invisible in the module tree),
   each widened to the block around it (see ``last_conv_per_level``).

Layers also get names a person recognises (``layer_names``): the CAM layers are "encoder stage 1..N",
the blocks of the decoder "decoder block 1..M" and the last convolution "head"; a deeper module is named
after the block that holds it ("encoder stage 2 / 0"). ``resolve_layer`` accepts either the module path
or that name.
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..models.scaled import input_stride

ALL_CONV = "all_conv"


def cam_layers(model: nn.Module, in_channels: int = 3) -> dict[str, nn.Module]:
    """Named candidate layers for Grad-CAM, shallow to deep (see the module docstring for the fallbacks)."""
    if callable(getattr(model, "cam_layers", None)):
        layers = dict(model.cam_layers())
        if layers:
            return layers
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Module):
        if callable(getattr(encoder, "stages", None)):
            return {f"encoder.{name}": module for name, module in encoder.stages().items()}
        children = dict(encoder.named_children())
        if children:
            return {f"encoder.{name}": module for name, module in children.items()}
    return last_conv_per_level(model, in_channels)


def conv_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv2d of the encoder (of the whole model when it has no ``encoder``), in definition order."""
    encoder = getattr(model, "encoder", None)
    root, prefix = (encoder, "encoder.") if isinstance(encoder, nn.Module) else (model, "")
    return {prefix + name: m for name, m in root.named_modules() if isinstance(m, nn.Conv2d)}


def last_conv_per_level(model: nn.Module, in_channels: int = 3, size: int | None = None) -> dict[str, nn.Module]:
    """Per resolution level, down to the coarsest: the block around the last Conv2d run at that level.

    The block is the outermost module enclosing the conv whose output has the conv's shape (e.g. a
    conv-BN-ReLU unit or a whole stage): Grad-CAM of a raw, pre-normalisation conv output is often all
    negative and vanishes after its ReLU, while the block's post-activation features give usable maps.
    """
    size = size or max(64, 2 * input_stride(model))
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    convs: list[str] = []  # Conv2d names in execution order

    def record(module: nn.Module, inputs: tuple, output: object, name: str) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4:
            shapes[name] = tuple(output.shape[1:])
            if isinstance(module, nn.Conv2d) and output.shape[-1] * output.shape[-2] > 1:  # skip pooled SE gates
                convs.append(name)

    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: record(mod, inp, out, name))
             for name, m in modules.items() if name]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no Conv2d layers to explain; give layer=MODULE.PATH")
    area = {name: shapes[name][1] * shapes[name][2] for name in convs}
    coarsest = min(area.values())
    runs: list[str] = []  # the last conv of each run of equal resolutions, in execution order
    for name in convs:
        if runs and shapes[runs[-1]][1:] == shapes[name][1:]:
            runs[-1] = name
        elif runs and area[runs[-1]] == coarsest:
            break  # the encoder half ends with the coarsest run; what follows is the decoder going back up
        else:
            runs.append(name)
    blocks = [_enclosing_block(name, shapes) for name in runs]
    return {name: modules[name] for name in dict.fromkeys(blocks)}


def _enclosing_block(conv: str, shapes: dict[str, tuple[int, ...]]) -> str:
    """The outermost ancestor of ``conv`` (never the model itself) that ran and kept the conv's output shape."""
    parts = conv.split(".")
    for depth in range(1, len(parts)):
        ancestor = ".".join(parts[:depth])
        if shapes.get(ancestor) == shapes[conv]:
            return ancestor
    return conv


# Where the decoder blocks live, by model family (the first attribute found wins): U-Net, the 2015 U-Net, encoder
# models. Each child of the container is one block, numbered from the bottleneck upwards.
_DECODER_ATTRIBUTES = ("ups", "up_blocks", "decoder")


def block_names(model: nn.Module, in_channels: int = 3) -> dict[str, str]:
    """{module path: readable name} of the model's main blocks: encoder stages, decoder blocks and the head."""
    names = {path: f"encoder stage {i}" for i, path in enumerate(cam_layers(model, in_channels), 1)}
    for attribute in _DECODER_ATTRIBUTES:
        decoder = getattr(model, attribute, None)
        if isinstance(decoder, (nn.ModuleList, nn.Sequential)) and len(decoder):
            names.update({f"{attribute}.{j}": f"decoder block {j + 1}" for j in range(len(decoder))})
            break
        if isinstance(decoder, nn.Module):
            names[attribute] = "decoder"
            break
    if isinstance(getattr(model, "head", None), nn.Module):
        names["head"] = "head"
    return names


def layer_names(model: nn.Module, paths: Sequence[str], in_channels: int = 3) -> dict[str, str]:
    """{module path: readable name} for each of ``paths``: a main block's name (``block_names``), a convolution
    inside one numbered within it (``encoder stage 2, conv 1``), another module inside one named after it with its
    path inside the block (``encoder stage 2 / 1``), or the module path itself when no block holds it."""
    blocks = block_names(model, in_channels)
    modules = dict(model.named_modules())
    return {path: _readable(path, blocks, modules) for path in paths}


def _readable(path: str, blocks: dict[str, str], modules: dict[str, nn.Module]) -> str:
    if path in blocks:
        return blocks[path]
    holders = [block for block in blocks if path.startswith(block + ".")]
    if not holders:
        return path
    holder = max(holders, key=len)
    if isinstance(modules.get(path), nn.Conv2d):
        convs = [name for name, module in modules[holder].named_modules() if isinstance(module, nn.Conv2d)]
        inner = path[len(holder) + 1:]
        if inner in convs:
            return f"{blocks[holder]}, conv {convs.index(inner) + 1}"
    return f"{blocks[holder]} / {path[len(holder) + 1:]}"


def _normalised(name: str) -> str:
    """"Encoder_Stage-3" and "encoder stage 3" are the same name."""
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def resolve_layer(model: nn.Module, name: str, in_channels: int = 3) -> tuple[str, nn.Module]:
    """(qualified name, module) for a dotted module path, a CAM layer name or a readable block name ("encoder stage
    3", "decoder block 1", "head"); a wrong name gets close matches."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return name, modules[name]
    aliases = layer_aliases(modules)
    if name in aliases:
        return aliases[name], modules[aliases[name]]
    blocks = block_names(model, in_channels)
    readable = {_normalised(label): path for path, label in blocks.items()}
    if _normalised(name) in readable:
        path = readable[_normalised(name)]
        return path, modules[path]
    candidates = [f"{blocks[path]} ({path})" for path in cam_layers(model, in_channels)]
    close = difflib.get_close_matches(name, [n for n in modules if n] + list(aliases) + list(blocks.values()), n=5,
                                      cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    others = [f"{label} ({path})" for path, label in blocks.items() if not label.startswith("encoder")]
    also = f"; also {', '.join(others)}" if others else ""
    raise ConfigError(f"layer {name!r} is not a module of {type(model).__name__}.{hint} "
                      f"CAM layers of this model (shallow to deep): {', '.join(candidates)}{also}; the readable name "
                      "or any dotted path from model.named_modules() works, or layers="
                      f"{ALL_CONV} to sweep every encoder convolution")


def layer_aliases(modules: dict[str, nn.Module]) -> dict[str, str]:
    """Short names for timm-encoder layers: ``encoder.layer4`` for ``encoder.model.layer4``."""
    return {name.replace("encoder.model.", "encoder.", 1): name for name in modules
            if name.startswith("encoder.model.")}
