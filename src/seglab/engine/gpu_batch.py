"""The training plan's batch on a GPU: re-plan with the memory probe of runtime/autobatch.py, then scale the lr.

A fresh run plans from its data before the model exists (build_datasets); on a GPU, once the model is built and
when no source fixed the batch (unset, or ``batch=auto``), ``plan_gpu_batch`` re-plans with the probe as the batch
rule, so everything that follows from the batch (steps and windows per epoch) follows from the probed one.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..config import Config, config_sources, with_sources
from ..runtime.autobatch import (AutoBatch, CudaProbe, MemoryProbe, choose_batch, optimizer_state_bytes,
                                 training_step_probe, with_lr)
from .training_plan import TrainingPlan, plan_training

ProbeFactory = Callable[[tuple[int, int]], MemoryProbe]  # (height, width) of a sample -> a probe of that size


def wants_gpu_batch(tplan: TrainingPlan | None, device: torch.device, resumed: bool) -> bool:
    """True for a fresh run on a CUDA device whose batch the plan decides (a resumed run keeps its batch)."""
    return device.type == "cuda" and not resumed and tplan is not None and tplan.sources.get("batch") == "plan"


def plan_gpu_batch(cfg: Config, tplan: TrainingPlan, model: torch.nn.Module, loss_fn: Callable, precision,
                   in_channels: int, num_classes: int, world: int = 1,
                   probe_factory: ProbeFactory | None = None) -> tuple[Config, TrainingPlan, AutoBatch]:
    """The config and plan with the probed batch, the lr scaled for it and the warm-up; and the AutoBatch (its
    ``line()`` is the log line). ``probe_factory`` replaces the CUDA probe (tests)."""
    chosen: list[AutoBatch] = []

    def rule(shape: tuple[int, int], cpu_batch: int, images: int) -> tuple[int, str]:
        if probe_factory is not None:
            probe = probe_factory(shape)
        else:
            probe = CudaProbe(training_step_probe(model, loss_fn, precision, in_channels, shape, num_classes),
                              precision.device)
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}  # BatchNorm statistics the probe moves
        try:
            auto = choose_batch(probe, sample_px=shape[0] * shape[1], reference=cpu_batch, images=images,
                                extra_bytes=optimizer_state_bytes(model, cfg.optimizer, cfg.momentum))
        finally:
            model.load_state_dict(saved)
            model.zero_grad(set_to_none=True)
            if precision.device.type == "cuda":
                torch.cuda.empty_cache()
        if world > 1:  # every rank must train the same batch: the smallest GPU decides
            agreed = torch.tensor([auto.batch], device=precision.device)
            torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN)
            if int(agreed) != auto.batch:
                auto.batch, auto.limit = int(agreed), "the smallest GPU of the job"
        chosen.append(auto)
        return auto.batch, f"batch=auto on the GPU: {auto.limit}"

    new_plan = plan_training(tplan.fingerprint, cfg, gpu_batch=rule)
    cfg = new_plan.apply(cfg)
    auto = chosen[0]
    sources = config_sources(cfg)
    auto = with_lr(auto, cfg.lr, cfg.optimizer, cfg.warmup_epochs, lr_given=sources["lr"] == "command line",
                   warmup_given=sources["warmup_epochs"] == "command line")
    changed = {key: value for key, value in (("lr", auto.lr), ("warmup_epochs", auto.warmup_epochs))
               if value != getattr(cfg, key)}
    return (with_sources(cfg, changed, "plan") if changed else cfg), new_plan, auto

