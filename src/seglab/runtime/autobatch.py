"""``batch=auto`` on a GPU (after Ultralytics' AutoBatch): the largest batch that fits a share of the GPU's memory,
capped where a larger batch stops paying off, with the learning rate scaled for it.

The rule, in order:

1. memory: forward + backward at batches 8, 16, 32, ... (each size only while the line fitted so far predicts it
   fits; a size that runs out of memory ends the probing) measure peak allocated memory ``a + b * batch`` (least
   squares). The optimiser's state, not yet created, is added to ``a``. The batch fits when ``a + b * batch`` is
   within ``SHARE`` (0.6) of the GPU's memory (and of what is free now).
2. speed: the probe also times each size (best of two steps after a warm-up); above the first size from the CPU
   rule's batch upwards whose next doubling gains less than ``GROWTH`` (5%) images/s, more images per step only
   cost memory and optimiser steps, so the batch is capped there ("img/s flat above N").
3. pixels: at most ``MAX_PIXELS`` (512 images of 128 x 128) per step, whatever the GPU: beyond that an epoch of a
   small data set is a handful of steps.
4. data: one sample per image keeps at least two steps per epoch (the CPU rule's bound).
5. rounding: down to a multiple of 8 (tensor-core and DataLoader friendly), at least 2 (BatchNorm).

The learning rate scales from the batch the CPU rule gives (``reference``, whose lr the config holds): by the square
root of the ratio for Adam/AdamW (Malladi et al. 2022, adaptive optimisers), linearly for SGD (Goyal et al. 2017),
with at least one warm-up epoch when it rises; an lr given on the command line is kept as given.

The probe is injectable (``MemoryProbe``): ``CudaProbe`` measures a real model with torch.cuda's peak-memory
counters; the tests use a linear fake.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

SHARE = 0.6  # of the GPU's memory for one training step: the rest for the allocator's slack, cuDNN and validation
GROWTH = 1.05  # a doubling of the batch that gains less images/s than this is "flat"
MAX_PIXELS = 512 * 128 * 128  # per step: 512 TGS images padded to 128 px
MULTIPLE = 8
FIRST = 8  # first batch probed (smaller ones only when 8 does not fit)
MIN_BATCH = 2
GB = 1024**3


@dataclass
class Probe:
    """One measured training step: its batch, peak allocated bytes, and seconds (0: not timed)."""

    batch: int
    bytes: float
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Images per second (0 when not timed)."""
        return self.batch / self.seconds if self.seconds > 0 else 0.0


class MemoryProbe(Protocol):
    """What ``choose_batch`` measures through: the GPU's memory, and one step at a batch size."""

    def capacity(self) -> tuple[float, float]:
        """(total bytes of the GPU, bytes this process may still use: free now plus what it holds)."""

    def measure(self, batch: int) -> Probe | None:
        """Peak memory and time of one forward + backward at ``batch``; None when it runs out of memory."""


@dataclass
class AutoBatch:
    """The chosen batch, why, and the learning rate for it."""

    batch: int
    fits: int  # the largest batch within the memory share
    limit: str  # what decided ``batch`` ("the memory share", "img/s flat above 256", ...)
    share: float
    total_bytes: float
    fixed_bytes: float  # a: weights, gradients, optimiser state, workspace
    per_image_bytes: float  # b
    reference: int = 0  # the CPU rule's batch, which the config's lr is for
    base_lr: float = 0.0
    lr: float = 0.0
    lr_rule: str = ""  # "sqrt", "linear" or "kept"
    warmup_epochs: float = 0.0
    probes: list[Probe] = field(default_factory=list)

    def line(self) -> str:
        """``batch=auto: 512 (fits 0.6 of 139 GB at 61 MB/image; img/s flat above 512), lr 0.001 -> 0.004 (sqrt
        rule from batch 32), warm-up 1 epoch``."""
        text = (f"batch=auto: {self.batch} (fits {self.share:g} of {self.total_bytes / GB:.0f} GB at "
                f"{self.per_image_bytes / 2**20:.0f} MB/image")
        text += f"; {self.limit})" if self.limit else ")"
        if self.lr_rule == "kept":
            text += f", lr {self.base_lr:g} kept (set on the command line)"
        elif self.lr != self.base_lr:
            text += f", lr {self.base_lr:g} -> {self.lr:.3g} ({self.lr_rule} rule from batch {self.reference})"
        if self.warmup_epochs:
            text += f", warm-up {self.warmup_epochs:g} epoch{'s' if self.warmup_epochs != 1 else ''}"
        return text


