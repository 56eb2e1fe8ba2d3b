"""BiSeNet V1 (Yu et al. 2018): a wide shallow spatial path and a deep context path, fused by an FFM.

Spatial path: three stride-2 conv-BN-ReLU (64, 128, 256 channels) keep 1/8-resolution detail.
Context path: any timm backbone (resnet18 by default); attention refinement modules (ARM) on its 1/16
and 1/32 features, the global-average-pooled tail added to the 1/32 branch, each branch up-sampled
and refined. The feature fusion module joins both paths at 1/8; the head's logits are up-sampled x8.
Two auxiliary heads on the 1/16 and 1/32 context features give "aux" logits in training.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import (AttentionRefinementModule, ConvBNReLU, FeatureFusionModule, crop_to_scale, model_output,
                     pad_to_multiple)
from .encoders import EncoderStagesMixin, TimmEncoder
from .options import reject_unknown_options
from .registry import register_model

CONTEXT_CHANNELS = 128


class SpatialPath(nn.Sequential):
    """Three stride-2 conv-BN-ReLU: 1/8 resolution, 256 channels."""

    def __init__(self, in_channels: int):
        super().__init__(ConvBNReLU(in_channels, 64, 3, stride=2), ConvBNReLU(64, 128, 3, stride=2),
                         ConvBNReLU(128, 256, 3, stride=2))


class ContextPath(nn.Module):
    """Backbone 1/16 and 1/32 features refined by ARMs plus the global context; returns (1/8, 1/16, 1/32) maps."""

    def __init__(self, ch16: int, ch32: int):
        super().__init__()
        self.global_context = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(ch32, CONTEXT_CHANNELS, 1))
        self.arm32 = AttentionRefinementModule(ch32, CONTEXT_CHANNELS)
        self.arm16 = AttentionRefinementModule(ch16, CONTEXT_CHANNELS)
        self.refine32 = ConvBNReLU(CONTEXT_CHANNELS, CONTEXT_CHANNELS, 3)
        self.refine16 = ConvBNReLU(CONTEXT_CHANNELS, CONTEXT_CHANNELS, 3)

    def forward(self, f16: torch.Tensor, f32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c32 = self.arm32(f32) + self.global_context(f32)  # 1x1 global context broadcast over the map
        up32 = self.refine32(F.interpolate(c32, size=f16.shape[-2:], mode="bilinear", align_corners=False))
        c16 = self.arm16(f16) + up32
        h8, w8 = 2 * f16.shape[-2], 2 * f16.shape[-1]
        up16 = self.refine16(F.interpolate(c16, size=(h8, w8), mode="bilinear", align_corners=False))
        return up16, c16, c32


class SegHead(nn.Sequential):
    """3x3 conv-BN-ReLU then a 1x1 classifier."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int, dropout: float = 0.1):
        super().__init__(ConvBNReLU(in_ch, mid_ch, 3), nn.Dropout2d(dropout), nn.Conv2d(mid_ch, num_classes, 1))


class BiSeNet(EncoderStagesMixin, nn.Module):
    """BiSeNet V1; see the module docstring."""

    stride = 32

    def __init__(self, num_classes: int = 1, in_channels: int = 3, encoder: str = "resnet18",
                 encoder_weights: str | None = None):
        super().__init__()
        self.encoder = TimmEncoder(encoder, in_channels, encoder_weights)
        self.spatial_path = SpatialPath(in_channels)
        self.index16, self.index32 = self.encoder.feature_index(16), self.encoder.feature_index(32)
        self.context_path = ContextPath(self.encoder.out_channels[self.index16],
                                        self.encoder.out_channels[self.index32])
        self.ffm = FeatureFusionModule(256 + CONTEXT_CHANNELS, 256)
        self.head = SegHead(256, 256, num_classes)
        self.aux16 = SegHead(CONTEXT_CHANNELS, 64, num_classes)
        self.aux32 = SegHead(CONTEXT_CHANNELS, 64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.stride)
        spatial = self.spatial_path(x)
        features = self.encoder(x)
        context, c16, c32 = self.context_path(features[self.index16], features[self.index32])
        fused = self.ffm(spatial, context)
        logits = F.interpolate(self.head(fused), scale_factor=8, mode="bilinear", align_corners=False)[..., :h, :w]
        if not self.training:
            return logits
        aux = [crop_to_scale(self.aux16(c16), h, w, 16), crop_to_scale(self.aux32(c32), h, w, 32)]
        return model_output(logits, True, aux)


def _bisenet(model_name: str, builder, unknown: dict, **options) -> BiSeNet:
    """Check the options and build a BiSeNet."""
    reject_unknown_options(model_name, unknown, builder)
    return BiSeNet(**options)


@register_model
def bisenet(num_classes: int = 1, in_channels: int = 3, encoder: str = "resnet18",
            encoder_weights: str | None = None, **unknown) -> BiSeNet:
    """BiSeNet V1 with any timm context backbone (default resnet18)."""
    return _bisenet("bisenet", bisenet, unknown, num_classes=num_classes, in_channels=in_channels,
                    encoder=encoder, encoder_weights=encoder_weights)


@register_model
def bisenet_resnet18(num_classes: int = 1, in_channels: int = 3, encoder: str = "resnet18",
                     encoder_weights: str | None = None, **unknown) -> BiSeNet:
    """BiSeNet V1 on ResNet-18, the paper's real-time setting."""
    return _bisenet("bisenet_resnet18", bisenet_resnet18, unknown, num_classes=num_classes,
                    in_channels=in_channels, encoder=encoder, encoder_weights=encoder_weights)


@register_model
def bisenet_resnet101(num_classes: int = 1, in_channels: int = 3, encoder: str = "resnet101",
                      encoder_weights: str | None = None, **unknown) -> BiSeNet:
    """BiSeNet V1 on ResNet-101, the paper's accuracy setting."""
    return _bisenet("bisenet_resnet101", bisenet_resnet101, unknown, num_classes=num_classes,
                    in_channels=in_channels, encoder=encoder, encoder_weights=encoder_weights)
