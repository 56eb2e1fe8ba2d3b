"""The "improved U-Net": any timm encoder, an smp-like decoder, optional attention, hypercolumn and deep supervision.

Decoder: from the deepest encoder feature, each block up-samples x2 (bilinear; ``upsample=nearest`` as smp), concatenates the
encoder feature at that stride when there is one, and applies two 3x3 conv-BN-ReLU (channels
256, 128, 64, 32, 16 for a stride-32 encoder). Encoders whose shallowest feature is at stride 2 or 4
(resnet, convnext) simply get skip-less blocks at the top; VGG's stride-1 feature is used as the last skip.
With ``encoder="resnet34"`` the parameter count equals segmentation_models_pytorch's ``Unet("resnet34")``.

Hypercolumn: every decoder scale is reduced by a 1x1 conv to ``HYPERCOLUMN_CHANNELS``, up-sampled to full size and
concatenated before the 3x3 head. A 1x1 conv and bilinear up-sampling commute, so this equals up-sampling the raw
scales and reducing each at full size, but up-samples 16 channels instead of up to 256 (3x faster training on CPU).

Initialisation: the timm encoder keeps timm's; the decoder gets He init and the heads Xavier, as smp's Unet
(``blocks.init_decoder``; PyTorch's default conv init gives the decoder ~2.4x smaller weights than the encoder's).

Deep supervision adds a logit map per decoder scale and an image-level empty/non-empty logit (training only);
``empty_gate=True`` (binary tasks) also uses that logit at inference to blank images it calls empty.

``input_scale=2`` up-samples the input x2 (bilinear) before the encoder and averages the logits back to the input
size: small images (TGS's 101x101) get features at twice the resolution, as the salt solutions that resized
101 -> 202 did, without changing the data, the masks or the metric. It costs ~4x the compute, and a narrower encoder
does not buy it back on a CPU: x2 with a half-width ResNet18 trains 2.7x slower than x1 at full width (memory-bound
large activations), so it is for GPUs. ``encoder_args`` passes keywords to ``timm.create_model``, e.g.
``{channels: [32, 64, 128, 256]}`` for a half-width ResNet. Random-init encoders start the residual BatchNorm scales
that timm zero-initialises at 1 (see ``encoders.unit_residual_norms``); ``{zero_init_last: true}`` keeps timm's 0.
"""
from __future__ import annotations

import inspect
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .blocks import (ConvBNReLU, attention_block, crop_to_scale, init_decoder, init_head, model_output,
                     pad_to_multiple)
from .encoders import EncoderStagesMixin, TimmEncoder
from .options import reject_unknown_options
from .registry import register_model

DECODER_CHANNELS = (256, 128, 64, 32, 16)
HYPERCOLUMN_CHANNELS = 16
# bilinear as in the improved-U-Net study; nearest is smp's Unet decoder (and ~8% faster to train on CPU).
UPSAMPLE_MODES = ("bilinear", "nearest")


