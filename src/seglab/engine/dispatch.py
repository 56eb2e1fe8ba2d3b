"""``seglab train``'s entry point: every fold (``folds > 1``) or one run (itself in ``cpu_procs`` ranks when asked)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Config
from .build import preflight
from .kfold import train_folds
from .trainer import train_single


def train(cfg: Config, overrides: dict[str, Any] | None = None) -> Path:
    """Train one model (or every fold when ``folds > 1``); returns the run folder.

    A fresh run's model name, encoder, loss, augmentations and loggers are checked first (``preflight``), before
    any data is read; a resumed run goes on with its own checked config.
    """
    if not cfg.resume:
        preflight(cfg)
    if cfg.folds > 1:
        return train_folds(cfg, overrides or {})
    return train_single(cfg, overrides or {})
