"""FCN-32s / 16s / 8s on VGG16 (Long, Shelhamer & Darrell 2015).

VGG16's fully connected fc6/fc7 become convolutions (7x7 and 1x1, ``fc_channels`` = 4096), a 1x1
``score_fr`` gives class scores at stride 32, and bilinear-initialised transposed convolutions
up-sample them; FCN-16s adds scores from pool4 (stride 16) and FCN-8s also from pool3 (stride 8),
with the skip score layers zero-initialised as in the paper's staged training.

Deviation, for the same-size contract: fc6 is padded (3 pixels) and the first conv is not padded by
100, so no crop offsets are needed; inputs are mirror-padded to a multiple of 32 and the logits
cropped back. pool3/pool4 are the max-pooled VGG features at strides 4 and 8 (timm's VGG taps
each block's last ReLU before its pool). fc6/fc7 start from random weights: timm's features_only
VGG does not carry its classifier.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .blocks import SplitBiasConv2d, pad_to_multiple
from .encoders import EncoderStagesMixin, TimmEncoder
from .options import reject_unknown_options
from .registry import register_model


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """(channels, channels, k, k) weight making a ConvTranspose2d a per-channel bilinear up-sampler (FCN's init)."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float64)
    filt_1d = 1 - (og - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size, dtype=torch.float64)
    weight[range(channels), range(channels)] = filt_1d[:, None] * filt_1d[None, :]
    return weight.float()


def bilinear_upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """Learnable x``factor`` up-sampling initialised to bilinear interpolation; output is exactly factor x input."""
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 2 * factor))
    return up


class FCN(EncoderStagesMixin, nn.Module):
    """FCN with skips from pool4 (``variant`` "16s") and pool3 ("8s"), or none ("32s")."""

    stride = 32

    def __init__(self, variant: str = "8s", num_classes: int = 1, in_channels: int = 3, encoder: str = "vgg16",
                 encoder_weights: str | None = None, fc_channels: int = 4096, dropout: float = 0.5):
        super().__init__()
        if variant not in ("32s", "16s", "8s"):
            raise ConfigError(f"FCN variant must be '32s', '16s' or '8s', got {variant!r}")
        if not encoder.startswith("vgg"):
            raise ConfigError(f"FCN is defined on VGG encoders (vgg11/13/16/19, _bn variants), got {encoder!r}")
        self.variant = variant
        self.encoder = TimmEncoder(encoder, in_channels, encoder_weights)
        self.conv3_index, self.conv4_index = self.encoder.feature_index(4), self.encoder.feature_index(8)
        self.pool5_index = self.encoder.feature_index(32)
        ch = self.encoder.out_channels
        self.fc6 = nn.Sequential(nn.Conv2d(ch[self.pool5_index], fc_channels, 7, padding=3), nn.ReLU(inplace=True),
                                 nn.Dropout2d(dropout))
        self.fc7 = nn.Sequential(nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout))
        self.score_fr = SplitBiasConv2d(fc_channels, num_classes, 1)  # see SplitBiasConv2d: a oneDNN bf16 bug
        if variant == "32s":
            self.upscore = bilinear_upsampler(num_classes, 32)
        else:
            self.score_pool4 = _zero_conv(ch[self.conv4_index], num_classes)
            self.upscore2 = bilinear_upsampler(num_classes, 2)
        if variant == "16s":
            self.upscore = bilinear_upsampler(num_classes, 16)
        if variant == "8s":
            self.score_pool3 = _zero_conv(ch[self.conv3_index], num_classes)
            self.upscore_pool4 = bilinear_upsampler(num_classes, 2)
            self.upscore = bilinear_upsampler(num_classes, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        features = self.encoder(pad_to_multiple(x, self.stride))
        score = self.score_fr(self.fc7(self.fc6(features[self.pool5_index])))
        if self.variant != "32s":
            pool4 = F.max_pool2d(features[self.conv4_index], 2)
            score = self.upscore2(score) + self.score_pool4(pool4)
        if self.variant == "8s":
            pool3 = F.max_pool2d(features[self.conv3_index], 2)
            score = self.upscore_pool4(score) + self.score_pool3(pool3)
        return self.upscore(score)[..., :h, :w]


def _zero_conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    """1x1 score layer starting at zero, so a new skip begins as a no-op (the paper's staged init)."""
    conv = nn.Conv2d(in_ch, out_ch, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _fcn(variant: str, builder, unknown: dict, **options) -> FCN:
    """Check the options and build an FCN variant."""
    reject_unknown_options(f"fcn{variant}", unknown, builder)
    return FCN(variant, **options)


@register_model
def fcn32s(num_classes: int = 1, in_channels: int = 3, encoder: str = "vgg16", encoder_weights: str | None = None,
           fc_channels: int = 4096, dropout: float = 0.5, **unknown) -> FCN:
    """FCN-32s on VGG16: stride-32 scores up-sampled x32 (134 M parameters)."""
    return _fcn("32s", fcn32s, unknown, num_classes=num_classes, in_channels=in_channels, encoder=encoder,
                encoder_weights=encoder_weights, fc_channels=fc_channels, dropout=dropout)


@register_model
def fcn16s(num_classes: int = 1, in_channels: int = 3, encoder: str = "vgg16", encoder_weights: str | None = None,
           fc_channels: int = 4096, dropout: float = 0.5, **unknown) -> FCN:
    """FCN-16s on VGG16: adds pool4 scores before a x16 up-sampling."""
    return _fcn("16s", fcn16s, unknown, num_classes=num_classes, in_channels=in_channels, encoder=encoder,
                encoder_weights=encoder_weights, fc_channels=fc_channels, dropout=dropout)


@register_model
def fcn8s(num_classes: int = 1, in_channels: int = 3, encoder: str = "vgg16", encoder_weights: str | None = None,
          fc_channels: int = 4096, dropout: float = 0.5, **unknown) -> FCN:
    """FCN-8s on VGG16: adds pool4 and pool3 scores before a x8 up-sampling."""
    return _fcn("8s", fcn8s, unknown, num_classes=num_classes, in_channels=in_channels, encoder=encoder,
                encoder_weights=encoder_weights, fc_channels=fc_channels, dropout=dropout)
