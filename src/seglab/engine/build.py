"""``build_run``: from a config to everything one training run needs (folder, data, model, optimiser, loggers)."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, batch_or, save_config, with_sources
from ..data.dataset import SegmentationDataset, dtype_scale
from ..data.device_data import data_line
from ..data.io import image_size
from ..data.plan import DataPlan, plan_data
from ..data.transforms import build_train_transform, parse_augment, tta_unseen_in_training
from ..errors import ConfigError
from ..losses import LOSS_BUILDERS, auto_loss, build_loss, parse_loss_spec
from ..models import create_model, encoder_name, work_at_scale
from ..runtime.checkpoint import load_checkpoint
from ..runtime.distributed import all_reduce_sum, init_distributed, is_main
from ..runtime.normalize import Normalizer
from ..runtime.precision import Precision, resolve_precision
from ..runtime.run_dir import new_run_dir, resume_run_dir, write_json
from .components import (auto_workers, build_ema, build_meta, class_weight_values, fits_in_ram, head_channels, log,
                         make_loader, model_kwargs, normalisation, sampling_weights, seed_everything, window_loader)
from .data_path import device_training, on_device
from .gpu_batch import plan_gpu_batch, wants_gpu_batch
from .loggers import build_loggers, logger_names
from .optim import build_optimizer, build_scheduler, set_total_epochs
from .state import TrainState
from .training_plan import (MIN_BUDGET_STEPS, PLANNED, TrainingPlan, ValidationSchedule, plan_run, resized,
                            window_training)

# Steps timed (after one untimed warm-up step) to fit planned window epochs to a time budget: each costs a step of
# the budget (14 s for 8 windows of 512 px on two CPU cores), and one is enough for a rule of "about ten epochs".
TIMED_STEPS = 1


@dataclass
class Run:
    """Everything one training run is made of, built once by ``build_run``; the loop's counters are in TrainState."""

    cfg: Config
    plan: DataPlan
    run_dir: Path
    rank: int
    world: int
    resumed: bool
    precision: Precision
    workers: int
    transform: Any  # the training augmentation, reseeded at every epoch
    train_ds: SegmentationDataset
    val_ds: SegmentationDataset | None
    weights: np.ndarray | None  # per-image draw probabilities (``balance=``); None shuffles
    meta: dict[str, Any]
    spec: dict[str, Any]
    model: torch.nn.Module  # the optimised weights
    train_model: torch.nn.Module  # ``model`` as trained: wrapped in DDP and/or torch.compile
    eval_model: torch.nn.Module  # what is validated and saved as "model": the EMA when there is one
    ema: Any
    normalize: Normalizer
    loss_fn: torch.nn.Module
    loss_name: str  # the loss spec trained with (``loss=auto`` resolved)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_epoch: int
    metric: str
    train_set: Any = None  # what batches are drawn from: train_ds, or its windows (WindowDataset) with ``sampler``
    sampler: Any = None  # window epochs: the WindowSampler (seeded per epoch); None: one sample per image
    tplan: TrainingPlan | None = None  # the training plan (None: a resumed run from before plans)
    schedule: ValidationSchedule | None = None  # when to validate (val_every, val_share)
    loggers: Any = None  # rank 0 only
    loader: Any = None  # the LoaderChoice: CPU DataLoader or data on the device (``loader=``), and why
    device_data: Any = None  # the device path: the training set held on the device (DeviceData), else None
    batch_augment: Any = None  # the device path: the batched augmentation (BatchAugment)
    autobatch: str = ""  # on a GPU, the batch=auto line: the probed batch, why, and the lr for it


