"""Model zoo contract: shapes at any size, train/eval outputs, gradients, checkpoints, weights, Grad-CAM layers."""
from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from seglab.models import (PretrainedWeightsUnavailable, create_model, freeze_encoder, list_models,
                           model_summary)
from seglab.models.blocks import SplitBiasConv2d, mirror_pad
from seglab.models.fcn import bilinear_upsampler

@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small tensors run faster on one thread, and far faster when other processes share the 2 cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Cheap variants for the real-compute tests (full-size defaults are checked on the meta device below).
# Presets get a different small encoder each, to cover timm layouts: stride-1 VGG taps, deep-stem
# resnets, MobileNetV3's own feature class, RegNet, ConvNeXt's stride-4 first feature.
CHEAP = {
    "unet": dict(base=8),
    "unet_small": {},
    "unet_original": dict(base=4),
    "unet_encoder": dict(encoder="resnet18"),
    "unet_resnet34": dict(encoder="resnet10t"),
    "unet_resnet50": dict(encoder="regnetx_002"),
    "unet_resnext50": dict(encoder="convnext_atto"),
    "unet_vgg16": dict(encoder="vgg11"),
    "bisenet": {},
    "bisenet_resnet18": dict(encoder="resnet10t"),
    "bisenet_resnet101": dict(encoder="mobilenetv3_small_100"),
    "fcn32s": dict(encoder="vgg11", fc_channels=32),
    "fcn16s": dict(encoder="vgg11", fc_channels=32),
    "fcn8s": dict(encoder="vgg11", fc_channels=32),
    "deeplabv3plus": dict(encoder="resnet18"),
}
MODELS = list_models()
AUX_MODELS = {"bisenet", "bisenet_resnet18", "bisenet_resnet101"}  # aux heads by design
ENCODER_FREE = {"unet", "unet_small", "unet_original"}


def cheap(name: str, **kwargs) -> nn.Module:
    """A small, seeded instance of a registered model."""
    torch.manual_seed(0)
    return create_model(name, **{**CHEAP.get(name, {}), **kwargs})


def logits_of(output: torch.Tensor | dict) -> torch.Tensor:
    """The main logits of a model output (plain tensor or training dict)."""
    return output["out"] if isinstance(output, dict) else output


@functools.lru_cache(maxsize=None)
def full_size_on_meta(name: str) -> nn.Module:
    """The default (full-size) model with 4 classes on the meta device: shapes propagate, nothing is computed."""
    with torch.device("meta"):
        return create_model(name, num_classes=4).eval()


@pytest.mark.parametrize("name", MODELS)
def test_full_size_model_keeps_input_size_for_any_shape(name):
    model = full_size_on_meta(name)
    for size in [(101, 101), (360, 480), (33, 250)]:
        assert model(torch.empty(1, 3, *size, device="meta")).shape == (1, 4, *size)


@pytest.mark.parametrize("name", MODELS)
def test_training_output_and_every_parameter_gets_a_gradient(name):
    """6 input channels, binary head, odd 70x50 input: dict only for aux models, all weights learn."""
    model = cheap(name, num_classes=1, in_channels=6).train()
    output = model(torch.randn(2, 6, 70, 50))
    assert isinstance(output, dict) == (name in AUX_MODELS)
    assert logits_of(output).shape == (2, 1, 70, 50)
    loss = logits_of(output).square().mean()
    if isinstance(output, dict):
        assert [a.shape[-2:] for a in output["aux"]] == [(5, 4), (3, 2)]  # ceil(70/16, 50/16), ceil(/32)
        loss = loss + sum(a.square().mean() for a in output["aux"])
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


