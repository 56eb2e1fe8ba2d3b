"""Build a loss from a spec string: named losses, weighted sums, deep-supervision wrapper."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from ..errors import ConfigError
from .base import check_class_weights, check_num_classes
from .deep_supervision import DeepSupervisionLoss
from .lovasz import LovaszLoss
from .overlap import SoftDiceLoss, SoftJaccardLoss, TverskyLoss
from .pixelwise import BCEWithLogitsLoss, CrossEntropyLoss, FocalLoss, OhemCrossEntropyLoss
from .spec import parse_loss_spec

def auto_loss(num_classes: int) -> str:
    """What ``loss=auto`` means for ``num_classes`` classes: ``bce`` for two, ``ce+dice`` for more.

    Multi-class adds soft Dice (batch counts, averaged over classes) to cross-entropy, as nnU-Net does on every
    dataset: cross-entropy alone is dominated by the large classes, and in a short run it leaves thin and rare
    classes (poles, signs, minor phases) at IoU 0; the Dice term weighs every class alike. Binary keeps BCE (the
    seglab recipes for binary tasks choose their own losses).
    """
    return "bce" if num_classes == 2 else "ce+dice"


# A builder is called as builder(num_classes, ignore_index, class_weights); losses use their documented defaults.
LossBuilder = Callable[..., nn.Module]


def _bce(num_classes: int, ignore_index: int | None, class_weights: list[float] | None) -> nn.Module:
    """BCE; class weights [background, foreground] become ``pos_weight = foreground / background``."""
    if class_weights is not None and class_weights[0] <= 0:
        raise ConfigError("bce needs a background class weight > 0 to turn class_weights into pos_weight")
    pos_weight = None if class_weights is None else class_weights[1] / class_weights[0]
    return BCEWithLogitsLoss(num_classes, ignore_index, pos_weight=pos_weight)


LOSS_BUILDERS: dict[str, LossBuilder] = {
    "ce": lambda c, i, w: CrossEntropyLoss(c, i, class_weights=w),
    "bce": _bce,
    "focal": lambda c, i, w: FocalLoss(c, i, class_weights=w),
    "ohem": lambda c, i, w: OhemCrossEntropyLoss(c, i, class_weights=w),
    "dice": lambda c, i, w: SoftDiceLoss(c, i),
    "jaccard": lambda c, i, w: SoftJaccardLoss(c, i),
    "tversky": lambda c, i, w: TverskyLoss(c, i),
    "lovasz": lambda c, i, w: LovaszLoss(c, i),  # binary: per-image hinge; multi-class: batch softmax
    "lovasz_batch": lambda c, i, w: LovaszLoss(c, i, per_image=False),
}
CLASS_WEIGHTED_LOSSES = ("ce", "bce", "focal", "ohem")


class WeightedSumLoss(nn.Module):
    """Sum of ``weight * loss(logits, target)`` over named terms."""

    def __init__(self, terms: Sequence[tuple[float, str, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("WeightedSumLoss needs at least one (weight, name, loss) term")
        self.weights = [float(weight) for weight, _, _ in terms]
        self.names = [name for _, name, _ in terms]
        self.losses = nn.ModuleList(loss for _, _, loss in terms)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Weighted sum of the terms."""
        return sum(weight * loss(logits, target) for weight, loss in zip(self.weights, self.losses))

    def extra_repr(self) -> str:
        """Shown by ``print(module)``: the spec it was built from."""
        return "+".join(f"{weight:g}*{name}" for weight, name in zip(self.weights, self.names))


def build_loss(
    spec: str,
    num_classes: int,
    ignore_index: int | None = None,
    class_weights: Sequence[float] | None = None,
    *,
    aux_weight: float = 0.4,
    cls_weight: float = 0.05,
) -> DeepSupervisionLoss:
    """Loss module from a spec like ``"bce+dice"`` or ``"0.5*bce+1.0*lovasz"``; accepts logits or an output dict.

    Names: ``ce`` (both modes), ``bce`` (binary), ``focal``, ``ohem``, ``dice``, ``jaccard``, ``tversky``,
    ``lovasz`` (binary: per-image hinge; multi-class: Lovász-softmax over the batch), ``lovasz_batch``.
    ``class_weights`` (one per label, ``[background, foreground]`` for binary) go to ce, focal and ohem;
    bce turns them into ``pos_weight``. A dict output gets deep supervision (see ``DeepSupervisionLoss``).
    """
    num_classes = check_num_classes(num_classes)
    terms = parse_loss_spec(spec, LOSS_BUILDERS)
    weights = check_class_weights(class_weights, num_classes)
    weight_list = None if weights is None else weights.tolist()
    if weight_list is not None and not any(name in CLASS_WEIGHTED_LOSSES for _, name in terms):
        raise ConfigError(
            f"class_weights were given but no loss in {spec!r} uses them; add one of {', '.join(CLASS_WEIGHTED_LOSSES)}"
        )
    built = [(weight, name, LOSS_BUILDERS[name](num_classes, ignore_index, weight_list)) for weight, name in terms]
    return DeepSupervisionLoss(WeightedSumLoss(built), ignore_index, aux_weight=aux_weight, cls_weight=cls_weight)
