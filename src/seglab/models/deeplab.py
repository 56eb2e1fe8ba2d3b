"""DeepLabV3+ (Chen et al. 2018): a dilated timm encoder, ASPP, and a decoder with a stride-4 low-level skip.

``output_stride`` 16 or 8 is passed to timm, which replaces the last strides by dilation; the ASPP
rates follow the paper (6, 12, 18 at stride 16, doubled at stride 8). The decoder projects the
stride-4 encoder feature to 48 channels, concatenates the x(output_stride/4) up-sampled ASPP output,
applies two 3x3 conv-BN-ReLU (256) and a 1x1 classifier whose logits are up-sampled x4.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .blocks import ConvBNReLU, pad_to_multiple
from .encoders import EncoderStagesMixin, TimmEncoder
from .options import reject_unknown_options
from .registry import register_model

ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


class ASPPPooling(nn.Module):
    """Image-level branch: global average pool, 1x1 conv-BN-ReLU, broadcast back to the map size."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.project = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(in_ch, out_ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x).expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3 and image pooling, concatenated and projected."""

    def __init__(self, in_ch: int, out_ch: int = 256, rates: tuple[int, ...] = (6, 12, 18), dropout: float = 0.5):
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_ch, out_ch, 1)] + [ConvBNReLU(in_ch, out_ch, 3, dilation=r) for r in rates]
            + [ASPPPooling(in_ch, out_ch)])
        self.project = nn.Sequential(ConvBNReLU(out_ch * len(self.branches), out_ch, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class DeepLabV3Plus(EncoderStagesMixin, nn.Module):
    """DeepLabV3+; see the module docstring."""

    def __init__(self, num_classes: int = 1, in_channels: int = 3, encoder: str = "resnet34",
                 encoder_weights: str | None = None, output_stride: int = 16, dropout: float = 0.5):
        super().__init__()
        if output_stride not in ASPP_RATES:
            raise ConfigError(f"output_stride must be 16 or 8, got {output_stride}")
        self.encoder = TimmEncoder(encoder, in_channels, encoder_weights, output_stride=output_stride)
        self.stride = self.encoder.stride
        self.low_index = self.encoder.feature_index(4)
        self.aspp = ASPP(self.encoder.out_channels[-1], 256, ASPP_RATES[output_stride], dropout)
        self.low_project = ConvBNReLU(self.encoder.out_channels[self.low_index], 48, 1)
        self.decoder = nn.Sequential(ConvBNReLU(256 + 48, 256, 3), ConvBNReLU(256, 256, 3))
        self.head = nn.Conv2d(256, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        features = self.encoder(pad_to_multiple(x, self.stride))
        low = self.low_project(features[self.low_index])
        high = F.interpolate(self.aspp(features[-1]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.head(self.decoder(torch.cat([high, low], dim=1)))
        return F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)[..., :h, :w]


@register_model
def deeplabv3plus(num_classes: int = 1, in_channels: int = 3, encoder: str = "resnet34",
                  encoder_weights: str | None = None, output_stride: int = 16, dropout: float = 0.5,
                  **unknown) -> DeepLabV3Plus:
    """DeepLabV3+ with ASPP on any dilatable timm encoder (default resnet34, output stride 16)."""
    reject_unknown_options("deeplabv3plus", unknown, deeplabv3plus)
    return DeepLabV3Plus(num_classes, in_channels, encoder, encoder_weights, output_stride, dropout)