@pytest.mark.parametrize("name", MODELS)
def test_eval_output_at_odd_size_survives_a_state_dict_round_trip(name, tmp_path):
    """1 input channel, 2 classes, 101x101: a finite map; saved and read back with weights_only=True, identical."""
    first = cheap(name, num_classes=2, in_channels=1).eval()
    torch.save(first.state_dict(), tmp_path / "model.pth")
    torch.manual_seed(123)  # a differently initialised twin must become identical after loading
    second = create_model(name, num_classes=2, in_channels=1, **CHEAP.get(name, {})).eval()
    second.load_state_dict(torch.load(tmp_path / "model.pth", weights_only=True))
    x = torch.randn(1, 1, 101, 101)
    with torch.no_grad():
        a, b = first(x), second(x)
    assert isinstance(a, torch.Tensor) and a.shape == (1, 2, 101, 101)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_a_model_at_half_resolution_answers_at_full_size_with_the_same_weights(name):
    """scale=0.5: the model itself on the 2x2-averaged (stride-padded) input, logits up-sampled and cropped back;
    the state dict and layer names are the model's own, and a checkpoint's spec rebuilds it at half resolution."""
    from seglab.models import model_from_checkpoint
    from seglab.models.blocks import pad_to_multiple

    full = cheap(name, num_classes=3, in_channels=2).eval()
    half = cheap(name, num_classes=3, in_channels=2, scale=0.5).eval()
    assert list(half.state_dict()) == list(full.state_dict())
    assert [n for n, _ in half.named_modules()] == [n for n, _ in full.named_modules()]
    assert half.seglab_spec["scale"] == 0.5 and half.input_stride == 2 * getattr(full, "stride", 32)
    x = torch.randn(1, 2, 101, 77)
    with torch.no_grad():
        y = half(x)
        small = full(torch.nn.functional.avg_pool2d(pad_to_multiple(x, half.input_stride), 2))
    expected = torch.nn.functional.interpolate(small, scale_factor=2, mode="bilinear")[..., :101, :77]
    assert y.shape == (1, 3, 101, 77) and torch.allclose(y, expected, atol=1e-5)
    state = {"model_spec": half.seglab_spec, "model": half.state_dict()}
    again = model_from_checkpoint(state).eval()
    with torch.no_grad():
        assert torch.equal(again(x), y) and again.seglab_scale == 0.5
    train = half.train()(torch.randn(2, 2, 64, 64))
    assert logits_of(train).shape == (2, 3, 64, 64)  # training dicts get their main logits at full size too


@pytest.mark.parametrize("name", MODELS)
def test_unknown_option_is_a_value_error_naming_it(name):
    with pytest.raises(ValueError, match="bogus_option"):
        create_model(name, bogus_option=3)


@pytest.mark.parametrize("name", ["unet_encoder", "unet_resnet50"])
def test_encoder_unet_option_error_lists_the_model_keywords(name):
    # The builders take **options; the error must still list EncoderUNet's keywords, not the builder's.
    with pytest.raises(ValueError, match="hypercolum") as err:
        create_model(name, hypercolum=True)
    assert "did you mean hypercolum -> hypercolumn?" in str(err.value) and "encoder_args" in str(err.value)
    assert "num_classes" not in str(err.value)


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        create_model("unet_resnet35")
    assert "unet_resnet34" in str(err.value) and "deeplabv3plus" in str(err.value)


def test_unknown_encoder_suggests_timm_names():
    with pytest.raises(ValueError, match="resnet34"):
        create_model("unet_encoder", encoder="resnet34x")


@pytest.mark.parametrize("name", MODELS)
def test_cam_layers_are_named_submodules_ordered_shallow_to_deep(name):
    model = full_size_on_meta(name)
    if not hasattr(model, "cam_layers") and name in ("unet", "unet_small"):
        pytest.skip("UNet.cam_layers is to be added to unet.py by its owner")
    layers = model.cam_layers()
    assert len(layers) >= 3
    sizes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-2] * out.shape[-1]))
             for m in layers.values()]
    try:
        model(torch.empty(1, 3, 64, 64, device="meta"))
    finally:  # the meta model is shared with other tests
        for h in hooks:
            h.remove()
    assert all(model.get_submodule(key) is module for key, module in layers.items())
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]  # resolution falls, deepest last


def test_freeze_encoder_stops_gradients_and_batchnorm_updates():
    model = cheap("unet_encoder").train()
    freeze_encoder(model)
    model.train()  # a trainer calls train() every epoch; the frozen encoder must stay in eval
    stats = model.encoder.model.bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    assert not model.encoder.training
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.head.weight.grad is not None
    assert torch.equal(stats, model.encoder.model.bn1.running_mean)
    freeze_encoder(model, frozen=False)
    model.train()
    assert model.encoder.training and all(p.requires_grad for p in model.encoder.parameters())
    with pytest.raises(ValueError, match="no .encoder"):
        freeze_encoder(cheap("unet_small"))


