"""The training and evaluation loops as plain functions, read top to bottom (torchvision-reference style)."""
from __future__ import annotations

import math
import time
from typing import Callable, Iterable

import torch
import torch.nn as nn

from ..metrics import ConfusionMatrix, per_image_iou
from ..runtime.distributed import all_reduce_sum, is_main
from ..runtime.normalize import Normalizer
from ..runtime.precision import Precision
from ..runtime.progress import Progress
from .step import (NonFiniteLoss, StopFlag, TrainingStopped, epoch_images, images_per_pass,  # noqa: F401 (re-exported)
                   epoch_ends_here, stop_agreed, train_step)


def logits_to_pred(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class-index map from logits: sigmoid > threshold for one channel, argmax otherwise."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > math.log(threshold / (1 - threshold))).long()
    return logits.argmax(1)


def probs_to_pred(probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class-index map from probabilities (one channel = foreground probability)."""
    return (probs[:, 0] > threshold).long() if probs.shape[1] == 1 else probs.argmax(1)


def probs_to_logits(probs: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Logits that give ``probs`` back: log-odds for one channel (sigmoid), log-probabilities otherwise (softmax).

    Validation by tiles blends probabilities, not logits; its loss is the loss of the blended probabilities, taken
    through these logits (BCE or CE of them is -log of the blended probability of the true class; Dice and Lovasz
    see the blended probabilities). ``eps`` keeps a certain 0 or 1 from becoming an infinite loss.
    """
    p = probs.float()
    if p.shape[1] == 1:
        p = p.clamp(eps, 1 - eps)
        return torch.log(p) - torch.log1p(-p)
    return torch.log(p.clamp_min(eps))


def train_one_epoch(model: nn.Module, loader: Iterable, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                    scheduler, precision: Precision, normalize: Normalizer, *, epoch: int, grad_clip: float = 0.0,
                    stop: StopFlag | None = None, max_bad_steps: int = 5, desc: str | None = None,
                    on_step: Callable[[int], None] | None = None, max_steps: int | None = None,
                    sync_free: bool | None = None, time_left: float | None = None) -> dict:
    """One pass over ``loader`` (its first ``max_steps`` batches when given); returns mean loss, images seen,
    skipped steps, whether it was interrupted (a stop signal) and whether it was cut short after the step that used
    up ``time_left`` (seconds: what is left of the time budget).

    ``on_step(step)`` runs after each optimizer step (the weight EMA update). Progress is counted in images (rank 0
    only): a bar with images/s and ETA on a terminal, a heartbeat line every ~30 s elsewhere; ``desc`` names it
    (default ``train EPOCH``, 1-based as in the epoch lines).

    ``sync_free`` (default: on CUDA) runs the steps without a host sync (``sync_free.train_one_epoch_sync_free``):
    the loss is summed on the device and read once per log interval, a NaN/Inf step is skipped by the fused
    optimiser itself. On a CPU a sync costs nothing, and the per-step check below stays.
    """
    deadline = None if time_left is None else time.perf_counter() + max(0.0, time_left)
    if precision.device.type == "cuda" if sync_free is None else sync_free:
        from .sync_free import train_one_epoch_sync_free

        return train_one_epoch_sync_free(model, loader, loss_fn, optimizer, scheduler, precision, normalize,
                                         epoch=epoch, grad_clip=grad_clip, stop=stop, max_bad_steps=max_bad_steps,
                                         desc=desc, on_step=on_step, max_steps=max_steps, deadline=deadline)
    model.train()
    loss_sum = torch.zeros((), device=precision.device)
    seen, skipped, bad_in_a_row, interrupted, fallbacks, cut = 0, 0, 0, False, 0, False
    bar = Progress(epoch_images(loader, max_steps), desc or f"train {epoch + 1}", "img", enabled=is_main())
    try:
        for step, batch in enumerate(loader):
            if max_steps and step >= max_steps:
                break
            result = train_step(step, batch, model, loss_fn, optimizer, scheduler, precision, normalize, epoch,
                                 grad_clip, on_step)
            n = int(batch["image"].shape[0])
            if result is None:  # a NaN/Inf step, skipped
                skipped += 1
                bad_in_a_row += 1
                if bad_in_a_row >= max_bad_steps:
                    raise NonFiniteLoss(f"loss was NaN/Inf in {bad_in_a_row} consecutive steps at epoch {epoch}; "
                                        "lower lr, enable grad_clip, or use precision=fp32")
                bar.update(n)
                continue
            loss, fallback = result
            bad_in_a_row = 0
            fallbacks += fallback
            loss_sum += loss * n
            seen += n
            bar.update(n, loss=f"{float(loss):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            ended = epoch_ends_here(stop, deadline, precision.device)
            if ended:
                interrupted, cut = ended == "signal", ended == "time"
                break
    finally:
        bar.close()
    if seen == 0 and skipped > 0 and not interrupted:
        raise NonFiniteLoss(f"every step of epoch {epoch} had a NaN/Inf loss; lower lr, enable grad_clip, "
                            "or use precision=fp32")
    totals = all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(seen), device=precision.device)]))
    if fallbacks and is_main():
        print(f"note: {fallbacks} step(s) of epoch {epoch} overflowed in {precision.dtype} and were recomputed in fp32",
              flush=True)
    return {"loss": float(totals[0] / totals[1].clamp(min=1)), "images": int(totals[1]), "skipped": skipped,
            "interrupted": interrupted, "fp32_fallbacks": fallbacks, "cut": cut}


