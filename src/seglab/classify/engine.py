"""Training and evaluation of classifiers, as plain functions read top to bottom.

Loss and accuracy are summed on the device and read once per epoch (no ``.item()`` per step), and every
forward pass goes through the one precision path (``seglab.engine.precision``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seglab.classify.data import ImageSplit, augment_batch, iterate_batches
from seglab.engine.precision import Precision


class Normalized(nn.Module):
    """Wraps a classifier so it takes uint8 (or 0..1 float) images and normalizes them with stored statistics."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return self.model((x - self.mean) / self.std)


@dataclass
class EpochResult:
    """Mean loss and accuracy over one pass, and how long it took."""

    loss: float
    acc: float
    seconds: float
    images: int


@dataclass
class EvalResult:
    """Mean loss and accuracy on a split, with every prediction and target (for confusion matrices)."""

    loss: float
    acc: float
    predictions: torch.Tensor
    targets: torch.Tensor
    probabilities: torch.Tensor


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """SGD (Nesterov), Adam or AdamW; biases and norm weights get no weight decay."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Fused kernels: one pass over the weights per step (fp32 weights on CPU/CUDA), as in seglab.engine.optim.
    fused = True if all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in decay + no_decay) \
        else None
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, fused=fused)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused)
    raise ValueError(f"optimizer must be sgd, adam or adamw; got {name!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int,
                    warmup: float = 0.2) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: ``onecycle`` (linear up then down), ``cosine`` (linear warmup, cosine decay) or ``constant``."""
    warmup_steps = max(1, round(warmup * total_steps))

    def onecycle(step: int) -> float:
        # Linear ramps, as in the ResNet-9 / airbench recipes; the floor keeps the last steps useful.
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.02, (total_steps - step) / max(1, total_steps - warmup_steps))

    def cosine(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    schedules = {"onecycle": onecycle, "cosine": cosine, "constant": lambda step: 1.0}
    if name not in schedules:
        raise ValueError(f"sched must be one of {', '.join(schedules)}; got {name!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedules[name])


def train_one_epoch(model: nn.Module, split: ImageSplit, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, precision: Precision, batch_size: int,
                    label_smoothing: float = 0.0, shift: float = 0.1, flip: bool = True,
                    generator: torch.Generator | None = None, rank: int = 0, world: int = 1,
                    aug_generator: torch.Generator | None = None) -> EpochResult:
    """One pass over ``split`` with batch augmentation; returns mean loss, accuracy and wall time.

    With ``world`` > 1 (DDP), every rank draws the same batch order from ``generator`` and trains on its
    ``rank::world`` share of each batch, augmented with its own ``aug_generator``.
    """
    model.train()
    start = time.perf_counter()
    loss_sum = torch.zeros((), device=precision.device)
    correct = torch.zeros((), device=precision.device, dtype=torch.long)
    seen = 0
    for images, labels in iterate_batches(split, batch_size, shuffle=True, generator=generator, drop_last=True):
        if world > 1:
            images, labels = images[rank::world], labels[rank::world]
        images = augment_batch(images, shift, flip, aug_generator or generator)
        x = precision.to_input(images)
        y = labels.to(precision.device, non_blocking=True)
        with precision.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
    totals = torch.stack([loss_sum.float(), correct.float(), torch.tensor(float(seen), device=loss_sum.device)])
    if world > 1:
        torch.distributed.all_reduce(totals)
    seconds = time.perf_counter() - start
    seen = int(totals[2])
    return EpochResult(float(totals[0]) / max(1, seen), float(totals[1]) / max(1, seen), seconds, seen)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, precision: Precision, batch_size: int = 512,
                   tta: bool = False) -> torch.Tensor:
    """Float32 logits for uint8 images; ``tta`` averages with the mirrored images."""
    model.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        x = precision.to_input(images[start:start + batch_size])
        with precision.autocast():
            logits = model(x).float()
            if tta:
                logits = (logits + model(x.flip(3)).float()) / 2
        chunks.append(logits)
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


@torch.no_grad()
def evaluate(model: nn.Module, split: ImageSplit, precision: Precision, batch_size: int = 512,
             tta: bool = False) -> EvalResult:
    """Mean cross-entropy and accuracy on ``split``, keeping predictions and class probabilities."""
    logits = predict_logits(model, split.images, precision, batch_size, tta)
    targets = split.labels.to(logits.device)
    loss = F.cross_entropy(logits, targets).item()
    predictions = logits.argmax(1)
    acc = (predictions == targets).float().mean().item()
    return EvalResult(loss, acc, predictions.cpu(), targets.cpu(), logits.softmax(1).cpu())
