"""BatchNorm folding for inference: same logits on unseen inputs, for every registered model; unsafe cases left alone."""
from __future__ import annotations

import pytest
import torch
from test_models import CHEAP, MODELS
from torch import nn

from seglab.inference.fold_bn import fold_batchnorm
from seglab.models import create_model


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so that a wrong fold shows in the logits."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def _logits(out):
    return out["out"] if isinstance(out, dict) else out


@pytest.mark.parametrize("name", [m for m in MODELS if m != "unet_original"])
def test_folded_model_gives_the_same_logits_on_unseen_inputs(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **CHEAP.get(name, {})).eval()
    _randomise_bn(model)
    folded, count = fold_batchnorm(model, torch.randn(1, 3, 64, 64))
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert count == batchnorms - sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    if batchnorms:
        assert count > 0 and folded is not model
    x = torch.randn(2, 3, 96, 80)  # another size and batch than the tracing example
    with torch.no_grad():
        torch.testing.assert_close(_logits(folded(x)), _logits(model(x)), atol=1e-4, rtol=1e-4)


class TwoConsumers(nn.Module):
    """The conv output feeds its BatchNorm and a residual sum: folding would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return y + self.bn(y)


class SharedConv(nn.Module):
    """One conv called twice, each time followed by another BatchNorm."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn1, self.bn2 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn1(self.conv(x)) + self.bn2(self.conv(x))


@pytest.mark.parametrize("cls", [TwoConsumers, SharedConv])
def test_unsafe_pairs_are_not_folded(cls):
    torch.manual_seed(0)
    model = cls().eval()
    _randomise_bn(model)
    folded, count = fold_batchnorm(model, torch.randn(1, 3, 16, 16))
    assert count == 0 and folded is model


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)), torch.randn(1, 3, 8, 8))
