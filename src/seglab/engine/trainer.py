"""One training run: ``build_run`` -> ``fit`` (epochs of train / validate / save) -> ``finish`` (the summary).

``train_single`` is the whole of it; ``dispatch.train`` chooses between it and k-fold training.
"""
from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..config import Config
from ..data.plan import DataPlan
from ..data.windows import Window
from ..errors import ConfigError
from ..inference.tiled import tiled_batch_probs
from ..models import encoder_name
from ..runtime.checkpoint import save_checkpoint
from ..runtime.cpu_ranks import check_cpu_ranks, launch_cpu_ranks, wants_cpu_ranks
from ..runtime.distributed import barrier, cleanup, is_main
from ..runtime.run_dir import new_run_dir, resume_run_dir, write_json
from .build import Run, build_run, rank_mean
from .components import gflops, head_channels, log, make_loader, seed_everything, set_encoder_frozen, window_loader
from .data_path import on_device
from .loop import NonFiniteLoss, StopFlag, TrainingStopped, evaluate, probs_to_logits, stop_agreed, train_one_epoch
from .optim import set_total_epochs
from .state import TrainState

MIN_LAST_STEPS = 2  # a budget's remainder becomes a shortened last epoch when it holds at least this many steps
# Validation metrics shown in the per-epoch line (all of them go to metrics.csv).
SHOWN = ("val_loss", "val_pixel_acc", "val_miou", "val_fg_iou", "val_tgs")


def train_single(cfg: Config, overrides: dict[str, Any], plan: DataPlan | None = None,
                 run_dir: Path | None = None) -> Path:
    """The full training of one model into one run folder (in ``cpu_procs`` processes when asked)."""
    if wants_cpu_ranks(cfg):
        check_cpu_ranks(cfg)
        run_dir = resume_run_dir(cfg, overrides)[0] if cfg.resume else (run_dir or new_run_dir(cfg, create=False))
        before = file_version(run_dir / "summary.json")
        launch_cpu_ranks(train_single, cfg, overrides, None if cfg.resume else run_dir, plan)
        raise_if_stopped(run_dir, before)  # the ranks end quietly on a stop signal; their summary says which
        return run_dir
    run, state = build_run(cfg, overrides, plan, run_dir)
    fit(run, state)
    finish(run, state)
    if state.stopped:  # after the summary is written: ``seglab`` exits 130 (SIGINT) or 143 (SIGTERM)
        raise TrainingStopped(state.stopped)
    return run.run_dir


