"""Compare runs: one row per run (model, size, speed, every eval metric) as terminal, Markdown and CSV tables,
plus validation curves of all runs on one figure."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError, DataError
from .formatting import format_value
from .plots import save_figure
from .run_folder import (
    load_config,
    load_eval,
    load_metrics,
    load_summary,
    metric_series,
    require_run_dir,
    select_eval_dir,
)

INFO_COLUMNS = ("run", "model", "encoder", "params", "gflops", "train_time_s", "train_images_per_s", "images_per_s")
METRICS_FIRST = ("miou", "mpa", "pixel_acc", "fg_iou", "precision", "recall", "f1", "fwiou")
LABELS = {
    "run": "Run", "model": "Model", "encoder": "Encoder", "params": "Params", "gflops": "GFLOPs",
    "train_time_s": "Train time", "train_images_per_s": "Train img/s", "images_per_s": "Infer img/s",
    "miou": "mIoU", "mpa": "mPA", "pixel_acc": "PA", "fg_iou": "FG IoU", "precision": "Precision",
    "recall": "Recall", "f1": "F1", "fwiou": "FWIoU", "loss": "Loss",
}
CURVE_COLUMNS = ("val_miou", "val_loss")


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Folder names, or parent/name where two runs share a folder name."""
    names = [p.resolve().name for p in run_dirs]
    return [
        f"{p.resolve().parent.name}/{p.resolve().name}" if names.count(p.resolve().name) > 1 else p.resolve().name
        for p in run_dirs
    ]


def compare_runs(run_dirs: Sequence[str | Path], split: str | None = None) -> list[dict[str, Any]]:
    """One dict per run: INFO_COLUMNS then every scalar eval metric (union over runs, None when missing)."""
    if not run_dirs:
        raise ConfigError("compare needs at least one run folder")
    paths = [require_run_dir(p) for p in run_dirs]
    rows, metric_keys = [], []
    for path, label in zip(paths, run_labels(paths)):
        summary, config = load_summary(path) or {}, load_config(path) or {}
        eval_dir = select_eval_dir(path, split)
        metrics = (load_eval(eval_dir).metrics or {}) if eval_dir else {}
        row: dict[str, Any] = {
            "run": label,
            "model": summary.get("model", config.get("model")),
            "encoder": summary.get("encoder", config.get("encoder")),
            "params": summary.get("params"),
            "gflops": summary.get("gflops"),
            "train_time_s": summary.get("train_time_s"),
            "train_images_per_s": summary.get("train_images_per_s"),
            "images_per_s": metrics.get("images_per_s"),
        }
        for key, value in metrics.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and key not in ("images_per_s", "images", "threshold"):  # settings, not metrics
                row[key] = value
                if key not in metric_keys:
                    metric_keys.append(key)
        rows.append(row)
    ordered = [k for k in METRICS_FIRST if k in metric_keys] + sorted(k for k in metric_keys if k not in METRICS_FIRST)
    return [{k: row.get(k) for k in (*INFO_COLUMNS, *ordered)} for row in rows]


def _metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Columns that hold eval metrics (everything after the info columns)."""
    return [k for k in rows[0] if k not in INFO_COLUMNS] if rows else []


def _is_fraction_column(rows: list[dict[str, Any]], key: str) -> bool:
    """True when every value of the column lies in 0..1, so it reads better as a percentage."""
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    if values and all(isinstance(v, int) for v in values):  # counts (images with an object: 1), not fractions
        return False
    return bool(values) and all(0.0 <= v <= 1.0 for v in values)


def column_label(key: str) -> str:
    """A column's title: ``miou_hflip_tta`` (a metric scored another way) reads "mIoU hflip TTA"."""
    if key in LABELS:
        return LABELS[key]
    for base in sorted(LABELS, key=len, reverse=True):  # pixel_acc before a shorter key it starts with
        if key.startswith(base + "_"):
            words = key[len(base) + 1:].split("_")
            return " ".join([LABELS[base], *(w.upper() if w == "tta" else w for w in words)])
    return key


def _header(rows: list[dict[str, Any]], key: str) -> str:
    """Column title, with (%) for fraction metrics."""
    label = column_label(key)
    return f"{label} (%)" if key in _metric_columns(rows) and _is_fraction_column(rows, key) else label


def _cell(rows: list[dict[str, Any]], row: dict[str, Any], key: str) -> str:
    """Formatted cell; fraction metrics as percentages with two decimals like the source studies' tables."""
    value = row.get(key)
    if key in _metric_columns(rows) and _is_fraction_column(rows, key) and isinstance(value, (int, float)):
        return f"{100 * value:.2f}"
    return format_value(key, value)


def _best_rows(rows: list[dict[str, Any]], key: str) -> set[int]:
    """Indices of rows holding the highest value of a metric column (ties all count)."""
    values = [(i, r[key]) for i, r in enumerate(rows) if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    if len(values) < 2:
        return set()
    top = max(v for _, v in values)
    return {i for i, v in values if v == top}


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """GitHub Markdown table, best value of each metric in bold."""
    if not rows:
        raise ValueError("no runs to tabulate")
    keys = list(rows[0])
    best = {k: _best_rows(rows, k) for k in _metric_columns(rows)}
    lines = [
        "| " + " | ".join(_header(rows, k) for k in keys) + " |",
        "|" + "|".join(":---" if k in ("run", "model", "encoder") else "---:" for k in keys) + "|",
    ]
    for i, row in enumerate(rows):
        cells = [f"**{_cell(rows, row, k)}**" if i in best.get(k, ()) else _cell(rows, row, k) for k in keys]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Raw (unformatted) values, one row per run."""
    if not rows:
        raise ValueError("no runs to tabulate")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return path


def rich_table(rows: list[dict[str, Any]]) -> Table:
    """Terminal table (rich), best value of each metric in bold green."""
    if not rows:
        raise ValueError("no runs to tabulate")
    table = Table(title="Run comparison")
    for key in rows[0]:
        # run names are never cut (they tell the rows apart); the numbers wrap their headers instead
        widest = max(len(str(r.get(key) or "")) for r in rows) if key == "run" else None
        table.add_column(_header(rows, key), justify="left" if key in ("run", "model", "encoder") else "right",
                         min_width=widest, no_wrap=key == "run")
    best = {k: _best_rows(rows, k) for k in _metric_columns(rows)}
    for i, row in enumerate(rows):
        table.add_row(*[f"[bold green]{_cell(rows, row, k)}[/]" if i in best.get(k, ()) else _cell(rows, row, k) for k in row])
    return table


def print_table(rows: list[dict[str, Any]], console: Console | None = None) -> None:
    """Print the comparison table to the terminal."""
    (console or Console()).print(rich_table(rows))


def plot_compare_curves(run_dirs: Sequence[str | Path], stem: str | Path) -> list[Path]:
    """val_miou and val_loss per epoch of every run, overlaid, one subplot each."""
    paths = [require_run_dir(p) for p in run_dirs]
    histories = [load_metrics(p) for p in paths]
    if not any(histories):
        raise DataError("none of the runs has a metrics.csv: train them before comparing curves")
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, len(CURVE_COLUMNS), squeeze=False).ravel()
    for ax, column in zip(axes, CURVE_COLUMNS):
        for label, rows in zip(run_labels(paths), histories):
            epochs, values = metric_series(rows, column)
            if epochs.size:
                ax.plot(epochs, values, marker="o" if epochs.size <= 30 else None, markersize=3, label=label)
        ax.set_title(LABELS.get(column[4:], column) + " (validation)" if column.startswith("val_") else column)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    return save_figure(fig, stem)
