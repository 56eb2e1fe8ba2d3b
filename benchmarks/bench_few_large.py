"""A handful of large images, fixed CPU budget, no pretrained weights: seglab's defaults vs seglab as it was vs smp.

Issue 28: a user with 20 thin-section photos of 1600x1200 got test mIoU 0.16 after 12 minutes, because with 14 training
images, batch 8 and crop 512 an epoch was one optimiser step and whole-image validation ran after every step. This
benchmark trains the same model (U-Net on a ResNet34, random init), with the same crop, batch and wall-clock budget, on
three small sets of large images and scores every variant with one scorer (a confusion matrix over the held-out images
at full resolution, in this script):

* ``camvid``: 24 CamVid train frames (every 15th line of train.txt), 15 min; scored on the whole CamVid val split
  (101 frames, 480x360), mIoU over the 11 classes (11 = Unlabelled ignored). In-training validation (seglab's
  monitoring) uses 6 other train frames, never val.
* ``mosaic``: 16 images of 960x720, each a 2x2 mosaic of CamVid train frames (image and annotation alike), 12 min;
  scored on 4 mosaics of val frames; 2 more train-frame mosaics for in-training validation. Written once into the
  workdir (PNG, list files ``image<TAB>mask``, CamVid's classes.csv beside them).
* ``membrane``: ISBI 2012, the repo's seeded 8:1:1 split (as in BENCHMARKS.md): its 24 train images, 10 min; scored
  on its val+test images (6, none trained on), fg IoU (cell interior) and pixel accuracy (target: >= 0.92, no
  regression); the pixel accuracy on the 3 test images alone is the figure BENCHMARKS.md reports (0.920). In-training
  validation uses 3 of the training images (monitoring only; seglab's score on them is optimistic).

Variants (each a child process, ``RESULT {json}`` line):

* ``seglab``: seglab's defaults: ``seglab train data=DIR model=unet_encoder encoder=resnet34 crop=256 batch=8
  time_limit=M`` (+ ``ignore_index=11`` for CamVid data), nothing else. Its plan (crop and batch given) decides
  windows per epoch, validation, and the flips: street scenes have an up and a down, so no vertical flips; a time
  budget's remainder becomes a shortened last epoch; a CPU budget holding fewer than 500 steps trains at half
  resolution (``scale``; scored at full resolution like every variant).
* ``seglab_before``: seglab as it was (one random crop per image per epoch, whole-image validation every epoch, the old
  defaults pinned), through the overrides in ``SEGLAB_OVERRIDES`` below; edit them there (or add/replace keys with
  ``--seglab-overrides``) when the config key names change.
* ``seglab_e221bd1``: seglab's own code as it was on main before issue 28 (commit e221bd1: its loop, its defaults and
  its model initialisation), extracted by ``git archive`` into the workdir and imported by the child instead of this
  checkout; only ``epochs`` is set (the old default of 30 would have ended the budget after 30 steps). Where
  ``seglab_before`` asks what the new loop and defaults add to today's model, this asks what a user gains over the
  release they had.
* ``smp``: segmentation_models_pytorch ``Unet("resnet34", encoder_weights=None)`` in a plain loop as a user writes it:
  random crops + horizontal flips, AdamW lr 1e-3, cosine over the steps the budget is estimated to hold, cross-entropy
  with ignore_index, bf16 autocast only on CPUs with native bf16, channels_last, stop at the budget.

seglab variants are scored from their ``last.pt`` (default; ``--checkpoint best`` for best.pt), loaded with seglab's
predictor and run on whole images (seglab.inference.predict.predict_image); smp on whole images padded to a multiple
of 32. The budget is the training wall time (seglab: training plus in-training validation, its time_limit); data
preparation, model building and scoring are outside it.

    python benchmarks/bench_few_large.py                                   # all datasets, all variants, ~2.5 h
    python benchmarks/bench_few_large.py --datasets camvid --variants seglab,seglab_before
    python benchmarks/bench_few_large.py --minutes-scale 0.02 --max-test 4 --workdir /tmp/fewlarge   # smoke run
    python benchmarks/bench_few_large.py --seglab-overrides '{"seglab_before": {"val_tile": null}}'  # drop a key
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child_runs import print_result, result_or_failure, start_child

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VARIANTS = ("seglab", "seglab_before", "seglab_e221bd1", "smp")
DEFAULT_VARIANTS = ("seglab", "seglab_before", "smp")
OLD_COMMIT = "e221bd1"  # main before issue 28; the seglab_e221bd1 variant runs this commit's src/

# ---- what the variants share and what each seglab variant sets (edit here when key names change) ----------------
MODEL = {"model": "unet_encoder", "encoder": "resnet34"}  # seglab's timm-encoder U-Net; smp: Unet("resnet34")
CROP, BATCH = 256, 8
# Keys on top of data/model/crop/batch/time_limit (and the run folder). seglab: none, its defaults are the point.
# seglab_before: seglab as it was on main before issue 28 (e221bd1): one random crop per image per epoch, whole-image
# validation after every epoch however long it takes, no class-balanced or rare-class windows, and main's other
# defaults pinned so the training plan (which fills crop, pad_to, batch, samples_per_epoch, val_tile, val_every from
# the dataset's fingerprint) cannot change them. epochs: the old default of 30 would end a 15-minute budget after 30
# optimiser steps; the user ran the whole budget.
# Key names and meanings as in the `windows` branch's defaults.yaml (in progress): samples_per_epoch (0 = one sample
# per image per epoch), cat_max_ratio (1 = off), rare_windows (0 = off), val_tile (0 = whole images), val_share
# (1 = never skip a validation to stay within a share of the budget). None of them is on main yet.
SEGLAB_OVERRIDES: dict[str, dict] = {
    "seglab": {},
    "seglab_before": {
        "samples_per_epoch": 0, "cat_max_ratio": 1.0, "rare_windows": 0.0,
        "val_every": 1, "val_tile": 0, "val_share": 1.0,
        "pad_to": 0, "epochs": 100000, "lr": 0.001, "optimizer": "adamw", "weight_decay": 0.0001,
        "scheduler": "cosine", "warmup_epochs": 0.0, "augment": "flips", "loss": "AS_BEFORE", "ema": 0.0,
        "balance": 0.0, "scale": 1.0,
    },
    "seglab_e221bd1": {"epochs": 100000},  # nothing else: that commit's defaults are the point
}
SMP_LR = 1e-3


# ---- datasets ------------------------------------------------------------------------------------------------------
@dataclass
class Spec:
    """One benchmark dataset: budget, classes, the headline metric and how its files are written."""

    name: str
    minutes: float
    num_classes: int  # classes scored (2 for binary: background and foreground)
    ignore_index: int
    headline: str  # miou or fg_iou
    seglab_data: dict = field(default_factory=dict)  # data keys beside data=DIR (e.g. ignore_index=11)
    class_names: list = field(default_factory=list)
    subsets: dict = field(default_factory=dict)  # extra scored subsets: name -> image stems


CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
                  "Bicyclist"]
SPECS = {
    "camvid": Spec("camvid", 15.0, 11, 11, "miou", {"ignore_index": 11}, CAMVID_CLASSES),
    "mosaic": Spec("mosaic", 12.0, 11, 11, "miou", {"ignore_index": 11}, CAMVID_CLASSES),
    "membrane": Spec("membrane", 10.0, 2, 255, "fg_iou", {}, ["membrane", "cell"]),
}


def _camvid_pairs(split: str) -> list[tuple[Path, Path]]:
    """(image, annotation) paths of a CamVid split list, in file order."""
    root = SHARED / "camvid"
    rows = [ln.split() for ln in (root / f"{split}.txt").read_text().splitlines() if ln.strip()]
    return [(root / r[0], root / r[1]) for r in rows]


def _write_list(path: Path, pairs: list[tuple[Path, Path]]) -> None:
    """``image<TAB>mask`` per line, absolute paths (seglab's list format; this script reads it back the same way)."""
    path.write_text("".join(f"{Path(i).resolve()}\t{Path(m).resolve()}\n" for i, m in pairs))


def read_list(path: Path) -> list[tuple[Path, Path]]:
    """The (image, mask) pairs of a list file written by _write_list."""
    return [tuple(Path(p) for p in ln.split("\t")) for ln in path.read_text().splitlines() if ln.strip()]


def prepare_camvid(out: Path) -> None:
    """24 train frames (every 15th), 6 other train frames to monitor, the 101 val frames held out."""
    train = _camvid_pairs("train")
    _write_list(out / "train.txt", train[::15][:24])  # lines 0, 15, ..., 345
    _write_list(out / "val.txt", train[7::60])  # lines 7, 67, ..., 307: never a multiple of 15
    _write_list(out / "test.txt", _camvid_pairs("val"))
    shutil.copy(SHARED / "camvid" / "classes.csv", out / "classes.csv")


def _mosaic(frames: list[tuple[Path, Path]], image_path: Path, mask_path: Path) -> None:
    """A 2x2 mosaic of four 480x360 frames (top-left, top-right, bottom-left, bottom-right), annotations alike."""
    import numpy as np
    from PIL import Image

    imgs = [np.asarray(Image.open(i).convert("RGB")) for i, _ in frames]
    masks = [np.asarray(Image.open(m)) for _, m in frames]
    for parts, path in ((imgs, image_path), (masks, mask_path)):  # (np.block would join 3-D arrays on channels)
        Image.fromarray(np.concatenate([np.concatenate(parts[:2], 1), np.concatenate(parts[2:], 1)], 0)).save(path)


def prepare_mosaic(out: Path) -> None:
    """16 train mosaics and 2 monitoring mosaics from CamVid train frames, 4 held-out mosaics from val frames.

    Frames: every 5th train line (72 frames); mosaic k takes frames k, k+n, k+2n, k+3n of its group (n mosaics), so each
    mosaic mixes four parts of the sequences. Held out: every 6th val line (16 frames).
    """
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    train, val = _camvid_pairs("train")[::5][:72], _camvid_pairs("val")[::6][:16]
    groups = {"train": train[:64], "val": train[64:72], "test": val}
    for split, frames in groups.items():
        n = len(frames) // 4
        pairs = []
        for k in range(n):
            image, mask = out / "images" / f"{split}_{k:02d}.png", out / "masks" / f"{split}_{k:02d}.png"
            if not (image.exists() and mask.exists()):
                _mosaic([frames[k + j * n] for j in range(4)], image, mask)
            pairs.append((image, mask))
        _write_list(out / f"{split}.txt", pairs)
    shutil.copy(SHARED / "camvid" / "classes.csv", out / "classes.csv")


def prepare_membrane(out: Path) -> None:
    """The repo's seeded 8:1:1 split (seglab's plan, seed 0): 24 train; val+test (6) held out; 3 train to monitor."""
    from seglab.config import build_config
    from seglab.data.plan import plan_data

    plan = plan_data(build_config({"data": str(SHARED / "membrane")}))
    pairs = {k: [(s.image, s.mask) for s in v] for k, v in plan.splits.items()}
    if (len(pairs["train"]), len(pairs["val"]) + len(pairs["test"])) != (24, 6):
        sys.exit(f"error: membrane split is {[len(v) for v in pairs.values()]}, expected 24/3/3")
    train = sorted(pairs["train"], key=lambda p: int(Path(p[0]).stem))
    _write_list(out / "train.txt", train)
    _write_list(out / "val.txt", train[::8])  # 3 training images: monitoring only
    _write_list(out / "test.txt", pairs["val"] + pairs["test"])
    SPECS["membrane"].subsets = {"repo_test": [Path(i).stem for i, _ in pairs["test"]]}
    (out / "subsets.json").write_text(json.dumps(SPECS["membrane"].subsets))


PREPARE = {"camvid": prepare_camvid, "mosaic": prepare_mosaic, "membrane": prepare_membrane}


def data_dir(workdir: Path, name: str) -> Path:
    """Where a dataset's list files (and, for mosaics, images) are written."""
    return workdir / "data" / name


def prepare(workdir: Path, name: str) -> Path:
    """Write a dataset's files once into the workdir; returns its folder (seglab's data=)."""
    out = data_dir(workdir, name)
    out.mkdir(parents=True, exist_ok=True)
    PREPARE[name](out)
    return out


def old_src(workdir: Path) -> Path:
    """Where the seglab_e221bd1 variant's source lives (``src/`` of that commit, extracted once)."""
    return workdir / f"seglab_{OLD_COMMIT}" / "src"


def extract_old_src(workdir: Path) -> Path:
    """``git archive`` the old commit's src/ into the workdir (no worktree registered in the checkout)."""
    import subprocess

    dest = old_src(workdir)
    if not (dest / "seglab" / "__init__.py").is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        repo = Path(__file__).resolve().parents[1]
        archive = subprocess.run(["git", "-C", str(repo), "archive", OLD_COMMIT, "src"], capture_output=True, check=False)
        if archive.returncode:
            sys.exit(f"error: cannot extract seglab at {OLD_COMMIT} for the seglab_e221bd1 variant (needs this git "
                     f"checkout with its history): {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", str(dest.parent)], input=archive.stdout, check=True)
    return dest