# --- encoder weights -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet18_state_dict() -> dict[str, torch.Tensor]:
    """A full timm resnet18 state dict (classifier included), as timm checkpoints are saved."""
    torch.manual_seed(7)
    return timm.create_model("resnet18").state_dict()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_is_loaded_exactly(tmp_path, resnet18_state_dict, suffix):
    from safetensors.torch import save_file

    path = tmp_path / f"resnet18{suffix}"
    (save_file if suffix == ".safetensors" else torch.save)(resnet18_state_dict, str(path))
    for name in ("unet_encoder", "bisenet", "deeplabv3plus"):
        model = create_model(name, encoder="resnet18", encoder_weights=str(path))
        loaded = model.encoder.model.state_dict()
        assert all(torch.equal(loaded[k], resnet18_state_dict[k]) for k in loaded), name


def test_pretrained_first_conv_is_adapted_to_other_channel_counts(tmp_path, resnet18_state_dict):
    """timm's rule: 1 channel sums the RGB kernels; 6 channels repeat them scaled by 3/6."""
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18_state_dict, path)
    rgb = resnet18_state_dict["conv1.weight"]
    gray = create_model("unet_encoder", in_channels=1, encoder="resnet18", encoder_weights=str(path))
    torch.testing.assert_close(gray.encoder.model.conv1.weight, rgb.sum(dim=1, keepdim=True))
    six = create_model("unet_encoder", in_channels=6, encoder="resnet18", encoder_weights=str(path))
    torch.testing.assert_close(six.encoder.model.conv1.weight, torch.cat([rgb, rgb], dim=1) * 0.5)
    assert torch.equal(six.encoder.model.layer1[0].conv1.weight, resnet18_state_dict["layer1.0.conv1.weight"])


def test_flattened_vgg_and_seglab_checkpoints_load_as_encoder_weights(tmp_path):
    """timm's features_only VGG renames features.0 -> features_0; a whole seglab model's file also works."""
    torch.manual_seed(3)
    vgg = timm.create_model("vgg11", mlp_ratio=1 / 4096)  # a tiny fc head: it is not part of the encoder anyway
    torch.save(vgg.state_dict(), tmp_path / "vgg11.pth")
    fcn = create_model("fcn8s", encoder="vgg11", fc_channels=16, encoder_weights=str(tmp_path / "vgg11.pth"))
    assert torch.equal(fcn.encoder.model.features_0.weight, vgg.features[0].weight)
    torch.save(fcn.state_dict(), tmp_path / "fcn.pth")
    unet = create_model("unet_vgg16", encoder="vgg11", encoder_weights=str(tmp_path / "fcn.pth"))
    assert torch.equal(unet.encoder.model.features_18.weight, vgg.features[18].weight)


def test_weights_of_another_architecture_or_a_bad_path_are_clear_errors(tmp_path, resnet18_state_dict):
    torch.save(resnet18_state_dict, tmp_path / "resnet18.pth")
    with pytest.raises(ValueError, match="does not fit timm encoder 'resnet34'.*missing"):
        create_model("unet_encoder", encoder="resnet34", encoder_weights=str(tmp_path / "resnet18.pth"))
    torch.save(timm.create_model("resnet34").state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(ValueError, match="extra encoder tensors"):
        create_model("unet_encoder", encoder="resnet18", encoder_weights=str(tmp_path / "resnet34.pth"))
    with pytest.raises(ValueError, match="'imagenet' or a path"):
        create_model("unet_encoder", encoder="resnet18", encoder_weights=str(tmp_path / "missing.pth"))
    (tmp_path / "weights.txt").write_text("not weights")
    with pytest.raises(ValueError, match="must end in"):
        create_model("unet_encoder", encoder="resnet18", encoder_weights=str(tmp_path / "weights.txt"))


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 with empty Hugging Face and torch hub caches; returns the HF cache folder."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "hf"


def test_imagenet_weights_offline_fail_fast_with_a_clear_error(empty_hub_cache):
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailable, match="HF_HUB_OFFLINE.*encoder_weights=None"):
        create_model("unet_encoder", encoder="resnet18", encoder_weights="imagenet")
    assert time.monotonic() - start < 10


