"""What each ``seglab classify`` mode does: train, eval, predict, compare and sweep, each into a run folder."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import yaml

from . import report
from .config import (
    SWEEP_PARAMS,
    ClassifyConfig,
    flip_enabled,
    parse_args,
    resolve,
)
from .data import (
    IMAGE_SUFFIXES,
    ClassificationData,
    channel_stats,
    decode_image,
    load_dataset,
    resize_data,
    split_bytes,
    split_on,
    subset,
)
from .engine import (
    EvalResult,
    Lookahead,
    Normalized,
    build_optimizer,
    build_scheduler,
    evaluate,
    predict_logits,
    train_one_epoch,
)
from .models import count_parameters, create_classifier
from ..data.device_data import choose_loader
from ..engine.optim import epochs_in_budget, set_total_epochs
from ..errors import CheckpointError, ConfigError, DataError
from ..runtime.checkpoint import load_checkpoint as read_checkpoint
from ..runtime.checkpoint import save_checkpoint as write_checkpoint
from ..runtime.cpu_ranks import launch_ranks
from ..runtime.distributed import cleanup
from ..runtime.precision import resolve_precision
from ..runtime.run_dir import unique_dir

METRIC_COLUMNS = ["epoch", "time", "loss", "acc", "val_loss", "val_acc", "lr"]
COMPARE_COLUMNS = ["model", "params", "epochs", "time_per_epoch", "train_time", "test_acc", "test_loss"]


def next_run_dir(out: str | None, mode: str) -> Path:
    """``out`` as given, or the first free runs/classify/<mode>, <mode>2, ... (seglab's run-folder rule)."""
    return unique_dir(Path(out), exist_ok=True) if out else unique_dir(Path("runs") / "classify" / mode)


def save_checkpoint(path: Path, net: Normalized, meta: dict) -> None:
    """Write the weights (on the CPU) and the run's metadata with seglab's atomic checkpoint writer."""
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    write_checkpoint({**meta, "state_dict": state}, path)


def load_checkpoint(path: str | Path) -> tuple[Normalized, dict]:
    """Rebuild a normalized classifier from a checkpoint, read with seglab's safe loader (weights only)."""
    if not Path(path).exists():
        raise CheckpointError(f"{path}: checkpoint not found; pass weights=runs/classify/NAME/best.pt")
    ckpt = read_checkpoint(path)
    if "spec" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a seglab classify checkpoint (no 'spec' / 'state_dict')")
    spec = ckpt["spec"]
    model = create_classifier(spec["name"], spec["num_classes"], spec["in_channels"], spec["image_size"],
                              **spec["kwargs"])
    c = ckpt["in_channels"]
    net = Normalized(model, [0.0] * c, [1.0] * c)
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:  # missing, extra or mis-shaped tensors: the file does not match its own spec
        raise CheckpointError(f"{path}: the weights do not fit the model they describe ({str(e).splitlines()[0]})") \
            from None
    return net, ckpt


def _load_data(cfg: ClassifyConfig) -> ClassificationData:
    data = load_dataset(cfg.data or "digits", cfg.imgsz, cfg.seed, cfg.download)
    if cfg.fraction < 1:
        data = dataclasses.replace(data, train=subset(data.train, cfg.fraction, cfg.seed))
    return data


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """Use ``threads`` CPU threads inside the block (0 keeps the current setting), then restore."""
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train(cfg: ClassifyConfig, data: ClassificationData | None = None) -> dict:
    """Train one model; writes config.yaml, metrics.csv, best.pt/last.pt, plots and results.json."""
    if cfg.cpu_procs > 1 and "RANK" not in os.environ:
        return _train_on_cpu_ranks(cfg, data or _load_data(cfg))
    with cpu_threads(cfg.threads):
        return _train(cfg, data)


def _train_on_cpu_ranks(cfg: ClassifyConfig, data: ClassificationData) -> dict:
    """``cpu_procs`` DDP ranks on this CPU (seglab's rank launcher, see runtime.cpu_ranks); rank 0 writes the run."""
    resolve(cfg, len(data.train))  # bad settings fail here, not in every rank
    run_dir = next_run_dir(cfg.out, "train")
    cfg = dataclasses.replace(cfg, out=str(run_dir))
    launch_ranks(_train_rank, cfg.cpu_procs, (cfg, data), threads=cfg.threads)
    results = run_dir / "results.json"
    if not results.is_file():  # the ranks ended without writing it: a Ctrl-C stopped them (exit 130, as one process)
        raise KeyboardInterrupt
    return json.loads(results.read_text())


def _train_rank(cfg: ClassifyConfig, data: ClassificationData) -> None:
    """One rank of a ``cpu_procs`` run: the launcher has set its environment and threads; gloo even beside a GPU."""
    torch.distributed.init_process_group("gloo")
    try:
        _train(cfg, data)
    finally:
        cleanup()


def _train(cfg: ClassifyConfig, data: ClassificationData | None) -> dict:
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
    main = rank == 0
    data = data or _load_data(cfg)
    cfg = resolve(cfg, len(data.train))
    torch.manual_seed(cfg.seed)
    model = create_classifier(cfg.model, data.num_classes, data.in_channels, data.image_size, **cfg.model_kwargs())
    params = count_parameters(model)
    precision = resolve_precision(cfg.precision, cfg.device)
    normalized = Normalized(model, *channel_stats(data.train.images))
    if hasattr(model, "fit_to_data"):  # data-dependent init (the fast net's whitening stem); same on every rank
        model.fit_to_data(normalized.normalize(data.train.images[:5000]))
    net = precision.prepare_model(normalized)
    train_net = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    steps_per_epoch = max(1, len(data.train) // cfg.batch)
    optimizer = build_optimizer(net, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum, cfg.norm_lr_scale)
    scheduler = build_scheduler(optimizer, cfg.sched, cfg.epochs, steps_per_epoch, cfg.warmup)
    lookahead = Lookahead(net) if cfg.lookahead else None
    run_dir = next_run_dir(cfg.out, "train") if main else Path(cfg.out or ".")
    meta = {"spec": model.seglab_spec, "class_names": data.class_names, "in_channels": data.in_channels,
            "image_size": data.image_size, "data": cfg.data}
    if main:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(
            {**dataclasses.asdict(cfg), "params": params, "class_names": data.class_names,
             "precision_resolved": str(precision.dtype or "float32"), "device_resolved": str(precision.device)},
            sort_keys=False))
    generator = torch.Generator().manual_seed(cfg.seed)  # the batch order: the same on every rank
    aug_generator = torch.Generator().manual_seed(cfg.seed + 1000 * rank) if world > 1 else None
    flip = flip_enabled(cfg)
    # loader=: the uint8 training split copied to the device once (auto: on CUDA when it fits), else batches are
    # gathered on the host and copied per step; either way the order and augmentation come from the same generators
    data_path = choose_loader(cfg.loader, precision.device, (), split_bytes(data.train))
    train_split = split_on(data.train, precision.device) if data_path.on_device else data.train
    rows: list[dict] = []
    best_acc = -1.0
    images_seen, train_seconds = 0, 0.0
    if main:
        print(f"{cfg.model}: {params:,} parameters, {len(data.train)} train / {len(data.test)} test images, "
              f"{cfg.epochs} epochs, batch {cfg.batch}, {cfg.optimizer} lr {cfg.lr}, "
              f"{precision.describe()}" + (f", {world} processes" if world > 1 else ""))
        print(f"data: {'on the device' if data_path.on_device else 'host tensors, copied to the device per batch'} "
              f"({data_path.reason}), batched augmentation: shift {cfg.shift:g}{', hflip' if flip else ''}", flush=True)
    planned = cfg.epochs  # a time_limit refits it (and the LR schedule) early in epoch 1 and after each epoch
    probe_step = max(3, steps_per_epoch // 10)

    def fit_budget_early(step: int, seconds: float) -> None:
        """Fit the planned epochs to the time budget from the first steps, not after a whole epoch at the wrong LR."""
        nonlocal planned
        if epoch == 1 and step == probe_step and step < steps_per_epoch:
            planned = _epochs_in_budget(cfg, step / steps_per_epoch, seconds)
            set_total_epochs(scheduler, planned)
            if main:
                print(f"time_limit={cfg.time_limit:g} min: {planned} epochs fit at the pace of the first {step} steps "
                      "(refitted after every epoch)", flush=True)

    epoch = 0
    while epoch < planned:
        epoch += 1
        lr = optimizer.param_groups[0]["lr"]
        result = train_one_epoch(train_net, train_split, optimizer, scheduler, precision, cfg.batch,
                                 cfg.label_smoothing, cfg.shift, flip, generator, rank, world, aug_generator,
                                 lookahead, fit_budget_early if cfg.time_limit else None,
                                 desc=f"train {epoch}/{planned}")
        images_seen += result.images
        train_seconds += result.seconds
        if cfg.time_limit:
            planned = _epochs_in_budget(cfg, epoch, train_seconds)
            set_total_epochs(scheduler, planned)
        last = epoch >= planned
        if last and lookahead is not None:
            lookahead.finish()
        if not main:
            continue  # rank 0 evaluates, logs and saves; the next epoch's gradient sync waits for it
        # TTA only on the last epoch: it costs several forward passes, and only the final score is reported.
        val = evaluate(net, data.test, precision, tta=cfg.tta and last)
        rows.append({"epoch": epoch, "time": round(result.seconds, 3), "loss": result.loss, "acc": result.acc,
                     "val_loss": val.loss, "val_acc": val.acc, "lr": lr})
        _write_metrics(run_dir / "metrics.csv", rows)
        save_checkpoint(run_dir / "last.pt", net, {**meta, "epoch": epoch, "val_acc": val.acc})
        if val.acc > best_acc:
            best_acc = val.acc
            save_checkpoint(run_dir / "best.pt", net, {**meta, "epoch": epoch, "val_acc": val.acc})
        print(f"epoch {epoch}/{planned}  {result.seconds:.1f}s ({result.images / result.seconds:.0f} img/s)  "
              f"loss {result.loss:.4f} acc {result.acc:.4f}  val_loss {val.loss:.4f} val_acc {val.acc:.4f}",
              flush=True)
    if not main:
        return {}
    if cfg.plots:
        report.plot_curves(rows, run_dir / "curves.png")
        _write_evaluation_plots(run_dir, data, val, data.class_names)
    train_time = sum(r["time"] for r in rows)
    summary = {"model": cfg.model, "params": params, "epochs": len(rows),
               "time_per_epoch": round(train_time / max(1, len(rows)), 2), "train_time": round(train_time, 1),
               "images_per_second": round(images_seen / train_time, 1) if train_time else 0.0,
               "test_acc": rows[-1]["val_acc"], "test_loss": rows[-1]["val_loss"], "best_test_acc": best_acc,
               "loss": rows[-1]["loss"], "acc": rows[-1]["acc"], "run_dir": str(run_dir)}
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2))
    print(saved_line(run_dir, f"test accuracy {summary['test_acc']:.4f} (best {best_acc:.4f})"), flush=True)
    return summary


