"""One encoder adapter over any timm model with ``features_only`` support, plus weight loading and freezing.

``TimmEncoder`` returns the feature maps listed by timm's ``feature_info`` (shallow to deep), with
their channels and reductions: resnets and most CNNs give reductions 2..32, timm's VGG gives 1..32
(its first tap is the last ReLU before pool1), ConvNeXt gives 4..32. Decoders read ``out_channels``
and ``reductions`` instead of assuming a layout.

Weights (``weights=``): None (random init; residual BatchNorm scales start at 1, not timm's 0), "imagenet"
(timm's default pretrained tag: taken from the local Hugging Face / torch hub cache when there, else downloaded;
offline it fails at once), or
a local ``.safetensors`` / ``.pth`` file holding a timm model's state dict (``timm.create_model(name).state_dict()``)
or a seglab encoder's. Every route goes through one loader that checks that all the encoder's tensors
are present and adapts the first convolution to ``in_channels`` with timm's ``adapt_input_conv``.
"""
from __future__ import annotations

import difflib
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
import torch.nn as nn
from timm.models import adapt_input_conv

from ..errors import CheckpointError, ConfigError, SeglabError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_ONLINE_CHECK_TIMEOUT_S = 5.0


class PretrainedWeightsUnavailable(SeglabError, RuntimeError):
    """ImageNet weights were asked for but cannot be had (offline and not cached, or host unreachable)."""


class TimmEncoder(nn.Module):
    """A timm backbone in ``features_only`` mode: ``forward(x)`` gives the feature maps shallow to deep."""

    def __init__(self, name: str, in_channels: int = 3, weights: str | os.PathLike | None = None,
                 output_stride: int | None = None, encoder_args: dict[str, Any] | None = None):
        super().__init__()
        self.name = name
        self.in_channels = in_channels
        self.model = _create_features_model(name, in_channels, output_stride, encoder_args)
        if "zero_init_last" not in (encoder_args or {}):
            unit_residual_norms(self.model)
        info = self.model.feature_info
        self.out_channels: list[int] = list(info.channels())
        self.reductions: list[int] = list(info.reduction())
        self.stride = max(self.reductions)  # inputs padded to a multiple of this give exact feature sizes
        self.pretrained_cfg: dict[str, Any] = dict(getattr(self.model, "pretrained_cfg", None) or {})
        self.frozen = False
        if weights is not None:
            load_encoder_weights(self, weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))

    def feature_index(self, reduction: int) -> int:
        """Index of the deepest feature map at ``reduction`` (e.g. 16 for the 1/16 features)."""
        hits = [i for i, r in enumerate(self.reductions) if r == reduction]
        if not hits:
            raise ConfigError(f"encoder {self.name!r} has no feature map at stride {reduction} "
                              f"(its strides are {self.reductions}); choose another encoder")
        return hits[-1]

    def stages(self) -> dict[str, nn.Module]:
        """The modules whose outputs are the feature maps, keyed by their name inside this encoder, shallow to deep."""
        names = list(getattr(self.model, "return_layers", {}) or self.model.feature_info.module_name())
        stages = {}
        for name in names:
            for candidate in (name, name.replace(".", "_", 1)):  # FeatureListNet flattens "features.3" to "features_3"
                try:
                    stages[f"model.{candidate}"] = self.model.get_submodule(candidate)
                    break
                except AttributeError:
                    continue
            else:
                raise RuntimeError(f"cannot find the feature module {name!r} in timm encoder {self.name!r}")
        return stages

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The (mean, std) the encoder's pretrained weights expect, from timm's pretrained config."""
        return (tuple(self.pretrained_cfg.get("mean", (0.485, 0.456, 0.406))),
                tuple(self.pretrained_cfg.get("std", (0.229, 0.224, 0.225))))

    def train(self, mode: bool = True) -> "TimmEncoder":
        # A frozen encoder keeps its BatchNorm statistics too, even when the whole model goes to train().
        return super().train(mode and not self.frozen)


class EncoderStagesMixin:
    """``encoder_stages()`` and ``cam_layers()`` for models holding a ``TimmEncoder`` as ``self.encoder``."""

    def encoder_stages(self) -> dict[str, nn.Module]:
        """Encoder stage modules keyed by their qualified name in the model, shallow to deep."""
        return {f"encoder.{name}": module for name, module in self.encoder.stages().items()}

    def cam_layers(self) -> dict[str, nn.Module]:
        """Layers for Grad-CAM, shallow to deep; the last one is the deepest encoder stage."""
        return self.encoder_stages()


def unit_residual_norms(model: nn.Module) -> int:
    """Set BatchNorm scales that timm initialised to 0 (each residual block's last) to 1; returns how many."""
    # timm zero-initialises the last BatchNorm of every residual block (Goyal et al. 2017), which helps ImageNet
    # runs of many thousand steps. seglab trains from random weights on CPU budgets of a few hundred steps, where
    # Adam grows such a scale by at most ~lr per step, so the residual branches stay damped for the whole run:
    # on 24 CamVid frames (268 steps, same loop and windows) scales at 1 gave 0.392 mIoU against 0.364 (smp's
    # torchvision-style ResNet: 0.388; benchmarks/LOG.md). Pretrained weights load afterwards and overwrite this.
    # Done here rather than by timm's ``zero_init_last=False`` because only some timm classes take that keyword.
    count = 0
    for module in model.modules():
        if (isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine and not module.weight.is_meta
                and not module.weight.any()):  # on the meta device (a checkpoint being rebuilt) the state dict decides
            with torch.no_grad():
                module.weight.fill_(1.0)
            count += 1
    return count


def encoder_name(model: nn.Module) -> str:
    """The timm name of a model's encoder (``"resnet18"``), or ``""`` for a model without one."""
    name = getattr(getattr(model, "encoder", None), "name", "")
    return name if isinstance(name, str) else ""


def freeze_encoder(model: nn.Module, frozen: bool = True) -> None:
    """Freeze (or unfreeze) ``model.encoder``: no gradients and fixed BatchNorm statistics."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ConfigError(f"{type(model).__name__} has no .encoder to freeze; only encoder models can be frozen")
    for p in encoder.parameters():
        p.requires_grad_(not frozen)
    if isinstance(encoder, TimmEncoder):
        encoder.frozen = frozen
    encoder.train(model.training and not frozen)


# create_model keywords seglab sets itself; encoder_args may not override them.
_RESERVED_ENCODER_ARGS = {"features_only": "", "pretrained": " (use encoder_weights)",
                          "in_chans": " (set by in_channels)", "output_stride": " (use the model's output_stride)",
                          "out_indices": "", "num_classes": ""}


def _create_features_model(name: str, in_channels: int, output_stride: int | None,
                           encoder_args: dict[str, Any] | None = None) -> nn.Module:
    """timm.create_model(features_only=True) with timm's failures turned into clear ValueErrors."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else " See timm.list_models()."
        raise ConfigError(f"unknown timm encoder {name!r}.{hint}")
    encoder_args = dict(encoder_args or {})
    for key in encoder_args:
        if key in _RESERVED_ENCODER_ARGS:
            raise ConfigError(f"encoder_args may not set {key!r}{_RESERVED_ENCODER_ARGS[key]}")
    # List values from YAML/JSON become tuples: timm's per-stage options (channels, layers) are tuples.
    kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in encoder_args.items()}
    kwargs.update({"features_only": True, "pretrained": False, "in_chans": in_channels})
    if name.split(".")[0].startswith("vgg"):
        # timm builds (and initialises) VGG's 120 M-parameter fc6/fc7 head before features_only drops it,
        # which takes seconds; a 1-unit hidden layer makes that throw-away head negligible.
        kwargs["mlp_ratio"] = 1 / 4096
    if output_stride is not None:
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        kwargs["output_stride"] = output_stride
    try:
        return timm.create_model(name, **kwargs)
    except (AssertionError, TypeError) as e:
        if any(f"'{key}'" in str(e) for key in encoder_args):  # timm names the keyword it does not take
            raise ConfigError(f"timm encoder {name!r} does not accept encoder_args {encoder_args}: {e}. "
                              f"See the keyword arguments of its class in timm (e.g. timm.models.resnet.ResNet)") from e
        if output_stride is not None:
            raise ConfigError(f"timm encoder {name!r} does not support output_stride={output_stride}; "
                              f"use a dilatable backbone such as resnet50 or convnext_tiny") from e
        raise
    except RuntimeError as e:
        if "feature" in str(e).lower():
            raise ConfigError(f"timm model {name!r} cannot be used as an encoder: it has no features_only "
                              f"support ({e})") from e
        raise


