"""Read a run folder (config, metrics.csv, summary, eval results) into plain Python data.

The layout is the one written by ``seglab train`` and ``seglab eval``; every reader returns
``None`` (or an empty list) for a part that is missing, so reports can be built at any stage.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import DataError


@dataclass
class EvalResult:
    """What one ``eval*/`` folder holds; missing files are ``None`` / empty."""

    directory: Path
    split: str
    metrics: dict[str, Any] | None = None
    per_class: list[dict[str, Any]] = field(default_factory=list)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    confusion: np.ndarray | None = None


def require_run_dir(run_dir: str | Path) -> Path:
    """Return ``run_dir`` as a Path, or raise a clear error when it is not a run folder."""
    path = Path(run_dir)
    if not path.is_dir():
        raise DataError(f"run folder {str(path)!r} does not exist: pass the folder `seglab train` wrote")
    markers = ("config.yaml", "metrics.csv", "summary.json")
    if not any((path / m).exists() for m in markers) and not find_eval_dirs(path):
        raise DataError(
            f"{str(path)!r} is not a run folder: it has none of {', '.join(markers)} nor an eval/ folder"
        )
    return path


def _parse_number(text: str) -> float | int | str | None:
    """CSV cell -> int, float, None (empty) or the text itself."""
    text = text.strip()
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_csv_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV file with numeric cells converted; [] when the file is missing."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: _parse_number(v or "") for k, v in row.items() if k is not None} for row in csv.DictReader(f)]


def load_config(run_dir: Path) -> dict[str, Any] | None:
    """The resolved ``config.yaml`` as a dict, or None."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else None


def load_summary(run_dir: Path) -> dict[str, Any] | None:
    """``summary.json`` as a dict, or None."""
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Per-epoch rows of ``metrics.csv`` (numbers parsed), [] when absent; epochs numbered from 1 as the log lines
    and summary.json's best_epoch (a file of an older run, numbered from 0, is renumbered)."""
    rows = read_csv_rows(run_dir / "metrics.csv")
    if any(row.get("epoch") == 0 for row in rows):
        rows = [{**row, "epoch": row["epoch"] + 1} if isinstance(row.get("epoch"), (int, float)) else row
                for row in rows]
    return rows


def load_data_meta(run_dir: Path) -> dict[str, Any]:
    """``data.json`` written by ``seglab train`` (class names and colours, data format), {} when absent."""
    path = run_dir / "data.json"
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_tgs_run(config: dict[str, Any] | None, data_meta: dict[str, Any] | None = None) -> bool:
    """The TGS metric belongs to TGS data (``format`` tgs, detected or asked) or a run that chose it (``metric=tgs``,
    as the tgs-salt recipes do); other binary tasks get plain words instead."""
    config, data_meta = config or {}, data_meta or {}
    return config.get("metric") == "tgs" or config.get("format") == "tgs" or data_meta.get("format") == "tgs"


def metric_series(rows: list[dict[str, Any]], column: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of one metrics.csv column, skipping epochs where it is empty."""
    epochs, values = [], []
    for i, row in enumerate(rows):
        value = row.get(column)
        if isinstance(value, (int, float)) and not math.isnan(value):
            epochs.append(row.get("epoch", i + 1))
            values.append(float(value))
    return np.asarray(epochs, dtype=float), np.asarray(values, dtype=float)


def find_eval_dirs(run_dir: Path) -> list[Path]:
    """``eval/`` first, then ``eval_<split>/`` folders sorted by name."""
    plain = [run_dir / "eval"] if (run_dir / "eval").is_dir() else []
    splits = sorted(p for p in run_dir.glob("eval_*") if p.is_dir())
    return plain + splits


def split_name(eval_dir: Path) -> str:
    """``eval`` -> "eval", ``eval_test`` -> "test"."""
    return eval_dir.name[len("eval_"):] if eval_dir.name.startswith("eval_") else eval_dir.name


def load_eval(eval_dir: Path) -> EvalResult:
    """Everything an eval folder holds."""
    metrics_path = eval_dir / "metrics.json"
    confusion_path = eval_dir / "confusion.npy"
    return EvalResult(
        directory=eval_dir,
        split=split_name(eval_dir),
        metrics=json.loads(metrics_path.read_text()) if metrics_path.is_file() else None,
        per_class=read_csv_rows(eval_dir / "per_class.csv"),
        per_image=read_csv_rows(eval_dir / "per_image.csv"),
        confusion=np.load(confusion_path) if confusion_path.is_file() else None,
    )


def select_eval_dir(run_dir: Path, split: str | None = None) -> Path | None:
    """The eval folder for ``split`` (``eval_<split>/``, or ``eval/`` when split is None or "eval")."""
    candidates = find_eval_dirs(run_dir)
    if split is None:
        return candidates[0] if candidates else None
    for path in candidates:
        if split_name(path) == split:
            return path
    return None


def class_names(config: dict[str, Any] | None, eval_result: EvalResult | None = None, count: int | None = None) -> list[str]:
    """Class names from the config, else the per-class table, else "class 0".. for ``count`` classes."""
    if config and isinstance(config.get("classes"), list) and config["classes"]:
        return [str(c) for c in config["classes"]]
    if eval_result is not None and eval_result.per_class:
        return [str(row.get("class")) for row in eval_result.per_class]
    if count is None:
        if config and isinstance(config.get("num_classes"), int):
            count = max(2, config["num_classes"])  # num_classes=1 means binary: background + foreground
        elif eval_result is not None and eval_result.confusion is not None:
            count = eval_result.confusion.shape[0]
        else:
            count = 0
    return [f"class {i}" for i in range(count)]


def resolve_path(path_text: str, bases: list[Path]) -> Path:
    """A path from per_image.csv: absolute as is, else the first existing one under ``bases``."""
    path = Path(path_text)
    if path.is_absolute():
        return path
    for base in bases:
        if (base / path).exists():
            return base / path
    return path  # relative to the working directory, as the user gave it
