"""Test-time augmentation: each mode averages the views it names, and views the training never had are flagged."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from seglab.config import CHOICES
from seglab.data.transforms import _TTA_TRANSFORMS, tta_unseen_in_training
from seglab.engine.precision import resolve_precision
from seglab.inference.predictor import _TTA, Predictor, _warn_untrained_tta

META = {"in_channels": 1, "mean": [0.0], "std": [1.0], "scale": 1.0, "codec": {"num_classes": 2}}


@pytest.mark.parametrize("tta, augment, unseen", [
    ("none", "none", []),
    ("hflip", "hflip,random_pad", []),
    ("flip", "hflip,random_pad", ["vflip"]),       # seismic: trained left-right only, so no up-down view
    ("hflip", "none", ["hflip"]),
    ("flip", "flips", []),
    ("d4", "flips", ["rot90"]),
    ("d4", "light", []),
    ("flip", "vflip,rot90", []),                   # rot90 and one flip generate the other flip
])
def test_tta_views_are_compared_with_the_training_augmentation(tta, augment, unseen):
    assert tta_unseen_in_training(tta, augment) == unseen


def test_every_tta_mode_is_known_to_the_config_the_predictor_and_the_training_check():
    assert set(CHOICES["tta"]) == set(_TTA) == set(_TTA_TRANSFORMS)


def asymmetric_model() -> nn.Module:
    """A conv whose kernel is neither left-right nor up-down symmetric, so every view gives different logits."""
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(9.0).reshape(1, 1, 3, 3) - 4.0)
    return conv


def test_hflip_tta_averages_the_image_and_its_left_right_mirror():
    model = asymmetric_model()
    x = torch.rand(2, 1, 6, 7, generator=torch.Generator().manual_seed(0))
    fp32 = resolve_precision("fp32", "cpu")
    got = Predictor([model], META, fp32, tta="hflip", fold_bn=False).probs(x)
    with torch.no_grad():
        expected = (torch.sigmoid(model(x)) + torch.sigmoid(model(x.flip(-1))).flip(-1)) / 2
        flip = Predictor([model], META, fp32, tta="flip", fold_bn=False).probs(x)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(flip, expected, atol=1e-3)  # "flip" also averages in the up-down view


def test_unseen_tta_views_get_a_note_naming_the_checkpoint_and_the_fix(capsys, tmp_path):
    checkpoint = tmp_path / "best.pt"
    _warn_untrained_tta("flip", "hflip,random_pad", checkpoint)
    out = capsys.readouterr().out
    assert "tta=flip adds vflip views" in out and str(checkpoint) in out and "Use tta=hflip" in out
    _warn_untrained_tta("hflip", "hflip,random_pad", checkpoint)
    _warn_untrained_tta("d4", "light", checkpoint)
    _warn_untrained_tta("flip", None, checkpoint)  # an old checkpoint without its training settings
    assert capsys.readouterr().out == ""