def load_subsets(spec: Spec, ddir: Path) -> None:
    """A child reads the subsets the parent wrote (the membrane split comes from seglab's plan)."""
    if (ddir / "subsets.json").exists():
        spec.subsets = json.loads((ddir / "subsets.json").read_text())


# ---- reading and scoring (the same for every variant) -------------------------------------------------------------
def read_image(path: Path):
    """(H, W, C) uint8 as stored: gray stays one channel."""
    import numpy as np
    from PIL import Image

    img = Image.open(path)
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    arr = np.asarray(img)
    return arr[..., None] if arr.ndim == 2 else arr


def read_mask(path: Path, spec: Spec):
    """(H, W) int64 class indices: membrane 0/255 -> 0/1; CamVid indices as stored (11 = ignored)."""
    import numpy as np
    from PIL import Image

    m = np.asarray(Image.open(path))
    if m.ndim == 3:
        m = m[..., 0]
    return (m > 127).astype(np.int64) if spec.num_classes == 2 else m.astype(np.int64)


def metrics_from_confusion(conf, class_names: list[str]) -> dict:
    """mIoU (classes present in the ground truth or the prediction), per-class IoU, pixel accuracy, fg IoU."""
    import numpy as np

    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    out = {"miou": float(np.nanmean(iou)), "pixel_acc": float(tp.sum() / max(conf.sum(), 1)),
           "per_class_iou": {n: (None if math.isnan(v) else round(float(v), 4)) for n, v in zip(class_names, iou)}}
    if len(class_names) == 2:
        out["fg_iou"] = float(iou[1])
    return out


