"""Reports of a run folder: curves, confusion matrices, galleries, one HTML file, run comparisons.

Names are imported on first use (PEP 562), so importing the package does not pay for matplotlib.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "compare": ("compare_runs", "plot_compare_curves", "print_table", "to_markdown", "write_csv"),
    "galleries": ("best_worst_galleries", "class_iou", "plot_gallery", "select_best_worst"),
    "html": ("write_report",),
    "plots": (
        "class_pixel_counts", "plot_class_histogram", "plot_confusion_matrix", "plot_per_class_iou",
        "plot_per_image_iou", "plot_sample_grid", "plot_training_curves",
    ),
    "samples": ("Sample", "load_sample"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'seglab.report' has no attribute {name!r}")
    return getattr(importlib.import_module(f"seglab.report.{_MODULE_OF[name]}"), name)


def __dir__() -> list[str]:
    """Public names, for tab completion."""
    return __all__