def test_imagenet_weights_offline_come_from_the_hub_cache(empty_hub_cache, resnet18_state_dict):
    """A weights file already in the Hugging Face cache layout is used without any network."""
    from safetensors.torch import save_file

    repo = empty_hub_cache / f"models--{timm.models.get_pretrained_cfg('resnet18').hf_hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abc")
    (repo / "snapshots" / "0123abc").mkdir(parents=True)
    save_file(resnet18_state_dict, str(repo / "snapshots" / "0123abc" / "model.safetensors"))
    model = create_model("unet_encoder", encoder="resnet18", encoder_weights="imagenet")
    assert torch.equal(model.encoder.model.layer4[1].conv2.weight, resnet18_state_dict["layer4.1.conv2.weight"])


# --- family specifics --------------------------------------------------------------------------------

def test_unet_original_is_the_paper_network():
    """572 -> 388 raw, margin 92, 23 conv layers with the paper's parameter count."""
    raw = create_model("unet_original", base=4, same_size=False).eval()
    with torch.no_grad():
        assert raw(torch.zeros(1, 3, 572, 572)).shape == (1, 1, 388, 388)
    assert raw.valid_margin == 92 and raw.output_size(572) == 388 and raw.output_size((572, 188)) == (388, 4)
    with pytest.raises(ValueError, match="next valid side: 572"):
        raw.output_size(570)
    with pytest.raises(ValueError, match="not valid"):
        raw(torch.zeros(1, 3, 570, 572))

    def conv(i, o, k):
        return i * o * k * k + o

    chs = [64, 128, 256, 512, 1024]
    down = conv(1, 64, 3) + conv(64, 64, 3) + sum(conv(chs[i], chs[i + 1], 3) + conv(chs[i + 1], chs[i + 1], 3)
                                                  for i in range(4))
    up = sum(conv(chs[i + 1], chs[i], 2) + conv(chs[i + 1], chs[i], 3) + conv(chs[i], chs[i], 3) for i in range(4))
    paper = create_model("unet_original", num_classes=2, in_channels=1)
    assert sum(p.numel() for p in paper.parameters()) == down + up + conv(64, 2, 1)
    assert sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in paper.modules()) == 23  # as the paper counts


def test_unet_original_same_size_equals_overlap_tile_on_the_mirrored_image():
    model = create_model("unet_original", base=4, depth=2).eval()
    x = torch.randn(1, 3, 30, 23)
    m = model.valid_margin
    tile_h, tile_w = model.valid_input_size(30), model.valid_input_size(23)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (m, tile_h - 30 - m), (m, tile_w - 23 - m)), mode="reflect")
    model.same_size = False
    with torch.no_grad():
        expected = model(torch.from_numpy(padded))[..., :30, :23]
        model.same_size = True
        assert torch.equal(model(x), expected)


def test_mirror_pad_matches_numpy_reflect_even_beyond_the_image_size():
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(1, 2, 5, 3)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (7, 11), (4, 9)), mode="reflect")
    assert np.array_equal(mirror_pad(x, 4, 9, 7, 11).numpy(), expected)