def score(predict, pairs: list[tuple[Path, Path]], spec: Spec) -> dict:
    """Confusion matrix of ``predict(image_path) -> (H, W) labels`` over the held-out pairs at full resolution."""
    import numpy as np

    k = spec.num_classes
    total, per_image = np.zeros((k, k), np.int64), {}
    t0 = time.perf_counter()
    for image_path, mask_path in pairs:
        gt = read_mask(mask_path, spec)
        pred = np.asarray(predict(image_path)).astype(np.int64)
        if pred.shape != gt.shape:
            raise RuntimeError(f"{image_path}: prediction {pred.shape} vs mask {gt.shape}")
        valid = (gt != spec.ignore_index) & (gt < k)
        conf = np.bincount(k * gt[valid] + pred[valid], minlength=k * k).reshape(k, k)
        total += conf
        per_image[Path(image_path).stem] = conf
    result = metrics_from_confusion(total, spec.class_names)
    result["images"], result["score_s"] = len(pairs), round(time.perf_counter() - t0, 1)
    for name, stems in spec.subsets.items():
        sub = sum((per_image[s] for s in stems if s in per_image), np.zeros((k, k), np.int64))
        if sub.sum():
            result[name] = metrics_from_confusion(sub, spec.class_names)
    return result


def held_out(ddir: Path, max_test: int) -> list[tuple[Path, Path]]:
    """The scored pairs (test.txt), optionally only the first ``max_test`` (quick checks)."""
    pairs = read_list(ddir / "test.txt")
    return pairs[:max_test] if max_test else pairs