def build_run(cfg: Config, overrides: dict[str, Any], plan: DataPlan | None = None,
              run_dir: Path | None = None) -> tuple[Run, TrainState]:
    """The run and its starting counters: fresh, in a given folder (a k-fold run's foldK), or resumed."""
    began = time.perf_counter()
    rank, _, world = init_distributed()
    resume = None
    if cfg.resume:  # the run's own folder and config; a fresh run's folder is made once all below has worked
        run_dir, cfg, resume = resume_run(cfg, overrides)
    seed_everything(cfg.seed, cfg.deterministic)
    plan = plan or plan_data(cfg)
    for note in plan.notes:
        log(f"note: {note}")
    precision = resolve_precision(cfg.precision, cfg.device)
    cfg, tplan, transform, train_ds, val_ds, workers = build_datasets(cfg, plan, run_dir, resume is not None)
    scale = dtype_scale(train_ds[0]["image"].numpy().dtype)
    mean, std = (resume["meta"]["mean"], resume["meta"]["std"]) if resume else normalisation(cfg, plan, train_ds)
    meta = build_meta(cfg, plan, mean, std, scale)
    model, spec, train_model, ema = build_model(cfg, plan, precision, world, resume)
    num_classes = plan.codec.num_classes
    normalize = Normalizer(mean, std, scale).to(precision.device)
    loss_spec = cfg.loss if cfg.loss != "auto" else auto_loss(num_classes)
    loss_fn = build_loss(loss_spec, num_classes=head_channels(num_classes), ignore_index=plan.codec.ignore_index,
                         class_weights=class_weight_values(cfg, plan, train_ds),
                         aux_weight=cfg.aux_weight, cls_weight=cfg.cls_weight).to(precision.device)
    autobatch = ""
    if wants_gpu_batch(tplan, precision.device, resume is not None):  # the plan's batch rule on a GPU: the probe
        cfg, tplan, auto = plan_gpu_batch(cfg, tplan, model, loss_fn, precision, plan.in_channels, num_classes, world)
        autobatch = auto.line()
    train_set, sampler = window_training(tplan, train_ds, transform, seed=cfg.seed, rank=rank, world=world) \
        if tplan is not None and tplan.windows else (train_ds, None)
    weights = sampling_weights(cfg, train_ds) if sampler is None else None
    loader, device_data, batch_augment = device_training(cfg, train_ds, precision.device)
    if device_data is not None:
        workers = 0  # batches are gathered and augmented on the device: no DataLoader workers
    steps_per_epoch = len(window_loader(train_set, sampler, cfg, workers, world, 0) if sampler is not None
                          else make_loader(train_ds, cfg, True, workers, world, weights=weights))
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    metric = cfg.metric if cfg.metric != "auto" else ("fg_iou" if num_classes == 2 else "miou")
    if resume is None:  # config, model and data have been read and checked: only now does the run get a folder
        run_dir = open_run_dir(cfg, run_dir, world)
    run = Run(cfg=cfg, plan=plan, run_dir=run_dir, rank=rank, world=world, resumed=resume is not None,
              precision=precision, workers=workers, transform=transform, train_ds=train_ds, val_ds=val_ds,
              weights=weights, meta=meta, spec=spec, model=model, train_model=train_model,
              eval_model=ema.module if ema is not None else model, ema=ema, normalize=normalize, loss_fn=loss_fn,
              loss_name=loss_spec, optimizer=optimizer, scheduler=scheduler, steps_per_epoch=steps_per_epoch,
              metric=metric, train_set=train_set, sampler=sampler, tplan=tplan,
              loader=loader, device_data=device_data, batch_augment=batch_augment,
              schedule=ValidationSchedule(cfg.val_every, cfg.val_share, cfg.time_limit), autobatch=autobatch)
    timed = fit_plan_to_time(run) if resume is None else 0.0
    if is_main():
        save_run_files(run)
    state = start_state(run, resume)
    # reading the data, building the model and timing steps spent the budget too (time_limit is the command's wall
    # clock: 12 large TIFFs took a minute to read), but are not an epoch's pace
    setup = rank_mean(run, time.perf_counter() - began) if resume is None and cfg.time_limit else timed
    state.wall_time += setup
    state.resumed_wall += setup
    if setup - timed > 0.05 * cfg.time_limit * 60 > 0:
        log(f"time_limit: {setup - timed:.0f} s of it went to reading the data and building the model")
    run.loggers = build_loggers(run_dir, cfg.logger.split(","), start_epoch=state.start_epoch) if is_main() else None
    log_start(run)
    return run, state


def resume_run(cfg: Config, overrides: dict[str, Any]) -> tuple[Path, Config, dict[str, Any]]:
    """The run folder to resume, the config the run goes on with, and the checkpoint to resume from."""
    run_dir, cfg = resume_run_dir(cfg, overrides)
    resume = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    log(f"resuming {run_dir} from epoch {resume['epoch'] + 1}")
    return run_dir, cfg, resume


