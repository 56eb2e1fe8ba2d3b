"""Progress of long loops: a tqdm bar on a terminal, a heartbeat line every ~30 s anywhere else (CI, log files).

tqdm hides its bar when the output is not a terminal (``disable=None``), which left CPU runs silent for minutes
between epoch lines. ``Progress`` keeps tqdm's bar on terminals and, off a terminal, prints one plain line per
``every`` seconds with the count, the rate and the ETA. ``SEGLAB_HEARTBEAT`` (seconds) changes the interval (tests
use a fraction of a second); ``SEGLAB_HEARTBEAT=0`` turns the lines off.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
HEARTBEAT_SECONDS = 30.0


def heartbeat_seconds() -> float:
    """The heartbeat interval: ``SEGLAB_HEARTBEAT`` seconds when set, else 30 (0 = no heartbeat lines)."""
    value = os.environ.get("SEGLAB_HEARTBEAT", "")
    try:
        return float(value) if value else HEARTBEAT_SECONDS
    except ValueError:
        return HEARTBEAT_SECONDS


def on_terminal(stream: Any = None) -> bool:
    """True when ``stream`` (default stderr, where tqdm draws) is an interactive terminal."""
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def duration_text(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short enough for a progress line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Count work done (``update(n)``); draws a bar on a terminal, prints heartbeat lines elsewhere.

    ``total`` and ``unit`` describe the work (e.g. 400 ``img``); ``enabled=False`` (other ranks) prints nothing.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "img", enabled: bool = True,
                 every: float | None = None, leave: bool = False):
        self.total, self.desc, self.unit = total, desc, unit
        self.enabled = enabled
        self.every = heartbeat_seconds() if every is None else every
        self.done, self.start = 0, time.perf_counter()
        self.last_beat = self.start
        self.beats = 0
        self.postfix: dict[str, Any] = {}  # the latest values given (a sync-free loop gives them once per interval)
        self.bar = None
        if enabled and on_terminal():
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Record ``n`` more units of work (and optional bar postfix values such as the loss, kept until replaced)."""
        self.done += n
        self.postfix.update(postfix)
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(self.postfix, refresh=False)
            return
        now = time.perf_counter()
        if self.enabled and self.every > 0 and now - self.last_beat >= self.every:
            self.last_beat = now
            self.beats += 1
            print(self.line(now, self.postfix), flush=True)

    def line(self, now: float | None = None, postfix: dict | None = None) -> str:
        """``train 3: 120/400 img (30%), 3.1 img/s, ETA 1m30s, loss 0.41``."""
        elapsed = max((now or time.perf_counter()) - self.start, 1e-9)
        rate = self.done / elapsed
        text = f"{self.desc}: {self.done}"
        if self.total:
            text += f"/{self.total} {self.unit} ({self.done / self.total:.0%})"
        else:
            text += f" {self.unit}"
        text += f", {rate:.3g} {self.unit}/s"
        if self.total and rate > 0:
            text += f", ETA {duration_text((self.total - self.done) / rate)}"
        for key, value in (postfix or {}).items():
            text += f", {key} {value}"
        return text

    def close(self) -> None:
        """Remove the bar (heartbeat lines stay in the log)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "img", enabled: bool = True,
          size: Any = None) -> Iterator[T]:
    """Iterate ``items`` with a ``Progress``; ``size(item)`` counts units per item (default 1, e.g. batch size)."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with Progress(total, desc, unit, enabled) as bar:
        for item in items:
            yield item
            bar.update(size(item) if size is not None else 1)