def file_version(path: Path) -> tuple[int, int] | None:
    """What tells one write of ``path`` from the next (inode and modification time), or None when it is absent."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def raise_if_stopped(run_dir: Path, before: tuple[int, int] | None) -> None:
    """After ``cpu_procs`` ranks returned: raise TrainingStopped when their summary.json says a stop signal ended
    the run, or when they wrote none (``before`` is the summary there was): a second Ctrl-C stopped them at once."""
    path = run_dir / "summary.json"
    if file_version(path) in (None, before):
        raise TrainingStopped(signal.SIGINT)
    stopped = json.loads(path.read_text(encoding="utf-8")).get("stopped_by")
    if stopped:
        raise TrainingStopped(int(signal.Signals[stopped]))


def fit(run: Run, state: TrainState) -> None:
    """Train epoch after epoch until the schedule, the time budget, patience or a stop signal ends the run.

    ``last.pt`` is written after each complete epoch (what ``resume=`` continues from); a run stopped before its
    first epoch completes leaves none: there is nothing to resume, it is run again.
    """
    with StopFlag() as stop:
        while state.epoch + 1 < state.total_epochs:
            epoch = state.epoch + 1
            loader = train_loader(run, epoch)
            if run.world > 1 and epoch == state.start_epoch:
                write_shard(run, loader)
            set_encoder_frozen(run.model, epoch < run.cfg.freeze_epochs)
            t0 = time.perf_counter()
            shortened = state.last_epoch_steps if epoch == state.total_epochs - 1 else 0
            # Until the budget line has fixed it (after two timed epochs), the total is an estimate: "train 2/<=6".
            estimate = run.cfg.time_limit and not state.budget_told
            total = f"<={state.total_epochs}" if estimate else state.total_epochs
            # The budget's end cuts an epoch short: an epoch longer than the whole budget (a slow model on whole
            # images, on one core) would otherwise overrun time_limit many times over.
            time_left = run.cfg.time_limit * 60 - state.wall_time if run.cfg.time_limit else None
            result = train_epoch(run, loader, epoch, stop, total, shortened, time_left)
            epoch_time = rank_mean(run, time.perf_counter() - t0)
            if result["interrupted"]:
                state.partial_epoch, state.stopped = True, stop.signum
                log_interrupted(run, state, epoch)
                return
            row = count_epoch(run, state, epoch, result, epoch_time)
            if result.get("cut"):
                log(f"time limit of {run.cfg.time_limit} min reached during epoch {epoch + 1}, after "
                    f"{result['images']} images: the epoch ends here")
                state.cut_told = True
            if run.cfg.time_limit:  # refit before validating, so the budget's last epoch is always validated
                refit_to_budget(run, state)
            validating = should_validate(run, state)
            if validating:
                track_best(run, state, validate(run), row)
            count_validation(run, state, rank_mean(run, time.perf_counter() - t0 - epoch_time), validating)
            if is_main():
                save_last(run, state)
                log_epoch(run, state, row, epoch_time)
            if should_stop(run, state, stop):
                return


def train_loader(run: Run, epoch: int) -> DataLoader:
    """This epoch's training batches (a DataLoader, or its DeviceLoader twin on the device path, ``loader=``).

    Everything is reseeded at every epoch start, so a resumed run draws exactly the batches and augmentations
    it would have drawn without the interruption.
    """
    cfg = run.cfg
    seed_everything(cfg.seed + epoch, cfg.deterministic)
    run.transform.set_random_seed(cfg.seed + epoch)
    if run.sampler is not None:  # window epochs: the draw depends only on (seed, epoch); rank r takes r, r+world...
        return on_device(run, window_loader(run.train_set, run.sampler, cfg, run.workers, run.world, epoch), epoch)
    loader = make_loader(run.train_ds, cfg, True, run.workers, run.world, epoch_seed=cfg.seed + epoch,
                         weights=run.weights)
    if run.world > 1 and isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    return on_device(run, loader, epoch)  # the device path walks this loader's batches of keys, in its order


def write_shard(run: Run, loader: DataLoader) -> None:
    """Which images this rank trains on (``ranks/rankN.txt``): for checking and debugging the shards.

    Window epochs write one window a line: image id, top, left, height, width (this epoch's share of the draw).
    """
    samples = run.train_ds.samples
    lines = [f"{samples[k.index].id} {k.y} {k.x} {k.h} {k.w}" if isinstance(k, Window) else samples[k].id
             for k in loader.sampler]
    (run.run_dir / "ranks").mkdir(exist_ok=True)
    (run.run_dir / "ranks" / f"rank{run.rank}.txt").write_text("".join(f"{line}\n" for line in lines))


def train_epoch(run: Run, loader: DataLoader, epoch: int, stop: StopFlag, total: int | str,
                max_steps: int = 0, time_left: float | None = None) -> dict[str, Any]:
    """One pass over ``loader`` (updating the EMA after every step); returns ``train_one_epoch``'s result.

    Its progress (images, images/s, ETA) is a bar on a terminal and a heartbeat line every ~30 s elsewhere,
    named ``train EPOCH/TOTAL`` as the epoch lines count (from 1).
    """
    on_step = None
    if run.ema is not None:  # timm's EMA with warm-up: the decay ramps towards cfg.ema over the first steps
        first = epoch * run.steps_per_epoch
        on_step = lambda step: run.ema.update(run.model, step=first + step + 1)  # noqa: E731
    try:
        return train_one_epoch(run.train_model, loader, run.loss_fn, run.optimizer, run.scheduler, run.precision,
                               run.normalize, epoch=epoch, grad_clip=run.cfg.grad_clip, stop=stop, on_step=on_step,
                               desc=f"train {epoch + 1}/{total}", max_steps=max_steps or None, time_left=time_left)
    except NonFiniteLoss as e:
        log(f"error: {e}")
        raise


def count_epoch(run: Run, state: TrainState, epoch: int, result: dict[str, Any],
                epoch_time: float) -> dict[str, Any]:
    """Add a complete epoch to the counters; returns its metrics.csv row (validation adds to it)."""
    state.epoch = epoch
    state.train_time += epoch_time
    state.images += result["images"]
    state.wall_time += epoch_time
    return {"epoch": epoch, "lr": run.optimizer.param_groups[0]["lr"], "train_loss": result["loss"],
            "epoch_time": round(epoch_time, 3), "train_images_per_s": round(result["images"] / epoch_time, 2)}


def refit_to_budget(run: Run, state: TrainState) -> None:
    """Refit the run's length (and LR schedule) to ``time_limit`` at the pace measured so far."""
    if state.last_epoch_steps and state.epoch == state.total_epochs - 1:
        return  # the shortened epoch that fills the budget has run: the schedule has ended, nothing is left to fit
    timed = state.epoch + 1 - state.start_epoch  # epochs timed in this process
    schedule = run.schedule
    budget = run.cfg.time_limit * 60
    per_epoch, reserve = budget_pace(state.wall_time - state.resumed_wall, state.val_time, state.validating_time,
                                     timed, schedule.share, schedule.expected(),
                                     budget - state.wall_time, budget, schedule.spent)
    state.total_epochs, state.last_epoch_steps = fit_epochs_to_budget(
        run.cfg, timed, state.wall_time, state.total_epochs, run.scheduler, state.resumed_wall,
        state.epoch, run.steps_per_epoch, per_epoch=per_epoch, reserve=reserve)
    # Once, how the budget set the run's length: as soon as the pace includes the time after training (validation),
    # which the first epoch cannot know, or when the budget ends the run here; the epoch lines show later refits.
    if not state.budget_told and (timed > 1 or state.total_epochs == state.epoch + 1):
        state.budget_told = True
        step = per_epoch / max(1, run.steps_per_epoch)
        log(budget_line(run.cfg.time_limit, step, state.total_epochs, run.cfg.epochs, state.last_epoch_steps,
                        run.steps_per_epoch))


def budget_line(minutes: float, step_seconds: float, fitted: int, epochs: int, last_steps: int = 0,
                steps_per_epoch: int = 0) -> str:
    """``time_limit=12 min at 0.8 s/step fits 4 of the 20 epochs (schedule refitted)``."""
    pace = f"time_limit={minutes:g} min at {step_seconds:.2g}" if step_seconds < 10 else \
        f"time_limit={minutes:g} min at {step_seconds:.0f}"
    pace += " s/step"
    if fitted >= epochs:
        return f"{pace} fits all {epochs} epochs"
    last = f", the last one {last_steps} of {steps_per_epoch} steps," if last_steps else ""
    return f"{pace} fits {fitted} of the {epochs} epochs{last} (schedule refitted)"


def budget_pace(spent: float, after_training: float, validating: float, epochs_timed: int, val_share: float,
                validation_seconds: float, left: float = math.inf, budget: float = math.inf,
                validated_total: float = 0.0) -> tuple[float, float]:
    """Seconds per epoch from here on, and the seconds to keep for the validation after the last epoch, from what
    this process has spent: ``spent`` in all, ``after_training`` of it after the epochs' training, ``validating``
    of that in validations; ``left`` of the ``budget`` seconds remain, ``validated_total`` went to validations.

    Validation going forward costs what it has cost per second of training, but never more than ``val_share`` of
    the budget (the schedule holds validations back beyond it): one slow first validation of whole large images
    (23 s against 17-s epochs) otherwise counted as if every epoch would pay it, fitting half the epochs that
    fit, and the cosine schedule decayed early and was stretched again epoch after epoch. Other time after training
    counts in full. The last epoch always validates, so one validation is kept in reserve. The refit runs between
    an epoch's training and its validation, so the time after training belongs to the epochs before the last.
    """
    per_train = max(spent - after_training, 0.0) / max(1, epochs_timed)
    before = max(1, epochs_timed - 1)  # epochs whose time after training is known
    rate = validating / max(per_train * before, 1e-9) if epochs_timed > 1 else 0.0
    other = (after_training - validating) / before if epochs_timed > 1 else 0.0
    cost = per_train + other  # an epoch without its validation
    if val_share < 1.0:
        rate = min(rate, val_share / (1.0 - val_share))
    paced = cost + rate * per_train
    room = max(0.0, left - validation_seconds)
    if val_share >= 1.0 or not math.isfinite(room) or room <= 0 or cost <= 0:
        return paced, validation_seconds
    # Validations stop once they have had their share of the budget: beyond it, epochs pay only for training.
    share_left = max(0.0, val_share * budget - validated_total)
    epochs = max(room / paced, (room - share_left) / cost)
    return room / epochs, validation_seconds


def fit_epochs_to_budget(cfg: Config, epochs_timed: int, wall_time: float, total_epochs: int, scheduler,
                         resumed_wall: float, epoch: int, steps_per_epoch: int = 0, per_epoch: float | None = None,
                         reserve: float = 0.0) -> tuple[int, int]:
    """Epochs that fit ``time_limit`` at the mean epoch time so far, and the steps of a shortened last epoch that
    fills the rest of it (0: none); the LR schedule is refitted to end there.

    As Ultralytics' ``time=``: a time budget should end with a fully annealed schedule, not be cut mid-way. Whole
    epochs alone left up to an epoch of the budget unused (a tenth of it with the plan's short window epochs); the
    remainder now becomes a last epoch of the steps it holds, when that is at least ``MIN_LAST_STEPS``.
    ``resumed_wall`` is the wall time spent before this process, which ``epochs_timed`` does not cover.
    ``per_epoch``: the pace from ``budget_pace`` (default: the mean epoch so far); ``reserve``: seconds kept for the
    last validation.
    """
    done = epoch + 1
    if per_epoch is None:
        per_epoch = (wall_time - resumed_wall) / max(1, epochs_timed)
    room = max(0.0, (cfg.time_limit * 60 - wall_time - reserve) / max(per_epoch, 1e-9))
    new_total, last_steps = max(done, min(cfg.epochs, done + int(room))), 0
    spare = int((room - int(room)) * steps_per_epoch)
    if new_total == done + int(room) < cfg.epochs and MIN_LAST_STEPS <= spare < steps_per_epoch:
        new_total, last_steps = new_total + 1, spare
    set_total_epochs(scheduler, new_total, last_steps)
    return new_total, last_steps


def budget_spent(run: Run, state: TrainState) -> bool:
    """True once ``time_limit`` is set and its wall time is used up."""
    return bool(run.cfg.time_limit and state.wall_time >= run.cfg.time_limit * 60)


def should_validate(run: Run, state: TrainState) -> bool:
    """Validate after this epoch: when ``val_every`` (epochs, or training time such as ``2m``) says so and, with
    time_limit, validating stays within ``val_share`` of the time spent; always after the last epoch (of the
    schedule or budget). Without a validation split, only the last epoch is scored (on the training images).
    """
    last = state.epoch == state.total_epochs - 1 or budget_spent(run, state)
    if last or run.val_ds is None:
        return last
    schedule, held = run.schedule, run.schedule.held_back
    due = schedule.due(state.epoch, state.wall_time)
    if schedule.held_back == 1 > held:  # once: why metrics.csv has gaps from here on
        log(f"note: validations wait while they would take more than val_share={schedule.share:g} of the time "
            f"spent (so far {schedule.spent:.0f} s of {state.wall_time:.0f} s)")
    return due


def count_validation(run: Run, state: TrainState, seconds: float, validated: bool) -> None:
    """Count the time after training (validation) in the budget and, for a validation, in its schedule."""
    if validated:
        run.schedule.record(state.wall_time, seconds)
        state.validating_time += seconds
    state.val_time += seconds
    state.wall_time += seconds  # validation spends the budget too


def validate(run: Run) -> dict[str, Any]:
    """Validation metrics and loss of the model as saved (the EMA when there is one): eval mode, bigger batches.

    With ``val_tile``, each image larger than the tile is scored by sliding windows (inference/tiled: Gaussian-
    blended tiles over the whole image at full resolution, memory bounded by the tile), one image at a time;
    the loss is then that of the blended probabilities (``probs_to_logits``); batch-pooled terms such as Dice are
    then per image, so that loss is not comparable with a whole-image validation's in batches.
    """
    model, precision, normalize, tile = run.eval_model, run.precision, run.normalize, run.cfg.val_tile
    val_ds = run.val_ds or run.train_ds
    model.eval()
    loader = make_loader(val_ds, run.cfg, False, 0, run.world, batch=1 if tile else 0)

    def forward(images):
        with precision.autocast():
            return model(normalize(precision.to_input(images))).float()

    def logits_fn(batch):
        images = batch["image"]
        if not tile or max(images.shape[-2:]) <= tile:
            return forward(images)
        probs = tiled_batch_probs(forward, images, [tuple(images.shape[-2:])] * len(images), tile=tile,
                                  num_classes=head_channels(val_ds.codec.num_classes),
                                  overlap=run.cfg.overlap, batch_size=max(1, run.cfg.batch), outputs="logits")
        return probs_to_logits(probs.to(precision.device))

    metrics = evaluate(None, loader, val_ds.codec.num_classes, val_ds.codec.ignore_index, precision.device,
                       threshold=run.cfg.threshold, loss_fn=run.loss_fn, logits_fn=logits_fn,
                       per_image=val_ds.codec.binary)
    model.train()
    return metrics


def track_best(run: Run, state: TrainState, metrics: dict[str, Any], row: dict[str, Any]) -> None:
    """Add validation metrics to the epoch's row; a new best score is saved to ``best.pt``, else patience runs."""
    row.update({f"val_{k}": v for k, v in metrics.items() if isinstance(v, float)})
    if run.metric not in metrics:
        raise ConfigError(f"metric={run.metric!r} is not computed; choose from "
                          f"{sorted(k for k, v in metrics.items() if isinstance(v, float))}")
    watch_collapse(run, state, metrics["confusion"])
    value = metrics[run.metric]
    if value > state.best:
        state.best, state.best_epoch, state.stale = value, state.epoch, 0
        if is_main():
            save_checkpoint(checkpoint(run, state), run.run_dir / "checkpoints" / "best.pt")
    else:
        state.stale += 1


def watch_collapse(run: Run, state: TrainState, confusion: torch.Tensor | None) -> None:
    """Warn once (in the log and summary.json) when validations in a row predict one class for nearly every
    pixel (``collapse.CollapseWatch``); ``confusion`` None: the run has ended, check the fewer validations it had."""
    watch = state.collapse
    due = watch.observe(confusion) if confusion is not None else watch.at_end()
    if due:
        state.warnings.append(watch.warn(run.plan.class_names, run.cfg, run.sampler is not None))
        log(watch.warning)


def checkpoint(run: Run, state: TrainState) -> dict[str, Any]:
    """What ``last.pt``/``best.pt`` hold: weights, optimiser, schedule, counters, and what eval/predict/export read."""
    extra = {"train_model": run.model.state_dict()} if run.ema is not None else {}
    return {**extra, "model": run.eval_model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), **state.to_checkpoint(), "model_spec": run.spec,
            "meta": run.meta, "config": run.cfg.to_dict(), "metric": run.metric,
            "val_schedule": run.schedule.state_dict()}