def open_run_dir(cfg: Config, run_dir: Path | None, world: int) -> Path:
    """A fresh run's folder, created now: a new one under project/, or the one given (a k-fold run's foldK, the
    folder ``cpu_procs`` ranks were handed). Called once config, model and data have been checked, so a start
    that fails leaves no folder behind."""
    if run_dir is None:
        run_dir = new_run_dir(cfg) if is_main() else None
        if world > 1:  # every rank must write into the folder rank 0 created
            holder = [str(run_dir) if run_dir else None]
            torch.distributed.broadcast_object_list(holder, src=0)
            run_dir = Path(holder[0])
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def preflight(cfg: Config) -> None:
    """Check what a run's config decides without its data, before any data is read or folder made: the model
    name (with the registry's near misses), its encoder and model_args, a local encoder_weights file, the loss
    spec, the augmentations and the loggers.

    The model is built on the meta device (no memory, no weights read) with stand-in channels and classes; the
    real build, once the data says those, stays the authority: only a ConfigError of the stand-in counts.
    """
    kwargs = model_kwargs(cfg, cfg.in_channels or 3, cfg.num_classes or 2)
    weights = kwargs.pop("encoder_weights", "")
    if weights and weights != "imagenet" and not Path(str(weights)).is_file():
        kwargs["encoder_weights"] = weights  # a missing file: the builder's own message says what it takes
    try:
        with torch.device("meta"):
            create_model(cfg.model, **kwargs)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - a builder that cannot run on the meta device; the real build checks it
        pass
    if cfg.loss != "auto":
        parse_loss_spec(cfg.loss, LOSS_BUILDERS)
    parse_augment(cfg.augment)
    logger_names(cfg.logger)


def build_datasets(cfg: Config, plan: DataPlan, run_dir: Path | None, resumed: bool
                   ) -> tuple[Config, TrainingPlan | None, Any, SegmentationDataset, SegmentationDataset | None, int]:
    """The config as planned from the training set, the training plan, the training augmentation, the train and
    validation datasets (cached in RAM when they fit) and the workers.

    Window training (``plan.windows``) leaves the augmentation out of ``train_ds``: the WindowDataset applies it
    to each window. Validation images are read after planning, with the planned ``pad_to``.
    """
    cache = cfg.cache == "ram" or (cfg.cache == "auto" and fits_in_ram(plan, cfg.cache_gb))
    workers = cfg.workers if cfg.workers >= 0 else auto_workers(cache)
    common = dict(codec=plan.codec, in_channels=plan.in_channels, pad_mode=cfg.pad_mode, rle=plan.rle,
                  on_error=cfg.on_error, view_channels=plan.view_channels)
    train_ds = SegmentationDataset(plan.splits["train"], cache=cache, split="train", **common)
    cfg, tplan = training_plan(cfg, train_ds, run_dir, resumed)
    transform = build_train_transform(cfg.augment, cfg.crop, cfg.pad_to, cfg.pad_mode, plan.codec.ignore_index,
                                      plan.in_channels, seed=cfg.seed)
    if tplan is None or not tplan.windows:
        train_ds.transform = transform  # one sample (a crop or the whole image) per image per epoch
    val_ds = SegmentationDataset(plan.splits["val"], pad_to=cfg.pad_to, cache=cache, split="val", **common) \
        if plan.splits["val"] else None
    return cfg, tplan, transform, train_ds, val_ds, workers


def training_plan(cfg: Config, train_ds: SegmentationDataset, run_dir: Path | None,
                  resumed: bool) -> tuple[Config, TrainingPlan | None]:
    """A fresh run plans from its training set's fingerprint (the plan fills only keys no source set); a resumed
    run keeps the values its config.yaml holds and reads its plan.json back (None for runs from before plans)."""
    if not resumed:
        return plan_run(cfg, train_ds, views=len(train_ds.view_channels or [1]))
    path = run_dir / "plan.json"
    return cfg, TrainingPlan.from_dict(json.loads(path.read_text()), cfg) if path.exists() else None


def rank_mean(run: Run, seconds: float) -> float:
    """``seconds`` averaged over the ranks, so every rank counts the same time and decides alike (the budget,
    validation by time); the time itself on one process."""
    if run.world == 1:
        return seconds
    return float(all_reduce_sum(torch.tensor([seconds], dtype=torch.float64, device=run.precision.device))[0]) \
        / run.world


