"""Grain measurement: per-grain shape/size statistics, per-class totals, CSVs and figures from a class-index mask."""

from seglab.measure.grains import GrainTable, measure_grains
from seglab.measure.io import read_image, read_mask
from seglab.measure.labelling import label_grains, split_touching_grains
from seglab.measure.outputs import write_measurements
from seglab.measure.plots import outline_overlay, plot_outlines, plot_size_distribution
from seglab.measure.run import MeasureRun, run_measure
from seglab.measure.units import parse_pixel_size

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