def test_fcn_upsamplers_start_as_bilinear_interpolation_and_skips_as_no_ops():
    up = bilinear_upsampler(2, 8)
    x = torch.randn(1, 2, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(up(x)[..., 8:-8, 8:-8],
                                   F.interpolate(x, scale_factor=8, mode="bilinear")[..., 8:-8, 8:-8])
    fcn8 = cheap("fcn8s")
    assert fcn8.score_pool3.weight.abs().sum() == 0 and fcn8.score_pool4.weight.abs().sum() == 0


def test_fcn8s_has_vgg16_plus_convolutionalised_fc_parameters():
    with torch.device("meta"):
        model = create_model("fcn8s", num_classes=21)
    vgg16_convs = 14_714_688  # the torchvision/timm VGG16 feature extractor
    fc6, fc7 = 512 * 7 * 7 * 4096 + 4096, 4096 * 4096 + 4096
    scores = (4096 + 1) * 21 + (512 + 1) * 21 + (256 + 1) * 21
    upsamplers = 21 * 21 * (4 * 4 + 4 * 4 + 16 * 16)
    assert sum(p.numel() for p in model.parameters()) == vgg16_convs + fc6 + fc7 + scores + upsamplers


# A few bf16 training steps of one layer, run in a subprocess: oneDNN's bias-gradient bug kills the process.
BF16_LAYER_STEPS = """
import torch
from seglab.models.blocks import SplitBiasConv2d, attention_block
layer = {layer}
x = torch.randn({batch}, {channels}, 8, 8, requires_grad=True)
for _ in range(4):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = layer(x).float().mean()
    loss.backward()
print("survived")
"""


def survives_bf16_training(layer: str, channels: int, batch: int) -> None:
    """Train ``layer`` (Python source) in bf16 in a fresh process and assert the process survives."""
    import subprocess
    import sys
    code = BF16_LAYER_STEPS.format(layer=layer, channels=channels, batch=batch)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "survived" in run.stdout, run.stderr[-500:]


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="the bug is in oneDNN's CPU convolution")
def test_fcn_score_layer_survives_bf16_training_on_cpu():
    """FCN's 4096 -> classes 1x1 score conv: oneDNN's bf16 bias gradient corrupts the heap; ours must not."""
    assert isinstance(create_model("fcn8s", num_classes=12, fc_channels=64, encoder="vgg11").score_fr,
                      SplitBiasConv2d)
    survives_bf16_training("SplitBiasConv2d(4096, 12, 1)", channels=4096, batch=8)
    torch.manual_seed(0)
    plain, split = nn.Conv2d(32, 5, 1), SplitBiasConv2d(32, 5, 1)
    split.load_state_dict(plain.state_dict())
    x = torch.randn(2, 32, 7, 9)
    torch.testing.assert_close(split(x), plain(x))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="the bug is in oneDNN's CPU convolution")
def test_scse_spatial_gate_survives_bf16_training_on_cpu():
    """scSE's 3072 -> 1 spatial gate hit the same oneDNN bias-gradient bug (tgs-salt-resnext50 died on AMX)."""
    from seglab.models.blocks import attention_block
    assert isinstance(attention_block("scse", 64).spatial_gate[0], SplitBiasConv2d)
    # the first decoder block of unet_resnext50: 2048 + 1024 channels
    survives_bf16_training('attention_block("scse", 3072)', channels=3072, batch=4)


def test_encoder_unet_options_deep_supervision_hypercolumn_attention():
    model = cheap("unet_encoder", num_classes=2, deep_supervision=True, hypercolumn=True,
                  decoder_attention="scse", dropout=0.2).train()
    out = model(torch.randn(2, 3, 70, 50))
    assert out["out"].shape == (2, 2, 70, 50) and out["cls"].shape == (2, 1)
    # one logit map per decoder scale above full resolution: strides 16, 8, 4, 2 of the 70x50 input
    assert [a.shape for a in out["aux"]] == [(2, 2, 5, 4), (2, 2, 9, 7), (2, 2, 18, 13), (2, 2, 35, 25)]
    # the full-size last scale plus a 16-channel reduction of each of the four coarser scales
    assert model.head.in_channels == 16 + 4 * 16 and len(model.hypercolumn_reduce) == 4
    assert isinstance(model.eval()(torch.randn(1, 3, 70, 50)), torch.Tensor)
    with pytest.raises(ValueError, match="decoder_attention"):
        create_model("unet_encoder", encoder="resnet18", decoder_attention="cbam")


