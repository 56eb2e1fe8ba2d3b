"""The one precision path: what ``precision=auto`` picks per device, and that its memory format changes no result."""
from __future__ import annotations

import pytest
import torch

from seglab.runtime import precision as prec
from seglab.models import create_model


@pytest.mark.parametrize("native_bf16, dtype", [(True, torch.bfloat16), (False, None)])
def test_auto_on_cpu_picks_bf16_only_with_native_support_and_always_channels_last(monkeypatch, native_bf16, dtype):
    monkeypatch.setattr(prec, "cpu_supports_bf16", lambda: native_bf16)
    p = prec.resolve_precision("auto", "cpu")
    assert p.dtype == dtype
    assert p.channels_last  # oneDNN's conv kernels are faster in NHWC in fp32 too
    assert prec.resolve_precision("fp32", "cpu").channels_last


def test_explicit_bf16_on_a_cpu_without_it_warns(monkeypatch):
    monkeypatch.setattr(prec, "cpu_supports_bf16", lambda: False)
    with pytest.warns(UserWarning, match="emulated"):
        assert prec.resolve_precision("bf16", "cpu").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        prec.resolve_precision("fp16", "cpu")


def test_fp32_channels_last_gives_the_same_logits_and_gradients():
    torch.manual_seed(0)
    model = create_model("unet_resnet34", num_classes=1, in_channels=1).eval()
    x = torch.randn(2, 1, 101, 101)
    p = prec.resolve_precision("fp32", "cpu")
    reference = model(x)
    reference.sum().backward()
    grad = model.encoder.model.conv1.weight.grad.clone()
    model.zero_grad()
    fast = p.prepare_model(model)
    out = fast(p.to_input(x))
    out.sum().backward()
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
    # Relative to the gradient's size (the first conv's gradient of a summed 101x101 logit map reaches ~1e4).
    assert (fast.encoder.model.conv1.weight.grad - grad).norm() / grad.norm() < 1e-5


def test_describe_names_dtype_memory_format_and_device(monkeypatch):
    monkeypatch.setattr(prec, "cpu_supports_bf16", lambda: False)
    assert prec.resolve_precision("auto", "cpu").describe() == "fp32 + channels_last on cpu"
    assert "(no native bf16)" in prec.describe_cpu()
    monkeypatch.setattr(prec, "cpu_supports_bf16", lambda: True)
    assert prec.resolve_precision("auto", "cpu").describe() == "bfloat16 + channels_last on cpu"
    assert "(native bf16)" in prec.describe_cpu()
