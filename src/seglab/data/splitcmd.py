"""``seglab data split``: write train/val/test list files and k-fold lists that any later run can use."""
from __future__ import annotations

from pathlib import Path

from ..choices import DATA_SPLITS
from ..config import Config
from .dataset import SegmentationDataset
from .formats import write_list_file
from .plan import plan_data
from .split import coverage_bins, kfold_indices


def foreground_coverage(ds: SegmentationDataset) -> list[float]:
    """Fraction of labelled pixels that are foreground (class > 0), per sample."""
    cov = []
    cached = ds.cached_arrays()
    for i, s in enumerate(ds.samples):
        m = cached[i][1] if cached is not None else ds.load_pair(s)[1]
        if m is None:  # an image without a mask has no labelled pixel
            cov.append(0.0)
            continue
        valid = m != ds.codec.ignore_index
        cov.append(float(((m > 0) & valid).sum()) / max(1, int(valid.sum())))
    return cov


def write_splits(cfg: Config, out: str | Path | None = None) -> list[Path]:
    """Write ``train.txt``/``val.txt``/``test.txt`` (and ``foldK_{train,val}.txt`` when folds > 1)."""
    plan = plan_data(cfg)
    out = Path(out) if out else plan.source.root / "splits"
    written = []
    for split in DATA_SPLITS:
        if plan.splits.get(split):
            path = out / f"{split}.txt"
            write_list_file(path, plan.splits[split])
            written.append(path)
    if cfg.folds > 1:
        pool = plan.splits["train"] + plan.splits["val"]
        ds = SegmentationDataset(pool, plan.codec, plan.in_channels, rle=plan.rle)
        strata = coverage_bins(foreground_coverage(ds)) if plan.codec.binary else None
        folds = kfold_indices(len(pool), cfg.folds, cfg.seed, strata)
        for k, val_idx in enumerate(folds):
            val_set = set(val_idx.tolist())
            train_k = [pool[i] for i in range(len(pool)) if i not in val_set]
            val_k = [pool[i] for i in sorted(val_set)]
            for name, samples in ((f"fold{k}_train.txt", train_k), (f"fold{k}_val.txt", val_k)):
                write_list_file(out / name, samples)
                written.append(out / name)
    return written

