"""Building blocks shared by the model families: conv-BN-ReLU, SE/scSE attention, BiSeNet's ARM/FFM, padding."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias, BN follows) + BatchNorm + ReLU; 'same' padding for odd kernels."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=dilation * (kernel_size - 1) // 2,
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class SqueezeExcite(nn.Module):
    """Channel attention of Hu et al. 2018: global pool, bottleneck MLP, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SpatialChannelSqueezeExcite(nn.Module):
    """scSE of Roy et al. 2018: channel SE plus a per-pixel spatial gate, added."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.channel = SqueezeExcite(channels, reduction)
        # SplitBiasConv2d: a wide 1x1 conv to one channel with a bias is the oneDNN bf16 backward bug's shape
        self.spatial_gate = nn.Sequential(SplitBiasConv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel(x) + x * self.spatial_gate(x)


def attention_block(kind: str | None, channels: int) -> nn.Module:
    """The decoder attention named by ``kind`` (None, "se" or "scse") for ``channels`` channels."""
    if kind is None:
        return nn.Identity()
    if kind == "se":
        return SqueezeExcite(channels)
    if kind == "scse":
        return SpatialChannelSqueezeExcite(channels)
    raise ConfigError(f"decoder_attention must be None, 'se' or 'scse', got {kind!r}")


class AttentionRefinementModule(nn.Module):
    """BiSeNet ARM: 3x3 conv-BN-ReLU, then a global-context channel gate (pool, 1x1 conv, BN, sigmoid)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch, 3)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(out_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x * self.gate(x)


class FeatureFusionModule(nn.Module):
    """BiSeNet FFM: concat the two paths, 1x1 conv-BN-ReLU, then an SE-style re-weighting added back."""

    def __init__(self, in_ch: int, out_ch: int, reduction: int = 4):
        super().__init__()
        self.fuse = ConvBNReLU(in_ch, out_ch, 1)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(out_ch, out_ch // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch // reduction, out_ch, 1),
            nn.Sigmoid(),
        )

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.fuse(torch.cat([spatial, context], dim=1))
        return x + x * self.gate(x)


class SplitBiasConv2d(nn.Conv2d):
    """Conv2d that adds its bias after the convolution instead of inside it: same parameters, same result.

    Why: PyTorch 2.14's CPU (oneDNN) bf16 convolution backward corrupts the heap when it computes the bias
    gradient of a 1x1 conv with thousands of input and < 16 output channels (FCN's score layer, 4096 -> classes;
    scSE's spatial gate in a ResNeXt50 decoder, 3072 -> 1; the process aborts with a segfault or
    "malloc_consolidate(): unaligned fastbin chunk"). Leaving the bias out of the oneDNN call avoids the bug.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._conv_forward(x, self.weight, None)
        return out if self.bias is None else out + self.bias.to(out.dtype).view(1, -1, 1, 1)


def init_decoder(*modules: nn.Module) -> None:
    """He (Kaiming-uniform, fan_in, ReLU) init for convolutions, BatchNorm at 1/0, zero biases: hand-written decoders.

    Why not PyTorch's default: its conv init (Kaiming-uniform with a=sqrt(5)) has ~2.4x smaller weights, which under
    Adam means ~2.4x larger relative steps for the decoder than for the (He-initialised) timm encoder. Trained in the
    same loop on the same windows, seglab's ResNet34 U-Net with the default init trailed smp's Unet (which
    initialises its decoder this way) after 80 steps and matched it with this init (benchmarks/probe_model_in_loop.py,
    LOG.md 2026-12-05; one seed, within about twice the seed-to-seed spread). He init is also what the U-Net paper
    prescribes, so the reason to match smp does not rest on that probe alone.
    """
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def init_head(*modules: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for output layers (no ReLU follows them), as smp's heads."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def mirror_pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """Mirror-extend an (N, C, H, W) tensor by any amount, even more than its own size.

    ``F.pad(mode="reflect")`` refuses pads >= the side length, so large pads are done in
    several reflections (the overlap-tile strategy of the U-Net paper); a side of length 1
    cannot be reflected and is replicated.
    """
    while left or right or top or bottom:
        h, w = x.shape[-2:]
        if h == 1 or w == 1:
            return F.pad(x, (left, right, top, bottom), mode="replicate")
        step = [min(p, w - 1) for p in (left, right)] + [min(p, h - 1) for p in (top, bottom)]
        x = F.pad(x, tuple(step), mode="reflect")
        left, right, top, bottom = (p - s for p, s in zip((left, right, top, bottom), step))
    return x


def pad_to_multiple(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Mirror-pad bottom/right so that H and W are multiples of ``stride`` (crop the output back with [:h, :w])."""
    h, w = x.shape[-2:]
    return mirror_pad(x, 0, (-w) % stride, 0, (-h) % stride)


def crop_to_scale(x: torch.Tensor, h: int, w: int, reduction: int) -> torch.Tensor:
    """Crop a 1/``reduction`` map of a padded input to the part that covers the unpadded h x w image."""
    return x[..., : -(-h // reduction), : -(-w // reduction)]


def model_output(out: torch.Tensor, training: bool, aux: list[torch.Tensor] | None = None,
                 cls: torch.Tensor | None = None) -> torch.Tensor | dict:
    """The seglab output contract: a dict with "aux"/"cls" only in training and only when present, else logits."""
    if not training or (not aux and cls is None):
        return out
    result: dict = {"out": out}
    if aux:
        result["aux"] = aux
    if cls is not None:
        result["cls"] = cls
    return result