def save_last(run: Run, state: TrainState) -> None:
    """Save the run as of its last complete epoch to ``last.pt`` (what ``resume=`` continues from)."""
    save_checkpoint(checkpoint(run, state), run.run_dir / "checkpoints" / "last.pt")


def log_epoch(run: Run, state: TrainState, row: dict[str, Any], epoch_time: float) -> None:
    """The epoch's row to metrics.csv (and other loggers) and one line to the console."""
    run.loggers.log(state.epoch, row)
    # the TGS competition score belongs to TGS data (its layout, or a run scored by it), not to every binary task
    tgs = run.metric == "tgs" or "tgs" in (run.cfg.format, getattr(getattr(run.plan, "source", None), "format", ""))
    shown = "".join(f" {k}={v:.4f}" for k, v in row.items()
                    if k.startswith("val_") and k in SHOWN and (tgs or k != "val_tgs"))
    log(f"epoch {state.epoch + 1}/{state.total_epochs} train_loss={row['train_loss']:.4f}{shown} "
        f"({epoch_time:.1f}s, {row['train_images_per_s']:.1f} img/s)")


def should_stop(run: Run, state: TrainState, stop: StopFlag) -> bool:
    """True (with the reason logged) when patience, the time budget or a stop signal ends the run here."""
    cfg = run.cfg
    if cfg.patience and state.stale >= cfg.patience:
        log(f"early stopping: {run.metric} has not improved for {cfg.patience} validations (best {state.best:.4f} at "
            f"epoch {state.best_epoch + 1})")
        return True
    if budget_spent(run, state):
        if not state.cut_told:  # a cut epoch has said so already
            log(f"time limit of {cfg.time_limit} min reached after epoch {state.epoch + 1}")
        return True
    if stop_agreed(stop, run.precision.device):
        state.stopped = stop.signum
        log(f"stopped after epoch {state.epoch + 1}; continue with: seglab train resume={run.run_dir}")
        return True
    return False


