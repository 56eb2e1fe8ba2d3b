"""Losses: hand-computed values, torch/Berman references, ignore_index, empty batches, specs, deep supervision."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seglab.losses import (
    LOSS_BUILDERS,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    DeepSupervisionLoss,
    FocalLoss,
    LovaszLoss,
    OhemCrossEntropyLoss,
    SoftDiceLoss,
    SoftJaccardLoss,
    TverskyLoss,
    auto_loss,
    build_loss,
    class_weights_from_counts,
    count_class_pixels,
    has_foreground,
    lovasz_grad,
    lovasz_hinge,
    lovasz_softmax,
    parse_loss_spec,
)

LN2, LN3 = math.log(2.0), math.log(3.0)
IGNORE = 255


def binary_logits(values: list[float], height: int = 2) -> torch.Tensor:
    """(1, 1, H, W) logits from a flat row-major list."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, height, -1)


def close(value: torch.Tensor, expected: float, tol: float = 1e-6) -> bool:
    """True when a scalar tensor equals ``expected`` within ``tol``."""
    return abs(float(value.detach()) - expected) < tol


# ---------------------------------------------------------------- pixel-wise losses, hand values

def test_cross_entropy_multiclass_hand_value_weights_and_ignore():
    # pixel 0: logits [ln3, 0] -> p = [3/4, 1/4], target 0; pixel 1: [0, 0] -> p = [1/2, 1/2], target 1
    logits = torch.tensor([[LN3, 0.0], [0.0, 0.0]]).T.reshape(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    assert close(CrossEntropyLoss(2)(logits, target), (math.log(4 / 3) + LN2) / 2)
    weighted = CrossEntropyLoss(2, class_weights=[1.0, 3.0])(logits, target)
    assert close(weighted, (math.log(4 / 3) + 3 * LN2) / 4)
    ignored = CrossEntropyLoss(2, ignore_index=IGNORE)(logits, torch.tensor([[[0, IGNORE]]]))
    assert close(ignored, math.log(4 / 3))


def test_cross_entropy_matches_torch_with_weights_and_ignore():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, :2] = IGNORE
    weights = [0.5, 1.0, 2.0, 4.0]
    expected = F.cross_entropy(logits, target, weight=torch.tensor(weights), ignore_index=IGNORE)
    got = CrossEntropyLoss(4, IGNORE, class_weights=weights)(logits, target)
    assert torch.allclose(got, expected, atol=1e-6)


def test_binary_cross_entropy_hand_value_and_ce_equivalence():
    # sigmoid(0) = 1/2 with target 1 -> ln2; sigmoid(ln3) = 3/4 with target 0 -> ln4
    logits, target = binary_logits([0.0, LN3], height=1), torch.tensor([[[1, 0]]])
    assert close(BCEWithLogitsLoss()(logits, target), 1.5 * LN2)
    assert close(CrossEntropyLoss(1)(logits, target), 1.5 * LN2)
    assert close(BCEWithLogitsLoss(pos_weight=2.0)(logits, target), 2 * LN2)


def test_bce_matches_torch_with_pos_weight():
    torch.manual_seed(1)
    logits = torch.randn(3, 1, 4, 4)
    target = torch.randint(0, 2, (3, 4, 4))
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(3.0))(logits[:, 0], target.float())
    assert torch.allclose(BCEWithLogitsLoss(pos_weight=3.0)(logits, target), expected, atol=1e-6)


def test_bce_is_binary_only():
    with pytest.raises(ValueError, match="use 'ce'"):
        BCEWithLogitsLoss(num_classes=3)


def test_focal_hand_value_and_gamma_zero_is_cross_entropy():
    # p_t = 1/2 and 1/4: (1/2)^2 ln2 and (3/4)^2 ln4, averaged
    logits, target = binary_logits([0.0, LN3], height=1), torch.tensor([[[1, 0]]])
    assert close(FocalLoss(1, gamma=2.0)(logits, target), (0.25 * LN2 + 0.5625 * 2 * LN2) / 2)
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    target[1, 0] = IGNORE
    weights = [1.0, 2.0, 0.5]
    focal = FocalLoss(3, IGNORE, class_weights=weights, gamma=0.0)(logits, target)
    assert torch.allclose(focal, CrossEntropyLoss(3, IGNORE, class_weights=weights)(logits, target), atol=1e-6)


