"""Training and evaluation of classifiers, as plain functions read top to bottom.

Loss and accuracy are summed on the device and read once per epoch (no ``.item()`` per step), and every
forward pass goes through the one precision path (``seglab.engine.precision``).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageSplit, augment_batch, iterate_batches
from ..engine.optim import optimizer_for_groups
from ..errors import ConfigError
from ..runtime.normalize import Normalizer
from ..runtime.precision import Precision
from ..runtime.progress import Progress


class Normalized(Normalizer):
    """A classifier behind seglab's Normalizer: takes uint8 images, or floats already scaled to 0..1 (TTA's views).

    The statistics stay top-level buffers (``mean``, ``std``), so checkpoints keep their keys.
    """

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__(mean, std, 255.0)
        self.model = model

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input: uint8 scaled by 1/255, 0..1 floats as they are, then standardised."""
        return super().forward(x) if x.dtype == torch.uint8 else self.standardize(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images."""
        return self.model(self.normalize(x))


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


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                    norm_lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """SGD (Nesterov), Adam or AdamW; biases get no weight decay.

    ``norm_lr_scale`` multiplies the learning rate of BatchNorm shifts (airbench trains them 64x faster) and
    divides their weight decay by the same factor, so the decay per step stays as for the other weights.
    """
    norms = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim > 1]
    norm = [p for p in trainable if p.ndim <= 1 and id(p) in norms] if norm_lr_scale != 1 else []
    no_decay = [p for p in trainable if p.ndim <= 1 and all(p is not q for q in norm)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if norm:
        groups.append({"params": norm, "lr": lr * norm_lr_scale, "weight_decay": weight_decay / norm_lr_scale})
    return optimizer_for_groups(groups, name, lr, momentum)


class StepSchedule:
    """Learning-rate factor per step: ``onecycle`` (airbench's triangle: 0.2 -> 1 at ``warmup``, then -> 0.07),
    ``cosine`` (linear warmup, cosine decay) or ``constant``.

    ``total_steps`` may change mid-run: ``seglab.engine.optim.set_total_epochs`` refits it to a time budget,
    as for segmentation schedules, in units of ``steps_per_epoch``.
    """

    def __init__(self, name: str, total_steps: int, warmup: float = 0.2, steps_per_epoch: int = 1) -> None:
        if name not in ("onecycle", "cosine", "constant"):
            raise ConfigError(f"sched must be one of onecycle, cosine, constant; got {name!r}")
        self.name, self.total_steps, self.warmup = name, max(1, total_steps), warmup
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, step: int) -> float:
        """The factor at ``step`` (0-based)."""
        if self.name == "constant":
            return 1.0
        warmup_steps = max(1, round(self.warmup * self.total_steps))
        progress = min(1.0, max(0, step - warmup_steps) / max(1, self.total_steps - warmup_steps))
        if self.name == "onecycle":
            if step < warmup_steps:
                return 0.2 + 0.8 * step / warmup_steps
            return 1.0 - 0.93 * progress
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, epochs: int, steps_per_epoch: int,
                    warmup: float = 0.2) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR over one ``StepSchedule`` shared by every group (refit with ``set_total_epochs``)."""
    schedule = StepSchedule(name, epochs * steps_per_epoch, warmup, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [schedule] * len(optimizer.param_groups))


class Lookahead:
    """Lookahead with an EMA that grows over the run (airbench): every ``every`` steps the weights are pulled to
    their running average with decay ``0.95**every * progress**3``, so early training is untouched and the end of a
    short schedule is averaged; ``finish`` leaves the averaged weights in the model."""

    def __init__(self, model: nn.Module, every: int = 5) -> None:
        self.model, self.every, self.steps = model, every, 0
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}

    @torch.no_grad()
    def step(self, progress: float) -> None:
        """Count one optimizer step; every ``every`` steps, blend and write back."""
        self.steps += 1
        if self.steps % self.every == 0:
            self._blend(0.95 ** self.every * min(1.0, progress) ** 3)

    @torch.no_grad()
    def finish(self) -> None:
        """Put the averaged weights in the model."""
        self._blend(1.0)

    def _blend(self, decay: float) -> None:
        state = self.model.state_dict()
        for k, avg in self.average.items():
            avg.lerp_(state[k], 1 - decay)
            state[k].copy_(avg)


def train_one_epoch(model: nn.Module, split: ImageSplit, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, precision: Precision, batch_size: int,
                    label_smoothing: float = 0.0, shift: float = 0.1, flip: bool = True,
                    generator: torch.Generator | None = None, rank: int = 0, world: int = 1,
                    aug_generator: torch.Generator | None = None, lookahead: Lookahead | None = None,
                    after_step: Callable[[int, float], None] | None = None, desc: str = "train") -> EpochResult:
    """One pass over ``split`` with batch augmentation; returns mean loss, accuracy and wall time.

    With ``world`` > 1 (DDP), every rank draws the same batch order from ``generator`` and trains on its
    ``rank::world`` share of each batch, augmented with its own ``aug_generator``. ``after_step(steps, seconds)``
    is called after every step with the steps and seconds of this epoch so far (used to fit a time budget early).
    Rank 0 shows the progress in images of the whole batches (a bar on a terminal, a heartbeat line every ~30 s
    elsewhere), named ``desc``.
    """
    model.train()
    start = time.perf_counter()
    loss_sum = torch.zeros((), device=precision.device)
    correct = torch.zeros((), device=precision.device, dtype=torch.long)
    seen = 0
    batches = iterate_batches(split, batch_size, shuffle=True, generator=generator, drop_last=True)
    total = len(split) - len(split) % batch_size if len(split) >= batch_size else len(split)
    with Progress(total, desc, "img", enabled=rank == 0) as bar:
        for step, (images, labels) in enumerate(batches, 1):
            batch_images = len(labels)  # the whole batch: every rank trains on its share of it
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
            if lookahead is not None:
                lookahead.step(scheduler.last_epoch / scheduler.lr_lambdas[0].total_steps)
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if after_step is not None:
                after_step(step, time.perf_counter() - start)
            bar.update(batch_images)
    totals = torch.stack([loss_sum.float(), correct.float(), torch.tensor(float(seen), device=loss_sum.device)])
    if world > 1:
        torch.distributed.all_reduce(totals)
    seconds = time.perf_counter() - start
    seen = int(totals[2])
    return EpochResult(float(totals[0]) / max(1, seen), float(totals[1]) / max(1, seen), seconds, seen)


def _tta_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean of the mirrored views, and (from 16 px) of views shifted one pixel up-left and down-right (airbench)."""
    def mirrored(z: torch.Tensor) -> torch.Tensor:
        return (model(z).float() + model(z.flip(3)).float()) / 2

    logits = mirrored(x)
    if min(x.shape[-2:]) < 16:  # a pixel is too much of a small image
        return logits
    if x.dtype == torch.uint8:  # reflect padding needs floats; Normalized takes 0..1 floats as well as uint8
        x = x.float().div(255)
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = (mirrored(padded[..., :h, :w]) + mirrored(padded[..., 2:, 2:])) / 2
    return (logits + shifted) / 2


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, precision: Precision, batch_size: int = 512,
                   tta: bool = False, desc: str = "predict") -> torch.Tensor:
    """Float32 logits for uint8 images; ``tta`` averages mirrored and one-pixel-shifted views. Progress in images
    (a bar on a terminal, a heartbeat line every ~30 s elsewhere) is named ``desc``."""
    model.eval()
    chunks = []
    with Progress(len(images), desc, "img") as bar:
        for start in range(0, len(images), batch_size):
            x = precision.to_input(images[start:start + batch_size])
            with precision.autocast():
                logits = _tta_logits(model, x) if tta else model(x).float()
            chunks.append(logits)
            bar.update(len(x))
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


@torch.no_grad()
def evaluate(model: nn.Module, split: ImageSplit, precision: Precision, batch_size: int = 512,
             tta: bool = False) -> EvalResult:
    """Mean cross-entropy and accuracy on ``split``, keeping predictions and class probabilities."""
    logits = predict_logits(model, split.images, precision, batch_size, tta, desc="val")
    targets = split.labels.to(logits.device)
    loss = F.cross_entropy(logits, targets).item()
    predictions = logits.argmax(1)
    acc = (predictions == targets).float().mean().item()
    return EvalResult(loss, acc, predictions.cpu(), targets.cpu(), logits.softmax(1).cpu())
