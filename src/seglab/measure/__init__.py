"""Grain measurement: per-grain shape/size statistics, per-class totals, CSVs and figures from a class-index mask."""

from .grains import GrainTable, measure_grains
from .io import read_image, read_mask
from .labelling import label_grains, split_touching_grains
from .outputs import write_measurements
from .plots import outline_overlay, plot_outlines, plot_size_distribution
from .run import MeasureRun, run_measure
from .units import parse_pixel_size

__all__ = [
    "GrainTable",
    "MeasureRun",
    "label_grains",
    "measure_grains",
    "outline_overlay",
    "parse_pixel_size",
    "plot_outlines",
    "plot_size_distribution",
    "read_image",
    "read_mask",
    "run_measure",
    "split_touching_grains",
    "write_measurements",
]