def load_encoder_weights(encoder: TimmEncoder, weights: str | os.PathLike) -> None:
    """Load "imagenet" or a local .safetensors/.pth state dict into ``encoder`` (first conv adapted to in_channels)."""
    if isinstance(weights, str) and weights == "imagenet":
        state_dict = imagenet_state_dict(encoder.name, encoder.pretrained_cfg)
    else:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"encoder_weights must be None, 'imagenet' or a path to a {'/'.join(WEIGHT_SUFFIXES)} "
                              f"file; {str(weights)!r} is none of these")
        state_dict = read_state_dict(path)
    encoder.model.load_state_dict(fit_state_dict(encoder, state_dict, source=str(weights)))


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a .pth/.pt/.bin checkpoint, read without running pickled code."""
    path = Path(path)
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ConfigError(f"weights file {path} must end in one of {', '.join(WEIGHT_SUFFIXES)}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses pickled code; tell the user what a valid file is
        raise CheckpointError(f"cannot read {path} as a tensor-only checkpoint ({e}); save it with "
                              f"torch.save(model.state_dict(), path) or safetensors") from e
    for key in ("state_dict", "model", "state_dict_ema"):  # common training-checkpoint wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def fit_state_dict(encoder: TimmEncoder, state_dict: dict[str, torch.Tensor], source: str = "weights") -> dict:
    """Map a timm-model, features-only or seglab-encoder state dict onto ``encoder.model``'s keys, strictly."""
    state_dict = _strip_prefixes(state_dict)
    target = encoder.model.state_dict()
    fitted, missing, used = {}, [], set()
    for key, expected in target.items():
        # features_only nets flatten the first nn.Sequential level: "features_0.weight" was "features.0.weight".
        source_key = next((k for k in (key, key.replace("_", ".", 1)) if k in state_dict), None)
        if source_key is None:
            if not key.endswith("num_batches_tracked"):
                missing.append(key)
            continue
        used.add(source_key)
        found = state_dict[source_key]
        if found.shape != expected.shape:
            found = _adapt_tensor(key, found, expected, source)
        fitted[key] = found
    # Leftover tensors are fine when they belong to the classifier head, not when they belong to the
    # encoder's own modules: then the file is a deeper variant (e.g. resnet34 weights for resnet18).
    children = set(dict(encoder.model.named_children()))
    foreign = [k for k in state_dict if k not in used and not k.endswith("num_batches_tracked")
               and (k.split(".")[0] in children or "_".join(k.split(".")[:2]) in children)]
    if missing or foreign:
        problem = (f"{len(missing)} of its tensors are missing (e.g. {', '.join(missing[:3])})" if missing else
                   f"the file has {len(foreign)} extra encoder tensors (e.g. {', '.join(foreign[:3])})")
        raise CheckpointError(f"{source} does not fit timm encoder {encoder.name!r}: {problem}; "
                              f"pass weights saved from the same architecture")
    for key, value in target.items():
        fitted.setdefault(key, value)  # num_batches_tracked counters absent from some checkpoints
    return fitted


