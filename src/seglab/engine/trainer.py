"""``seglab train``: data plan -> loaders -> model -> epochs of train/validate -> checkpoints and a summary."""
from __future__ import annotations

import functools
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from ..config import Config, save_config
from ..data.dataset import SegmentationDataset, channel_stats, dtype_scale, load_sample_image, pad_collate
from ..data.plan import DataPlan, plan_data
from ..data.sampling import WeightedEpochSampler, bin_shares, coverage_weights
from ..data.splitcmd import foreground_coverage
from ..data.transforms import build_train_transform, tta_unseen_in_training
from ..errors import ConfigError
from ..losses import build_loss
from ..models import create_model
from ..runtime.checkpoint import load_checkpoint, save_checkpoint
from ..runtime.cpu_ranks import available_cores, check_cpu_ranks, launch_cpu_ranks, wants_cpu_ranks
from ..runtime.distributed import barrier, cleanup, init_distributed, is_main
from ..runtime.normalize import Normalizer
from .loop import NonFiniteLoss, StopFlag, evaluate, train_one_epoch
from .optim import build_optimizer, build_scheduler, set_total_epochs
from ..runtime.precision import resolve_precision
from ..runtime.run_dir import new_run_dir, resume_run_dir, write_json

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
            **plan.views_meta(),  # views, view_channels, view_dirs, pair_by: how to read sources for this model
            "mean": mean, "std": std, "scale": scale, "pad_to": cfg.pad_to, "pad_mode": cfg.pad_mode,
            "threshold": cfg.threshold, "min_area": cfg.min_area, "model": cfg.model, "encoder": cfg.encoder}


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


