"""Write a GrainTable to disk: grains.csv, classes.csv, left_out.csv, size_distribution.png and outlined.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .grains import GrainTable
from .plots import plot_outlines, plot_size_distribution


def write_measurements(
    table: GrainTable, out_dir: str | Path, image: np.ndarray | None = None, draw_labels: bool = True
) -> dict[str, Path]:
    """Write the CSVs and PNGs for one measured mask into out_dir and return their paths by kind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "grains_csv": table.to_csv(out_dir / "grains.csv"),
        "classes_csv": table.classes_to_csv(out_dir / "classes.csv"),
        "left_out_csv": table.left_out_to_csv(out_dir / "left_out.csv"),
        "size_distribution_png": plot_size_distribution(table, out_dir / "size_distribution.png"),
        "outlined_png": plot_outlines(table, out_dir / "outlined.png", image=image, draw_labels=draw_labels),
    }