# ---- variants (run in a child process) ----------------------------------------------------------------------------
def seglab_overrides(variant: str, spec: Spec, ddir: Path, minutes: float, runs: Path, extra: dict,
                     seed: int = 0) -> dict:
    """The key=value overrides of a seglab variant (None in ``extra`` removes a key)."""
    overrides = {"data": str(ddir), **spec.seglab_data, **MODEL, "crop": CROP, "batch": BATCH, "time_limit": minutes,
                 "project": str(runs), "name": variant, "exist_ok": True, "seed": seed}
    for key, value in {**SEGLAB_OVERRIDES[variant], **extra}.items():
        if value == "AS_BEFORE" and key == "loss":  # what loss=auto meant before issue 28: bce for 2 classes, else ce
            value = "bce" if spec.num_classes == 2 else "ce"
        if value is None:
            overrides.pop(key, None)
        else:
            overrides[key] = value
    return overrides


def run_seglab(variant: str, spec: Spec, ddir: Path, minutes: float, workdir: Path, checkpoint: str, max_test: int,
               extra: dict, skip_unknown: bool, seed: int = 0) -> dict:
    """Train with seglab's engine for the budget, then score the chosen checkpoint with seglab's predictor."""
    import numpy as np

    from seglab.config import build_config, field_names
    from seglab.data.dataset import load_image
    try:
        from seglab.engine.dispatch import train
    except ImportError:  # seglab before the dispatch module (the seglab_e221bd1 variant)
        from seglab.engine.trainer import train
    from seglab.inference.predict import predict_image
    from seglab.inference.predictor import load_predictor
    from seglab.runtime.checkpoint import load_checkpoint

    runs = workdir / "runs" / spec.name
    overrides = seglab_overrides(variant, spec, ddir, minutes, runs, extra, seed)
    unknown = sorted(k for k in overrides if k not in field_names())
    if unknown and not skip_unknown:
        drop = json.dumps({variant: dict.fromkeys(unknown)})
        sys.exit(f"error: this seglab has no config keys {unknown} (assumed by SEGLAB_OVERRIDES[{variant!r}] in "
                 f"{Path(__file__).name}); rename them there, drop them with --seglab-overrides '{drop}', or pass "
                 "--skip-unknown-keys")
    for key in unknown:
        print(f"note: skipping config key {key}={overrides.pop(key)!r}: not in this seglab", flush=True)
    print("command: seglab train " + " ".join(f"{k}={v}" for k, v in overrides.items()), flush=True)
    shutil.rmtree(runs / variant, ignore_errors=True)  # a fresh run folder: no best.pt left from an earlier run
    run = train(build_config(overrides), overrides)
    ckpt = run / "checkpoints" / f"{checkpoint}.pt"
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    summary = json.loads((run / "summary.json").read_text())
    predictor = load_predictor(str(ckpt), "cpu", "auto", "none")
    in_ch, threshold = predictor.meta["in_channels"], predictor.meta.get("threshold", 0.5)
    scores = score(lambda p: predict_image(predictor, np.array(load_image(Path(p), in_ch)), threshold)[0],
                   held_out(ddir, max_test), spec)
    images = int(state.get("images", 0))
    train_s, wall_s = float(state.get("train_time", summary["train_time_s"])), float(state.get("wall_time", 0.0))
    return {**scores, "epochs": summary["epochs_done"], "steps": math.ceil(images / BATCH), "train_images": images,
            "train_ips": summary["train_images_per_s"], "train_min": train_s / 60,
            "val_min": max(0.0, wall_s - train_s) / 60,
            "budget_min": wall_s / 60, "checkpoint": str(ckpt), "best_epoch": summary.get("best_epoch"),
            "precision": summary.get("precision"), "overrides": overrides, "skipped_keys": unknown, "run": str(run),
            "epoch_curve": epoch_curve(run / "metrics.csv")}


