"""seglab's encoder U-Net against the reference implementation, segmentation_models_pytorch (skipped without it)."""
from __future__ import annotations

import re

import pytest
import torch

from seglab.models import create_model

smp = pytest.importorskip("segmentation_models_pytorch")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small tensors run faster on one thread, and far faster when other processes share the 2 cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def n_params(model: torch.nn.Module) -> int:
    """Parameter count."""
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, smp_encoder", [("unet_encoder", "resnet34"), ("unet_resnet34", "resnet34"),
                                               ("unet_resnet50", "resnet50"),
                                               ("unet_resnext50", "resnext50_32x4d")])
def test_parameter_count_matches_smp_unet_within_one_percent(name, smp_encoder):
    with torch.device("meta"):
        ours = n_params(create_model(name))
        reference = n_params(smp.Unet(smp_encoder, encoder_weights=None))
    assert ours == pytest.approx(reference, rel=0.01)


def smp_to_seglab_key(key: str) -> str:
    """Name of an smp Unet tensor in seglab's EncoderUNet."""
    key = re.sub(r"^encoder\.", "encoder.model.", key)
    key = re.sub(r"^decoder\.blocks\.", "decoder.", key)
    key = key.replace("attention1.attention.", "attention_in.").replace("attention2.attention.", "attention_out.")
    key = key.replace("cSE.", "channel.gate.").replace("sSE.", "spatial_gate.")
    return re.sub(r"^segmentation_head\.0\.", "head.", key)


@pytest.mark.parametrize("attention, upsample", [(None, "bilinear"), ("scse", "bilinear"), (None, "nearest")])
def test_same_weights_give_the_same_logits_as_smp_unet(attention, upsample):
    """smp's Unet is the same function as unet_encoder with the same decoder interpolation (smp's default: nearest)."""
    torch.manual_seed(0)
    reference = smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=3,
                         decoder_attention_type=attention, decoder_interpolation=upsample).eval()
    ours = create_model("unet_encoder", encoder="resnet18", num_classes=3, in_channels=1,
                        decoder_attention=attention, upsample=upsample).eval()
    for module in reference.modules():  # non-trivial BatchNorm statistics, so that a mis-mapped buffer shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    target = ours.state_dict()
    mapped = {smp_to_seglab_key(k): v for k, v in reference.state_dict().items()}
    # smp builds an attention module for the skip-less last block that it never applies; seglab does not build it.
    unused = [k for k in mapped if k not in target]
    assert all(k.startswith("decoder.4.attention_in.") for k in unused), unused
    ours.load_state_dict({k: v for k, v in mapped.items() if k in target}, strict=True)
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)


def test_decoder_and_head_start_at_smps_weight_scale():
    """Each decoder conv and the head start with the spread of smp's (He / Xavier), not PyTorch's ~2.4x smaller one.

    The init is what made seglab's U-Net learn slower than smp's in the same loop (benchmarks/probe_model_in_loop.py).
    """
    torch.manual_seed(0)
    reference = smp.Unet("resnet18", encoder_weights=None, classes=5)
    torch.manual_seed(1)
    ours = create_model("unet_encoder", encoder="resnet18", num_classes=5)
    target = dict(ours.named_parameters())
    compared = 0
    for key, ref in reference.named_parameters():
        name = smp_to_seglab_key(key)
        if ref.dim() == 4 and name.startswith(("decoder.", "head.")) and name in target:
            assert target[name].std().item() == pytest.approx(ref.std().item(), rel=0.1), name
            compared += 1
    assert compared >= 11  # two convs per decoder block (5 blocks) and the head