def test_ohem_keeps_pixels_under_threshold_or_min_kept_hardest():
    # true-class probabilities 1/2, 1/4 (target 0 at logit ln3), 9/10, 4/5
    logits = binary_logits([0.0, LN3, math.log(9.0), math.log(4.0)])
    target = torch.tensor([[[1, 0], [1, 1]]])
    assert close(OhemCrossEntropyLoss(1, threshold=0.7, min_kept=1)(logits, target), (LN2 + 2 * LN2) / 2)
    three_hardest = (LN2 + 2 * LN2 + math.log(5 / 4)) / 3
    assert close(OhemCrossEntropyLoss(1, threshold=0.7, min_kept=3)(logits, target), three_hardest)
    everything = CrossEntropyLoss(1)(logits, target)
    assert close(OhemCrossEntropyLoss(1, threshold=0.7, min_kept=10)(logits, target), float(everything))


# ---------------------------------------------------------------- overlap losses, hand values

# probabilities 1/2, 1/2, 3/4, 3/4 against target 1, 0, 1, 0:
# TP = 1/2 + 3/4 = 1.25, FP = 1/2 + 3/4 = 1.25, FN = 1/2 + 1/4 = 0.75
OVERLAP_LOGITS = binary_logits([0.0, 0.0, LN3, LN3])
OVERLAP_TARGET = torch.tensor([[[1, 0], [1, 0]]])


def test_dice_jaccard_tversky_hand_values():
    tp, fp, fn = 1.25, 1.25, 0.75
    assert close(SoftDiceLoss(1, smooth=0.0)(OVERLAP_LOGITS, OVERLAP_TARGET), 1 - 2 * tp / (2 * tp + fp + fn))
    assert close(SoftDiceLoss(1, smooth=1.0)(OVERLAP_LOGITS, OVERLAP_TARGET), 1 - 3.5 / 5.5)
    assert close(SoftJaccardLoss(1, smooth=0.0)(OVERLAP_LOGITS, OVERLAP_TARGET), 1 - 1.25 / 3.25)
    tversky = TverskyLoss(1, alpha=0.3, beta=0.7, smooth=0.0)(OVERLAP_LOGITS, OVERLAP_TARGET)
    assert close(tversky, 1 - 1.25 / (1.25 + 0.375 + 0.525))
    swapped = TverskyLoss(1, alpha=0.7, beta=0.3, smooth=0.0)(OVERLAP_LOGITS, OVERLAP_TARGET)
    assert close(swapped, 1 - 1.25 / (1.25 + 0.875 + 0.225))


