"""Human-readable numbers for tables: metrics, parameter counts, durations."""
from __future__ import annotations

import math
from typing import Any


def format_count(value: float) -> str:
    """31_042_434 -> "31.04M"; 8_500 -> "8.50k"."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.2f}{suffix}"
    return f"{value:.0f}"


def format_seconds(seconds: float) -> str:
    """3725 -> "1h 02m 05s"; 65.2 -> "1m 05s"; 4.25 -> "4.2s"."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def format_value(key: str, value: Any) -> str:
    """Format one table cell by what its key names (params, time, per-second rates, fractions)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if key in ("params", "pixels"):
        return format_count(value)
    if key.endswith("time_s") or key == "epoch_time":
        return format_seconds(value)
    if key.endswith("per_s") or key == "gflops":
        return f"{value:.2f}"
    if isinstance(value, int):
        return str(value)
    if key == "lr" or abs(value) < 1e-3 and value != 0:
        return f"{value:.3g}"
    return f"{value:.4f}"
