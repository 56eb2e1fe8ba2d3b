"""Per-epoch metric logging: ``metrics.csv`` always, TensorBoard on request (``logger=tensorboard``)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..choices import LOGGERS
from ..errors import ConfigError, DataError
from ..metrics.names import split_metric


class MetricsLogger:
    """Receives one row of metrics per epoch."""

    def log(self, epoch: int, row: dict[str, Any]) -> None:
        """Record the metrics of one finished epoch."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release resources (safe to call twice)."""

    def __enter__(self) -> "MetricsLogger":
        """Use as a context manager that closes on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the logger."""
        self.close()


class CsvLogger(MetricsLogger):
    """Appends ``epoch`` + the row to a CSV file, flushed at every row.

    ``log`` takes the 0-based epoch index the trainer counts in and writes it numbered from 1, as the log lines and
    summary.json's best_epoch say it. Resume-safe: rows of epochs at or after ``start_epoch`` (0-based) left by an
    interrupted run are dropped at construction, so a resumed run never writes an epoch twice (a fresh run passes 0
    and starts clean); a file from before the 1-based numbering (its first epoch is 0) is renumbered.
    A row with new columns rewrites the file with the wider header; older rows get empty cells.
    """

    def __init__(self, path: str | Path, start_epoch: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fieldnames: list[str] = []
        kept: list[dict[str, str]] = []
        if self.path.is_file() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.fieldnames = list(reader.fieldnames or [])
                rows = list(reader)
                shift = 1 if any(_epoch_of(r, self.path) == 0 for r in rows) else 0  # 0-based file of an older run
                kept = [{**r, "epoch": _epoch_of(r, self.path) + shift} for r in rows
                        if _epoch_of(r, self.path) + shift <= start_epoch]
        self._rewrite(kept)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Write the whole file: header (when known) and rows."""
        with self.path.open("w", newline="") as f:
            if self.fieldnames:
                writer = csv.DictWriter(f, fieldnames=self.fieldnames, restval="")
                writer.writeheader()
                writer.writerows(rows)

    def _read_rows(self) -> list[dict[str, str]]:
        """Rows currently in the file."""
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def log(self, epoch: int, row: dict[str, Any]) -> None:
        """Append epoch ``epoch`` (0-based; written from 1), widening the header first when the row brings new
        columns."""
        record = {"epoch": epoch + 1, **{k: v for k, v in row.items() if k != "epoch"}}
        new_columns = [k for k in record if k not in self.fieldnames]
        if new_columns:
            existing = self._read_rows() if self.fieldnames else []
            self.fieldnames += new_columns
            self._rewrite(existing)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fieldnames, restval="").writerow(
                {k: _cell(v) for k, v in record.items()}
            )
            f.flush()


def _epoch_of(row: dict[str, str], path: Path) -> int:
    """Epoch number of a CSV row, with a clear error for a file that is not a metrics log."""
    try:
        return int(float(row["epoch"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{str(path)!r} has a row without a numeric 'epoch' column: delete it or use a new run folder") from exc


def _cell(value: Any) -> Any:
    """CSV cell: tensors and numpy scalars as plain numbers, None as empty."""
    if value is None:
        return ""
    if hasattr(value, "item"):
        return value.item()
    return value


class TensorBoardLogger(MetricsLogger):
    """Scalars to TensorBoard event files, tagged ``family/column`` (``loss/train_loss``, ``loss/val_loss``), at
    step = epoch numbered from 1 (as metrics.csv and the log lines)."""

    def __init__(self, log_dir: str | Path, start_epoch: int = 0) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(
                "logger=tensorboard needs the tensorboard package: `pip install tensorboard`, or log to csv only"
            ) from exc
        # purge_step drops events an interrupted run wrote at or after the resume epoch.
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=start_epoch + 1 if start_epoch > 0 else None)

    def log(self, epoch: int, row: dict[str, Any]) -> None:
        """Write every numeric value of the row as a scalar at step ``epoch + 1`` (``epoch`` is 0-based)."""
        for key, value in row.items():
            value = _cell(value)
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                continue
            self.writer.add_scalar(f"{split_metric(key)[0]}/{key}", value, global_step=epoch + 1)
        self.writer.flush()

    def close(self) -> None:
        """Close the event file."""
        self.writer.close()


class MultiLogger(MetricsLogger):
    """Sends every row to several loggers."""

    def __init__(self, loggers: Sequence[MetricsLogger]) -> None:
        self.loggers = list(loggers)

    def __iter__(self) -> Iterator[MetricsLogger]:
        """Iterate over the wrapped loggers."""
        return iter(self.loggers)

    def __len__(self) -> int:
        """Number of wrapped loggers."""
        return len(self.loggers)

    def log(self, epoch: int, row: dict[str, Any]) -> None:
        """Log the row with every logger."""
        for logger in self.loggers:
            logger.log(epoch, row)

    def close(self) -> None:
        """Close every logger."""
        for logger in self.loggers:
            logger.close()


LOGGER_NAMES = LOGGERS


def logger_names(names: Sequence[str] | str) -> set[str]:
    """The loggers ``names`` asks for (a list or a comma-separated string; "none" adds nothing, "tb" is
    tensorboard); an unknown name is a ConfigError."""
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    wanted = {n.strip().lower() for n in names if n and n.strip()} - {"none"}
    aliases = {"tb": "tensorboard"}
    wanted = {aliases.get(n, n) for n in wanted}
    unknown = sorted(wanted - set(LOGGER_NAMES))
    if unknown:
        raise ConfigError(f"unknown logger {', '.join(unknown)}: choose from {', '.join(LOGGER_NAMES)}")
    return wanted


def build_loggers(run_dir: str | Path, names: Sequence[str] | str = (), start_epoch: int = 0) -> MultiLogger:
    """Loggers for a run: ``metrics.csv`` always, plus ``tensorboard`` (events in RUN_DIR/tensorboard) when named.

    ``names`` may be a list or a comma-separated string such as "csv,tensorboard"; "none" adds nothing.
    """
    run_dir = Path(run_dir)
    wanted = logger_names(names)
    loggers: list[MetricsLogger] = [CsvLogger(run_dir / "metrics.csv", start_epoch)]
    if "tensorboard" in wanted:
        loggers.append(TensorBoardLogger(run_dir / "tensorboard", start_epoch))
    return MultiLogger(loggers)
