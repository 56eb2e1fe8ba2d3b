"""The training epoch without host syncs in the step (the CUDA path of ``loop.train_one_epoch``).

On a GPU at small batches the step is bound by kernel launches and host round trips: every ``float(loss)`` or
``if not torch.isfinite(loss)`` waits for the GPU to drain its queue, after which it idles while Python launches
the next kernels. Here nothing in the step reads a device value:

- the loss, the images counted and the NaN/Inf bookkeeping (skipped steps, the longest run of them) are summed in
  device tensors and read in one transfer per log interval (``LOG_STEPS`` steps or ``LOG_SECONDS`` seconds, and at
  the end of the epoch), where the bar's loss/lr postfix is updated and ``NonFiniteLoss`` raised;
- a NaN/Inf step is skipped by the fused optimiser itself: ``found_inf`` (the flag torch.amp.GradScaler hands
  fused Adam/AdamW/SGD) set to 1 leaves weights, moments and step counts as they were, decided on the device.

Where the optimiser cannot skip on the device (not fused, or its state not yet created: a fused SGD's momentum
buffers would be left uninitialised by a skipped first step) the step takes ``step.train_step``'s checked path.
Differences from the CPU path: no bf16 -> fp32 recompute of an overflowing step (deciding it needs a sync; bf16 has
fp32's range), skipped steps are reported once per interval, and "``max_bad_steps`` bad steps in a row" is detected
at the interval at the latest (those steps changed no weights).
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

import torch
import torch.nn as nn

from ..runtime.distributed import all_reduce_sum, is_main
from ..runtime.precision import Precision
from ..runtime.progress import Progress
from . import step as step_module  # by module: tests count the checked steps by patching it
from .step import NonFiniteLoss, epoch_ends_here, epoch_images

LOG_STEPS = 50  # one host read of the device counters per this many steps ...
LOG_SECONDS = 2.0  # ... or per this many seconds, whichever comes first


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """True when ``optimizer.step`` can skip a NaN/Inf step by itself: fused kernels (they read ``found_inf``) and
    state already created (a skipped first step would leave fused SGD's momentum buffers uninitialised)."""
    return bool(optimizer.defaults.get("fused")) and bool(optimizer.state)


class DeviceCounters:
    """The epoch's sums on the device: loss x images and images of finite steps, skipped steps, the current and
    the longest run of skipped steps; ``read`` brings them to the host in one transfer."""

    def __init__(self, device: torch.device):
        zero = lambda: torch.zeros((), device=device)  # noqa: E731 - float32: a stack of them is one transfer
        self.loss_sum, self.seen, self.skipped, self.run, self.worst = zero(), zero(), zero(), zero(), zero()

    def add(self, loss: torch.Tensor, bad: torch.Tensor, n: int) -> None:
        """Count one step of ``n`` images; ``bad`` (a 0-d bool on the device) marks a skipped NaN/Inf step."""
        good = ~bad
        self.loss_sum += torch.where(good, loss.float(), 0.0) * n  # where, not multiply: NaN * 0 is NaN
        self.seen += good * n
        self.skipped += bad
        self.run = (self.run + 1) * bad  # a finite step ends the run
        self.worst = torch.maximum(self.worst, self.run)

    def read(self) -> dict[str, float]:
        """The counters as plain numbers (one device-to-host transfer)."""
        values = torch.stack([self.loss_sum, self.seen, self.skipped, self.run, self.worst]).tolist()
        return dict(zip(("loss_sum", "seen", "skipped", "run", "worst"), values))


def device_step(step: int, batch: dict, model: nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                scheduler, precision: Precision, normalize: Callable, grad_clip: float,
                on_step: Callable[[int], None] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step that reads nothing back; returns the detached loss and whether it was NaN/Inf (a 0-d
    bool on the device: then the fused optimiser changed nothing). The schedule advances either way, as on CPU."""
    images = normalize(precision.to_input(batch["image"]))
    target = batch["mask"].to(precision.device, non_blocking=True)
    with precision.autocast():
        output = model(images)
    loss = loss_fn(output, target)
    bad = ~torch.isfinite(loss.detach())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)  # no sync unless error_if_nonfinite
    optimizer.found_inf = bad.float()  # exactly 1.0 skips the update in the fused kernels (and undoes the step count)
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf
    scheduler.step()
    if on_step is not None:
        on_step(step)
    return loss.detach(), bad


def train_one_epoch_sync_free(model: nn.Module, loader: Iterable, loss_fn: Callable,
                              optimizer: torch.optim.Optimizer, scheduler, precision: Precision, normalize: Callable,
                              *, epoch: int, grad_clip: float = 0.0, stop=None, max_bad_steps: int = 5,
                              desc: str | None = None, on_step: Callable[[int], None] | None = None,
                              max_steps: int | None = None, log_steps: int = LOG_STEPS,
                              log_seconds: float = LOG_SECONDS, deadline: float | None = None) -> dict:
    """``loop.train_one_epoch`` with one host sync per log interval instead of two per step; same result dict."""

    model.train()
    counters = DeviceCounters(precision.device)
    interrupted, cut, fallbacks, told = False, False, 0, {"skipped": 0.0, "loss_sum": 0.0, "seen": 0.0}
    last_step, last_time = -1, time.perf_counter()
    bar = Progress(epoch_images(loader, max_steps), desc or f"train {epoch + 1}", "img", enabled=is_main())

    def interval(step: int) -> None:
        """The one sync of a log interval: bar postfix, skipped-step warning, too many bad steps in a row."""
        got = counters.read()
        if got["worst"] >= max_bad_steps:
            raise NonFiniteLoss(f"loss was NaN/Inf in {int(got['worst'])} consecutive steps at epoch {epoch}; "
                                "lower lr, enable grad_clip, or use precision=fp32")
        if got["skipped"] > told["skipped"] and is_main():
            print(f"warning: non-finite loss in {int(got['skipped'] - told['skipped'])} step(s) of epoch {epoch} "
                  f"(steps {last_step + 1}..{step}): skipped", flush=True)
        seen = got["seen"] - told["seen"]
        if seen > 0:
            bar.update(0, loss=f"{(got['loss_sum'] - told['loss_sum']) / seen:.4f}",
                       lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        told.update(got)

    try:
        step = -1
        for step, batch in enumerate(loader):
            if max_steps and step >= max_steps:
                step -= 1
                break
            n = int(batch["image"].shape[0])  # host metadata: no sync
            if skips_on_device(optimizer):
                loss, bad = device_step(step, batch, model, loss_fn, optimizer, scheduler, precision, normalize,
                                        grad_clip, on_step)
            else:  # first step or an optimiser that cannot skip by itself: checked on the host
                result = step_module.train_step(step, batch, model, loss_fn, optimizer, scheduler, precision, normalize, epoch,
                                     grad_clip, on_step)
                if result is None:
                    loss, bad = torch.zeros((), device=precision.device), torch.ones((), dtype=torch.bool,
                                                                                     device=precision.device)
                else:
                    (loss, fallback), bad = result, torch.zeros((), dtype=torch.bool, device=precision.device)
                    fallbacks += fallback
            counters.add(loss, bad, n)
            bar.update(n)
            now = time.perf_counter()
            if step - last_step >= log_steps or now - last_time >= log_seconds:
                interval(step)
                last_step, last_time = step, now
            ended = epoch_ends_here(stop, deadline, precision.device)  # a host clock read; across ranks one all-reduce
            if ended:
                interrupted, cut = ended == "signal", ended == "time"
                break
        if step > last_step:
            interval(step)
    finally:
        bar.close()
    got = counters.read()
    if got["seen"] == 0 and got["skipped"] > 0 and not interrupted:
        raise NonFiniteLoss(f"every step of epoch {epoch} had a NaN/Inf loss; lower lr, enable grad_clip, "
                            "or use precision=fp32")
    totals = all_reduce_sum(torch.stack([counters.loss_sum, counters.seen]))
    if fallbacks and is_main():
        print(f"note: {fallbacks} step(s) of epoch {epoch} overflowed in {precision.dtype} and were recomputed in fp32",
              flush=True)
    return {"loss": float(totals[0] / totals[1].clamp(min=1)), "images": int(totals[1]),
            "skipped": int(got["skipped"]), "interrupted": interrupted, "fp32_fallbacks": fallbacks, "cut": cut}