def saved_line(run_dir: Path, what: str) -> str:
    """The last line of a classify mode: where its results went, what they say, and the files written there."""
    files = sorted(p.name for p in run_dir.iterdir() if p.is_file())
    return f"Results saved to {run_dir}: {what}; {', '.join(files)}"


def _epochs_in_budget(cfg: ClassifyConfig, done: float, train_seconds: float) -> int:
    """Epochs that fit ``time_limit`` minutes at the pace so far (``done`` may be a fraction of an epoch).

    seglab's budget rule (``engine.optim.epochs_in_budget``) with a tenth of an epoch of slack for timing noise.
    Rank 0's estimate is broadcast so that every DDP rank stops after the same epoch.
    """
    fit = epochs_in_budget(done, train_seconds / done, cfg.time_limit * 60 - train_seconds, cfg.epochs, slack=0.1)
    estimate = torch.tensor([float(fit)])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast(estimate, 0)
    return int(estimate.item())


def _write_metrics(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _write_evaluation_plots(run_dir: Path, data: ClassificationData, val: EvalResult,
                            class_names: list[str]) -> np.ndarray:
    matrix = report.confusion_matrix(val.targets, val.predictions, len(class_names))
    report.plot_confusion_matrix(matrix, class_names, run_dir / "confusion_matrix.png")
    report.plot_per_class_accuracy(matrix, class_names, run_dir / "per_class_accuracy.png")
    report.plot_prediction_grid(data.test.images, val.targets, val.predictions, class_names,
                                run_dir / "predictions.png")
    return matrix


def evaluate_run(cfg: ClassifyConfig) -> dict:
    """Evaluate a checkpoint on the test split; writes confusion matrix, per-class accuracy and an image grid."""
    if not cfg.weights:
        raise ConfigError("eval needs weights=PATH (a best.pt or last.pt from a train run)")
    net, ckpt = load_checkpoint(cfg.weights)
    data = load_dataset(cfg.data or ckpt["data"], cfg.imgsz, cfg.seed, cfg.download)
    data = _match_checkpoint(data, ckpt)
    precision = resolve_precision(cfg.precision, cfg.device)
    net = precision.prepare_model(net)
    val = evaluate(net, data.test, precision, tta=cfg.tta)
    run_dir = next_run_dir(cfg.out, "eval")
    class_names = ckpt["class_names"]
    matrix = _write_evaluation_plots(run_dir, data, val, class_names) if cfg.plots else \
        report.confusion_matrix(val.targets, val.predictions, len(class_names))
    per_class = report.per_class_accuracy(matrix)
    rows = [{"class": name, "images": int(matrix[i].sum()), "correct": int(matrix[i, i]),
             "accuracy": float(per_class[i])} for i, name in enumerate(class_names)]
    report.write_table(rows, ["class", "images", "correct", "accuracy"], run_dir / "per_class")
    summary = {"weights": str(cfg.weights), "test_acc": val.acc, "test_loss": val.loss, "images": len(data.test),
               "run_dir": str(run_dir)}
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"test accuracy {val.acc:.4f}, loss {val.loss:.4f} on {len(data.test)} images -> {run_dir}")
    return summary


