"""Grad-CAM for segmentation models with pytorch-grad-cam: class targets over the predicted mask, one CAM per layer.

The target follows pytorch-grad-cam's semantic-segmentation tutorial: the chosen class's logits summed
over the pixels predicted as that class. Binary models have one foreground logit, so class 1 sums that
logit over foreground pixels and class 0 sums its negative over background pixels (the evidence for
background). CAMs are computed in fp32: autocast activations and gradients in bf16/fp16 are too coarse
for a faithful map, and pytorch-grad-cam turns them into numpy arrays, which have no bf16.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

from ..errors import ConfigError


class BinaryBackgroundTarget(SemanticSegmentationTarget):
    """Background evidence of a one-logit binary model: minus the logit, summed over background pixels."""

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return -super().__call__(model_output)


def class_mask(logits: torch.Tensor, class_index: int, threshold: float = 0.5) -> torch.Tensor:
    """(H, W) float mask of the pixels predicted as ``class_index`` from one image's (K, H, W) logits."""
    if logits.shape[0] == 1:
        foreground = logits[0] > math.log(threshold / (1 - threshold))
        return (foreground if class_index == 1 else ~foreground).float()
    return (logits.argmax(0) == class_index).float()


def segmentation_target(logits: torch.Tensor, class_index: int, threshold: float = 0.5) -> tuple[object, np.ndarray]:
    """(pytorch-grad-cam target, predicted (H, W) float32 class mask) for one image's (K, H, W) logits."""
    num_logits = logits.shape[0]
    valid = 2 if num_logits == 1 else num_logits
    if not 0 <= class_index < valid:
        raise ConfigError(f"class {class_index} does not exist: this model predicts classes 0..{valid - 1}")
    mask = class_mask(logits, class_index, threshold).cpu().numpy()  # pytorch-grad-cam takes a numpy mask
    if num_logits == 1:
        target = SemanticSegmentationTarget(0, mask) if class_index == 1 else BinaryBackgroundTarget(0, mask)
    else:
        target = SemanticSegmentationTarget(class_index, mask)
    return target, mask


def grad_cams(model: nn.Module, x: torch.Tensor, layers: dict[str, nn.Module], class_index: int,
              threshold: float = 0.5) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Grad-CAM of each layer for one normalised (1, C, H, W) input: ({name: (H, W) in 0..1}, class mask).

    One forward and one backward serve every layer. Activations are captured by name and their gradients
    taken with ``torch.autograd.grad``, so each gradient is paired with its own layer; pytorch-grad-cam's
    multi-layer mode averages the layers into one map and pairs gradients by backward order, which
    parallel branches can shuffle. The CAM itself is pytorch-grad-cam's (``get_cam_image``, ReLU,
    ``scale_cam_image``). A class predicted nowhere has no target pixels: every CAM is then zero.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"grad_cams explains one image at a time: expected (1, C, H, W), got {tuple(x.shape)}")
    model.eval()
    activations: dict[str, torch.Tensor] = {}
    hooks = [module.register_forward_hook(lambda mod, inp, out, name=name: activations.setdefault(name, out))
             for name, module in layers.items()]
    # Only activation gradients are needed: frozen weights skip their gradients (faster, less memory) and
    # an input that requires grad keeps every activation differentiable.
    requires = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.enable_grad():
            inp = x.detach().float().clone().requires_grad_(True)
            logits = model(inp)
            target, mask = segmentation_target(logits[0].detach().float(), class_index, threshold)
            missing = [name for name in layers if not isinstance(activations.get(name), torch.Tensor)]
            if missing:
                raise ConfigError(f"layer(s) {missing} did not give a tensor in the forward pass, so they have "
                                  "no CAM; choose layers the model runs (see the CAM layers in the error of layer=?)")
            grads = torch.autograd.grad(target(logits[0].float()), [activations[n] for n in layers],
                                        allow_unused=True)
    finally:
        for hook in hooks:
            hook.remove()
        for p, flag in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(flag)
    engine = GradCAM(model=model, target_layers=[])
    size = (x.shape[-1], x.shape[-2])  # scale_cam_image takes (width, height)
    cams = {}
    for (name, layer), grad in zip(layers.items(), grads, strict=True):
        act = activations[name].detach().float()
        grad = torch.zeros_like(act) if grad is None else grad.float()  # an unused layer explains nothing
        cam = engine.get_cam_image(inp, layer, [target], act.cpu().numpy(), grad.cpu().numpy())
        cams[name] = scale_cam_image(np.maximum(cam, 0), size)[0].astype(np.float32)
    return cams, mask.astype(bool)
