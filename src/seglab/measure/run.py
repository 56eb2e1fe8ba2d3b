"""One-call entry point for the CLI: read a mask (and image), measure grains, write all outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .grains import GrainTable, measure_grains
from .io import read_image, read_mask
from .outputs import write_measurements


@dataclass
class MeasureRun:
    """What run_measure produced: the measurements and the files written."""

    table: GrainTable
    files: dict[str, Path]


def run_measure(
    mask_path: str | Path,
    image_path: str | Path | None = None,
    out_dir: str | Path = "measurements",
    pixel_size: float | str | None = None,
    unit: str = "px",
    class_names: Sequence[str] | None = None,
    split_touching: bool = False,
    min_distance: int = 7,
    min_area: int = 0,
    ignore_index: int | None = None,
    connectivity: int = 8,
    draw_labels: bool = True,
    min_grain: float | str = 9,
    keep_border: bool = False,
    verbose: bool = True,
    background: Sequence[int] = (0,),
    class_colors: Sequence[Sequence[int]] | None = None,
) -> MeasureRun:
    """Measure the grains of a mask file and write grains.csv, classes.csv and the PNGs into out_dir.

    min_grain, keep_border, background: see ``measure_grains`` (specks and border objects are left out by default).
    verbose: print the line saying how many objects were left out and why, when any were.
    """
    mask = read_mask(mask_path, ignore_index=ignore_index)
    image = read_image(image_path) if image_path is not None else None
    if image is not None and image.shape[:2] != mask.shape:
        raise DataError(
            f"image {str(image_path)!r} is {image.shape[1]}x{image.shape[0]} px but mask {str(mask_path)!r} is "
            f"{mask.shape[1]}x{mask.shape[0]} px; pass the image the mask was made from"
        )
    table = measure_grains(
        mask,
        pixel_size=pixel_size,
        unit=unit,
        class_names=class_names,
        split_touching=split_touching,
        min_area=min_area,
        ignore_index=ignore_index,
        connectivity=connectivity,
        min_distance=min_distance,
        min_grain=min_grain,
        keep_border=keep_border,
        background=background,
    )
    table.colors = {i: [int(v) for v in c] for i, c in enumerate(class_colors or [])}  # the run's, for the figures
    if verbose and table.left_out:
        print(f"{mask_path}: {table.left_out_note()}")
    return MeasureRun(table=table, files=write_measurements(table, out_dir, image=image, draw_labels=draw_labels))