def _match_checkpoint(data: ClassificationData, ckpt: dict) -> ClassificationData:
    if data.in_channels != ckpt["in_channels"]:
        raise DataError(f"the checkpoint expects {ckpt['in_channels']}-channel images but the data has "
                        f"{data.in_channels}; evaluate on data like the training data")
    if list(data.class_names) != list(ckpt["class_names"]):
        raise DataError(f"the data's classes {data.class_names} differ from the checkpoint's {ckpt['class_names']}")
    return resize_data(data, ckpt["image_size"])


def predict_run(cfg: ClassifyConfig) -> list[dict]:
    """Classify an image file or a folder of images; writes predictions.csv and a titled grid."""
    if not cfg.weights or not cfg.source:
        raise ConfigError("predict needs weights=PATH and source=IMAGE_OR_FOLDER")
    net, ckpt = load_checkpoint(cfg.weights)
    source = Path(cfg.source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    elif source.is_file():
        paths = [source]
    else:
        raise DataError(f"source {source} does not exist; give an image file or a folder of images")
    if not paths:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {source}")
    mode = "L" if ckpt["in_channels"] == 1 else "RGB"
    images = torch.from_numpy(np.stack([decode_image(p, ckpt["image_size"], mode) for p in paths]))
    precision = resolve_precision(cfg.precision, cfg.device)
    probs = predict_logits(precision.prepare_model(net), images, precision, tta=cfg.tta).softmax(1).cpu()
    confidence, predictions = probs.max(1)
    names = ckpt["class_names"]
    rows = [{"path": str(p), "class": names[int(k)], "confidence": round(float(c), 4)}
            for p, k, c in zip(paths, predictions, confidence)]
    run_dir = next_run_dir(cfg.out, "predict")
    report.write_table(rows, ["path", "class", "confidence"], run_dir / "predictions")
    if cfg.plots:
        report.plot_prediction_grid(images, None, predictions, names, run_dir / "predictions.png")
    for row in rows[:20]:
        print(f"{row['path']}: {row['class']} ({row['confidence']:.3f})")
    print(f"{len(rows)} predictions -> {run_dir / 'predictions.csv'}")
    return rows


def compare_run(cfg: ClassifyConfig) -> list[dict]:
    """Train several models on the same data and tabulate parameters, time and test accuracy."""
    names = [m.strip() for m in (cfg.models or "study_cnn_cifar10,study_allconv_cifar10,fast_allconv").split(",")
             if m.strip()]
    data = _load_data(cfg)
    run_dir = next_run_dir(cfg.out, "compare")
    rows = []
    for name in names:
        sub = dataclasses.replace(cfg, model=name, out=str(run_dir / _safe(name)))
        rows.append(train(sub, data))
        report.write_table(rows, COMPARE_COLUMNS, run_dir / "comparison")
    print(report.markdown_table(rows, COMPARE_COLUMNS))
    print(saved_line(run_dir, f"{len(rows)} model(s) compared, one run folder each"))
    return rows


def sweep_run(cfg: ClassifyConfig) -> list[dict]:
    """Vary one setting over values; writes the study's table (time, loss, acc, val loss, val acc per value)."""
    if cfg.param not in SWEEP_PARAMS:
        raise ConfigError(f"sweep needs param= one of {', '.join(SWEEP_PARAMS)}; got {cfg.param!r}")
    if not cfg.values:
        raise ConfigError("sweep needs values=V1,V2,... (for example param=filters values=8,16,32)")
    values = [v.strip() for v in cfg.values.split(",") if v.strip()]
    data = _load_data(cfg)
    run_dir = next_run_dir(cfg.out, "sweep")
    rows = []
    for value in values:
        sub = parse_args([f"{cfg.param}={value}", f"out={run_dir / _safe(f'{cfg.param}_{value}')}"], cfg)
        result = train(sub, data)
        rows.append({cfg.param: value, "params": result["params"], "time": result["train_time"],
                     "loss": result["loss"], "acc": result["acc"], "val_loss": result["test_loss"],
                     "val_acc": result["test_acc"]})
        report.write_table(rows, [cfg.param, "params", "time", "loss", "acc", "val_loss", "val_acc"],
                           run_dir / "sweep")
    print(report.markdown_table(rows, [cfg.param, "params", "time", "loss", "acc", "val_loss", "val_acc"]))
    print(saved_line(run_dir, f"{cfg.param} swept over {len(rows)} value(s), one run folder each"))
    return rows


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