def epoch_curve(metrics_csv: Path) -> list[dict]:
    """Per epoch of a seglab run: its mean training loss and the learning rate at its end (to set beside smp's)."""
    import csv

    with open(metrics_csv, newline="") as f:
        return [{"epoch": int(r["epoch"]), "train_loss": round(float(r["train_loss"]), 5), "lr": float(r["lr"])}
                for r in csv.DictReader(f) if r.get("train_loss")]


def run_smp(spec: Spec, ddir: Path, minutes: float, max_test: int, seed: int = 0) -> dict:
    """smp's Unet("resnet34") trained the way a user writes a plain PyTorch loop, then scored on whole images."""
    from smp_loop import train_smp_unet

    train_pairs = read_list(ddir / "train.txt")
    images = [read_image(i) for i, _ in train_pairs]
    masks = [read_mask(m, spec) for _, m in train_pairs]
    run = train_smp_unet(images, masks, spec.num_classes, spec.ignore_index, minutes, CROP, BATCH, lr=SMP_LR,
                         seed=seed)
    scores = score(lambda path: run.predict(read_image(path)), held_out(ddir, max_test), spec)
    return {**scores, "epochs": run.epochs, "steps": run.steps, "train_images": run.seen,
            "train_ips": run.seen / run.train_s, "train_min": run.train_s / 60, "val_min": 0.0,
            "budget_min": run.train_s / 60, "precision": run.precision, "checkpoint": "end of training",
            "step_losses": run.losses, "step_lrs": [round(lr, 8) for lr in run.lrs]}