def test_empty_gate_blanks_exactly_the_images_the_empty_head_calls_empty():
    gated = cheap("unet_encoder", deep_supervision=True, empty_gate=True).eval()
    plain = cheap("unet_encoder", deep_supervision=True).eval()
    plain.load_state_dict(gated.state_dict())  # the gate adds no weights
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        cls = gated.cls_head(gated.encoder(x)[-1]).flatten()
        # move the head's decision between the two images: the lower one is called empty, the other not
        gated.cls_head[-1].bias -= (cls[0] + cls[1]) / 2
        ungated, out = plain(x), gated(x)
    empty, kept = int(cls.argmin()), int(cls.argmax())
    assert (out[empty] == -20).all() and torch.equal(out[kept], ungated[kept])
    assert isinstance(gated.train()(x), dict)  # training still returns every head for the loss
    with pytest.raises(ValueError, match="deep_supervision=True"):
        create_model("unet_encoder", encoder="resnet18", empty_gate=True)
    with pytest.raises(ValueError, match="binary"):
        create_model("unet_encoder", encoder="resnet18", num_classes=3, deep_supervision=True, empty_gate=True)


def test_decoder_upsample_mode_is_an_option_and_a_wrong_one_is_named():
    nearest = cheap("unet_encoder", upsample="nearest").eval()
    bilinear = cheap("unet_encoder").eval()
    bilinear.load_state_dict(nearest.state_dict())  # same weights: only the up-sampling differs
    x = torch.randn(1, 3, 64, 64)
    assert nearest(x).shape == bilinear(x).shape == (1, 1, 64, 64)
    assert not torch.allclose(nearest(x), bilinear(x))
    with pytest.raises(ValueError, match="upsample"):
        create_model("unet_encoder", encoder="resnet18", upsample="cubic")


def test_hypercolumn_reduction_before_upsampling_equals_reduction_after():
    """The cheap order (1x1 conv, then bilinear up-sampling) computes the same hypercolumn as the textbook order."""
    import torch.nn.functional as F

    conv = torch.nn.Conv2d(64, 16, 1, bias=False)
    x = torch.randn(2, 64, 9, 7)
    cheap_order = F.interpolate(conv(x), size=(35, 25), mode="bilinear", align_corners=False)
    textbook = conv(F.interpolate(x, size=(35, 25), mode="bilinear", align_corners=False))
    torch.testing.assert_close(cheap_order, textbook, atol=1e-5, rtol=1e-5)


def test_encoder_args_reach_timm_and_wrong_ones_are_named():
    half = cheap("unet_encoder", encoder_args={"channels": [32, 64, 128, 256]})
    assert half.encoder.out_channels == [64, 32, 64, 128, 256]  # the 64-channel stem, then four half-width stages
    full = cheap("unet_encoder")
    n_params = lambda m: sum(p.numel() for p in m.encoder.parameters())  # noqa: E731
    assert n_params(half) < n_params(full) / 3  # conv weights scale with width squared
    assert half(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    with pytest.raises(ValueError, match="does not accept encoder_args.*widht"):
        create_model("unet_encoder", encoder="resnet18", encoder_args={"widht": 2})
    with pytest.raises(ValueError, match="in_chans.*in_channels"):
        create_model("unet_encoder", encoder="resnet18", encoder_args={"in_chans": 4})


def test_random_init_encoders_start_with_residual_batchnorm_scales_at_one():
    """timm's zero-initialised residual BatchNorm scales start at 1 (random init only; zero_init_last keeps timm's)."""
    def zero_scales(model):
        return sum(1 for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d) and not m.weight.any())

    for name, encoder in (("unet_encoder", "resnet18"), ("unet_encoder", "regnety_002"), ("bisenet", "resnet18"),
                          ("deeplabv3plus", "resnet18")):
        assert zero_scales(create_model(name, encoder=encoder)) == 0, (name, encoder)
    timm_init = create_model("unet_encoder", encoder="resnet18", encoder_args={"zero_init_last": True})
    assert zero_scales(timm_init) == 8  # one per BasicBlock, as timm builds it
    ones = create_model("unet_encoder", encoder="resnet18").encoder.model.layer1[0].bn2.weight
    assert ones.min() == 1 and timm_init.encoder.model.layer1[0].bn2.weight.max() == 0


