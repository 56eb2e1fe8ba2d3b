"""Optimizers and per-step learning-rate schedules with linear warmup."""
from __future__ import annotations

import math

import torch

from ..config import Config
from ..errors import ConfigError


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW/Adam/SGD; no weight decay on norms and biases (the usual, better-generalising choice)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return optimizer_for_groups(groups, cfg.optimizer, cfg.lr, cfg.momentum)


def optimizer_for_groups(groups: list[dict], name: str, lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD (Nesterov when it has momentum) over parameter groups, fused where the weights allow."""
    fused = _fused_ok([p for group in groups for p in group["params"]])
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, fused=fused)
    raise ConfigError(f"optimizer must be adamw, adam or sgd; got {name!r}")


def _fused_ok(params: list[torch.Tensor]) -> bool | None:
    """Fused kernels (one pass over the weights per step instead of several) for fp32 weights on CPU or CUDA."""
    ok = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    return True if ok else None


class WarmupSchedule:
    """Learning-rate multiplier per step: linear warmup, then cosine / poly / step / constant.

    A callable object (not a lambda) so LambdaLR saves its plain-number state in checkpoints: a resumed run keeps
    the total it was fitted to, and ``set_total_epochs`` can refit the schedule to a time budget mid-run.
    """

    def __init__(self, cfg: Config, steps_per_epoch: int, epochs: int) -> None:
        self.kind = cfg.scheduler
        self.steps_per_epoch = steps_per_epoch
        self.warmup = int(cfg.warmup_epochs * steps_per_epoch)
        self.total_steps = epochs * steps_per_epoch
        self.gamma = cfg.gamma
        self.step_size = max(1, cfg.step_size)

    def __call__(self, step: int) -> float:
        """Multiplier of the base learning rate at ``step`` (0-based)."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.total_steps - self.warmup)
        if self.kind == "cosine":
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if self.kind == "poly":
            return max(0.0, 1 - t) ** 0.9
        if self.kind == "step":
            return self.gamma ** ((step // self.steps_per_epoch) // self.step_size)
        return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config, steps_per_epoch: int,
                    epochs: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimisation step, spanning ``epochs`` (default ``cfg.epochs``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupSchedule(cfg, steps_per_epoch, epochs or cfg.epochs))


def set_total_epochs(scheduler: torch.optim.lr_scheduler.LambdaLR, epochs: int, last_epoch_steps: int = 0) -> None:
    """Stretch or shrink the schedule so it ends after ``epochs`` (used to fit a ``time_limit``); with
    ``last_epoch_steps`` the last of them is that many steps long."""
    for fn in scheduler.lr_lambdas:
        fn.total_steps = epochs * fn.steps_per_epoch
        if last_epoch_steps and epochs > 0:
            fn.total_steps += last_epoch_steps - fn.steps_per_epoch


def epochs_in_budget(done: float, per_epoch: float, seconds_left: float, max_epochs: int, slack: float = 0.0) -> int:
    """Epochs that fit a time budget: those begun, plus as many of ``per_epoch`` seconds as ``seconds_left`` holds.

    ``done`` may be a fraction (a pace measured inside the first epoch); the answer is at least the epochs begun
    and at most ``max_epochs``. ``slack`` (a fraction of an epoch) forgives timing noise.
    """
    fit = int(done + seconds_left / max(per_epoch, 1e-9) + slack)
    return max(math.ceil(done), min(max_epochs, fit))
