"""Optimizers and per-step learning-rate schedules with linear warmup."""
from __future__ import annotations

import math

import torch

from ..config import Config


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW/Adam/SGD; no weight decay on norms and biases (the usual, better-generalising choice)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: Config) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based)."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total_steps - warmup)
    if cfg.scheduler == "cosine":
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    if cfg.scheduler == "poly":
        return max(0.0, 1 - t) ** 0.9
    if cfg.scheduler == "step":
        return cfg.gamma ** ((step // steps_per_epoch) // max(1, cfg.step_size))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimisation step."""
    total = cfg.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, steps_per_epoch, cfg))
