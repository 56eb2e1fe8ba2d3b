"""Metric column names: ``val_miou`` is metric "miou" of split "val"."""
from __future__ import annotations

SPLIT_PREFIXES = ("train_", "val_", "test_")


def split_metric(column: str) -> tuple[str, str]:
    """``val_miou`` -> ("miou", "val"); ``lr`` -> ("lr", "")."""
    for prefix in SPLIT_PREFIXES:
        if column.startswith(prefix):
            return column[len(prefix):], prefix[:-1]
    return column, ""