def make_loader(ds, cfg: Config, train: bool, workers: int, world: int, epoch_seed: int = 0,
                weights: np.ndarray | None = None) -> DataLoader:
    """A DataLoader: shuffled (seeded per epoch) for training, sequential for evaluation; distributed-aware.

    ``weights`` (training only): draw images with these probabilities instead of shuffling (``balance=``).
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
    batch = cfg.batch // world if cfg.cpu_procs > 1 else cfg.batch  # cpu_procs: batch is the global batch
    batch = batch if train else max(batch, min(4 * batch, 64))  # eval has no gradients: bigger batches
    return DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate,
                      drop_last=train and len(ds) > cfg.batch * max(1, world), pin_memory=torch.cuda.is_available(),
                      worker_init_fn=_seed_worker, persistent_workers=False)


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
    pairs = train_ds.cached_arrays() or [train_ds.load_pair(s) for s in train_ds.samples[:: max(1, len(train_ds) // 64)]]
    for _, m in pairs:
        if m is not None:
            v = m[m < plan.codec.num_classes].astype(np.int64)
            counts += np.bincount(v.ravel(), minlength=plan.codec.num_classes)[: plan.codec.num_classes]
    return [float(w) for w in class_weights_from_counts(counts)]


def train(cfg: Config, overrides: dict[str, Any] | None = None) -> Path:
    """Train one model (or every fold when ``folds > 1``); returns the run folder."""
    if cfg.folds > 1:
        from .kfold import train_folds

        return train_folds(cfg, overrides or {})
    return train_single(cfg, overrides or {})


def train_single(cfg: Config, overrides: dict[str, Any], plan: DataPlan | None = None,
                 run_dir: Path | None = None) -> Path:
    """The full training of one model into one run folder."""
    if wants_cpu_ranks(cfg):
        check_cpu_ranks(cfg)
        run_dir = resume_run_dir(cfg, overrides)[0] if cfg.resume else (run_dir or new_run_dir(cfg))
        launch_cpu_ranks(train_single, cfg, overrides, None if cfg.resume else run_dir, plan)
        return run_dir
    rank, _, world = init_distributed()
    resume_state = None
    if cfg.resume:
        run_dir, cfg = resume_run_dir(cfg, overrides)
        resume_state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        log(f"resuming {run_dir} from epoch {resume_state['epoch'] + 1}")
    elif run_dir is None:
        run_dir = new_run_dir(cfg) if is_main() else None
        if world > 1:  # every rank must write into the folder rank 0 created
            holder = [str(run_dir) if run_dir else None]
            torch.distributed.broadcast_object_list(holder, src=0)
            run_dir = Path(holder[0])
    else:  # a given folder (a k-fold run's foldK)
        run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed, cfg.deterministic)
    plan = plan or plan_data(cfg)
    for note in plan.notes:
        log(f"note: {note}")
    precision = resolve_precision(cfg.precision, cfg.device)
    cache = cfg.cache == "ram" or (cfg.cache == "auto" and _fits_in_ram(plan, cfg.cache_gb))
    workers = cfg.workers if cfg.workers >= 0 else auto_workers(cache)
    transform = build_train_transform(cfg.augment, cfg.crop, cfg.pad_to, cfg.pad_mode, plan.codec.ignore_index,
                                      plan.in_channels, seed=cfg.seed)
    common = dict(codec=plan.codec, in_channels=plan.in_channels, pad_mode=cfg.pad_mode, rle=plan.rle,
                  on_error=cfg.on_error, view_channels=plan.view_channels)
    train_ds = SegmentationDataset(plan.splits["train"], transform=transform, cache=cache, **common)
    val_ds = SegmentationDataset(plan.splits["val"], pad_to=cfg.pad_to, cache=cache, **common) \
        if plan.splits["val"] else None
    scale = dtype_scale(train_ds[0]["image"].numpy().dtype)
    mean, std = (resume_state["meta"]["mean"], resume_state["meta"]["std"]) if resume_state else \
        normalisation(cfg, plan, train_ds)
    meta = build_meta(cfg, plan, mean, std, scale)
    num_classes = plan.codec.num_classes
    if is_main():
        save_config(cfg, run_dir / "config.yaml")
        write_json(run_dir / "data.json", {**meta, "splits": {k: len(v) for k, v in plan.splits.items()},
                                           "format": plan.source.format, "root": str(plan.source.root)})
    model = create_model(cfg.model, **model_kwargs(cfg, plan.in_channels, num_classes))
    spec = dict(model.seglab_spec)
    if resume_state:  # with ema, "model" holds the averaged weights and "train_model" the optimised ones
        model.load_state_dict(resume_state.get("train_model", resume_state["model"]))
    if world > 1 and cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = precision.prepare_model(model)
    ema = build_ema(model, cfg.ema, resume_state)
    train_model = model
    if world > 1:
        ids = [precision.device.index] if precision.device.type == "cuda" else None
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        train_model = torch.compile(train_model)
    normalize = Normalizer(mean, std, scale).to(precision.device)
    loss_spec = cfg.loss if cfg.loss != "auto" else ("bce" if num_classes == 2 else "ce")
    loss_fn = build_loss(loss_spec, num_classes=head_channels(num_classes), ignore_index=plan.codec.ignore_index,
                         class_weights=class_weight_values(cfg, plan, train_ds),
                         aux_weight=cfg.aux_weight, cls_weight=cfg.cls_weight)
    loss_fn = loss_fn.to(precision.device)
    weights = sampling_weights(cfg, train_ds)
    train_loader = make_loader(train_ds, cfg, True, workers, world, weights=weights)
    steps_per_epoch = len(train_loader)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    metric = cfg.metric if cfg.metric != "auto" else ("fg_iou" if num_classes == 2 else "miou")
    start_epoch, best, best_epoch, stale, train_time, images_done = 0, -math.inf, -1, 0, 0.0, 0
    eval_model = ema.module if ema is not None else model  # what is validated and saved as "model"
    wall_time, val_time, total_epochs = 0.0, 0.0, cfg.epochs  # wall_time counts validation: it spends the budget
    if resume_state:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        start_epoch = resume_state["epoch"] + 1
        best, best_epoch = resume_state["best"], resume_state["best_epoch"]
        stale, train_time, images_done = resume_state["stale"], resume_state["train_time"], resume_state["images"]
        wall_time = resume_state.get("wall_time", train_time)
        # A time-limited run keeps the length it was fitted to; otherwise ``epochs=`` given at resume wins.
        total_epochs = min(cfg.epochs, resume_state.get("total_epochs", cfg.epochs)) if cfg.time_limit else cfg.epochs
        set_total_epochs(scheduler, total_epochs)
    from .loggers import build_loggers

    loggers = build_loggers(run_dir, cfg.logger.split(","), start_epoch=start_epoch) if is_main() else None
    log(f"run folder: {run_dir}\ndata: {plan.source.format} at {plan.source.root}: "
        f"{len(train_ds)} train / {len(val_ds) if val_ds else 0} val images, {num_classes} classes "
        f"{plan.class_names}, {plan.in_channels} channel(s)\nmodel: {cfg.model} "
        f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params), precision "
        f"{precision.describe()}, {workers} workers, {steps_per_epoch} steps/epoch")
    if val_ds and cfg.tta != "none":  # per-epoch validation is a monitor; TTA would multiply its cost
        log(f"note: per-epoch validation scores without TTA; tta={cfg.tta} applies in seglab eval and predict")
    if unseen := tta_unseen_in_training(cfg.tta, cfg.augment):
        log(f"note: tta={cfg.tta} adds {' and '.join(unseen)} views that augment={cfg.augment} never applies; "
            "eval and predict with it will likely score worse")

    def state(epoch: int) -> dict[str, Any]:
        extra = {"train_model": model.state_dict()} if ema is not None else {}
        return {**extra, "model": eval_model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch, "best": best, "best_epoch": best_epoch,
                "stale": stale, "train_time": train_time, "images": images_done, "wall_time": wall_time,
                "total_epochs": total_epochs, "model_spec": spec, "meta": meta, "config": cfg.to_dict(),
                "metric": metric}

    epoch = start_epoch - 1
    if is_main() and not resume_state:  # an interrupt in the first epoch still leaves something to resume from
        save_checkpoint(state(-1), run_dir / "checkpoints" / "last.pt")
    with StopFlag() as stop:
        epoch = start_epoch
        while epoch < total_epochs:
            # Reseed at every epoch start so a resumed run draws exactly the batches and augmentations it would have.
            seed_everything(cfg.seed + epoch, cfg.deterministic)
            transform.set_random_seed(cfg.seed + epoch)
            train_loader = make_loader(train_ds, cfg, True, workers, world, epoch_seed=cfg.seed + epoch,
                                       weights=weights)
            if world > 1:
                if isinstance(train_loader.sampler, DistributedSampler):
                    train_loader.sampler.set_epoch(epoch)
                if epoch == start_epoch:  # which images each rank trains on: for checking and debugging shards
                    (run_dir / "ranks").mkdir(exist_ok=True)
                    (run_dir / "ranks" / f"rank{rank}.txt").write_text(
                        "".join(f"{train_ds.samples[i].id}\n" for i in train_loader.sampler))
            _set_encoder_frozen(model, epoch < cfg.freeze_epochs)
            t0 = time.perf_counter()
            try:
                on_step = None
                if ema is not None:  # timm's EMA with warm-up: the decay ramps towards cfg.ema over the first steps
                    first = epoch * steps_per_epoch
                    on_step = lambda step: ema.update(model, step=first + step + 1)  # noqa: E731
                tr = train_one_epoch(train_model, train_loader, loss_fn, optimizer, scheduler, precision, normalize,
                                     epoch=epoch, grad_clip=cfg.grad_clip, stop=stop, on_step=on_step)
            except NonFiniteLoss as e:
                log(f"error: {e}")
                raise
            epoch_time = time.perf_counter() - t0
            if tr["interrupted"]:
                log(f"interrupted during epoch {epoch}: the last complete epoch ({epoch - 1}) is saved in "
                    f"{run_dir / 'checkpoints' / 'last.pt'}; continue with: seglab train resume={run_dir}")
                break
            train_time += epoch_time
            images_done += tr["images"]
            row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": tr["loss"],
                   "epoch_time": round(epoch_time, 3), "train_images_per_s": round(tr["images"] / epoch_time, 2)}
            wall_time += epoch_time
            if cfg.time_limit:  # refit before validating, so the budget's last epoch is always validated
                timed = epoch + 1 - start_epoch  # epochs timed in this process; validation cost amortised over them
                expected_val = val_time / (timed - 1) if timed > 1 else 0.0
                total_epochs = fit_epochs_to_budget(cfg, timed, wall_time + expected_val, total_epochs, scheduler,
                                                    resume_state, epoch)
            last = epoch == total_epochs - 1 or bool(cfg.time_limit and wall_time >= cfg.time_limit * 60)
            if val_ds is not None and (epoch + 1) % cfg.val_every == 0 or last:
                vm = validate(eval_model, val_ds or train_ds, cfg, precision, normalize, loss_fn, world)
                row.update({f"val_{k}": v for k, v in vm.items() if isinstance(v, float)})
                if metric not in vm:
                    raise ConfigError(f"metric={metric!r} is not computed; choose from "
                                      f"{sorted(k for k, v in vm.items() if isinstance(v, float))}")
                value = vm[metric]
                if value > best:
                    best, best_epoch, stale = value, epoch, 0
                    if is_main():
                        save_checkpoint(state(epoch), run_dir / "checkpoints" / "best.pt")
                else:
                    stale += 1
            epoch_val_time = time.perf_counter() - t0 - epoch_time
            val_time += epoch_val_time
            wall_time += epoch_val_time  # validation spends the budget too
            if is_main():
                save_checkpoint(state(epoch), run_dir / "checkpoints" / "last.pt")
                loggers.log(epoch, row)
                shown = " ".join(f"{k}={v:.4f}" for k, v in row.items() if k.startswith("val_") and k in
                                 ("val_loss", "val_pixel_acc", "val_miou", "val_fg_iou", "val_tgs"))
                log(f"epoch {epoch + 1}/{total_epochs} train_loss={tr['loss']:.4f} {shown} "
                    f"({epoch_time:.1f}s, {row['train_images_per_s']:.1f} img/s)")
            if cfg.patience and stale >= cfg.patience:
                log(f"early stopping: {metric} has not improved for {cfg.patience} epochs (best {best:.4f} at epoch "
                    f"{best_epoch + 1})")
                break
            if cfg.time_limit and wall_time >= cfg.time_limit * 60:
                log(f"time limit of {cfg.time_limit} min reached after epoch {epoch + 1}")
                break
            if stop.raised:
                log(f"stopped after epoch {epoch + 1}; continue with: seglab train resume={run_dir}")
                break
            epoch += 1
        else:
            epoch -= 1  # the loop ran to completion: ``epoch`` is the last one trained
    barrier()
    if is_main():
        loggers.close()
        summary = {"model": cfg.model, "encoder": cfg.encoder, "params": sum(p.numel() for p in model.parameters()),
                   "gflops": _gflops(model, plan.in_channels, val_ds or train_ds), "train_time_s": round(train_time, 2),
                   "train_images_per_s": round(images_done / max(train_time, 1e-9), 2), "epochs_done": epoch + 1,
                   "best_epoch": best_epoch + 1, "best_metric": metric, "best_value": best,
                   "precision": str(precision.dtype or "fp32"), "device": str(precision.device), "world_size": world}
        write_json(run_dir / "summary.json", summary)
        log(f"done: best {metric}={best:.4f} at epoch {best_epoch + 1}; weights in {run_dir / 'checkpoints'}")
    cleanup()
    return run_dir


def fit_epochs_to_budget(cfg: Config, epochs_timed: int, wall_time: float, total_epochs: int, scheduler,
                         resume_state, epoch: int) -> int:
    """Epochs that fit ``time_limit`` at the mean epoch time so far; the LR schedule is refitted to end there.

    As Ultralytics' ``time=``: a time budget should end with a fully annealed schedule, not be cut mid-way.
    """
    done = epoch + 1
    timed_wall = wall_time - (resume_state.get("wall_time", 0.0) if resume_state else 0.0)
    per_epoch = timed_wall / max(1, epochs_timed)
    fit = done + int((cfg.time_limit * 60 - wall_time) / max(per_epoch, 1e-9))
    new_total = max(done, min(cfg.epochs, fit))
    if new_total != total_epochs:
        set_total_epochs(scheduler, new_total)
    return new_total


def validate(model, val_ds, cfg: Config, precision, normalize, loss_fn, world: int) -> dict:
    """Validation metrics and loss of the current model (eval mode, inference, bigger batches)."""
    model.eval()
    loader = make_loader(val_ds, cfg, False, 0, world)

    def logits_fn(batch):
        with precision.autocast():
            return model(normalize(precision.to_input(batch["image"]))).float()

    metrics = evaluate(None, loader, val_ds.codec.num_classes, val_ds.codec.ignore_index, precision.device,
                       threshold=cfg.threshold, loss_fn=loss_fn, logits_fn=logits_fn,
                       per_image=val_ds.codec.binary)
    model.train()
    return metrics


def _set_encoder_frozen(model, frozen: bool) -> None:
    """Freeze/unfreeze ``model.encoder`` when the model has one (freeze_epochs)."""
    if getattr(model, "encoder", None) is None:
        return
    from ..models.encoders import freeze_encoder

    freeze_encoder(model, frozen)


def _fits_in_ram(plan: DataPlan, budget_gb: float) -> bool:
    """Estimate decoded size from the first image and decide whether to cache the dataset."""
    from ..data.io import image_size

    from ..errors import DataError

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


def _gflops(model, in_channels: int, ds) -> float | None:
    """GFLOPs of one forward pass at the dataset's first image size (None when it cannot be counted)."""
    try:
        from ..models.summary import model_summary

        h, w = ds[0]["image"].shape[-2:]
        return model_summary(model, (in_channels, int(h), int(w)))["gflops"]
    except Exception:  # a report nicety: never fail a finished training over it
        return None
