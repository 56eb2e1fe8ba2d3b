"""Which path a run's training batches take (``loader=``): the CPU DataLoader, or data held on the device."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..config import Config
from ..data.batch_augment import BatchAugment
from ..data.dataset import dtype_scale
from ..data.device_data import DeviceData, DeviceLoader, LoaderChoice, MemoryProbe, choose_loader, decoded_bytes
from ..data.transforms import parse_augment


def square_outputs(sizes: list[tuple[int, int]], crop: int, pad_to: int) -> bool:
    """True when every training sample comes out square: cropped (crop is square; windows are cut to it and
    padded back), or square once padded to ``pad_to``."""
    return crop > 0 or all(max(h, pad_to) == max(w, pad_to) for h, w in sizes)


def train_sizes(ds) -> list[tuple[int, int]]:
    """(height, width) of every training image (the RAM cache, else the file headers)."""
    from .training_plan import _sizes

    return [tuple(int(v) for v in size) for size in _sizes(ds)]


def device_training(cfg: Config, train_ds, device: torch.device, memory_probe: MemoryProbe | None = None
                    ) -> tuple[LoaderChoice, DeviceData | None, BatchAugment | None]:
    """The run's data path; on the device path also the training data on ``device`` and the batched augmentation.

    Image sizes (file headers when not cached) are read only when the choice needs them.
    """
    names = parse_augment(cfg.augment)
    if cfg.loader == "cpu" or (cfg.loader == "auto" and device.type != "cuda"):
        return choose_loader(cfg.loader, device, names, 0), None, None
    sizes = train_sizes(train_ds)
    cached = train_ds.cached_arrays()
    itemsize = 1 if cached is None else int(np.dtype(cached[0][0].dtype).itemsize)
    nbytes = decoded_bytes(sizes, train_ds.in_channels, 1 if itemsize == 1 else 4)
    choice = choose_loader(cfg.loader, device, names, nbytes, square_outputs(sizes, cfg.crop, cfg.pad_to),
                           memory_probe)
    if not choice.on_device:
        return choice, None, None
    data = DeviceData.from_dataset(train_ds, device)
    augment = BatchAugment(names, cfg.crop, cfg.pad_to, cfg.pad_mode, train_ds.codec.ignore_index, data.channels,
                           dtype_scale(data.source_dtype))
    return choice, data, augment


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The batched augmentation's seed for an epoch on a rank: fixed by (seed, epoch, rank), as the CPU path is
    by reseeding at every epoch start, so a resumed run draws the same batches."""
    return ((seed + epoch) * 1_000_003 + rank) % 2**63


def on_device(run: Any, loader, epoch: int):
    """``loader`` itself on the CPU path; on the device path its DeviceLoader twin (same batches of keys)."""
    if getattr(run, "device_data", None) is None:
        return loader
    return DeviceLoader.like(loader, run.device_data, run.batch_augment, epoch_seed(run.cfg.seed, epoch, run.rank))
