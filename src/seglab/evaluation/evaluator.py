"""``seglab eval``: metrics of a checkpoint (or ensemble, with TTA) on a held-out split, written to RUN/eval/."""
from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ..config import Config, batch_or, build_config, load_yaml
from ..data.dataset import SegmentationDataset, meta_view_channels, pad_collate
from ..data.masks import MaskCodec
from ..data.plan import plan_data
from ..errors import ConfigError
from ..inference.predict import run_tile
from ..inference.predictor import load_predictor
from ..inference.tiled import tiled_batch_probs
from ..metrics.tgs import BY_COVERAGE_HEADERS, BY_COVERAGE_NOTE, emptiness_counts, tgs_by_coverage
from ..engine.loop import evaluate
from ..runtime.run_dir import write_json


def _run_folder(weights: str) -> Path | None:
    """The run folder a weights argument points into (for its config and as the default output)."""
    p = Path(weights.split(",")[0])
    for cand in (p, p.parent, p.parent.parent):
        if (cand / "config.yaml").exists():
            return cand
    return None


def eval_config(cfg: Config, overrides: dict) -> Config:
    """The run's own data settings (same data, same split seed) unless the user overrides them."""
    run = _run_folder(cfg.weights) if cfg.weights else None
    if run is None:
        return cfg
    saved = load_yaml(run / "config.yaml")
    saved.update({k: v for k, v in overrides.items() if k not in ("cfg", "recipe")})
    saved["weights"] = cfg.weights  # what to evaluate always comes from this call, never from the run's config
    saved["resume"] = False
    return build_config(saved)


def is_tgs_task(cfg: Config, source_format: str | None = None, overrides: dict | None = None) -> bool:
    """The TGS metric and its coverage table belong to TGS data (the ``tgs`` layout, a ``tgs*`` recipe) or to a
    run that asks for them (``metric=tgs``); other binary tasks are described in plain words."""
    recipe = str((overrides or {}).get("recipe") or "")
    return cfg.metric == "tgs" or cfg.format == "tgs" or source_format == "tgs" or Path(recipe).stem.startswith("tgs")


