"""The 2015 U-Net exactly as in the paper (Ronneberger et al.): unpadded 3x3 convs, centre-cropped skips.

A 572x572 input gives a 388x388 output: every side loses ``valid_margin`` = 92 pixels of context
(``6 * 2**depth - 4``). Tiled (overlap-tile) prediction uses this directly: to predict an output
tile of size ``o`` (``model.output_size(n) == o``), feed the input tile of size ``o + 2 * valid_margin``
centred on it, mirror-extending the image at its borders; neighbouring output tiles then abut exactly.

``same_size=True`` (default) wraps that strategy for the seglab contract: any input is mirror-padded
by the margin (plus up to the next valid size) and the logits cropped back to the input's size.
``same_size=False`` is the raw network: it accepts only valid sizes and returns the smaller map.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError
from .blocks import mirror_pad
from .options import reject_unknown_options
from .registry import register_model


class ValidDoubleConv(nn.Sequential):
    """Two unpadded 3x3 conv + ReLU (the paper has no normalisation); each loses 2 pixels per side in total."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
        )


def center_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The central h x w window of an (N, C, H, W) tensor."""
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


class UNetOriginal(nn.Module):
    """Paper U-Net: ``base`` channels doubled over ``depth`` levels, dropout at the end of the contracting path."""

    def __init__(self, num_classes: int = 1, in_channels: int = 3, base: int = 64, depth: int = 4,
                 dropout: float = 0.5, same_size: bool = True):
        super().__init__()
        if depth < 1:
            raise ConfigError(f"depth must be >= 1, got {depth}")
        chs = [base * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.same_size = same_size
        # The released Caffe model drops out after the last two contracting levels (drop4, drop5).
        self.downs = nn.ModuleList(
            ValidDoubleConv(in_channels if i == 0 else chs[i - 1], chs[i], dropout if i == depth - 1 else 0.0)
            for i in range(depth))
        self.bottom = ValidDoubleConv(chs[depth - 1], chs[depth], dropout)
        self.up_convs = nn.ModuleList(nn.ConvTranspose2d(chs[i + 1], chs[i], 2, stride=2)
                                      for i in reversed(range(depth)))
        self.up_blocks = nn.ModuleList(ValidDoubleConv(2 * chs[i], chs[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chs[0], num_classes, 1)

    @property
    def valid_margin(self) -> int:
        """Pixels of context lost on each side between input and output (92 for depth 4)."""
        return 6 * 2**self.depth - 4

    def output_size(self, input_size: int | tuple[int, int]) -> int | tuple[int, int]:
        """Output side(s) of the raw network for a valid input side (572 -> 388); ValueError for invalid sizes."""
        if isinstance(input_size, (tuple, list)):
            return tuple(self.output_size(int(s)) for s in input_size)
        n = input_size
        for _ in range(self.depth):
            n -= 4
            if n <= 0 or n % 2:
                raise ConfigError(f"input side {input_size} is not valid for the unpadded U-Net (every level's "
                                  f"map must be even before pooling); next valid side: {self._next_valid(input_size)}")
            n //= 2
        n -= 4
        for _ in range(self.depth):
            n = 2 * n - 4
        if n < 1:
            raise ConfigError(f"input side {input_size} is too small; the smallest valid is {self._next_valid(1)}")
        return n

    def valid_input_size(self, min_output: int) -> int:
        """Smallest valid input side whose output side is at least ``min_output``."""
        scale, shrink = 2**self.depth, 4 * (2**self.depth - 1)
        # Output sides are scale * k - shrink for integer bottom sizes k (k >= 1 after the bottom convs).
        k = max(-(-(min_output + shrink) // scale), (shrink + 1 + scale - 1) // scale)
        return scale * k - shrink + 2 * self.valid_margin

    def _next_valid(self, input_size: int) -> int:
        """Smallest valid input side >= ``input_size``."""
        return self.valid_input_size(max(input_size - 2 * self.valid_margin, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.same_size:
            m = self.valid_margin
            ph, pw = self.valid_input_size(h), self.valid_input_size(w)
            x = mirror_pad(x, m, pw - w - m, m, ph - h - m)  # margin on top/left, margin + rounding on bottom/right
        else:
            self.output_size((h, w))  # validates, with a helpful message
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, block in zip(self.up_convs, self.up_blocks):
            x = up(x)
            x = block(torch.cat([center_crop(skips.pop(), *x.shape[-2:]), x], dim=1))
        logits = self.head(x)
        return logits[..., :h, :w] if self.same_size else logits

    def cam_layers(self) -> dict[str, nn.Module]:
        """Contracting-path levels and the bottom, shallow to deep, for Grad-CAM."""
        layers = {f"downs.{i}": d for i, d in enumerate(self.downs)}
        layers["bottom"] = self.bottom
        return layers


@register_model
def unet_original(num_classes: int = 1, in_channels: int = 3, base: int = 64, depth: int = 4,
                  dropout: float = 0.5, same_size: bool = True, **unknown) -> UNetOriginal:
    """The 2015 paper U-Net, unpadded convs (572 -> 388 with same_size=False; 31 M parameters)."""
    reject_unknown_options("unet_original", unknown, unet_original)
    return UNetOriginal(num_classes, in_channels, base, depth, dropout, same_size)
