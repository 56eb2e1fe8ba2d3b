"""Deep supervision: apply a segmentation loss to a model's main, auxiliary and empty/non-empty outputs.

A model may return, in training, ``{"out": logits, "aux": [logits, ...], "cls": (N,) or (N, 1) logit}``.
The total is::

    loss(out) + aux_weight * mean_k loss(upsample(aux_k)) + cls_weight * BCE(cls, has_foreground)

where ``has_foreground`` is "the mask has at least one pixel of class > 0 that is not ignored". As in the
TGS Salt winning solutions (deep supervision with an empty/non-empty head), when the model has a
``"cls"`` head the auxiliary per-scale losses are computed on the non-empty images only: the ``cls``
head is responsible for empty images, and the per-scale decoders learn the shape of the objects. The
main output is always supervised on every image. Without ``"cls"``, auxiliary losses use every image
(BiSeNet-style auxiliary heads).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

OUTPUT_KEYS = ("out", "aux", "cls")


def has_foreground(target: Tensor, ignore_index: int | None = None) -> Tensor:
    """``(N,)`` bool: True for images with at least one pixel of class > 0 that is not ``ignore_index``."""
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim != 3:
        raise ValueError(f"target must be (N, H, W) class indices; got shape {tuple(target.shape)}")
    foreground = target > 0
    if ignore_index is not None:
        foreground &= target != ignore_index
    return foreground.flatten(1).any(1)


def _aux_list(aux: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """The auxiliary logits as a list (a single tensor is accepted)."""
    heads = [aux] if isinstance(aux, Tensor) else list(aux)
    for head in heads:
        if not isinstance(head, Tensor) or head.ndim != 4:
            got = tuple(head.shape) if isinstance(head, Tensor) else type(head).__name__
            raise ValueError(f'every "aux" output must be (N, C, h, w) logits; got {got}')
    return heads


class DeepSupervisionLoss(nn.Module):
    """Wrap a segmentation loss so it accepts a logits tensor or the deep-supervision output dict."""

    def __init__(
        self, loss: nn.Module, ignore_index: int | None = None, aux_weight: float = 0.4, cls_weight: float = 0.05
    ) -> None:
        super().__init__()
        if not (aux_weight >= 0 and cls_weight >= 0):
            raise ConfigError(f"aux_weight and cls_weight must be >= 0; got {aux_weight!r} and {cls_weight!r}")
        self.loss = loss
        self.ignore_index = ignore_index
        self.aux_weight = float(aux_weight)
        self.cls_weight = float(cls_weight)

    def aux_loss(self, heads: list[Tensor], target: Tensor, image_mask: Tensor | None,
                 masked: bool | None = None) -> Tensor:
        """Mean of the loss over the auxiliary heads, upsampled to the target size, on the selected images.

        ``masked`` (default: on CUDA, with an ignore_index) leaves the other images out by marking their pixels
        ignored instead of indexing them away: ``target[image_mask]`` must learn how many images it keeps, a host
        sync per step. Losses averaged over valid pixels or over images with valid pixels give the same value.
        """
        if masked is None:
            masked = target.is_cuda
        if image_mask is not None and masked and self.ignore_index is not None:
            target = torch.where(image_mask[:, None, None], target, self.ignore_index)
            image_mask = None
        if image_mask is not None:
            target = target[image_mask]
        losses = []
        for head in heads:
            logits = head.float()
            if target.shape[0] == 0:
                losses.append(logits.sum() * 0.0)  # no non-empty image: zero loss, still part of the graph
                continue
            if image_mask is not None:
                logits = logits[image_mask]
            if logits.shape[-2:] != target.shape[-2:]:
                logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
            losses.append(self.loss(logits, target))
        return torch.stack(losses).mean()

    def components(self, output: Mapping[str, Tensor], target: Tensor) -> dict[str, Tensor]:
        """Unweighted parts of the loss for a dict output: ``out`` and, when present, ``aux`` and ``cls``."""
        unknown = set(output) - set(OUTPUT_KEYS)
        if "out" not in output or unknown:
            raise ValueError(
                f"a model output dict needs the key 'out' and may have 'aux' and 'cls'; got keys {sorted(output)}"
            )
        if target.ndim == 4 and target.shape[1] == 1:
            target = target[:, 0]
        parts = {"out": self.loss(output["out"], target)}
        foreground = has_foreground(target, self.ignore_index)
        has_cls = output.get("cls") is not None
        heads = _aux_list(output["aux"]) if output.get("aux") is not None else []
        if heads:
            parts["aux"] = self.aux_loss(heads, target, foreground if has_cls else None)
        if has_cls:
            cls_logits = output["cls"].float()
            if cls_logits.ndim not in (1, 2) or cls_logits.numel() != target.shape[0]:
                raise ValueError(
                    f'"cls" must be (N,) or (N, 1) logits with N={target.shape[0]}; got {tuple(cls_logits.shape)}'
                )
            parts["cls"] = F.binary_cross_entropy_with_logits(cls_logits.reshape(-1), foreground.float())
        return parts

    def forward(self, output: Tensor | Mapping[str, Tensor], target: Tensor) -> Tensor:
        """The loss of a logits tensor, or the weighted deep-supervision total of an output dict."""
        if isinstance(output, Tensor):
            return self.loss(output, target)
        if not isinstance(output, Mapping):
            raise ValueError(f"model output must be a logits tensor or a dict with 'out'; got {type(output).__name__}")
        parts = self.components(output, target)
        weights = {"out": 1.0, "aux": self.aux_weight, "cls": self.cls_weight}
        return sum(weights[key] * value for key, value in parts.items())

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"aux_weight={self.aux_weight}, cls_weight={self.cls_weight}, ignore_index={self.ignore_index}"