def log_interrupted(run: Run, state: TrainState, epoch: int) -> None:
    """Say what a stop signal in the middle of epoch ``epoch`` (0-based) leaves: the last complete epoch, saved and
    resumable, or (in the first epoch of a fresh run) nothing to resume."""
    if state.epoch < 0:
        log(f"interrupted during epoch {epoch + 1}: stopped before the first epoch finished; nothing to resume, "
            "run again")
        return
    log(f"interrupted during epoch {epoch + 1}: the last complete epoch ({state.epoch + 1}) is saved in "
        f"{run.run_dir / 'checkpoints' / 'last.pt'}; continue with: seglab train resume={run.run_dir}")


def finish(run: Run, state: TrainState) -> None:
    """Wait for every rank, then (rank 0) close the loggers, write summary.json and say where the weights are."""
    barrier()
    if is_main():
        run.loggers.close()
        if not state.stopped:
            watch_collapse(run, state, None)  # fewer validations than it takes to warn, every one collapsed
        write_json(run.run_dir / "summary.json", summary(run, state))
        if state.epoch >= 0:
            log(final_line(run, state))
    cleanup()


def summary(run: Run, state: TrainState) -> dict[str, Any]:
    """summary.json: the model, the speed, the epochs, the best score (null before any validation), and how the run
    ended (``stopped_by``: the stop signal, or null) with its warnings."""
    cfg, precision = run.cfg, run.precision
    # the encoder built: the model's own default (bisenet_resnet18: resnet18) when the config names none
    return {"model": cfg.model, "encoder": encoder_name(run.model) or cfg.encoder,
            "params": sum(p.numel() for p in run.model.parameters()),
            "gflops": gflops(run.model, run.plan.in_channels, run.val_ds or run.train_ds),
            "train_time_s": round(state.train_time, 2),
            "train_images_per_s": round(state.images / max(state.train_time, 1e-9), 2),
            # an epoch cut short by a stop signal counts as begun, as it did before the split (#27)
            "epochs_done": state.epoch + 1 + state.partial_epoch, "epochs_complete": state.epoch + 1,
            "best_epoch": state.best_epoch + 1 if state.validated else None, "best_metric": run.metric,
            "best_value": state.best if state.validated else None,
            "precision": precision.label(), "device": str(precision.device), "world_size": run.world,
            "loader": run.loader.path if run.loader is not None else "cpu",  # where the training batches came from
            "stopped_by": signal.Signals(state.stopped).name if state.stopped else None,
            "warnings": state.warnings}


def final_line(run: Run, state: TrainState) -> str:
    """The run's last log line: the best score and where the weights are (a stopped run says it stopped)."""
    where = f"weights in {run.run_dir / 'checkpoints'}"
    head = "stopped" if state.stopped else "done"
    if not state.validated:
        return f"{head}: not validated yet; {where}"
    return f"{head}: best {run.metric}={state.best:.4f} at epoch {state.best_epoch + 1}; {where}"
