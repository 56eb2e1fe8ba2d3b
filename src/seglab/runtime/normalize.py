"""Input normalisation on the device: raw uint8/uint16 batches to the model's float input."""
from __future__ import annotations

import torch
import torch.nn as nn


class Normalizer(nn.Module):
    """uint8/uint16 batch -> float, scaled to 0..1, minus mean, over std; runs on the device."""

    def __init__(self, mean: list[float], std: list[float], scale: float):
        super().__init__()
        self.scale = scale
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardize(x.float() / self.scale)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """A batch already scaled to 0..1, minus mean, over std."""
        return (x - self.mean) / self.std
