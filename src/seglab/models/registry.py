"""One flat model registry, in the manner of timm: ``register_model``, ``create_model``, ``list_models``.

A builder is a plain function ``builder(num_classes, in_channels, **kwargs) -> nn.Module``
decorated with ``@register_model``; its function name is the model name.
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable

import torch.nn as nn

from ..errors import ConfigError
from .scaled import work_at_scale

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model builder under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching a shell-style pattern, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    """True when ``name`` is a registered model."""
    return name in _MODELS


def create_model(name: str, num_classes: int = 1, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build a registered model; ``num_classes=1`` means a binary task with one logit."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model {name!r}.{hint} Valid models: {', '.join(list_models())}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
    scale = kwargs.pop("scale", 1.0)
    model = _MODELS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    # Recorded so that checkpoints can be validated and rebuilt without pickled code.
    model.seglab_spec = {"name": name, "num_classes": num_classes, "in_channels": in_channels, **kwargs}
    return work_at_scale(model, scale)
