"""Rebuild a model from a seglab checkpoint, checking its spec and weights before any memory is spent."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from .registry import create_model


def _check_spec_matches_meta(spec: dict[str, Any], meta: Any, path: str | Path) -> None:
    """The model spec must agree with the data meta (channels, classes) the checkpoint was trained on."""
    if not isinstance(meta, dict):
        return
    channels = meta.get("in_channels")
    if channels is not None and spec.get("in_channels") != channels:
        raise CheckpointError(f"{path}: model takes {spec.get('in_channels')} input channel(s) but the checkpoint's "
                              f"data has in_channels={channels}; the file is inconsistent")
    codec = meta.get("codec")
    classes = codec.get("num_classes") if isinstance(codec, dict) else None
    if isinstance(classes, int):
        outputs = 1 if classes == 2 else classes  # binary tasks use one logit
        if spec.get("num_classes") != outputs:
            raise CheckpointError(f"{path}: model has {spec.get('num_classes')} output(s) but the checkpoint's data "
                                  f"has {classes} classes (expects {outputs}); the file is inconsistent")


def _skeleton(name: Any, spec: dict[str, Any], path: str | Path) -> torch.nn.Module:
    """The described model on the meta device: its shapes, without memory (a forged spec cannot exhaust RAM)."""
    try:
        with torch.device("meta"):
            return create_model(name, **spec)
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot rebuild model {name!r} from the checkpoint ({e})") from None


def _check_weights_fit(skeleton: torch.nn.Module, weights: dict, name: Any, path: str | Path) -> None:
    """Every tensor the model needs is in ``weights`` with the model's shape, and nothing else is."""
    not_tensors = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: the weights hold non-tensor entries {not_tensors[:3]}")
    expected = skeleton.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [f"{k}: {tuple(weights[k].shape)} in the file, {tuple(v.shape)} in the model"
             for k, v in expected.items() if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: weights do not fit model {name!r} as the checkpoint describes it: "
                              f"{len(wrong)} shape mismatch(es) (e.g. {wrong[:2]}), {len(missing)} missing "
                              f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")


def model_from_checkpoint(state: dict[str, Any], path: str | Path = "<checkpoint>") -> torch.nn.Module:
    """Rebuild the model recorded in a seglab checkpoint and load its weights, checking that they fit."""
    spec = state.get("model_spec")
    weights = state.get("model")
    if not isinstance(spec, dict) or not isinstance(weights, dict) or "name" not in spec:
        raise CheckpointError(f"{path}: not a seglab checkpoint (no model_spec); "
                              "plain state dicts can be loaded with encoder_weights=PATH instead")
    _check_spec_matches_meta(spec, state.get("meta"), path)
    spec = dict(spec)
    name = spec.pop("name")
    spec.pop("encoder_weights", None)  # the checkpoint carries every weight already
    _check_weights_fit(_skeleton(name, spec, path), weights, name, path)
    bad = [k for k, v in weights.items() if torch.is_floating_point(v) and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: weights contain NaN/Inf in {bad[:3]}; the run diverged before this save")
    model = create_model(name, **spec)  # the skeleton proved the spec builds and matches the weights
    model.load_state_dict(weights)
    return model
