"""The pieces a training run is built from: loaders and samplers, normalisation, model arguments, loss weights, EMA."""
from __future__ import annotations

import functools
import os
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from ..config import Config
from ..data.dataset import SegmentationDataset, channel_stats, load_sample_image, pad_collate
from ..data.plan import DataPlan
from ..data.sampling import WeightedEpochSampler, bin_shares, coverage_weights
from ..data.splitcmd import foreground_coverage
from ..errors import ConfigError, DataError
from ..runtime.cpu_ranks import available_cores
from ..runtime.distributed import is_main

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def log(msg: str) -> None:
    """Print on rank 0 only."""
    if is_main():
        print(msg, flush=True)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif torch.cuda.is_available():  # training batches have one shape: cuDNN's fastest algorithm is found once
        torch.backends.cudnn.benchmark = True


def head_channels(num_classes: int) -> int:
    """Model output channels: one logit for binary tasks, one per class otherwise."""
    return 1 if num_classes == 2 else num_classes


def auto_workers(cached: bool) -> int:
    """DataLoader workers from the machine: keep one core for the model; none when decoding is already done."""
    cores = available_cores()
    if cores <= 2:
        return 0 if cached else 1
    return min(8, cores - 1)


def model_kwargs(cfg: Config, in_channels: int, num_classes: int) -> dict[str, Any]:
    """Builder arguments for ``create_model`` from the config."""
    kw: dict[str, Any] = {"num_classes": head_channels(num_classes), "in_channels": in_channels}
    if cfg.encoder:
        kw["encoder"] = cfg.encoder
    if cfg.encoder_weights:  # models without an encoder refuse it with a clear message
        kw["encoder_weights"] = cfg.encoder_weights
    if cfg.scale != 1:
        kw["scale"] = cfg.scale
    kw.update(cfg.model_args)
    return kw


