"""The training and evaluation loops as plain functions, read top to bottom (torchvision-reference style)."""
from __future__ import annotations

import math
import signal
import time
from typing import Callable, Iterable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..errors import SeglabError
from ..metrics import ConfusionMatrix, per_image_iou
from ..runtime.distributed import all_reduce_sum, is_main
from ..runtime.precision import Precision


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


class StopFlag:
    """Set by SIGINT/SIGTERM so the loop finishes its current step and saves, instead of dying mid-write."""

    def __init__(self):
        self.raised = False
        self._old: dict = {}

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling possible
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.raised:  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        self.raised = True
        if is_main():
            print(f"\n{signal.Signals(signum).name} received: finishing this step and saving a checkpoint "
                  "(press Ctrl-C again to stop at once)", flush=True)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class NonFiniteLoss(SeglabError, RuntimeError):
    """Training produced NaN/Inf losses too many times in a row."""


def train_one_epoch(model: nn.Module, loader: Iterable, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                    scheduler, precision: Precision, normalize: Normalizer, *, epoch: int, grad_clip: float = 0.0,
                    stop: StopFlag | None = None, max_bad_steps: int = 5, desc: str = "train",
                    on_step: Callable[[int], None] | None = None) -> dict:
    """One pass over ``loader``; returns mean loss, images seen, skipped steps and whether it was interrupted.

    ``on_step(step)`` runs after each optimizer step (the weight EMA update).
    """
    model.train()
    loss_sum = torch.zeros((), device=precision.device)
    seen, skipped, bad_in_a_row, interrupted, fallbacks = 0, 0, 0, False, 0
    bar = tqdm(loader, desc=f"{desc} {epoch}", leave=False, disable=not is_main() or None, dynamic_ncols=True)
    for step, batch in enumerate(bar):
        images = normalize(precision.to_input(batch["image"]))
        target = batch["mask"].to(precision.device, non_blocking=True)
        with precision.autocast():
            output = model(images)
        loss = loss_fn(output, target)
        if precision.enabled and not torch.isfinite(loss):
            # bf16/fp16 overflow: redo this step in fp32 before calling it a bad step.
            fallbacks += 1
            output = model(images)
            loss = loss_fn(output, target)
        # One host sync per step: on CPU it costs nothing, and it is what lets a NaN step be skipped before it
        # poisons the weights (the GradScaler-style alternative still needs a sync to decide).
        if not torch.isfinite(loss):
            skipped += 1
            bad_in_a_row += 1
            optimizer.zero_grad(set_to_none=True)
            if is_main():
                print(f"warning: non-finite loss at epoch {epoch} step {step}: step skipped", flush=True)
            if bad_in_a_row >= max_bad_steps:
                raise NonFiniteLoss(f"loss was NaN/Inf in {bad_in_a_row} consecutive steps at epoch {epoch}; "
                                    "lower lr, enable grad_clip, or use precision=fp32")
            scheduler.step()
            continue
        bad_in_a_row = 0
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        if on_step is not None:
            on_step(step)
        loss_sum += loss.detach() * images.shape[0]
        seen += images.shape[0]
        if step % 20 == 0 and bar.disable is False:
            bar.set_postfix(loss=f"{float(loss):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if stop is not None and stop.raised:
            interrupted = True
            break
    if seen == 0 and skipped > 0 and not interrupted:
        raise NonFiniteLoss(f"every step of epoch {epoch} had a NaN/Inf loss; lower lr, enable grad_clip, "
                            "or use precision=fp32")
    totals = all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(seen), device=precision.device)]))
    if fallbacks and is_main():
        print(f"note: {fallbacks} step(s) of epoch {epoch} overflowed in {precision.dtype} and were recomputed in fp32",
              flush=True)
    return {"loss": float(totals[0] / totals[1].clamp(min=1)), "images": int(totals[1]), "skipped": skipped,
            "interrupted": interrupted, "fp32_fallbacks": fallbacks}


@torch.inference_mode()
def evaluate(predict_probs: Callable[[torch.Tensor], torch.Tensor], loader: Iterable, num_classes: int,
             ignore_index: int | None, device: torch.device, *, threshold: float = 0.5,
             loss_fn: Callable | None = None, logits_fn: Callable | None = None, per_image: bool = False,
             on_batch: Callable[[dict, torch.Tensor, torch.Tensor], None] | None = None, desc: str = "val") -> dict:
    """Metrics of ``predict_probs`` (normalised batch -> probabilities) over a loader.

    ``logits_fn`` (when given with ``loss_fn``) supplies logits for the validation loss; ``on_batch``
    receives each batch with its probabilities and predictions (used to save predictions).
    """
    cm = ConfusionMatrix(num_classes, ignore_index, device)
    loss_sum = torch.zeros((), device=device)
    count = torch.zeros((), device=device)
    image_ious, image_tgs, image_cov = [], [], []
    start, n_images = time.perf_counter(), 0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not is_main() or None, dynamic_ncols=True):
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
            image_ious.append(per_image_iou(pred, target, num_classes, ignore_index).cpu())
            if num_classes == 2:
                from ..metrics.tgs import tgs_scores_torch

                valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
                pred_fg, true_fg = (pred == 1) & valid, (target == 1) & valid
                image_tgs.append(tgs_scores_torch(pred_fg, true_fg).cpu())
                n_valid = valid.flatten(1).sum(1).clamp(min=1)
                image_cov.append(torch.stack([true_fg.flatten(1).sum(1) / n_valid,
                                              pred_fg.flatten(1).sum(1) / n_valid], 1).cpu())
        if on_batch is not None:
            on_batch(batch, probs, pred)
    cm.all_reduce()
    metrics = cm.compute()
    metrics["images_per_s"] = n_images / max(time.perf_counter() - start, 1e-9)
    if loss_fn is not None and logits_fn is not None:
        totals = all_reduce_sum(torch.stack([loss_sum, count]))
        metrics["loss"] = float(totals[0] / totals[1].clamp(min=1))
    if per_image:
        metrics["per_image_iou"] = torch.cat(image_ious).tolist() if image_ious else []
        if image_tgs:
            metrics["per_image_tgs"] = torch.cat(image_tgs).tolist()
            coverage = torch.cat(image_cov)  # (N, 2): true and predicted foreground fraction of the valid pixels
            metrics["per_image_coverage"] = coverage[:, 0].tolist()
            metrics["per_image_pred_coverage"] = coverage[:, 1].tolist()
            metrics["tgs"] = float(torch.cat(image_tgs).mean())
    metrics["confusion"] = cm.mat.cpu()
    return metrics
