"""Classification reports: curves, confusion matrix, per-class accuracy, a titled image grid, and tables."""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class (one bincount; no need for scikit-learn)."""
    flat = targets.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes).numpy()


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Recall of each class (diagonal over row sums); NaN for a class with no test images."""
    totals = matrix.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / totals, np.nan)


def plot_curves(rows: Sequence[dict], path: str | Path) -> Path:
    """Loss and accuracy per epoch, train and validation, side by side."""
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["loss"] for r in rows], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], "o-", label="validation")
    ax_acc.plot(epochs, [r["acc"] for r in rows], "o-", label="train")
    ax_acc.plot(epochs, [r["val_acc"] for r in rows], "o-", label="validation")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | Path) -> Path:
    """Confusion matrix of counts with class names on both axes."""
    n = len(class_names)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:  # numbers stop being readable beyond that
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > threshold else "black")
    ax.set_title("confusion matrix (counts)")
    return _save(fig, path)


def plot_per_class_accuracy(matrix: np.ndarray, class_names: Sequence[str], path: str | Path) -> Path:
    """Bar chart of each class's accuracy."""
    acc = per_class_accuracy(matrix)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(class_names) + 2), 4))
    ax.bar(range(len(class_names)), np.nan_to_num(acc), color="tab:blue")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("per-class accuracy")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def gallery_indices(classes: Sequence[int] | torch.Tensor | np.ndarray, count: int = 25, seed: int = 0) -> list[int]:
    """A seeded sample of ``count`` indices stratified over ``classes`` (one label per image): every class in turn
    gives one random image until ``count`` are drawn, so a test set sorted by class (20 airplanes first) still
    shows a mix. The same seed gives the same sample; the result is sorted by class, then index."""
    labels = np.asarray(classes.cpu() if isinstance(classes, torch.Tensor) else classes).astype(np.int64).ravel()
    count = min(count, len(labels))
    rng = np.random.default_rng(seed)
    pools = {int(c): list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
    order = list(rng.permutation(sorted(pools)))  # which classes give first when count < number of classes
    chosen: list[int] = []
    while len(chosen) < count:
        for c in order:
            if pools[c] and len(chosen) < count:
                chosen.append(int(pools[c].pop()))
    return sorted(chosen, key=lambda i: (labels[i], i))


def plot_prediction_grid(images: torch.Tensor, targets: torch.Tensor | None, predictions: torch.Tensor,
                         class_names: Sequence[str], path: str | Path, count: int = 25, seed: int = 0) -> Path:
    """Grid of a seeded, class-stratified sample of test images (``gallery_indices`` over the true labels, or over
    the predictions without labels), titled "true / predicted"; wrong ones get a red title and frame and an x."""
    indices = gallery_indices(targets if targets is not None else predictions, count, seed)
    count = len(indices)
    cols = min(5, count) or 1
    rows = max(1, -(-count // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.4 * rows + 0.5), squeeze=False)
    wrong = 0
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= count:
            ax.axis("off")
            continue
        i = indices[k]
        img = images[i].permute(1, 2, 0).numpy()
        if img.shape[-1] == 1:  # fixed 0..255 range: matplotlib would otherwise stretch each image's contrast
            ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        pred = class_names[int(predictions[i])]
        if targets is None:
            ax.set_title(pred, fontsize=9)
            continue
        true = class_names[int(targets[i])]
        ok = true == pred
        wrong += not ok
        colour = "black" if ok else "red"
        ax.set_title(f"true: {true}\npred: {pred}" + ("" if ok else "  \u2717"), fontsize=8, color=colour)
        for spine in ax.spines.values():
            spine.set_visible(not ok)
            spine.set_color("red")
            spine.set_linewidth(2.5)
    sample = f"{count} of {len(images)} test images, mixed over classes (seed {seed})"
    if targets is None:
        fig.suptitle(f"predicted class: {sample}", fontsize=10)
    else:
        fig.suptitle(f"true / predicted class: {sample}; {wrong} wrong, marked red \u2717", fontsize=10)
    return _save(fig, path)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` restricted to ``columns`` (floats to 4 significant places)."""
    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict], columns: Sequence[str], stem: str | Path) -> tuple[Path, Path]:
    """Write ``stem.md`` and ``stem.csv`` with the given columns; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, csv_path = stem.with_suffix(".md"), stem.with_suffix(".csv")
    md.write_text(markdown_table(rows, columns))
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return md, csv_path


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