def child(args) -> None:
    """Run one dataset:variant and print its RESULT line."""
    name, variant = args.child.split(":")
    if variant == "seglab_e221bd1":  # import that commit's seglab, not this checkout's
        sys.path.insert(0, str(old_src(Path(args.workdir))))
        import seglab
        assert Path(seglab.__file__).is_relative_to(old_src(Path(args.workdir))), seglab.__file__
    spec, ddir, workdir = SPECS[name], data_dir(Path(args.workdir), name), Path(args.workdir)
    load_subsets(spec, ddir)
    t0 = time.time()
    if variant == "smp":
        result = run_smp(spec, ddir, args.minutes, args.max_test, args.seed)
    else:
        extra = json.loads(args.seglab_overrides).get(variant, {})
        result = run_seglab(variant, spec, ddir, args.minutes, workdir, args.checkpoint, args.max_test, extra,
                            args.skip_unknown_keys, args.seed)
    print_result({"dataset": name, "variant": variant, "status": "ok", "minutes": args.minutes, "seed": args.seed,
                  "child_min": (time.time() - t0) / 60, **result})


# ---- parent: launch, collect, report ------------------------------------------------------------------------------
def collect(name: str, variant: str, proc, log: Path) -> dict:
    """A child's RESULT, or a failure record (the other variants go on)."""
    result = result_or_failure(f"{name}/{variant}", proc, log)
    return result if result.get("status") == "ok" else {"dataset": name, "variant": variant, **result}