def test_multiclass_dice_hand_value():
    # pixel 0: p = [3/4, 1/4], target 0; pixel 1: p = [1/2, 1/2], target 1
    # class 0: TP 3/4, FP 1/2, FN 1/4 -> dice 2/3; class 1: TP 1/2, FP 1/4, FN 1/2 -> dice 4/7
    logits = torch.tensor([[LN3, 0.0], [0.0, 0.0]]).T.reshape(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    assert close(SoftDiceLoss(2, smooth=0.0)(logits, target), 1 - (2 / 3 + 4 / 7) / 2)


def test_dice_per_image_is_mean_of_single_image_losses():
    torch.manual_seed(3)
    logits = torch.randn(3, 1, 5, 5)
    target = torch.randint(0, 2, (3, 5, 5))
    per_image = SoftDiceLoss(1, per_image=True)(logits, target)
    singles = torch.stack([SoftDiceLoss(1)(logits[i : i + 1], target[i : i + 1]) for i in range(3)])
    assert torch.allclose(per_image, singles.mean(), atol=1e-6)
    assert not torch.allclose(SoftDiceLoss(1)(logits, target), per_image)


# ---------------------------------------------------------------- Lovász, hand values and reference

def test_lovasz_grad_hand_value():
    # gts = 2, intersection [1,1,0,0], union [2,3,3,4], jaccard [1/2, 2/3, 1, 1]
    expected = torch.tensor([1 / 2, 1 / 6, 1 / 3, 0.0])
    assert torch.allclose(lovasz_grad(torch.tensor([1, 0, 1, 0])), expected)


def test_lovasz_hinge_hand_value_and_gradient():
    # errors 1 - x*sign = [-1, 2, 1.5, -2]; sorted [2, 1.5, -1, -2] with labels [1, 0, 1, 0]
    # -> grad [1/2, 1/6, 1/3, 0]; loss = 2/2 + 1.5/6 = 1.25
    logits = binary_logits([2.0, -1.0, 0.5, -3.0]).requires_grad_()
    target = torch.tensor([[[1, 1], [0, 0]]])
    loss = LovaszLoss(1)(logits, target)
    assert close(loss, 1.25)
    loss.backward()
    # d loss / d x = -sign * grad for pixels with positive error
    assert torch.allclose(logits.grad.flatten(), torch.tensor([0.0, -0.5, 1 / 6, 0.0]))


def test_lovasz_hinge_per_image_versus_batch():
    image_a = torch.tensor([[2.0, -1.0], [0.5, -3.0]])
    image_b = torch.tensor([[1.0, -1.0], [0.0, -2.0]])  # empty target: loss = relu(max error) = 2
    logits = torch.stack([image_a, image_b])
    labels = torch.stack([torch.tensor([[1, 1], [0, 0]]), torch.zeros(2, 2, dtype=torch.long)])
    assert close(lovasz_hinge(logits, labels, per_image=True), (1.25 + 2.0) / 2)
    # all 8 errors sorted: [2, 2, 1.5, 1, 0, ...] with gts = 2 -> 1 + 1/3 + 1/8 + 1/20
    assert close(lovasz_hinge(logits, labels, per_image=False), 181 / 120)
    assert close(LovaszLoss(1, per_image=False)(logits.unsqueeze(1), labels), 181 / 120)


def test_lovasz_softmax_hand_value():
    # class 1: errors [0.1, 0.6, 0.3], labels [1, 1, 0] -> sorted labels [1, 0, 1], grad [1/2, 1/6, 1/3]
    #          loss 0.6/2 + 0.3/6 + 0.1/3 = 23/60
    # class 0: same errors, sorted labels [0, 1, 0], grad [1/2, 1/2, 0] -> 0.45 = 27/60
    p1 = torch.tensor([0.9, 0.4, 0.3])
    probas = torch.stack([1 - p1, p1]).view(1, 2, 1, 3)
    labels = torch.tensor([[[1, 1, 0]]])
    assert close(lovasz_softmax(probas, labels), 5 / 12)
    assert close(LovaszLoss(2)(probas.log(), labels), 5 / 12)


def _reference_lovasz_grad(gt_sorted):
    """Transcription of Berman et al.'s ``lovasz_grad`` (1-D)."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.float().cumsum(0)
    union = gts + (1 - gt_sorted).float().cumsum(0)
    jaccard = 1.0 - intersection / union
    if len(gt_sorted) > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return jaccard


def _reference_hinge(logits, labels, ignore):
    """Berman et al.'s ``lovasz_hinge(per_image=True)``, one image at a time."""
    losses = []
    for log, lab in zip(logits, labels):
        log, lab = log.flatten(), lab.flatten()
        log, lab = log[lab != ignore], lab[lab != ignore]
        signs = 2.0 * lab.float() - 1.0
        errors_sorted, perm = torch.sort(1.0 - log * signs, descending=True)
        losses.append(torch.dot(F.relu(errors_sorted), _reference_lovasz_grad(lab[perm])))
    return sum(losses) / len(losses)


def _reference_softmax(probas, labels, ignore):
    """Berman et al.'s ``lovasz_softmax(classes='present', per_image=False)``."""
    num_classes = probas.shape[1]
    flat = probas.permute(0, 2, 3, 1).reshape(-1, num_classes)
    lab = labels.flatten()
    flat, lab = flat[lab != ignore], lab[lab != ignore]
    losses = []
    for c in range(num_classes):
        fg = (lab == c).float()
        if fg.sum() == 0:
            continue
        errors_sorted, perm = torch.sort((fg - flat[:, c]).abs(), descending=True)
        losses.append(torch.dot(errors_sorted, _reference_lovasz_grad(fg[perm])))
    return sum(losses) / len(losses)


def test_lovasz_matches_reference_with_ignore():
    torch.manual_seed(4)
    logits = torch.randn(3, 6, 7)
    labels = torch.randint(0, 2, (3, 6, 7))
    labels[0, :3] = IGNORE
    labels[2] = 0  # an empty image
    assert torch.allclose(lovasz_hinge(logits, labels, ignore_index=IGNORE), _reference_hinge(logits, labels, IGNORE))
    probas = torch.randn(2, 4, 5, 5).softmax(1)
    multi = torch.randint(0, 3, (2, 5, 5))  # class 3 absent: left out by classes="present"
    multi[1, 2:] = IGNORE
    expected = _reference_softmax(probas, multi, IGNORE)
    assert torch.allclose(lovasz_softmax(probas, multi, ignore_index=IGNORE), expected, atol=1e-6)


# ---------------------------------------------------------------- every registered loss: ignore, empty, bf16

MODES = [(1, name) for name in sorted(LOSS_BUILDERS)] + [(3, name) for name in sorted(LOSS_BUILDERS) if name != "bce"]


def _random_case(num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (2, C, 6, 6) and target with a block of ignored pixels."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, num_classes, 6, 6, generator=generator)
    target = torch.randint(0, max(num_classes, 2), (2, 6, 6), generator=generator)
    target[:, :2, :3] = IGNORE
    return logits, target


@pytest.mark.parametrize("num_classes,name", MODES)
def test_ignored_pixels_change_neither_loss_nor_gradient(num_classes, name):
    loss_fn = build_loss(name, num_classes, ignore_index=IGNORE)
    logits, target = _random_case(num_classes, seed=5)
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)

    def loss_and_grad(values):
        values = values.clone().requires_grad_()
        loss = loss_fn(values, target)
        loss.backward()
        return loss.detach(), values.grad

    loss_a, grad_a = loss_and_grad(logits)
    perturbed = torch.where(ignored, logits + 10 * torch.randn_like(logits), logits)
    loss_b, grad_b = loss_and_grad(perturbed)
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert torch.allclose(grad_a, grad_b, atol=1e-7)
    assert grad_a[ignored].abs().max() == 0
    assert grad_a[~ignored].abs().max() > 0


@pytest.mark.parametrize("num_classes,name", MODES)
def test_finite_gradients_on_empty_and_all_ignored_batches(num_classes, name):
    loss_fn = build_loss(name, num_classes, ignore_index=IGNORE)
    logits = torch.randn(2, num_classes, 5, 5, requires_grad=True)
    empty = torch.zeros(2, 5, 5, dtype=torch.long)
    loss = loss_fn(logits, empty)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    logits.grad = None
    all_ignored = torch.full((2, 5, 5), IGNORE)
    loss = loss_fn(logits, all_ignored)
    loss.backward()
    assert float(loss.detach()) == 0.0 and logits.grad.abs().max() == 0


@pytest.mark.parametrize("num_classes", [1, 3])
def test_bf16_logits_compute_in_float32(num_classes):
    loss_fn = build_loss("ce+dice+lovasz+focal", num_classes, ignore_index=IGNORE)
    logits, target = _random_case(num_classes, seed=6)
    low = logits.bfloat16().requires_grad_()
    loss = loss_fn(low, target)
    assert loss.dtype == torch.float32
    assert torch.equal(loss, loss_fn(low.detach().float(), target))
    loss.backward()
    assert low.grad.dtype == torch.bfloat16 and torch.isfinite(low.grad.float()).all()


# ---------------------------------------------------------------- input validation

def test_bad_inputs_raise_clear_errors():
    loss_fn = CrossEntropyLoss(3, ignore_index=IGNORE)
    logits = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="outside \\[0, 3\\).*ignore_index"):
        loss_fn(logits, torch.full((1, 4, 4), 7))
    with pytest.raises(ValueError, match="integer class indices"):
        loss_fn(logits, torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="does not match logits"):
        loss_fn(logits, torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes == 3"):
        loss_fn(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="one per class"):
        CrossEntropyLoss(3, class_weights=[1.0, 2.0])
    # a (N, 1, H, W) target is accepted
    assert torch.isfinite(loss_fn(logits, torch.zeros(1, 1, 4, 4, dtype=torch.long)))


# ---------------------------------------------------------------- class weights

def test_class_weights_from_counts_hand_values():
    counts = [10, 30, 60]  # frequencies 0.1, 0.3, 0.6
    assert class_weights_from_counts(counts, "inverse") == pytest.approx([2.0, 2 / 3, 1 / 3])
    # 1/sqrt(f) = 3.16228, 1.82574, 1.29099 (mean 2.09300)
    assert class_weights_from_counts(counts, "inverse_sqrt") == pytest.approx([1.51088, 0.87231, 0.61681], abs=1e-5)
    assert class_weights_from_counts(counts, "median_freq") == pytest.approx([3.0, 1.0, 0.5])
    assert class_weights_from_counts([0, 10, 30], "median_freq") == pytest.approx([0.0, 2.0, 2 / 3])
    with pytest.raises(ValueError, match="median_freq"):
        class_weights_from_counts(counts, "log")


def test_count_class_pixels_skips_ignore():
    masks = [torch.tensor([[0, 1], [2, IGNORE]]).numpy(), torch.tensor([[1, 1], [IGNORE, 0]]).numpy()]
    assert count_class_pixels(masks, 3, ignore_index=IGNORE) == [2, 3, 1]
    with pytest.raises(ValueError, match="outside"):
        count_class_pixels(masks, 3)


# ---------------------------------------------------------------- specs and combinations

def test_parse_loss_spec():
    names = LOSS_BUILDERS
    assert parse_loss_spec("bce+dice", names) == [(1.0, "bce"), (1.0, "dice")]
    assert parse_loss_spec("0.5*bce+1.0*lovasz", names) == [(0.5, "bce"), (1.0, "lovasz")]
    assert parse_loss_spec(" CE + 2 * Lovasz ", names) == [(1.0, "ce"), (2.0, "lovasz")]
    assert parse_loss_spec("1e-1*dice", names) == [(0.1, "dice")]


@pytest.mark.parametrize(
    "spec", ["", "bce+", "+dice", "bce dice", "bce*2", "2*", "-1*bce", "0*bce", "__import__('os')"]
)
def test_malformed_specs_raise(spec):
    with pytest.raises(ValueError):
        parse_loss_spec(spec, LOSS_BUILDERS)


def test_unknown_name_suggests_closest_and_lists_valid():
    with pytest.raises(ValueError, match="'dcie'.*Did you mean 'dice'.*Valid names: bce, ce, dice"):
        build_loss("bce+dcie", 1)
    with pytest.raises(ValueError, match="Valid names") as info:
        build_loss("zzz", 1)
    assert "Did you mean" not in str(info.value)


def test_combination_is_weighted_sum_of_parts():
    logits, target = _random_case(1, seed=7)
    combined = build_loss("0.5*bce+1.0*lovasz", 1, ignore_index=IGNORE)(logits, target)
    bce = BCEWithLogitsLoss(1, IGNORE)(logits, target)
    lovasz = LovaszLoss(1, IGNORE)(logits, target)
    assert torch.allclose(combined, 0.5 * bce + lovasz)


def test_class_weights_reach_weighted_losses_only():
    logits, target = _random_case(3, seed=8)
    weights = [1.0, 2.0, 3.0]
    got = build_loss("ce", 3, IGNORE, class_weights=weights)(logits, target)
    assert torch.allclose(got, CrossEntropyLoss(3, IGNORE, class_weights=weights)(logits, target))
    assert not torch.allclose(got, CrossEntropyLoss(3, IGNORE)(logits, target))
    binary_logits_, binary_target = _random_case(1, seed=9)
    bce = build_loss("bce", 1, IGNORE, class_weights=[2.0, 6.0])(binary_logits_, binary_target)
    assert torch.allclose(bce, BCEWithLogitsLoss(1, IGNORE, pos_weight=3.0)(binary_logits_, binary_target))
    with pytest.raises(ValueError, match="no loss in 'dice' uses them"):
        build_loss("dice", 3, class_weights=weights)
    with pytest.raises(ValueError, match="use 'ce'"):
        build_loss("bce", 3)


# ---------------------------------------------------------------- deep supervision

def _deep_case(seed: int):
    """Binary target with one empty and one non-empty image, main/aux/cls outputs."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[1, 2:6, 3:7] = 1
    out = torch.randn(2, 1, 8, 8, generator=generator)
    aux = [torch.randn(2, 1, 4, 4, generator=generator), torch.randn(2, 1, 8, 8, generator=generator)]
    cls = torch.randn(2, 1, generator=generator)
    return target, out, aux, cls


def test_deep_supervision_total_matches_hand_assembly():
    target, out, aux, cls = _deep_case(seed=10)
    loss_fn = build_loss("bce+lovasz", 1)
    inner = loss_fn.loss
    nonempty = torch.tensor([False, True])
    upsampled = [F.interpolate(a, size=(8, 8), mode="bilinear", align_corners=False) for a in aux]
    aux_mean = sum(inner(a[nonempty], target[nonempty]) for a in upsampled) / 2
    cls_bce = F.binary_cross_entropy_with_logits(cls.flatten(), nonempty.float())
    expected = inner(out, target) + 0.4 * aux_mean + 0.05 * cls_bce
    got = loss_fn({"out": out, "aux": aux, "cls": cls}, target)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.equal(loss_fn(out, target), inner(out, target))


def test_aux_losses_skip_empty_images_only_when_cls_head_present():
    target, out, aux, cls = _deep_case(seed=11)
    loss_fn = build_loss("bce+dice", 1)
    changed = [a.clone() for a in aux]
    for a in changed:
        a[0] += 5.0  # image 0 is empty
    with_cls = loss_fn({"out": out, "aux": aux, "cls": cls}, target)
    assert torch.equal(with_cls, loss_fn({"out": out, "aux": changed, "cls": cls}, target))
    without_cls = loss_fn({"out": out, "aux": aux}, target)
    assert not torch.allclose(without_cls, loss_fn({"out": out, "aux": changed}, target))


def test_deep_supervision_all_empty_batch_has_finite_zero_aux_gradient():
    _, out, aux, cls = _deep_case(seed=12)
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    aux = [a.requires_grad_() for a in aux]
    loss = build_loss("bce+lovasz", 1)({"out": out, "aux": aux, "cls": cls}, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(a.grad is not None and a.grad.abs().max() == 0 for a in aux)


def test_has_foreground_ignores_ignore_index_and_bad_dicts_raise():
    target = torch.zeros(3, 4, 4, dtype=torch.long)
    target[1, 0, 0] = IGNORE
    target[2, 1, 1] = 2
    assert has_foreground(target, IGNORE).tolist() == [False, False, True]
    loss_fn = DeepSupervisionLoss(CrossEntropyLoss(3, IGNORE), ignore_index=IGNORE)
    with pytest.raises(ValueError, match="'out'"):
        loss_fn({"aux_out": torch.randn(3, 3, 4, 4)}, target)
    with pytest.raises(ValueError, match='"cls"'):
        loss_fn({"out": torch.randn(3, 3, 4, 4), "cls": torch.randn(3, 2)}, target)


def test_auto_loss_adds_dice_for_rare_classes_in_multiclass_tasks():
    """loss=auto: BCE for two classes; CE+Dice for more, which pulls harder on a rare class's pixels than CE does."""
    assert auto_loss(2) == "bce" and auto_loss(3) == "ce+dice" and auto_loss(11) == "ce+dice"
    target = torch.zeros(2, 32, 32, dtype=torch.long)
    target[:, :, 16:] = 1
    target[:, 3, 3:6] = 2  # 3 of 1024 pixels per image: a thin, rare class
    target[0, 0, 0] = 255  # an ignored pixel gets no gradient from either term
    pulls = {}
    for spec in ("ce", auto_loss(3)):
        logits = torch.zeros(2, 3, 32, 32, requires_grad=True)
        build_loss(spec, num_classes=3, ignore_index=255)(logits, target).backward()
        grad = logits.grad
        assert grad[0, :, 0, 0].abs().max() == 0
        # how hard the loss pushes the true class up on a rare pixel, relative to a common pixel
        pulls[spec] = float(-grad[0, 2, 3, 4] / -grad[0, 0, 10, 2])
    assert pulls["ce"] == pytest.approx(1.0, rel=1e-4)  # CE: every pixel alike, so rare classes are outvoted
    assert pulls["ce+dice"] > 1.3  # the Dice term weighs each class alike, however few its pixels