def fit_plan_to_time(run: Run) -> float:
    """With time_limit, fit the plan to what the measured step time allows: whole images become windows and planned
    windows shrink when the budget holds too few steps (``windows_to_time``, ``fit_crop_to_time``), and window
    epochs shorten so ten fit (``fit_to_time``); returns the seconds the timing took.

    On a slow CPU the planned 32 steps can take most of a short budget; timed on the first batches (every rank
    agrees on the mean) the windows and epochs are cut before training starts, and config.yaml and plan.json keep
    the cut for resume. On the device path (a GPU's: fast steps) only the epochs are fitted.
    """
    tplan = run.tplan
    if tplan is None or tplan.time_limit <= 0:
        return 0.0
    host = run.device_data is None  # windows change only on the CPU loader path (the device path is a GPU's)
    whole = host and tplan.can_window() and run.cfg.balance == 0  # (balance= draws whole images by coverage: TGS)
    if not whole and not (tplan.windows and "plan" in (tplan.sources["samples_per_epoch"], tplan.sources["crop"])):
        return 0.0
    start = time.perf_counter()
    # a first step that alone shows the budget holding under half the steps it needs is slow enough to act on
    step = time_steps(run, enough_after=tplan.time_limit * 60 / (MIN_BUDGET_STEPS / 2))
    changed = False
    if whole:
        windowed = tplan.windows_to_time(step)
        if not windowed.windows:
            return time.perf_counter() - start
        use_windows(run, windowed)
        step, changed = time_steps(run), True
    note = run.tplan.budget_note(step)
    if note:
        log(note)
    smaller = run.tplan.fit_crop_to_time(step) if host else run.tplan
    if smaller.crop != run.tplan.crop:
        use_windows(run, smaller)
        step, changed = time_steps(run), True  # the epoch fit below uses the new window's pace
    half = run.tplan.fit_scale_to_time(step) if host and not run.cfg.compile else run.tplan
    if half.scale != run.tplan.scale:
        work_at_scale_of(run, half)
        step, changed = time_steps(run), True
    else:
        run.tplan = half  # the reason it stays at full resolution, when it was weighed
    if not note and (few := run.tplan.few_steps_note(step, run.cfg.model)):
        log(few)
    fitted = run.tplan.fit_to_time(step)
    if fitted.samples_per_epoch != run.tplan.samples_per_epoch:
        run.tplan, run.sampler, changed = fitted, resized(run.sampler, fitted.samples_per_epoch), True
        run.cfg = with_sources(run.cfg, {"samples_per_epoch": fitted.samples_per_epoch}, "plan")
    if changed:
        run.steps_per_epoch = len(window_loader(run.train_set, run.sampler, run.cfg, run.workers, run.world, 0))
        run.scheduler = build_scheduler(run.optimizer, run.cfg, run.steps_per_epoch)  # the plan line says why
    if run.schedule is not None:
        run.schedule.estimate = validation_estimate(run, step)
    return time.perf_counter() - start


VAL_COST = 0.5  # seconds of validation per training step's worth of pixels: forward only, no loader or augmentation


def validation_estimate(run: Run, step_seconds: float) -> float:
    """Seconds the first validation should take, scaled from a training step's pixels and time (VAL_COST, sliding
    windows' overlap included), so that a validation of large images is held to val_share before it first runs:
    one 2560x1920 micrograph took 33 s of a 3-minute budget at 7 s per training step."""
    ds = run.val_ds
    if ds is None or not len(ds.samples) or step_seconds <= 0 or not run.cfg.crop:
        return 0.0
    cached = ds.cached_arrays()
    sizes = [img.shape[:2] for img, _ in cached] if cached is not None else [image_size(Path(s.image))
                                                                              for s in ds.samples]
    pixels = float(sum(h * w for h, w in sizes))
    if run.cfg.val_tile:
        pixels /= (1.0 - min(run.cfg.overlap, 0.5)) ** 2
    return VAL_COST * step_seconds * pixels / (batch_or(run.cfg.batch, 1) * run.cfg.crop ** 2)