def table(spec: Spec, results: dict) -> list[str]:
    """Markdown lines of one dataset's results."""
    head = "mIoU" if spec.headline == "miou" else "fg IoU (cell)"
    extra = " | px acc (repo's 3 test) | mIoU" if spec.subsets else ""
    lines = [f"| variant | {head} | pixel acc{extra} | epochs | steps | train img/s | train min | val min | "
             f"budget min | precision |",
             "|---|---|---|" + "---|" * (2 if spec.subsets else 0) + "---|---|---|---|---|---|---|"]
    for variant, r in results.items():
        if r.get("status") != "ok":
            empty = 8 + (2 if spec.subsets else 0)
            lines.append(f"| {variant} | failed: {r.get('error', '')[:160]} |" + " |" * empty)
            continue
        sub = ""
        if spec.subsets:
            first = next(iter(spec.subsets))
            sub = (f" | {r[first]['pixel_acc']:.4f}" if first in r else " | -") + f" | {r['miou']:.4f}"
        lines.append(f"| {variant} | {r[spec.headline]:.4f} | {r['pixel_acc']:.4f}{sub} | {r['epochs']} | "
                     f"{r['steps']} | {r['train_ips']:.1f} | {r['train_min']:.2f} | {r['val_min']:.2f} | "
                     f"{r['budget_min']:.2f} | {r.get('precision', '')} |")
    ok = {v: r for v, r in results.items() if r.get("status") == "ok"}
    for base in ("seglab_before", "seglab_e221bd1"):
        if "seglab" in ok and base in ok:
            before = ok[base][spec.headline]
            ratio = ok["seglab"][spec.headline] / before if before > 0 else float("inf")
            lines.append(f"\nseglab / {base} {head}: **{ratio:.2f}x** "
                         f"({ok['seglab'][spec.headline]:.4f} / {before:.4f})")
    if spec.name == "membrane" and "seglab" in ok:
        acc = ok["seglab"]["pixel_acc"]
        lines.append(f"\nmembrane target pixel acc >= 0.92: seglab {acc:.4f} ({'met' if acc >= 0.92 else 'NOT met'})")
    if spec.num_classes > 2 and ok:
        lines += ["", "Per-class IoU:", "", "| variant | " + " | ".join(spec.class_names) + " |",
                  "|---|" + "---|" * len(spec.class_names)]
        for variant, r in ok.items():
            ious = [r["per_class_iou"].get(c) for c in spec.class_names]
            lines.append(f"| {variant} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in ious) + " |")
    return lines


def report(all_results: dict, args, minutes: dict, start: float) -> str:
    """The Markdown report of every dataset run so far."""
    from seglab.runtime.precision import describe_cpu

    mode = "one after the other, all cores each" if args.sequential else "in parallel, one core each"
    out = [f"# Few large images (issue 28): seglab vs seglab as it was vs smp", "",
           f"cpu: {describe_cpu()}; variants {mode}; U-Net ResNet34 (random init), crop {CROP}, batch {BATCH}; "
           f"seed {args.seed}; seglab scored from {args.checkpoint}.pt; "
           f"total wall {(time.time() - start) / 60:.0f} min", ""]
    for name, results in all_results.items():
        spec = SPECS[name]
        scored = next((r["images"] for r in results.values() if r.get("status") == "ok"), "?")
        out += [f"## {name}: {minutes[name]:g} min per variant, scored on {scored} held-out images at full "
                f"resolution", ""] + table(spec, results) + [""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(SPECS), help="comma-separated subset of camvid,mosaic,membrane")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated subset of " + ",".join(VARIANTS) + " (default: "
                        + ",".join(DEFAULT_VARIANTS) + ")")
    parser.add_argument("--minutes-scale", type=float, default=1.0,
                        help="multiply every dataset's budget (15/12/10 min), e.g. 0.02 for a smoke run")
    parser.add_argument("--workdir", default="runs/bench_few_large")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--sequential", action="store_true", default=True,
                      help="variants one after the other, all cores each (default)")
    mode.add_argument("--parallel", dest="sequential", action="store_false",
                      help="a dataset's variants at once, each pinned to one core")
    parser.add_argument("--checkpoint", choices=("last", "best"), default="last", help="seglab checkpoint scored")
    parser.add_argument("--max-test", type=int, default=0, help="score only the first N held-out images (quick checks)")
    parser.add_argument("--seglab-overrides", default="{}",
                        help='JSON per seglab variant, merged over SEGLAB_OVERRIDES (null drops a key), e.g. '
                             '\'{"seglab_before": {"val_every": 2}}\'')
    parser.add_argument("--skip-unknown-keys", action="store_true",
                        help="drop overrides this seglab does not know (with a note) instead of failing the variant")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every variant (seglab's seed=, the smp loop's init and window order)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # DATASET:VARIANT, in a child process
    parser.add_argument("--minutes", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    datasets = [d for d in args.datasets.split(",") if d]
    variants = [v for v in args.variants.split(",") if v]
    if bad := (set(datasets) - set(SPECS)) | (set(variants) - set(VARIANTS)):
        sys.exit(f"error: unknown datasets/variants {sorted(bad)}; datasets: {', '.join(SPECS)}; "
                 f"variants: {', '.join(VARIANTS)}")
    overrides = json.loads(args.seglab_overrides)
    if bad := set(overrides) - set(SEGLAB_OVERRIDES):
        sys.exit(f"error: --seglab-overrides is keyed by seglab variant ({', '.join(SEGLAB_OVERRIDES)}), "
                 f"got {sorted(bad)}")
    if not (SHARED / "camvid").is_dir() or not (SHARED / "membrane").is_dir():
        sys.exit(f"error: shared data not found at {SHARED}")
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if "seglab_e221bd1" in variants:
        print(f"seglab_e221bd1: seglab's code at {OLD_COMMIT} in {extract_old_src(workdir)}", flush=True)
    cores = sorted(os.sched_getaffinity(0))
    if not args.sequential and len(variants) > len(cores):
        print(f"warning: {len(variants)} variants in parallel on {len(cores)} cores: some share a core", flush=True)
    start, all_results, minutes = time.time(), {}, {}
    for name in datasets:
        ddir = prepare(workdir, name)
        minutes[name] = SPECS[name].minutes * args.minutes_scale
        print(f"{name}: {len(read_list(ddir / 'train.txt'))} train / {len(read_list(ddir / 'val.txt'))} monitor / "
              f"{len(read_list(ddir / 'test.txt'))} held-out images in {ddir}; {minutes[name]:g} min per variant",
              flush=True)
        procs, results = [], {}
        for i, variant in enumerate(variants):
            cmd = [sys.executable, __file__, "--child", f"{name}:{variant}", "--workdir", str(workdir),
                   "--minutes", str(minutes[name]), "--checkpoint", args.checkpoint, "--max-test", str(args.max_test),
                   "--seglab-overrides", args.seglab_overrides, "--seed", str(args.seed)]
            cmd += ["--skip-unknown-keys"] if args.skip_unknown_keys else []
            log = workdir / f"{name}_{variant}.log"
            if args.sequential:
                results[variant] = collect(name, variant, start_child(cmd, log), log)
            else:
                procs.append((variant, start_child(cmd, log, core=cores[i % len(cores)]), log))
        for variant, proc, log in procs:
            results[variant] = collect(name, variant, proc, log)
        all_results[name] = results
        (workdir / "results.json").write_text(json.dumps(all_results, indent=1))  # partial results survive
    text = report(all_results, args, minutes, start)
    (workdir / "results.md").write_text(text + "\n")
    print("\n" + text)
    print(f"\nresults: {workdir / 'results.json'}, {workdir / 'results.md'}; logs: {workdir}/*.log")


if __name__ == "__main__":
    main()
