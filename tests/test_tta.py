"""Test-time augmentation: each mode averages the views it names, and views the training never had are flagged."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from seglab.config import CHOICES
from seglab.data.transforms import tta_unseen_in_training
from seglab.runtime.precision import resolve_precision
from seglab.data.transforms import pad_for_eval
from seglab.inference.predictor import Predictor, _warn_untrained_tta
from seglab.inference.tta import parse_tta, tta_modes

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
    ("hflip+shift", "hflip,random_pad", []),       # the TGS recipe: random padding positions are translations
    ("hflip+shift", "hflip", ["shift"]),
    ("shift", "flips", ["shift"]),
])
def test_tta_views_are_compared_with_the_training_augmentation(tta, augment, unseen):
    assert tta_unseen_in_training(tta, augment) == unseen


def test_every_tta_mode_is_known_to_the_config_the_predictor_and_the_training_check():
    assert set(CHOICES["tta"]) == set(tta_modes())
    for mode in tta_modes():
        tta_unseen_in_training(mode, "heavy")  # no KeyError: every mode's transforms are known
    assert parse_tta("hflip+shift") == ("hflip", True) and parse_tta("shift") == ("none", True)
    with pytest.raises(ValueError, match="tta must be one of"):
        parse_tta("shift+hflip")


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


def test_unseen_shift_views_get_a_note_that_keeps_the_seen_views(capsys, tmp_path):
    _warn_untrained_tta("hflip+shift", "hflip", tmp_path / "best.pt")
    out = capsys.readouterr().out
    assert "adds shift views" in out and "Use tta=hflip" in out


def centre_padded(images: np.ndarray, pad_to: int) -> torch.Tensor:
    """(N, 1, pad_to, pad_to) batch of (N, h, w) images centre-padded the way evaluation pads them."""
    return torch.from_numpy(np.stack([pad_for_eval(im[..., None], None, pad_to, "reflect", 0)[0][..., 0]
                                      for im in images])[:, None])


def test_shift_tta_averages_the_nine_padding_positions_of_each_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 11, 11)).astype(np.float32)
    model, fp32 = asymmetric_model(), resolve_precision("fp32", "cpu")
    meta = {**META, "pad_to": 16, "pad_mode": "reflect"}
    x = centre_padded(images, 16)
    got = Predictor([model], meta, fp32, tta="hflip+shift", fold_bn=False).probs(x, [(11, 11)] * 2)
    # by hand: every position (0, 2 = centre, 5) per axis, padded with numpy, predicted with hflip, cropped back
    expected = torch.zeros(2, 1, 11, 11)
    with torch.no_grad():
        for oy in (0, 2, 5):
            for ox in (0, 2, 5):
                v = torch.from_numpy(np.pad(images, ((0, 0), (oy, 5 - oy), (ox, 5 - ox)), mode="reflect"))[:, None]
                p = (torch.sigmoid(model(v)) + torch.sigmoid(model(v.flip(-1))).flip(-1)) / 2
                expected += p[..., oy:oy + 11, ox:ox + 11] / 9
    assert torch.allclose(got[..., 2:13, 2:13], expected, atol=1e-5)
    centre = Predictor([model], meta, fp32, tta="hflip", fold_bn=False).probs(x, [(11, 11)] * 2)
    assert not torch.allclose(got[..., 2:13, 2:13], centre[..., 2:13, 2:13], atol=1e-3)
    assert torch.equal(got[..., :2, :], centre[..., :2, :])  # the padding keeps the centred prediction


def test_shift_tta_groups_mixed_sizes_and_leaves_unpadded_images_alone():
    rng = np.random.default_rng(1)
    model, fp32 = asymmetric_model(), resolve_precision("fp32", "cpu")
    meta = {**META, "pad_to": 16, "pad_mode": "reflect"}
    small = centre_padded(rng.integers(0, 256, (1, 12, 10)).astype(np.float32)[..., :10], 16)  # 12x10 in 16x16
    full = torch.from_numpy(rng.random((1, 1, 16, 16)).astype(np.float32) * 255)              # fills its frame
    batch = torch.cat([small, full])
    shifted = Predictor([model], meta, fp32, tta="shift", fold_bn=False)
    plain = Predictor([model], meta, fp32, tta="none", fold_bn=False)
    got = shifted.probs(batch, [(12, 10), (16, 16)])
    assert torch.allclose(got[1], plain.probs(full)[0], atol=1e-6)
    assert torch.allclose(got[0], shifted.probs(small, [(12, 10)])[0], atol=1e-6)
    assert not torch.allclose(got[0], plain.probs(small)[0], atol=1e-3)
    assert torch.allclose(shifted.probs(batch), plain.probs(batch), atol=1e-6)  # no sizes: no shifted views