def _strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel's "module.", a seglab model's "encoder.model." or a TimmEncoder's "model." prefix."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if any(k.startswith("encoder.model.") for k in sd):
        return {k.removeprefix("encoder.model."): v for k, v in sd.items() if k.startswith("encoder.model.")}
    if sd and all(k.startswith("model.") for k in sd):
        return {k.removeprefix("model."): v for k, v in sd.items()}
    return sd


def _adapt_tensor(key: str, found: torch.Tensor, expected: torch.Tensor, source: str) -> torch.Tensor:
    """Adapt a first-conv kernel to another number of input channels (timm's rule); any other mismatch is an error."""
    if found.ndim == 4 and found.shape[0] == expected.shape[0] and found.shape[2:] == expected.shape[2:]:
        return adapt_input_conv(expected.shape[1], found, base_chans=found.shape[1])
    raise CheckpointError(f"{source} does not fit: {key} has shape {tuple(found.shape)}, the encoder expects "
                          f"{tuple(expected.shape)}; pass weights saved from the same architecture")


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks for no network (checked at call time, not import time)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return env in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def imagenet_state_dict(name: str, pretrained_cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """timm's default pretrained weights for ``name``: from the local cache, else downloaded; never hangs offline."""
    hf_hub_id, url = pretrained_cfg.get("hf_hub_id"), pretrained_cfg.get("url")
    if not hf_hub_id and not url:
        raise PretrainedWeightsUnavailable(f"timm has no pretrained weights for {name!r}; use encoder_weights=None")
    cached = _cached_weights_file(pretrained_cfg)
    if cached is not None:
        return read_state_dict(cached)
    fix = ("download once with network access (timm.create_model(name, pretrained=True)), or pass a local "
           ".safetensors/.pth file as encoder_weights, or encoder_weights=None")
    if hub_offline():
        raise PretrainedWeightsUnavailable(f"ImageNet weights for {name!r} are not in the local cache and "
                                           f"HF_HUB_OFFLINE is set: {fix}")
    host = _weights_host(hf_hub_id, url)
    try:  # a short probe so that a machine without network fails in seconds instead of hanging in a download
        socket.create_connection((host, 443), timeout=_ONLINE_CHECK_TIMEOUT_S).close()
    except OSError as e:
        raise PretrainedWeightsUnavailable(f"cannot reach {host} to download ImageNet weights for {name!r} "
                                           f"({e}): {fix}") from e
    from timm.models._hub import load_state_dict_from_hf

    if hf_hub_id:
        return load_state_dict_from_hf(hf_hub_id, filename=pretrained_cfg.get("hf_hub_filename") or "pytorch_model.bin")
    return torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True)


def _weights_host(hf_hub_id: str | None, url: str | None) -> str:
    """Host name the weights come from (the Hugging Face endpoint, or the URL's host)."""
    if hf_hub_id:
        from huggingface_hub import constants

        return urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    return urlparse(url).hostname or ""


def _cached_weights_file(pretrained_cfg: dict[str, Any]) -> Path | None:
    """A weights file already in the Hugging Face or torch hub cache, if any (no network)."""
    hf_hub_id, url = pretrained_cfg.get("hf_hub_id"), pretrained_cfg.get("url")
    if hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo_id, _, revision = hf_hub_id.partition("@")
        names = [pretrained_cfg.get("hf_hub_filename")] if pretrained_cfg.get("hf_hub_filename") else \
            ["model.safetensors", "pytorch_model.bin"]
        for filename in names:
            hit = try_to_load_from_cache(repo_id, filename, revision=revision or None)
            if isinstance(hit, str):
                return Path(hit)
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        if path.is_file():
            return path
    return None