@torch.inference_mode()
def evaluate(predict_probs: Callable[[torch.Tensor], torch.Tensor], loader: Iterable, num_classes: int,
             ignore_index: int | None, device: torch.device, *, threshold: float = 0.5,
             loss_fn: Callable | None = None, logits_fn: Callable | None = None, per_image: bool = False,
             on_batch: Callable[[dict, torch.Tensor, torch.Tensor], None] | None = None, desc: str = "val") -> dict:
    """Metrics of ``predict_probs`` (normalised batch -> probabilities) over a loader.

    ``logits_fn`` (when given with ``loss_fn``) supplies logits for the validation loss; ``on_batch``
    receives each batch with its probabilities and predictions (used to save predictions). Progress is counted in
    images on rank 0 (a bar on a terminal, heartbeat lines elsewhere), named ``desc``.
    """
    cm = ConfusionMatrix(num_classes, ignore_index, device)
    loss_sum = torch.zeros((), device=device)
    count = torch.zeros((), device=device)
    image_ious, image_tgs, image_cov = [], [], []
    start, n_images = time.perf_counter(), 0
    with Progress(images_per_pass(loader), desc, "img", enabled=is_main()) as bar:
        for batch in loader:
            target = batch["mask"].to(device, non_blocking=True)
            if loss_fn is not None and logits_fn is not None:
                logits = logits_fn(batch)
                loss_sum += loss_fn(logits, target).detach() * target.shape[0]
                probs = torch.sigmoid(logits.float()) if logits.shape[1] == 1 else torch.softmax(logits.float(), 1)
            else:
                probs = predict_probs(batch)
            pred = probs_to_pred(probs, threshold)
            cm.update(pred, target)
            count += target.shape[0]
            n_images += target.shape[0]
            if per_image:
                # kept on the device until the end: a .cpu() per batch would be a host sync per batch on a GPU
                image_ious.append(per_image_iou(pred, target, num_classes, ignore_index))
                if num_classes == 2:
                    tgs, coverage = _binary_image_scores(pred, target, ignore_index)
                    image_tgs.append(tgs)
                    image_cov.append(coverage)
            if on_batch is not None:
                on_batch(batch, probs, pred)
            bar.update(int(target.shape[0]))
    cm.all_reduce()
    metrics = cm.compute()
    metrics["images_per_s"] = n_images / max(time.perf_counter() - start, 1e-9)
    if loss_fn is not None and logits_fn is not None:
        totals = all_reduce_sum(torch.stack([loss_sum, count]))
        metrics["loss"] = float(totals[0] / totals[1].clamp(min=1))
    if per_image:
        metrics["per_image_iou"] = torch.cat(image_ious).cpu().tolist() if image_ious else []
        if image_tgs:
            metrics["per_image_tgs"] = torch.cat(image_tgs).cpu().tolist()
            coverage = torch.cat(image_cov).cpu()  # (N, 2): true and predicted foreground fraction of valid pixels
            metrics["per_image_coverage"] = coverage[:, 0].tolist()
            metrics["per_image_pred_coverage"] = coverage[:, 1].tolist()
            metrics["tgs"] = float(torch.cat(image_tgs).cpu().mean())
    metrics["confusion"] = cm.mat.cpu()
    return metrics


def _binary_image_scores(pred: torch.Tensor, target: torch.Tensor,
                         ignore_index: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of a binary batch: the TGS score, and the true and predicted foreground fractions (N, 2), on the
    batch's device (``evaluate`` brings them to the host once, at the end)."""
    from ..metrics.tgs import tgs_scores_torch

    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    pred_fg, true_fg = (pred == 1) & valid, (target == 1) & valid
    n_valid = valid.flatten(1).sum(1).clamp(min=1)
    coverage = torch.stack([true_fg.flatten(1).sum(1) / n_valid, pred_fg.flatten(1).sum(1) / n_valid], 1)
    return tgs_scores_torch(pred_fg, true_fg), coverage
