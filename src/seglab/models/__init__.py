"""Model zoo: importing a family module registers its builders in the flat registry.

Every model takes ``(num_classes=1, in_channels=3, **options)``, returns ``(N, num_classes, H, W)``
logits at the input's size in eval mode (a dict with "aux"/"cls" in training when it has auxiliary
outputs) and exposes ``cam_layers()`` (shallow to deep). Encoder models hold a ``TimmEncoder`` as
``model.encoder``; see ``encoders.py`` for ``encoder_weights``.
"""
from .registry import create_model, is_model, list_models, register_model
from . import unet  # noqa: F401  (registers unet, unet_small)
from . import bisenet, deeplab, encoder_unet, fcn, unet_original  # noqa: F401  (register the other families)
from .encoders import PretrainedWeightsUnavailable, TimmEncoder, encoder_name, freeze_encoder
from .restore import model_from_checkpoint
from .scaled import input_stride, work_at_scale
from .summary import model_summary

__all__ = ["model_from_checkpoint", "work_at_scale", "input_stride", "create_model", "encoder_name", "is_model", "list_models", "register_model", "freeze_encoder", "model_summary",
           "TimmEncoder", "PretrainedWeightsUnavailable"]
