"""Classic U-Net (Ronneberger et al. 2015) with same-size convolutions, as used in the farmland study.

3x3 convolutions with reflect padding, BatchNorm, LeakyReLU, Dropout2d, max-pool down and
transposed-convolution up-sampling, 64..1024 channels. Any input size works: inputs whose
sides are not multiples of 16 are reflect-padded inside ``forward`` and the logits cropped back.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .registry import register_model


class DoubleConv(nn.Sequential):
    """(3x3 conv, reflect padding, BatchNorm, LeakyReLU) x 2, optional Dropout2d between."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode="reflect", bias=False),
            nn.BatchNorm2d(out_ch),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, padding_mode="reflect", bias=False),
            nn.BatchNorm2d(out_ch),
            nn.LeakyReLU(0.1, inplace=True),
        )


class Up(nn.Module):
    """Transposed-conv x2 up-sampling, concatenation with the skip, DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)
        self.conv = DoubleConv(out_ch * 2, out_ch, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """Classic U-Net; ``base`` channels at full resolution, doubled at each of ``depth`` levels."""

    def __init__(self, num_classes: int = 1, in_channels: int = 3, base: int = 64, depth: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        chs = [base * 2**i for i in range(depth + 1)]  # 64, 128, 256, 512, 1024
        self.stride = 2**depth
        self.inc = DoubleConv(in_channels, chs[0])
        self.downs = nn.ModuleList(DoubleConv(chs[i], chs[i + 1], dropout if i >= depth - 2 else 0.0)
                                   for i in range(depth))
        self.ups = nn.ModuleList(Up(chs[i + 1], chs[i], dropout if i >= depth - 2 else 0.0)
                                 for i in reversed(range(depth)))
        self.head = nn.Conv2d(chs[0], num_classes, 1)

    def cam_layers(self) -> dict[str, nn.Module]:
        """Contracting-path levels, shallow to deep, for Grad-CAM (the last is the bottleneck)."""
        return {"inc": self.inc, **{f"downs.{i}": down for i, down in enumerate(self.downs)}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # pad to the stride, and to at least two strides: the reflect-padded bottleneck needs >= 2 pixels
        ph, pw = max((-h) % self.stride, 2 * self.stride - h), max((-w) % self.stride, 2 * self.stride - w)
        if ph or pw:  # any size in, same size out: pad to the network's stride, crop the logits
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return self.head(y)[..., :h, :w]


@register_model
def unet(num_classes: int = 1, in_channels: int = 3, base: int = 64, depth: int = 4,
         dropout: float = 0.1, **kwargs) -> UNet:
    """Classic U-Net, 64..1024 channels, transposed-conv up-sampling (31 M parameters)."""
    _reject_unused("unet", kwargs)
    return UNet(num_classes, in_channels, base, depth, dropout)


@register_model
def unet_small(num_classes: int = 1, in_channels: int = 3, dropout: float = 0.1, **kwargs) -> UNet:
    """Classic U-Net with 16..256 channels: the CPU-friendly default of the demo (1.9 M parameters)."""
    _reject_unused("unet_small", kwargs)
    return UNet(num_classes, in_channels, base=16, depth=4, dropout=dropout)


def _reject_unused(name: str, kwargs: dict) -> None:
    """Encoder options make no sense for encoder-free models; say so instead of ignoring them."""
    kwargs = {k: v for k, v in kwargs.items() if v not in (None, "", False)}
    if kwargs:
        raise ConfigError(f"model {name!r} does not take {sorted(kwargs)}; these options are for encoder models")