def work_at_scale_of(run: Run, tplan: TrainingPlan) -> None:
    """Train and validate at ``tplan.scale`` of the resolution (the model, its average, its spec and the config)."""
    for model in (run.model, *([run.ema.module] if run.ema is not None else [])):
        work_at_scale(model, tplan.scale)
    run.spec = {**run.spec, "scale": tplan.scale}
    run.cfg, run.tplan = with_sources(run.cfg, {"scale": tplan.scale}, "plan"), tplan


def use_windows(run: Run, tplan: TrainingPlan) -> None:
    """Train on ``tplan``'s windows (whole images turned windows, or a budget-fitted crop): its config values,
    augmentation, windows, sampler and validation rhythm."""
    values = {"crop": tplan.crop, "samples_per_epoch": tplan.samples_per_epoch}
    if tplan.sources["val_every"] == "plan":
        values["val_every"] = tplan.val_every
    cfg = with_sources(run.cfg, values, "plan")
    run.cfg, run.tplan, run.weights = cfg, tplan, None
    run.transform = build_train_transform(cfg.augment, cfg.crop, cfg.pad_to, cfg.pad_mode,
                                          run.plan.codec.ignore_index, run.plan.in_channels, seed=cfg.seed)
    run.train_ds.transform = None  # the WindowDataset applies the transform to each window
    run.train_set, run.sampler = window_training(tplan, run.train_ds, run.transform, seed=cfg.seed, rank=run.rank,
                                                 world=run.world)
    run.schedule = ValidationSchedule(cfg.val_every, cfg.val_share, cfg.time_limit)


def time_steps(run: Run, steps: int = TIMED_STEPS, enough_after: float = math.inf) -> float:
    """Seconds per training step (loading, forward, backward) on the first window batches, after an untimed
    warm-up step; no optimiser step, and the BatchNorm statistics the passes touched are put back.

    A warm-up step slower than ``enough_after`` seconds is answer enough (an upper bound: a slow CPU need not
    spend another of its long steps on the timing)."""
    saved = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    run.train_model.train()
    loader = window_loader(run.train_set, run.sampler, run.cfg, run.workers, run.world, 0) if run.sampler is not None \
        else make_loader(run.train_ds, run.cfg, True, run.workers, run.world, weights=run.weights)
    batches = iter(on_device(run, loader, 0))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        with run.precision.autocast():
            output = run.train_model(run.normalize(run.precision.to_input(batch["image"])))
        run.loss_fn(output, batch["mask"].to(run.precision.device)).backward()
        if run.precision.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if i == 0 and enough_after < math.inf:
            warm = times[0]
            if run.world > 1:  # every rank must take the same number of (all-reducing) backward passes
                warm = float(all_reduce_sum(torch.tensor([warm], device=run.precision.device))[0]) / run.world
            if warm > enough_after:
                break
    run.optimizer.zero_grad(set_to_none=True)
    run.model.load_state_dict(saved)
    mean = sum(times[1:]) / max(1, len(times) - 1) if len(times) > 1 else sum(times)
    if run.world > 1:  # every rank must cut its epochs alike
        mean = float(all_reduce_sum(torch.tensor([mean], device=run.precision.device))[0]) / run.world
    return mean


def save_run_files(run: Run) -> None:
    """config.yaml (the planned values included), data.json and plan.json: what the run is, for resume and eval."""
    plan, meta = run.plan, run.meta
    save_config(run.cfg, run.run_dir / "config.yaml")
    write_json(run.run_dir / "data.json", {**meta, "splits": {k: len(v) for k, v in plan.splits.items()},
                                           "format": plan.source.format, "root": str(plan.source.root)})
    if run.tplan is not None:
        write_json(run.run_dir / "plan.json", run.tplan.to_dict())


def build_model(cfg: Config, plan: DataPlan, precision: Precision, world: int, resume: dict[str, Any] | None
                ) -> tuple[torch.nn.Module, dict[str, Any], torch.nn.Module, Any]:
    """The model (resumed weights restored), its spec, the module that is trained (DDP/compiled) and its EMA."""
    model = create_model(cfg.model, **model_kwargs(cfg, plan.in_channels, plan.codec.num_classes))
    spec = dict(model.seglab_spec)
    if resume:  # with ema, "model" holds the averaged weights and "train_model" the optimised ones
        model.load_state_dict(resume.get("train_model", resume["model"]))
    if world > 1 and cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = precision.prepare_model(model)
    ema = build_ema(model, cfg.ema, resume)
    train_model = model
    if world > 1:
        ids = [precision.device.index] if precision.device.type == "cuda" else None
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        train_model = torch.compile(train_model)
    return model, spec, train_model, ema