def fit_line(probes: list[Probe]) -> tuple[float, float]:
    """Least-squares ``bytes = a + b * batch`` over the probes; one probe (or a non-increasing fit) gives a = 0."""
    if len(probes) >= 2:
        n = len(probes)
        mx = sum(p.batch for p in probes) / n
        my = sum(p.bytes for p in probes) / n
        sxx = sum((p.batch - mx) ** 2 for p in probes)
        if sxx > 0:
            b = sum((p.batch - mx) * (p.bytes - my) for p in probes) / sxx
            if b > 0:
                return my - b * mx, b
    top = max(probes, key=lambda p: p.batch)
    return 0.0, max(top.bytes / top.batch, 1.0)


def flat_above(probes: list[Probe], reference: int, growth: float = GROWTH) -> int | None:
    """The smallest probed batch (>= ``reference``) whose next probed size gains less than ``growth`` in img/s."""
    timed = sorted((p for p in probes if p.seconds > 0), key=lambda p: p.batch)
    for this, nxt in zip(timed, timed[1:]):
        if this.batch >= reference and nxt.rate < growth * this.rate:
            return this.batch
    return None


def _round(batch: int) -> int:
    """Down to a multiple of ``MULTIPLE`` (when there is one), at least ``MIN_BATCH``."""
    return max(MIN_BATCH, batch // MULTIPLE * MULTIPLE if batch >= MULTIPLE else batch)


def choose_batch(probe: MemoryProbe, *, sample_px: int, reference: int, images: int = 0, share: float = SHARE,
                 extra_bytes: float = 0.0, first: int = FIRST) -> AutoBatch:
    """Probe and apply the rule (module docstring); ``images`` > 0 bounds one-sample-per-image epochs to two steps,
    ``extra_bytes`` (the optimiser state) is added to the fitted fixed memory."""
    total, available = probe.capacity()
    budget = min(share * total, available)
    pixel_cap = max(MIN_BATCH, MAX_PIXELS // max(1, sample_px))
    data_cap = max(MIN_BATCH, images // 2) if images else 0
    most = min(pixel_cap, data_cap) if data_cap else pixel_cap
    probes: list[Probe] = []
    size, oom = first, 0  # oom: the smallest size that ran out of memory (0: none did)
    while size >= MIN_BATCH and not probes:  # the first size that fits at all, halving from ``first``
        got = probe.measure(size)
        if got is not None:
            probes.append(got)
        else:
            oom, size = size, size // 2
    if not probes:
        raise MemoryError(f"batch=auto: not even {MIN_BATCH} samples of {sample_px} px fit on this GPU")
    while size < most:  # doubling up to ``most`` (the last size may pass it: less than twice)
        size *= 2
        a, b = fit_line(probes)
        if a + extra_bytes + b * size > budget:
            break
        got = probe.measure(size)
        if got is None:
            oom = size
            break
        probes.append(got)
    a, b = fit_line(probes)
    fits = max(MIN_BATCH, int((budget - a - extra_bytes) // b))
    caps = [(fits, f"the memory share ({share:g})")]
    if oom and oom - 1 < fits:  # the line is a model; a size that ran out of memory is a fact
        fits = oom - 1
        caps = [(fits, f"out of memory at {oom}")]
    knee = flat_above(probes, reference)
    if knee is not None:
        caps.append((knee, f"img/s flat above {knee}"))
    caps.append((pixel_cap, f"at most {MAX_PIXELS // 128**2} images of 128 px per step"))
    if data_cap:
        caps.append((data_cap, f"two steps per epoch of {images} images"))
    batch, limit = min(caps, key=lambda c: c[0])
    rounded = _round(batch)
    if rounded != batch:
        limit += f", rounded down to a multiple of {MULTIPLE}" if batch >= MULTIPLE else ""
    return AutoBatch(rounded, fits, limit, share, total, a + extra_bytes, b, reference=reference, probes=probes)


def scale_lr(lr: float, batch: int, reference: int, optimizer: str) -> tuple[float, str]:
    """The lr for ``batch`` given the one for ``reference``: sqrt rule for adam/adamw, linear for sgd."""
    ratio = batch / max(1, reference)
    if optimizer == "sgd":
        return lr * ratio, "linear"
    return lr * math.sqrt(ratio), "sqrt"


def with_lr(auto: AutoBatch, lr: float, optimizer: str, warmup_epochs: float, lr_given: bool = False,
            warmup_given: bool = False) -> AutoBatch:
    """``auto`` with its learning rate and warm-up: scaled from ``lr`` (unless ``lr_given`` on the command line),
    and at least one warm-up epoch when the lr rises (unless ``warmup_given``)."""
    auto.base_lr = lr
    if lr_given:
        auto.lr, auto.lr_rule = lr, "kept"
    else:
        auto.lr, auto.lr_rule = scale_lr(lr, auto.batch, auto.reference, optimizer)
    auto.warmup_epochs = warmup_epochs if warmup_given or auto.lr <= lr else max(1.0, warmup_epochs)
    return auto


def optimizer_state_bytes(model: torch.nn.Module, optimizer: str, momentum: float = 0.9) -> float:
    """Bytes the optimiser's state will take: two moments for Adam/AdamW, a momentum buffer for SGD with momentum."""
    params = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    if optimizer != "sgd":  # adam, adamw: first and second moments
        return params * 2
    return params if momentum > 0 else 0


class CudaProbe:
    """Peak allocated memory and time of ``step(batch)`` (forward + backward of synthetic data) on a CUDA device."""

    def __init__(self, step: Callable[[int], None], device: torch.device, timed: int = 2):
        self.step, self.device, self.timed = step, device, timed

    def capacity(self) -> tuple[float, float]:
        """Total memory of the GPU, and free memory plus what this process's allocator holds."""
        free, total = torch.cuda.mem_get_info(self.device)
        return float(total), float(free + torch.cuda.memory_reserved(self.device))

    def measure(self, batch: int) -> Probe | None:
        """One warm-up step (cuDNN's algorithm search, the allocator), then the best of ``timed`` timed steps."""
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        try:
            self.step(batch)
            torch.cuda.synchronize(self.device)
            best = math.inf
            for _ in range(self.timed):
                start = time.perf_counter()
                self.step(batch)
                torch.cuda.synchronize(self.device)
                best = min(best, time.perf_counter() - start)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return None
        return Probe(batch, float(torch.cuda.max_memory_allocated(self.device)), best)


def training_step_probe(model: torch.nn.Module, loss_fn: Callable, precision, in_channels: int,
                        shape: tuple[int, int], num_classes: int) -> Callable[[int], None]:
    """``step(batch)``: forward + backward of ``batch`` random images of ``shape`` (the planned sample size) with
    random class-index masks, under the run's autocast and memory format; gradients dropped after it."""
    device = precision.device

    def step(batch: int) -> None:
        images = precision.to_input(torch.randn(batch, in_channels, *shape, device=device))
        target = torch.randint(0, max(2, num_classes), (batch, *shape), device=device)
        model.zero_grad(set_to_none=True)
        with precision.autocast():
            output = model(images)
        loss_fn(output, target).backward()
        model.zero_grad(set_to_none=True)

    return step
