"""k-fold training: every fold's best model, the out-of-fold score, and threshold/min-area tuning on it."""
from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import Config, batch_or, save_config
from ..data.dataset import SegmentationDataset, pad_collate
from ..data.plan import plan_data
from ..data.split import coverage_bins, kfold_indices
from ..data.splitcmd import foreground_coverage
from ..inference.predictor import load_predictor
from ..metrics import ConfusionMatrix
from ..metrics.tgs import tgs_scores_torch
from ..runtime.checkpoint import load_checkpoint, save_checkpoint
from ..runtime.run_dir import new_run_dir, write_json
from .components import log
from .trainer import train_single

THRESHOLDS = tuple(np.round(np.arange(0.3, 0.71, 0.05), 2))
MIN_AREAS = (0, 10, 20, 40, 80, 160)


def train_folds(cfg: Config, overrides: dict[str, Any]) -> Path:
    """Train folds 0..k-1 (or only ``cfg.fold``) on train+val, stratified by foreground coverage."""
    plan = plan_data(cfg)
    pool = plan.splits["train"] + plan.splits["val"]
    ds = SegmentationDataset(pool, plan.codec, plan.in_channels, rle=plan.rle, view_channels=plan.view_channels)
    strata = coverage_bins(foreground_coverage(ds)) if plan.codec.binary else None
    folds = kfold_indices(len(pool), cfg.folds, cfg.seed, strata)
    base = new_run_dir(cfg)
    save_config(cfg, base / "config.yaml")
    todo = [cfg.fold] if cfg.fold >= 0 else list(range(cfg.folds))
    oof_probs: dict[int, np.ndarray] = {}
    scores = []
    for k in todo:
        val_set = set(folds[k].tolist())
        fold_plan = copy.copy(plan)
        fold_plan.splits = {"train": [pool[i] for i in range(len(pool)) if i not in val_set],
                            "val": [pool[i] for i in folds[k]], "test": plan.splits["test"]}
        fold_cfg = dataclasses.replace(cfg, folds=0, fold=-1, name=f"fold{k}", project=str(base), exist_ok=True)
        log(f"\n=== fold {k + 1}/{cfg.folds}: {len(fold_plan.splits['train'])} train / {len(folds[k])} val ===")
        run = train_single(fold_cfg, overrides, plan=fold_plan, run_dir=base / f"fold{k}")
        probs, score = _fold_predictions(run, fold_plan.splits["val"], plan, cfg)
        for i, p in zip(folds[k].tolist(), probs):
            oof_probs[i] = p
        scores.append(score)
        log(f"fold {k}: {score}")
    result: dict[str, Any] = {"folds": cfg.folds, "trained": todo, "fold_scores": scores}
    if plan.codec.binary and len(oof_probs) == len(pool):
        targets = [ds.load_pair(pool[i])[1] for i in range(len(pool))]
        tuned = tune_binary(oof_probs, targets, plan.codec.ignore_index)
        result["oof"] = tuned
        log(f"out-of-fold: tgs={tuned['tgs_default']:.4f} fg_iou={tuned['fg_iou_default']:.4f} at threshold 0.5; "
            f"tuned threshold={tuned['threshold']} min_area={tuned['min_area']} -> tgs={tuned['tgs']:.4f}")
        for k in todo:  # stored with every fold's model, so predict and eval reuse it
            path = base / f"fold{k}" / "checkpoints" / "best.pt"
            state = load_checkpoint(path)
            state["meta"]["tuned"] = {"threshold": tuned["threshold"], "min_area": tuned["min_area"]}
            save_checkpoint(state, path)
    write_json(base / "folds.json", result)
    return base


def _fold_predictions(run: Path, samples, plan, cfg: Config) -> tuple[list[np.ndarray], dict]:
    """Probabilities of a fold's best model on its validation images, and its metrics there."""
    predictor = load_predictor(str(run), cfg.device, cfg.precision, cfg.tta)
    meta = predictor.meta
    ds = SegmentationDataset(samples, plan.codec, plan.in_channels, pad_to=meta["pad_to"], pad_mode=meta["pad_mode"],
                             rle=plan.rle, view_channels=plan.view_channels)
    loader = DataLoader(ds, batch_size=max(batch_or(cfg.batch, 16), 16),
                        collate_fn=functools.partial(pad_collate, ignore_index=plan.codec.ignore_index))
    cm = ConfusionMatrix(plan.codec.num_classes, plan.codec.ignore_index)
    out = []
    for batch in loader:
        probs = predictor.probs(batch["image"], batch["size"]).float().cpu()
        pred = (probs[:, 0] > 0.5).long() if probs.shape[1] == 1 else probs.argmax(1)
        cm.update(pred, batch["mask"])
        for i, (h, w) in enumerate(batch["size"]):
            p = probs[i]
            top, left = (p.shape[-2] - h) // 2 if meta["pad_to"] else 0, (p.shape[-1] - w) // 2 if meta["pad_to"] else 0
            out.append((p[:, top:top + h, left:left + w].numpy() * 255).round().astype(np.uint8))
    m = cm.compute()
    return out, {k: m[k] for k in ("pixel_acc", "miou", "fg_iou") if k in m}


def tune_binary(probs: dict[int, np.ndarray], targets: list[np.ndarray], ignore_index: int) -> dict:
    """Grid-search threshold and minimum predicted area that maximise the mean TGS score out of fold."""
    idx = sorted(probs)
    p = torch.from_numpy(np.stack([probs[i][0] for i in idx])).float() / 255
    t = torch.from_numpy(np.stack([targets[i] for i in idx]).astype(np.int64))
    valid = t != ignore_index
    truth = (t == 1) & valid
    best = {"tgs": -1.0}
    default = {}
    for th in THRESHOLDS:
        pred = (p > th) & valid
        area = pred.flatten(1).sum(1)
        for min_area in MIN_AREAS:
            keep = (area >= min_area) | (area == 0)
            pm = pred & keep[:, None, None]
            score = float(tgs_scores_torch(pm, truth).mean())
            if score > best["tgs"]:
                best = {"tgs": score, "threshold": float(th), "min_area": int(min_area)}
            if th == 0.5 and min_area == 0:
                inter = (pm & truth).sum().item()
                union = (pm | truth).sum().item()
                default = {"tgs_default": score, "fg_iou_default": inter / max(union, 1)}
    return {**best, **default}