def start_state(run: Run, resume: dict[str, Any] | None) -> TrainState:
    """Fresh counters, or the resumed checkpoint's with its optimiser and LR schedule restored."""
    cfg = run.cfg
    if resume is None:
        return TrainState(total_epochs=cfg.epochs)
    run.optimizer.load_state_dict(resume["optimizer"])
    run.scheduler.load_state_dict(resume["scheduler"])
    state = TrainState.from_checkpoint(resume, epochs=cfg.epochs)
    if "val_schedule" in resume:  # when the last validation was and the time validation has taken
        run.schedule.load_state_dict(resume["val_schedule"])
    # A time-limited run keeps the length it was fitted to; otherwise ``epochs=`` given at resume wins.
    state.total_epochs = min(cfg.epochs, state.total_epochs) if cfg.time_limit else cfg.epochs
    if not cfg.time_limit or state.total_epochs < TrainState.from_checkpoint(resume).total_epochs:
        state.last_epoch_steps = 0  # the shortened last epoch belonged to the budget's length
    set_total_epochs(run.scheduler, state.total_epochs, state.last_epoch_steps)
    return state


def encoder_phrase(model: torch.nn.Module) -> str:
    """``"encoder resnet34, "`` for a model with a timm encoder (the log names what was built), else ``""``."""
    name = encoder_name(model)
    return f"encoder {name}, " if name else ""


def log_start(run: Run) -> None:
    """What is trained on what, with which model and settings, and notes on settings that may surprise."""
    cfg, plan, val_ds = run.cfg, run.plan, run.val_ds
    log(f"run folder: {run.run_dir}\ndata: {plan.source.format} at {plan.source.root}: "
        f"{len(run.train_ds)} train / {len(val_ds) if val_ds else 0} val images, {plan.codec.num_classes} classes "
        f"{plan.class_names}, {plan.in_channels} channel(s)\nmodel: {cfg.model} ({encoder_phrase(run.model)}"
        f"{sum(p.numel() for p in run.model.parameters()) / 1e6:.2f} M params), precision "
        f"{run.precision.describe()}, {run.workers} workers, {run.steps_per_epoch} steps/epoch, loss {run.loss_name}"
        f"{' (auto)' if cfg.loss == 'auto' else ''}")
    if run.loader is not None:
        log(data_line(run.loader, run.batch_augment, run.workers))
        if run.loader.fallback:
            log(f"note: loader=device falls back to the CPU loader: {run.loader.fallback}")
    log_plan(run)
    if val_ds and cfg.tta != "none":  # per-epoch validation is a monitor; TTA would multiply its cost
        log(f"note: per-epoch validation scores without TTA; tta={cfg.tta} applies in seglab eval and predict")
    if unseen := tta_unseen_in_training(cfg.tta, cfg.augment):
        log(f"note: tta={cfg.tta} adds {' and '.join(unseen)} views that augment={cfg.augment} never applies; "
            "eval and predict with it will likely score worse")


def log_plan(run: Run) -> None:
    """The plan line (who set what: command line > cfg file > recipe > plan > defaults), why the plan chose its
    values, and how validation is scheduled and bounded."""
    cfg, tplan = run.cfg, run.tplan
    if tplan is not None:
        log(tplan.describe() + (" (plan.json of the run)" if run.resumed else ""))
        why = [f"{key}: {tplan.reasons[key]}" for key in PLANNED if key in tplan.reasons and
               tplan.sources.get(key) == "plan"]
        if why:
            log("plan: why: " + "; ".join(why))
    if run.autobatch:
        log(run.autobatch)
    if run.sampler is not None and cfg.balance > 0:
        log(f"note: balance={cfg.balance:g} draws whole images; window epochs draw by area and centre "
            f"rare_windows={cfg.rare_windows:g} of the windows on rare classes instead")
    if run.schedule.share < 1.0 or tplan is None:  # the plan line says how and how often, not the bound
        tiles = f" by {cfg.val_tile}-px sliding windows (whole images at full resolution)" if cfg.val_tile else ""
        log(run.schedule.describe().replace("validation", f"validation{tiles}", 1))
