"""One checked optimisation step and what the epoch loops share (``loop.train_one_epoch`` and its sync-free CUDA
twin ``sync_free.train_one_epoch_sync_free``): the stop flag and its agreement across ranks, images per epoch,
NonFiniteLoss."""
from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Callable, Iterable

import torch
import torch.nn as nn

from ..errors import SeglabError
from ..runtime.distributed import is_main
from ..runtime.precision import Precision

if TYPE_CHECKING:
    from ..runtime.normalize import Normalizer


class TrainingStopped(KeyboardInterrupt):
    """Training ended on a stop signal, after saving what there was to save.

    A KeyboardInterrupt, so nothing on the way up mistakes it for an error; ``exit_code`` is what a shell reports for
    a process ended by that signal (128 + its number: 130 for SIGINT / Ctrl-C, 143 for SIGTERM), which ``seglab``
    returns so that scripts and schedulers see the run did not finish.
    """

    def __init__(self, signum: int, message: str = ""):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(message or f"stopped by {signal.Signals(self.signum).name}")


class StopFlag:
    """Set by SIGINT/SIGTERM so the loop finishes its current step and saves, instead of dying mid-write.

    ``signum`` is the first signal received (0: none). A second signal stops at once: it raises TrainingStopped
    wherever the process is (the checkpoint writer keeps the previous file whole).
    """

    def __init__(self):
        self.raised = False
        self.signum = 0
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
            raise TrainingStopped(signum)
        self.raised, self.signum = True, int(signum)
        if is_main():
            print(f"\n{signal.Signals(signum).name} received: finishing this step, then stopping with the last "
                  "complete epoch saved (press Ctrl-C again to stop at once)", flush=True)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def stop_agreed(stop: StopFlag, device: torch.device) -> bool:
    """Whether to stop here. In distributed training every rank must stop at the same step (a rank that went on
    would wait forever in the next gradient all-reduce), so the ranks agree: any rank's signal stops them all."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return stop.raised
    signum = torch.tensor([stop.signum], device=device)
    torch.distributed.all_reduce(signum, op=torch.distributed.ReduceOp.MAX)
    if int(signum) and not stop.raised:
        stop.raised, stop.signum = True, int(signum)
    return stop.raised


def epoch_ends_here(stop: StopFlag | None, deadline: float | None, device: torch.device) -> str | None:
    """After a step: "signal" (a stop signal), "time" (``deadline``, a ``time.perf_counter()`` value, has passed)
    or None to go on. Ranks agree on both in one all-reduce, as ``stop_agreed`` does for signals alone."""
    signum = stop.signum if stop is not None else 0
    past = deadline is not None and time.perf_counter() >= deadline
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flags = torch.tensor([signum, int(past)], device=device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        signum, past = int(flags[0]), bool(int(flags[1]))
        if signum and stop is not None and not stop.raised:
            stop.raised, stop.signum = True, signum
    if stop is not None and stop.raised:
        return "signal"
    return "time" if past else None


def images_per_pass(loader: Iterable) -> int | None:
    """Images one pass over a DataLoader yields on this process (None when it cannot tell, e.g. a plain list)."""
    size = getattr(loader, "batch_size", None)
    try:
        steps = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None
    if not size:
        return None
    if getattr(loader, "drop_last", False):
        return steps * size
    try:
        return len(loader.sampler)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return steps * size


def epoch_images(loader: Iterable, max_steps: int | None = None) -> int | None:
    """Images of one epoch: a pass over ``loader``, or its first ``max_steps`` batches (None: cannot tell)."""
    total = images_per_pass(loader)
    if max_steps and total and len(loader) > max_steps:  # type: ignore[arg-type]
        total = round(total * max_steps / len(loader))  # type: ignore[arg-type]
    return total


class NonFiniteLoss(SeglabError, RuntimeError):
    """Training produced NaN/Inf losses too many times in a row."""


def train_step(step: int, batch: dict, model: nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer,
               scheduler, precision: Precision, normalize: Normalizer, epoch: int, grad_clip: float,
               on_step: Callable[[int], None] | None) -> tuple[torch.Tensor, int] | None:
    """One optimisation step; returns the (detached) loss and 1 when it was recomputed in fp32, or None when the
    loss was NaN/Inf and the step skipped (the schedule still advances)."""
    images = normalize(precision.to_input(batch["image"]))
    target = batch["mask"].to(precision.device, non_blocking=True)
    with precision.autocast():
        output = model(images)
    loss = loss_fn(output, target)
    fallback = 0
    if precision.enabled and not torch.isfinite(loss):
        # bf16/fp16 overflow: redo this step in fp32 before calling it a bad step.
        fallback = 1
        output = model(images)
        loss = loss_fn(output, target)
    # One host sync per step: on CPU it costs nothing, and it is what lets a NaN step be skipped before it
    # poisons the weights (the GradScaler-style alternative still needs a sync to decide).
    if not torch.isfinite(loss):
        optimizer.zero_grad(set_to_none=True)
        if is_main():
            print(f"warning: non-finite loss at epoch {epoch} step {step}: step skipped", flush=True)
        scheduler.step()
        return None
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    if on_step is not None:
        on_step(step)
    return loss.detach(), fallback