def normalisation(cfg: Config, plan: DataPlan, train_ds: SegmentationDataset) -> tuple[list[float], list[float]]:
    """mean/std: the config's, ImageNet's for pretrained RGB encoders, else measured on (a sample of) the train set."""
    if cfg.mean and cfg.std:
        return list(cfg.mean), list(cfg.std)
    if cfg.encoder_weights and plan.in_channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    cached = train_ds.cached_arrays()
    if cached is not None:
        images = [img for img, _ in cached[:: max(1, len(cached) // 256)]]
    else:
        samples = train_ds.samples[:: max(1, len(train_ds.samples) // 32)]
        images = [load_sample_image(s, plan.views_meta()["view_channels"]) for s in samples]
    return channel_stats(images)


def build_meta(cfg: Config, plan: DataPlan, mean: list[float], std: list[float], scale: float) -> dict[str, Any]:
    """Everything needed to decode data and use the model later, stored in each checkpoint."""
    return {"codec": plan.codec.to_dict(), "class_names": plan.class_names, "in_channels": plan.in_channels,
            "class_colors": plan.class_colors,  # [r, g, b] per class index: the colours predictions are painted in
            **plan.views_meta(),  # views, view_channels, view_dirs, pair_by: how to read sources for this model
            "mean": mean, "std": std, "scale": scale, "pad_to": cfg.pad_to, "pad_mode": cfg.pad_mode,
            "threshold": cfg.threshold, "min_area": cfg.min_area, "model": cfg.model, "encoder": cfg.encoder,
            "val_tile": cfg.val_tile}  # eval scores images larger than this by sliding windows (0: whole images)


class ShardSampler(torch.utils.data.Sampler):
    """Rank r evaluates items r, r+world, ...: every item exactly once over all ranks.

    DistributedSampler pads with repeated items to even out the shards, which would count some
    images twice in the all-reduced confusion matrix; evaluation must not.
    """

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def sampling_weights(cfg: Config, train_ds: SegmentationDataset) -> np.ndarray | None:
    """Per-image draw probabilities for ``balance > 0`` (coverage-balanced sampling), else None (shuffling)."""
    if cfg.balance <= 0:
        return None
    coverage = foreground_coverage(train_ds)
    weights = coverage_weights(coverage, cfg.balance)
    shares = ", ".join(f"{name} {img:.0%}->{draw:.0%}" for name, (img, draw) in bin_shares(coverage, weights).items())
    log(f"balance={cfg.balance:g}: share of images -> share of draws by foreground coverage: {shares}")
    return weights


def build_ema(model: torch.nn.Module, decay: float, resume_state: dict | None):
    """timm's ModelEmaV3 of ``model`` for ``ema > 0`` (restored from a resumed checkpoint), else None."""
    if decay <= 0:
        return None
    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(model, decay=decay, use_warmup=True)
    if resume_state:
        ema.module.load_state_dict(resume_state["model"])
    return ema


def rank_batch(cfg: Config, world: int) -> int:
    """Training samples per step in this process: ``batch`` (torchrun), or its share of it with ``cpu_procs``."""
    return cfg.batch // world if cfg.cpu_procs > 1 else cfg.batch


def make_loader(ds, cfg: Config, train: bool, workers: int, world: int, epoch_seed: int = 0,
                weights: np.ndarray | None = None, batch: int = 0) -> DataLoader:
    """A DataLoader: shuffled (seeded per epoch) for training, sequential for evaluation; distributed-aware.

    ``weights`` (training only): draw images with these probabilities instead of shuffling (``balance=``).
    ``batch`` > 0 sets the batch size (validation by tiles takes one whole image at a time).
    """
    collate = functools.partial(pad_collate, ignore_index=ds.codec.ignore_index)
    sampler = None
    if train and weights is not None:
        rank = torch.distributed.get_rank() if world > 1 else 0
        sampler = WeightedEpochSampler(weights, epoch_seed, rank, world)
    elif world > 1 and train:
        sampler = DistributedSampler(ds, shuffle=True, seed=cfg.seed, drop_last=False)
    elif world > 1:
        sampler = ShardSampler(len(ds), torch.distributed.get_rank(), world)
    elif train:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(epoch_seed))
    size = rank_batch(cfg, world)  # cpu_procs: batch is the global batch
    size = batch or (size if train else max(size, min(4 * size, 64)))  # eval has no gradients: bigger batches
    return DataLoader(ds, batch_size=size, sampler=sampler, num_workers=workers, collate_fn=collate,
                      drop_last=train and len(ds) > cfg.batch * max(1, world), pin_memory=torch.cuda.is_available(),
                      worker_init_fn=_seed_worker, persistent_workers=False, **cuda_prefetch(workers))


def window_loader(ds, sampler, cfg: Config, workers: int, world: int, epoch: int) -> DataLoader:
    """One window epoch: the sampler's (seed, epoch) draw, this rank's share, in batches of this rank's size.

    A last batch smaller than the others is dropped (as one-sample-per-image epochs do), so every step has the
    same number of windows; the plan draws a multiple of the batch, so none is lost.
    """
    sampler.set_epoch(epoch)
    size = rank_batch(cfg, world)
    return DataLoader(ds, batch_size=size, sampler=sampler, num_workers=workers,
                      collate_fn=functools.partial(pad_collate, ignore_index=ds.codec.ignore_index),
                      drop_last=len(sampler) > size, pin_memory=torch.cuda.is_available(),
                      worker_init_fn=_seed_worker, persistent_workers=False, **cuda_prefetch(workers))


def cuda_prefetch(workers: int) -> dict[str, int]:
    """DataLoader arguments for the CPU path on CUDA: 4 batches in flight per worker, so the GPU does not wait on
    a slow one (torch's default of 2 elsewhere). Workers are not made persistent: every epoch builds a new, reseeded
    loader, which they would not outlive."""
    return {"prefetch_factor": 4} if workers > 0 and torch.cuda.is_available() else {}


def _seed_worker(worker_id: int) -> None:
    """Give each worker its own reproducible NumPy/random/albumentations stream."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info else None
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def class_weight_values(cfg: Config, plan: DataPlan, train_ds: SegmentationDataset) -> list[float] | None:
    """class_weights: explicit list, or 'auto' from train-set pixel frequencies."""
    if not cfg.class_weights:
        return None
    if isinstance(cfg.class_weights, (list, tuple)):
        if len(cfg.class_weights) != plan.codec.num_classes:
            raise ConfigError(f"class_weights has {len(cfg.class_weights)} values for {plan.codec.num_classes} classes")
        return [float(w) for w in cfg.class_weights]
    if cfg.class_weights != "auto":
        raise ConfigError(f"class_weights must be empty, 'auto' or a list; got {cfg.class_weights!r}")
    from ..losses import class_weights_from_counts

    counts = np.zeros(plan.codec.num_classes, dtype=np.int64)
    every = max(1, len(train_ds) // 64)
    pairs = train_ds.cached_arrays() or [train_ds.load_pair(s) for s in train_ds.samples[::every]]
    for _, m in pairs:
        if m is not None:
            v = m[m < plan.codec.num_classes].astype(np.int64)
            counts += np.bincount(v.ravel(), minlength=plan.codec.num_classes)[: plan.codec.num_classes]
    return [float(w) for w in class_weights_from_counts(counts)]


def fits_in_ram(plan: DataPlan, budget_gb: float) -> bool:
    """Estimate decoded size from the first image and decide whether to cache the dataset."""
    from ..data.io import image_size

    samples = plan.splits["train"] + plan.splits["val"]
    for sample in samples[:50]:  # the first readable image stands for all (bad ones are skipped or reported later)
        try:
            h, w = image_size(sample.image)
            break
        except DataError:
            continue
    else:
        return False
    per_image = h * w * (plan.in_channels * 2 + 1)
    return len(samples) * per_image < budget_gb * 1e9


def set_encoder_frozen(model, frozen: bool) -> None:
    """Freeze/unfreeze ``model.encoder`` when the model has one (freeze_epochs)."""
    if getattr(model, "encoder", None) is None:
        return
    from ..models.encoders import freeze_encoder

    freeze_encoder(model, frozen)


def gflops(model, in_channels: int, ds) -> float | None:
    """GFLOPs of one forward pass at the dataset's first image size (None when it cannot be counted)."""
    try:
        from ..models.summary import model_summary

        h, w = ds[0]["image"].shape[-2:]
        return model_summary(model, (in_channels, int(h), int(w)))["gflops"]
    except Exception:  # a report nicety: never fail a finished training over it
        return None