def test_input_scale_runs_the_net_on_a_2x_input_and_averages_the_logits_back():
    scaled = cheap("unet_encoder", input_scale=2, deep_supervision=True, hypercolumn=True).eval()
    x = torch.randn(2, 3, 50, 38)
    with torch.no_grad():
        out = scaled(x)
        # the same network applied by hand: bilinear x2, mirror-pad to the stride, crop, 2x2 average of the logits
        scaled.input_scale = 1
        big = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        by_hand = F.avg_pool2d(scaled(big), 2)
        scaled.input_scale = 2
    assert out.shape == (2, 1, 50, 38)
    torch.testing.assert_close(out, by_hand)
    assert scaled.stride == 16  # a 1/16-padded input is a multiple of the encoder's 32 once doubled
    train_out = scaled.train()(x)
    # auxiliary maps at encoder strides 16, 8, 4, 2 of the 100x76 scaled input
    assert [a.shape[-2:] for a in train_out["aux"]] == [(7, 5), (13, 10), (25, 19), (50, 38)]
    with pytest.raises(ValueError, match="input_scale"):
        create_model("unet_encoder", encoder="resnet18", input_scale=1.5)


def test_encoder_unet_uses_every_skip_of_vgg_and_resnet_layouts():
    vgg = cheap("unet_vgg16")  # taps at strides 1..32: five skips
    assert vgg.encoder.reductions == [1, 2, 4, 8, 16, 32] and vgg.skip_indices == [4, 3, 2, 1, 0]
    res = cheap("unet_encoder")  # taps at strides 2..32: the last block has no skip
    assert res.encoder.reductions == [2, 4, 8, 16, 32] and res.skip_indices == [3, 2, 1, 0, None]
    cnx = cheap("unet_resnext50")  # convnext: taps at 4..32
    assert cnx.skip_indices == [2, 1, 0, None, None]


def test_deeplab_output_stride_sets_dilation_and_aspp_rates():
    os16 = cheap("deeplabv3plus")
    os8 = cheap("deeplabv3plus", output_stride=8)
    assert os16.encoder.reductions == [2, 4, 8, 16, 16] and os8.encoder.reductions == [2, 4, 8, 8, 8]
    assert [b[0].dilation[0] for b in os16.aspp.branches[1:4]] == [6, 12, 18]
    assert [b[0].dilation[0] for b in os8.aspp.branches[1:4]] == [12, 24, 36]
    with torch.no_grad():
        assert os8.eval()(torch.randn(1, 3, 45, 61)).shape == (1, 1, 45, 61)
    with pytest.raises(ValueError, match="output_stride"):
        create_model("deeplabv3plus", output_stride=32)
    with pytest.raises(ValueError, match="does not support output_stride"):
        create_model("deeplabv3plus", encoder="vgg11")


def test_big_presets_use_their_encoders():
    expected = {"unet_resnet50": "resnet50", "unet_resnext50": "resnext50_32x4d", "unet_vgg16": "vgg16",
                "unet_resnet34": "resnet34", "bisenet_resnet101": "resnet101", "bisenet": "resnet18"}
    with torch.device("meta"):
        for name, encoder in expected.items():
            model = create_model(name)
            assert model.encoder.name == encoder
            assert model.encoder.out_channels[-1] == (512 if encoder in ("resnet18", "resnet34", "vgg16") else 2048)


def test_model_summary_counts_parameters_and_flops_by_hand():
    """Conv 3->8, 3x3, no bias, on 16x16: 8*3*9 weights, 16*16*8*27 multiply-adds = 2x that in FLOPs."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU()).train()
    model[0].weight.requires_grad_(False)
    summary = model_summary(model, (3, 16, 16))
    assert summary["params"] == 216 and summary["trainable_params"] == 0
    assert summary["gmacs"] == pytest.approx(16 * 16 * 8 * 27 / 1e9)
    assert summary["gflops"] == pytest.approx(2 * 16 * 16 * 8 * 27 / 1e9)
    assert model.training  # restored
    with pytest.raises(ValueError, match="channels, height, width"):
        model_summary(model, (16, 16))


def test_model_summary_on_the_meta_device_equals_the_real_one():
    real = model_summary(cheap("unet_encoder"), (3, 64, 96))
    with torch.device("meta"):
        meta = model_summary(cheap("unet_encoder"), (3, 64, 96))
    assert meta == real and real["gflops"] > 0
