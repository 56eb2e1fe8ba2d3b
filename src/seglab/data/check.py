"""``seglab data check``: find every problem in a dataset before training does, naming each file."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..config import Config
from ..errors import DataError
from .dataset import SegmentationDataset
from .plan import plan_data


@dataclass
class CheckReport:
    """Counts, problems (each naming a file), notices and the class pixel histogram."""

    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    class_pixels: dict[str, int] = field(default_factory=dict)
    sizes: Counter = field(default_factory=Counter)
    suggested_colors: list | None = None

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def check_data(cfg: Config, max_problems: int = 200) -> CheckReport:
    """Read every image and mask once, decoding masks as training would, and collect problems."""
    report = CheckReport()
    try:
        plan = plan_data(cfg)
    except DataError as e:
        report.problems.append(str(e))
        return report
    report.notes += plan.notes
    report.counts = {k: len(v) for k, v in plan.splits.items()}
    report.counts["classes"] = plan.codec.num_classes
    report.counts["in_channels"] = plan.in_channels
    if len(plan.view_channels) > 1:
        report.counts["views"] = len(plan.view_channels)
    report.problems += plan.source.incomplete
    for p in plan.source.unpaired_images:
        report.problems.append(f"{p}: image has no mask (looked for the same stem in the mask folder; set mask_suffix?)")
    for p in plan.source.unpaired_masks:
        report.problems.append(f"{p}: mask has no image")
    if plan.codec.mode == "rgb":
        report.suggested_colors = plan.codec.colors
    pixels = np.zeros(plan.codec.num_classes + 1, dtype=np.int64)  # last bin: ignored pixels
    ds = SegmentationDataset([], plan.codec, plan.in_channels, rle=plan.rle, view_channels=plan.view_channels)
    seen = set()
    for split, samples in plan.splits.items():
        for s in samples:
            if s.image in seen:
                report.problems.append(f"{s.image}: listed in more than one split ({split} and another)")
                continue
            seen.add(s.image)
            try:
                image, mask = ds.load_pair(s)
            except DataError as e:
                report.problems.append(str(e))
                if len(report.problems) >= max_problems:
                    report.problems.append(f"... stopped after {max_problems} problems")
                    return report
                continue
            report.sizes[f"{image.shape[1]}x{image.shape[0]}"] += 1
            if mask is not None:
                valid = mask[mask != plan.codec.ignore_index].astype(np.int64)
                pixels[: plan.codec.num_classes] += np.bincount(valid.ravel(), minlength=plan.codec.num_classes)
                pixels[-1] += int((mask == plan.codec.ignore_index).sum())
    report.class_pixels = {name: int(n) for name, n in zip(plan.class_names, pixels[:-1])}
    if pixels[-1]:
        report.class_pixels[f"ignored ({plan.codec.ignore_index})"] = int(pixels[-1])
    empty = [n for n, c in report.class_pixels.items() if c == 0 and not n.startswith("ignored")]
    if empty:
        report.notes.append(f"classes with no pixels in the data: {empty}")
    return report


def print_check(report: CheckReport) -> None:
    """Human-readable summary on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    console.print("counts: " + ", ".join(f"{k}={v}" for k, v in report.counts.items()))
    if report.sizes:
        console.print("image sizes: " + ", ".join(f"{k} ({n})" for k, n in report.sizes.most_common(5)))
    for note in report.notes:
        console.print(f"note: {note}")
    if report.class_pixels:
        total = max(1, sum(report.class_pixels.values()))
        table = Table(title="class pixel histogram")
        table.add_column("class")
        table.add_column("pixels", justify="right")
        table.add_column("share", justify="right")
        for name, n in report.class_pixels.items():
            table.add_row(name, f"{n:,}", f"{100 * n / total:.2f}%")
        console.print(table)
    if report.suggested_colors:
        console.print(f"colour table (put this in your config to fix the class order): colors: {report.suggested_colors}")
    if report.problems:
        console.print(f"[red]{len(report.problems)} problem(s):[/red]")
        for p in report.problems:
            console.print(f"  {p}", markup=False)
    else:
        console.print("[green]no problems found[/green]")

