"""``seglab data check``: find every problem in a dataset in one pass, naming each file, before training does.

Missing masks, unreadable or corrupt files, size mismatches, masks that are no clean label maps (interpolated,
JPEG, hundreds of values: ``labels.inspect_mask``) and values outside the declared classes are all listed
together; any of them makes ``ok`` false (exit code 1). Warnings (e.g. a JPEG mask with clean values) do not.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import DataError
from .dataset import SegmentationDataset, load_sample_image
from .io import read_mask_raw
from .labels import inspect_mask
from .plan import plan_data

# Rows of the class pixel histogram printed; the rest are summed in one line.
HISTOGRAM_ROWS = 20


@dataclass
class CheckReport:
    """Counts, problems (each naming a file), warnings, notices and the class pixel histogram."""

    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    class_pixels: dict[str, int] = field(default_factory=dict)
    sizes: Counter = field(default_factory=Counter)
    distinct_values: Counter = field(default_factory=Counter)  # distinct values (colours) per mask -> masks
    most_values: tuple[int, str] | None = None  # the mask with the most distinct values
    suggested_colors: list | None = None
    class_colors: list | None = None

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def add_problem(self, message: str) -> None:
        """Record a problem once (the plan and the per-file pass may both see it)."""
        if message not in self.problems:
            self.problems.append(message)


def check_data(cfg: Config, max_problems: int = 0) -> CheckReport:
    """Read every image and mask once, decoding masks as training would, and collect every problem.

    ``max_problems``: kept for callers; every problem is collected (printing shortens long lists).
    """
    report = CheckReport()
    try:
        plan = plan_data(cfg, problems=report.problems)
    except DataError as e:
        report.problems.append(str(e))
        return report
    report.notes += plan.notes
    report.counts = {k: len(v) for k, v in plan.splits.items()}
    report.counts["classes"] = plan.codec.num_classes
    report.counts["in_channels"] = plan.in_channels
    if len(plan.view_channels) > 1:
        report.counts["views"] = len(plan.view_channels)
    for message in plan.source.incomplete:
        report.add_problem(message)
    for p in plan.source.unpaired_images:
        where = "beside it (x.tif + x_mask.png)" if plan.source.format == "suffix" else "in the mask folder"
        report.add_problem(f"{p}: image has no mask (looked for the same stem {where}; set mask_suffix?)")
    for p in plan.source.unpaired_masks:
        report.add_problem(f"{p}: mask has no image")
    if plan.codec.mode == "rgb":
        report.suggested_colors = plan.codec.colors
    report.class_colors = plan.class_colors
    codec = plan.codec
    declared = cfg.mask_mode != "auto" or bool(cfg.colors) or cfg.num_classes > 0
    pixels = np.zeros(codec.num_classes + 1, dtype=np.int64)  # last bin: ignored pixels
    ds = SegmentationDataset([], codec, plan.in_channels, rle=plan.rle, view_channels=plan.view_channels)
    most = (0, "")
    seen: dict[Path, str] = {}
    for split, samples in plan.splits.items():
        for s in samples:
            if s.image in seen:
                report.add_problem(f"{s.image}: listed in more than one split ({seen[s.image]} and {split})")
                continue
            seen[s.image] = split
            image = mask = None
            try:
                image = load_sample_image(s, plan.view_channels)
            except DataError as e:
                report.add_problem(str(e))
            if s.mask is not None:
                try:
                    raw, palette = read_mask_raw(s.mask)
                except DataError as e:
                    report.add_problem(str(e))
                else:
                    n, findings = inspect_mask(s.mask, raw, declared, codec.ignore_index, palette)
                    report.distinct_values[n] += 1
                    most = max(most, (n, str(s.mask)))
                    for f in findings:
                        (report.add_problem if f.error else report.warnings.append)(str(f))
                    if not any(f.error for f in findings):
                        try:
                            mask = codec.decode(raw, s.mask)
                        except DataError as e:
                            report.add_problem(str(e))
            elif plan.rle is not None and image is not None:
                try:
                    _, mask = ds.load_pair(s)
                except DataError as e:
                    report.add_problem(str(e))
            if image is None:
                continue
            report.sizes[f"{image.shape[1]}x{image.shape[0]}"] += 1
            if mask is None:
                continue
            if mask.shape != image.shape[:2]:
                where = s.mask or s.image
                report.add_problem(f"{where}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {s.image.name} "
                                   f"is {image.shape[1]}x{image.shape[0]} (width x height); masks must match their "
                                   "images")
                continue
            ignored = mask == codec.ignore_index
            valid = mask[~ignored].astype(np.int64)
            pixels[: codec.num_classes] += np.bincount(valid.ravel(), minlength=codec.num_classes)[:codec.num_classes]
            pixels[-1] += int(ignored.sum())
    if most[1]:
        report.most_values = most
    report.class_pixels = {name: int(n) for name, n in zip(plan.class_names, pixels[:-1])}
    if pixels[-1]:
        report.class_pixels[f"ignored ({codec.ignore_index})"] = int(pixels[-1])
    empty = [n for n, c in report.class_pixels.items() if c == 0 and not n.startswith("ignored")]
    if empty:
        shown = empty[:HISTOGRAM_ROWS]
        report.notes.append(f"{len(empty)} class(es) with no pixels in the data: {shown}"
                            + (f" and {len(empty) - len(shown)} more" if len(empty) > len(shown) else ""))
    return report


def histogram_rows(class_pixels: dict[str, int], rows: int = HISTOGRAM_ROWS) -> tuple[list[tuple[str, int]], str]:
    """The histogram rows to print (all up to ``rows``, else the largest in class order) and a note on the rest."""
    items = list(class_pixels.items())
    ignored = [(k, v) for k, v in items if k.startswith("ignored")]
    classes = [(k, v) for k, v in items if not k.startswith("ignored")]
    if len(classes) <= rows:
        return classes + ignored, ""
    keep = {k for k, _ in sorted(classes, key=lambda kv: -kv[1])[:rows]}
    shown = [(k, v) for k, v in classes if k in keep]
    rest = [(k, v) for k, v in classes if k not in keep]
    total = max(1, sum(class_pixels.values()))
    rest_px = sum(v for _, v in rest)
    note = (f"... and {len(rest)} more classes ({rest_px:,} pixels, {100 * rest_px / total:.2f}%); the "
            f"{rows} largest are shown")
    return shown + ignored, note


def print_check(report: CheckReport, max_lines: int = 200) -> None:
    """Human-readable summary on the terminal: counts, notes, histogram (capped), then every problem."""
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    console.print("counts: " + ", ".join(f"{k}={v}" for k, v in report.counts.items()))
    if report.sizes:
        console.print("image sizes: " + ", ".join(f"{k} ({n})" for k, n in report.sizes.most_common(5)))
    if report.distinct_values:
        parts = [f"{v} in {n} mask{'s' if n != 1 else ''}" for v, n in sorted(report.distinct_values.items())[:8]]
        more = f", ... ({len(report.distinct_values) - 8} more counts)" if len(report.distinct_values) > 8 else ""
        most = f"; most: {report.most_values[1]} ({report.most_values[0]})" if report.most_values and \
            len(report.distinct_values) > 1 else ""
        console.print(f"distinct values per mask: {', '.join(parts)}{more}{most}", markup=False)
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
    if report.class_pixels:
        total = max(1, sum(report.class_pixels.values()))
        rows, rest = histogram_rows(report.class_pixels)
        table = Table(title="class pixel histogram")
        table.add_column("class")
        table.add_column("pixels", justify="right")
        table.add_column("share", justify="right")
        for name, n in rows:
            table.add_row(name, f"{n:,}", f"{100 * n / total:.2f}%")
        console.print(table)
        if rest:
            console.print(rest, markup=False)
    if report.suggested_colors:
        console.print("colour table (put this in your config to fix the class order): "
                      f"colors: {report.suggested_colors}", markup=False)
    for w in report.warnings[:max_lines]:
        console.print(f"warning: {w}", markup=False)
    if len(report.warnings) > max_lines:
        console.print(f"... and {len(report.warnings) - max_lines} more warnings", markup=False)
    if report.problems:
        console.print(f"[red]{len(report.problems)} problem(s):[/red]")
        for p in report.problems[:max_lines]:
            console.print(f"  {p}", markup=False)
        if len(report.problems) > max_lines:
            console.print(f"  ... and {len(report.problems) - max_lines} more", markup=False)
    else:
        console.print("[green]no problems found[/green]")