class DecoderBlock(nn.Module):
    """x2 up-sampling, concat with the skip and attention (if a skip), two 3x3 conv-BN-ReLU, attention."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, attention: str | None = None,
                 upsample: str = "bilinear"):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ConfigError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.upsample = upsample
        # Attention re-weights the concatenation of up-sampled and skip features; without a skip there is none.
        self.attention_in = attention_block(attention, in_ch + skip_ch) if skip_ch else nn.Identity()
        self.conv1 = ConvBNReLU(in_ch + skip_ch, out_ch, 3)
        self.conv2 = ConvBNReLU(out_ch, out_ch, 3)
        self.attention_out = attention_block(attention, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = torch.cat([self._up(x, size=skip.shape[-2:]), skip], dim=1)
        else:
            x = self._up(x, scale_factor=2)
        return self.attention_out(self.conv2(self.conv1(self.attention_in(x))))

    def _up(self, x: torch.Tensor, **size) -> torch.Tensor:
        if self.upsample == "nearest":
            return F.interpolate(x, mode="nearest", **size)
        return F.interpolate(x, mode="bilinear", align_corners=False, **size)


class EncoderUNet(EncoderStagesMixin, nn.Module):
    """U-Net decoder over a ``TimmEncoder``; see the module docstring."""

    def __init__(self, num_classes: int = 1, in_channels: int = 3, encoder: str = "resnet34",
                 encoder_weights: str | None = None, decoder_channels: Sequence[int] | None = None,
                 decoder_attention: str | None = None, hypercolumn: bool = False, dropout: float = 0.0,
                 deep_supervision: bool = False, upsample: str = "bilinear", empty_gate: bool = False,
                 encoder_args: dict | None = None, input_scale: int = 1):
        super().__init__()
        if empty_gate and not (deep_supervision and num_classes == 1):
            raise ConfigError("empty_gate uses the empty/non-empty head of deep_supervision=True on a binary task "
                              "(num_classes=1); set deep_supervision=True or drop empty_gate")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        if not (isinstance(input_scale, int) and input_scale >= 1):
            raise ConfigError(f"input_scale must be a whole number >= 1 (e.g. 2), got {input_scale!r}")
        self.encoder = TimmEncoder(encoder, in_channels, encoder_weights, encoder_args=encoder_args)
        self.input_scale = input_scale
        # Inputs padded to a multiple of self.stride give exact feature sizes once scaled.
        self.stride = self.encoder.stride // math.gcd(self.encoder.stride, input_scale)
        n_blocks = math.log2(self.encoder.stride)
        if not n_blocks.is_integer():
            raise ConfigError(f"encoder {encoder!r} has stride {self.encoder.stride}, not a power of two; "
                              f"choose another")
        n_blocks = int(n_blocks)
        if decoder_channels is None:
            decoder_channels = (DECODER_CHANNELS + (16,) * n_blocks)[:n_blocks]
        decoder_channels = tuple(decoder_channels)
        if len(decoder_channels) != n_blocks:
            raise ConfigError(f"decoder_channels needs {n_blocks} entries for encoder {encoder!r} "
                              f"(stride {self.encoder.stride}), got {len(decoder_channels)}")

        # Skip for the block that brings the decoder to stride r: the deepest encoder feature at r, if any.
        self.skip_indices: list[int | None] = []
        in_ch = self.encoder.out_channels[-1]
        blocks = []
        for i, out_ch in enumerate(decoder_channels):
            reduction = self.encoder.stride // 2 ** (i + 1)
            skip = max((j for j, r in enumerate(self.encoder.reductions[:-1]) if r == reduction), default=None)
            self.skip_indices.append(skip)
            skip_ch = self.encoder.out_channels[skip] if skip is not None else 0
            blocks.append(DecoderBlock(in_ch, skip_ch, out_ch, decoder_attention, upsample))
            in_ch = out_ch
        self.decoder = nn.ModuleList(blocks)

        self.hypercolumn = hypercolumn
        head_in = decoder_channels[-1]
        if hypercolumn:
            self.hypercolumn_reduce = nn.ModuleList(nn.Conv2d(c, HYPERCOLUMN_CHANNELS, 1, bias=False)
                                                    for c in decoder_channels[:-1])
            head_in += HYPERCOLUMN_CHANNELS * len(self.hypercolumn_reduce)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(head_in, num_classes, 3, padding=1)
        self.deep_supervision = deep_supervision
        self.empty_gate = empty_gate
        if deep_supervision:
            self.aux_heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in decoder_channels[:-1])
            # Image-level "is anything there" logit from the deepest features (empty-mask classifier).
            self.cls_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                          nn.Linear(self.encoder.out_channels[-1], 1))
        # He init for the decoder, Xavier for the heads, as smp's Unet (why: blocks.init_decoder).
        init_decoder(self.decoder, *([self.hypercolumn_reduce] if hypercolumn else []))
        init_head(self.head, *([self.aux_heads, self.cls_head] if deep_supervision else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict:
        h, w = x.shape[-2:]
        s = self.input_scale
        if s > 1:
            x = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        features = self.encoder(pad_to_multiple(x, self.encoder.stride))
        y = features[-1]
        scales = []
        for block, skip in zip(self.decoder, self.skip_indices):
            y = block(y, features[skip] if skip is not None else None)
            scales.append(y)
        if self.hypercolumn:
            size = y.shape[-2:]
            y = torch.cat([y] + [F.interpolate(reduce(scale), size=size, mode="bilinear", align_corners=False)
                                 for reduce, scale in zip(self.hypercolumn_reduce, scales[:-1])], dim=1)
        logits = self.head(self.dropout(y))[..., :h * s, :w * s]
        if s > 1:
            logits = F.avg_pool2d(logits, s)
        if self.empty_gate and not self.training:
            # Images the empty/non-empty head calls empty get an empty mask, as the TGS solutions did: one false
            # pixel on an empty image scores 0 there. -20 keeps bf16 sigmoids at exactly 0 after thresholding.
            empty = self.cls_head(features[-1]).view(-1, 1, 1, 1) < 0
            return logits.masked_fill(empty, -20.0)
        if not (self.training and self.deep_supervision):
            return logits
        aux = [crop_to_scale(head(scale), h * s, w * s, self.encoder.stride // 2 ** (i + 1))
               for i, (head, scale) in enumerate(zip(self.aux_heads, scales))]
        return model_output(logits, self.training, aux, self.cls_head(features[-1]))


def _build(model_name: str, num_classes: int, in_channels: int, options: dict) -> EncoderUNet:
    """Check ``options`` against EncoderUNet's keywords (a clear error, not a TypeError) and build it."""
    accepted = inspect.signature(EncoderUNet).parameters
    reject_unknown_options(model_name, {k: v for k, v in options.items() if k not in accepted}, EncoderUNet)
    return EncoderUNet(num_classes=num_classes, in_channels=in_channels, **options)


# The builders take EncoderUNet's keywords as **options (as timm's builders do) instead of repeating its signature.
@register_model
def unet_encoder(num_classes: int = 1, in_channels: int = 3, **options) -> EncoderUNet:
    """U-Net with any timm encoder (default resnet34, 24.4 M parameters, same as smp's Unet); options: EncoderUNet."""
    return _build("unet_encoder", num_classes, in_channels, options)


def _preset(model_name: str, default_encoder: str, doc: str):
    """A named U-Net preset: unet_encoder with another default encoder (still overridable)."""

    def builder(num_classes: int = 1, in_channels: int = 3, **options) -> EncoderUNet:
        return _build(model_name, num_classes, in_channels, {"encoder": default_encoder, **options})

    builder.__name__ = builder.__qualname__ = model_name
    builder.__doc__ = doc
    return register_model(builder)


unet_vgg16 = _preset("unet_vgg16", "vgg16", "U-Net on a VGG16 encoder (TernausNet-like, skips at strides 1..16).")
unet_resnet34 = _preset("unet_resnet34", "resnet34", "U-Net on a ResNet-34 encoder (24.4 M parameters).")
unet_resnet50 = _preset("unet_resnet50", "resnet50", "U-Net on a ResNet-50 encoder (32.5 M parameters).")
unet_resnext50 = _preset("unet_resnext50", "resnext50_32x4d", "U-Net on a ResNeXt-50 32x4d encoder.")