def run_eval(cfg: Config, overrides: dict | None = None, out_dir: Path | None = None) -> dict:
    """Evaluate ``cfg.weights`` on ``cfg.eval_split``; writes metrics.json, per_class.csv, per_image.csv, preds."""
    if not cfg.weights:
        raise ConfigError("eval needs weights=RUN_DIR (or a checkpoint path; comma-separate several for an ensemble)")
    cfg = eval_config(cfg, overrides or {})
    predictor = load_predictor(cfg.weights, cfg.device, cfg.precision, cfg.tta)
    meta = predictor.meta
    codec = MaskCodec.from_dict(meta["codec"])
    plan = plan_data(cfg)
    split = cfg.eval_split
    if split == "all":
        samples = plan.splits["train"] + plan.splits["val"] + plan.splits["test"]
    else:
        samples = plan.splits.get(split) or []
        if not samples and split == "test" and plan.splits["val"]:
            print("note: the data has no test split; evaluating on val")
            split, samples = "val", plan.splits["val"]
    if not samples:
        raise ConfigError(f"eval_split={split}: no samples in that split")
    threshold = (meta.get("tuned") or {}).get("threshold", cfg.threshold)
    ds = SegmentationDataset(samples, codec=codec, in_channels=meta["in_channels"], pad_to=meta["pad_to"],
                             pad_mode=meta["pad_mode"], rle=plan.rle, view_channels=meta_view_channels(meta),
                             split=split)
    # the run's validation tile, unless tile= is given here (tile=0: whole images) or in the run's config
    tile = run_tile(cfg, meta, given="tile" in (overrides or {}))
    loader = DataLoader(ds, batch_size=1 if tile else max(batch_or(cfg.batch, 8), 8),
                        collate_fn=functools.partial(pad_collate, ignore_index=codec.ignore_index))
    if tile:
        print(f"note: images larger than {tile} px are scored by sliding {tile}-px windows at full resolution "
              f"(overlap {cfg.overlap:g}){'; the run validated so (val_tile); tile=0 scores whole images' if tile != cfg.tile else ''}")
    run = _run_folder(cfg.weights)
    out = Path(out_dir) if out_dir else (run / (f"eval_{split}" if split != "test" else "eval") if run else
                                          Path(cfg.project) / "eval")
    if (out / "metrics.json").exists():  # an earlier eval of this run: say so, and keep its scores
        (out / "metrics.json").replace(out / "metrics_previous.json")
        print(f"note: {out} held an earlier evaluation: replaced, its scores kept as {out / 'metrics_previous.json'}")
    (out / "pred").mkdir(parents=True, exist_ok=True)
    pred_paths: list[str] = []

    def save_preds(batch, probs, pred):
        for i, idx in enumerate(batch["index"].tolist()):
            sample = ds.samples[idx]
            h, w = batch["size"][i]
            p = pred[i].cpu().numpy()
            if meta["pad_to"]:  # undo the centre padding evaluation applied
                top, left = (p.shape[0] - h) // 2, (p.shape[1] - w) // 2
                p = p[top:top + h, left:left + w]
            else:
                p = p[:h, :w]
            path = out / "pred" / f"{sample.id}.png"
            Image.fromarray(p.astype(np.uint8)).save(path)
            pred_paths.append(str(path))

    metrics = evaluate(functools.partial(batch_probs, predictor, tile, cfg.overlap, max(1, batch_or(cfg.batch, 8) // 2)), loader,
                       codec.num_classes, codec.ignore_index,
                       predictor.precision.device, threshold=threshold, per_image=True, on_batch=save_preds,
                       desc=f"eval {split}")
    confusion = metrics.pop("confusion").numpy()
    per_image = metrics.pop("per_image_iou")
    per_image_tgs = metrics.pop("per_image_tgs", None)
    coverage = metrics.pop("per_image_coverage", None)
    pred_coverage = metrics.pop("per_image_pred_coverage", None)
    tgs_task = bool(per_image_tgs) and is_tgs_task(cfg, plan.source.format, overrides)
    if per_image_tgs:  # binary: how many empty images got an object, how many objects were missed (plain words)
        metrics.update(emptiness_counts(coverage, pred_coverage))
    if tgs_task:
        metrics["tgs_by_coverage"] = tgs_by_coverage(per_image_tgs, coverage, pred_coverage)
    else:
        metrics.pop("tgs", None)
        per_image_tgs = None
    names = meta["class_names"]
    for row in metrics["per_class"]:
        row["class"] = names[row["class"]] if row["class"] < len(names) else str(row["class"])
    np.save(out / "confusion.npy", confusion.astype(np.int64))
    metrics.update({"split": split, "images": len(ds), "weights": cfg.weights, "tta": cfg.tta})
    if len(names) == 2:  # a binary model's probability cut; a multi-class argmax has none
        metrics["threshold"] = threshold
    write_json(out / "metrics.json", metrics)
    with (out / "per_class.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["class", "iou", "acc", "precision", "recall", "f1", "pixels"])
        w.writeheader()
        w.writerows(metrics["per_class"])
    with (out / "per_image.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "pred", "iou"] + (["tgs"] if per_image_tgs else [])
                   + (["coverage", "pred_coverage"] if coverage else []))
        for i, s in enumerate(ds.samples):
            w.writerow([s.image, s.mask or "", pred_paths[i], f"{per_image[i]:.6f}"]
                       + ([f"{per_image_tgs[i]:.6f}"] if per_image_tgs else [])
                       + ([f"{coverage[i]:.6f}", f"{pred_coverage[i]:.6f}"] if coverage else []))
    print_table(metrics, names)
    if tgs_task:
        print_coverage_table(metrics["tgs_by_coverage"])
    elif "empty_images" in metrics:
        print(emptiness_line(metrics))
    print(f"eval written to {out}")
    if cfg.report and run is not None:
        try:
            from ..report.html import write_report

            from ..data.io import read_mask_raw

            print(f"report: {write_report(run, load_mask=lambda p: codec.decode(read_mask_raw(p)[0], p))}")
        except ImportError as e:  # the report needs matplotlib; metrics are already written
            print(f"note: no HTML report ({e})")
    return metrics


def batch_probs(predictor, tile: int, overlap: float, tiles_per_step: int, batch: dict) -> torch.Tensor:
    """Probabilities of a batch: whole images, or (``tile`` > 0, one image larger than the tile) by sliding windows
    at full resolution (Gaussian-blended tiles, memory bounded by the tile, every pixel scored as predict does)."""
    images = batch["image"]
    if not tile or max(images.shape[-2:]) <= tile:
        return predictor.probs(images, batch["size"])
    channels = 1 if predictor.num_classes == 2 else predictor.num_classes
    probs = tiled_batch_probs(predictor.probs, images, [tuple(images.shape[-2:])] * len(images), tile=tile,
                              num_classes=channels, overlap=overlap, batch_size=tiles_per_step, outputs="probs")
    return probs.to(predictor.precision.device)


def print_table(metrics: dict, names: list[str]) -> None:
    """Per-class table and the headline metrics, on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{metrics.get('split', '')}: {metrics.get('images', '')} images")
    for col in ("class", "IoU", "acc", "precision", "recall", "F1", "pixels"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for row in metrics["per_class"]:
        table.add_row(str(row["class"]), *(f"{row[k]:.4f}" for k in ("iou", "acc", "precision", "recall", "f1")),
                      str(row["pixels"]))
    Console().print(table)
    keys = ("pixel_acc", "miou", "mpa", "precision", "recall", "f1", "fwiou", "fg_iou", "tgs")
    print("  ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics))


def emptiness_line(metrics: dict) -> str:
    """Binary tasks in plain words: empty images predicted with an object, images whose object was missed."""
    return (f"empty images predicted with an object: {metrics['empty_predicted_with_object']} of "
            f"{metrics['empty_images']}; object missed (nothing predicted): {metrics['object_missed']} of "
            f"{metrics['images_with_object']} images with an object")


def print_coverage_table(rows: list[dict]) -> None:
    """The TGS score by true foreground coverage: where the score is lost (binary tasks)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="TGS metric by true foreground coverage")
    for col in BY_COVERAGE_HEADERS:
        table.add_column(col, justify="left" if col == "coverage" else "right")
    for r in rows:
        if r["images"]:
            table.add_row(r["bin"], str(r["images"]), f"{r['tgs']:.4f}", str(r["emptiness_errors"]),
                          f"{r['lost']:.4f}")
    Console().print(table)
    print(BY_COVERAGE_NOTE)
