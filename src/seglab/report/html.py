"""One self-contained HTML report of a run: config, summary, per-class table, every plot and gallery.

Images are embedded as base64 PNG and the CSS is inline, so the file opens from disk with no
network request. Parts that are missing (no eval yet, no metrics.csv) are named in the page.
"""
from __future__ import annotations

import base64
import html
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from ..errors import ConfigError, SeglabError
from ..metrics.tgs import BY_COVERAGE_HEADERS, BY_COVERAGE_KEYS, BY_COVERAGE_NOTE
from . import plots
from .formatting import format_value
from .galleries import best_worst_galleries
from .images import default_load_mask
from ..data.labels import transparent_classes
from .overlays import ERROR_LABELS, report_colors
from .run_folder import (
    EvalResult,
    class_names,
    find_eval_dirs,
    is_tgs_run,
    load_config,
    load_data_meta,
    load_eval,
    load_metrics,
    load_summary,
    require_run_dir,
)
from .samples import MaskLoader, load_sample

log = logging.getLogger(__name__)

PER_CLASS_COLUMNS = ("class", "iou", "acc", "precision", "recall", "f1", "pixels")
EMPTINESS_KEYS = ("empty_images", "empty_predicted_with_object", "images_with_object", "object_missed")
SCALAR_METRICS_FIRST = ("miou", "mpa", "pixel_acc", "fg_iou", "precision", "recall", "f1", "fwiou", "images_per_s")

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #222; padding: 0 1rem; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3rem; }
h2 { margin-top: 2.5rem; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; font-size: .85rem; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .9rem; }
.note { background: #fff6d5; border-left: 4px solid #e0b000; padding: .5rem .8rem; }
.meta { color: #666; font-size: .85rem; }
.legend { display: flex; flex-wrap: wrap; gap: .4rem 1.2rem; margin: .6rem 0; font-size: .9rem; }
.legend span { display: inline-flex; align-items: center; gap: .35rem; }
.swatch { display: inline-block; width: 1rem; height: 1rem; border: 1px solid #444; }
.info { color: #333; }
"""


class _Page:
    """Accumulates HTML fragments; every text goes through ``html.escape``."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.notes: list[str] = []

    def add(self, fragment: str) -> None:
        """Append raw (already escaped) HTML."""
        self.parts.append(fragment)

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        """Append a heading (with an ``id`` when ``anchor`` is given)."""
        id_attr = f' id="{html.escape(anchor)}"' if anchor else ""
        self.add(f"<h{level}{id_attr}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        """Append a paragraph of explanation (not a warning: nothing is logged)."""
        self.add(f'<p class="info">{html.escape(text)}</p>')

    def legend(self, entries: Sequence[tuple[str, Sequence[int]]], legend_id: str, title: str) -> None:
        """Append a row of colour swatches with their names."""
        items = "".join(
            f'<span><i class="swatch" style="background: rgb({int(c[0])}, {int(c[1])}, {int(c[2])})"></i>'
            f"{html.escape(name)}</span>" for name, c in entries)
        self.add(f'<div class="legend" id="{html.escape(legend_id)}"><strong>{html.escape(title)}</strong>{items}</div>')

    def note(self, text: str) -> None:
        """Append a visible note about a missing or failed part (and log it)."""
        self.notes.append(text)
        log.warning("report: %s", text)
        self.add(f'<p class="note">{html.escape(text)}</p>')

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]], table_id: str | None = None) -> None:
        """Append a table with a thead and one tbody row per entry."""
        id_attr = f' id="{html.escape(table_id)}"' if table_id else ""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        self.add(f"<table{id_attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, png: Path, caption: str) -> None:
        """Append a PNG embedded as base64."""
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        self.add(
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )


def _key_value_rows(data: dict[str, Any]) -> list[list[str]]:
    """Dict -> [[key, formatted value], ...] for a two-column table."""
    return [[key, format_value(key, value)] for key, value in data.items() if not isinstance(value, (list, dict))]


def _resolve_class(choice: str | int | None, names: list[str]) -> int | None:
    """Gallery class given as index or name -> index (None = rank by per_image.csv IoU)."""
    if choice is None:
        return None
    if isinstance(choice, int) or str(choice).isdigit():
        index = int(choice)
        if not 0 <= index < len(names):
            raise ConfigError(f"gallery class index {index} is out of range: this run has {len(names)} classes")
        return index
    if choice not in names:
        raise ConfigError(f"gallery class {choice!r} is not one of the run's classes: {', '.join(names)}")
    return names.index(choice)


def _per_class_rows(result: EvalResult) -> list[dict[str, Any]]:
    """Per-class rows from per_class.csv, else from metrics.json's per_class list."""
    if result.per_class:
        return result.per_class
    return list((result.metrics or {}).get("per_class") or [])


def _scalar_metrics(metrics: dict[str, Any], tgs: bool = True) -> dict[str, Any]:
    """metrics.json's scalar entries, headline metrics first (the TGS metric only for a TGS run)."""
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and (tgs or k != "tgs") and k not in EMPTINESS_KEYS}  # the counts have their own table
    first = {k: scalars[k] for k in SCALAR_METRICS_FIRST if k in scalars}
    return first | {k: v for k, v in scalars.items() if k not in first}


def _add_training(page: _Page, run_dir: Path, figures_dir: Path, summary: dict[str, Any] | None, tgs: bool) -> None:
    """Training curves section (epochs numbered from 1, as the log lines; the TGS metric only for a TGS run)."""
    page.heading("Training curves", anchor="training-curves")
    rows = load_metrics(run_dir)
    if not rows:
        page.note("No metrics.csv in this run folder (or it is empty): train the model to get curves.")
        return
    best_epoch = (summary or {}).get("best_epoch")
    best_metric = (summary or {}).get("best_metric")
    paths = plots.plot_training_curves(rows, figures_dir / "curves", best_epoch=best_epoch,
                                       drop_families=() if tgs else ("tgs",), best_metric=best_metric)
    caption = f"{len(rows)} epochs, numbered from 1"
    if best_epoch is not None:
        caption += f"; dotted line and star = best epoch {best_epoch}" + (f" by {best_metric}" if best_metric else "")
    page.figure(paths[0], caption)


@dataclass
class _Options:
    """What every evaluation section needs besides its own results."""

    run_dir: Path
    names: list[str]
    colors: np.ndarray
    figures_dir: Path
    tgs: bool
    k: int
    gallery_class: int | None
    load_mask: MaskLoader
    max_samples: int


def _float_or_nan(value: Any) -> float:
    """A CSV cell as float; NaN when empty or not a number."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _add_per_class(page: _Page, result: EvalResult, prefix: str, table_id: str) -> None:
    """Per-class table (one tbody row per class) and per-class IoU bars."""
    per_class = _per_class_rows(result)
    if not per_class:
        page.note(f"{result.directory.name} has no per-class results (per_class.csv).")
        return
    columns = [c for c in PER_CLASS_COLUMNS if any(c in row for row in per_class)]
    page.heading("Per-class results", 3)
    page.table(columns, [[format_value(c, row.get(c)) for c in columns] for row in per_class], table_id=table_id)
    names = [str(r.get("class")) for r in per_class]
    ious = [_float_or_nan(r.get("iou")) for r in per_class]
    page.figure(plots.plot_per_class_iou(names, ious, f"{prefix}_per_class_iou")[0], "Per-class IoU")


def _add_confusion(page: _Page, result: EvalResult, prefix: str, names: list[str]) -> None:
    """Raw and row-normalised confusion matrices, and the class pixel histogram of the evaluated set."""
    if result.confusion is None:
        page.note(f"{result.directory.name}/confusion.npy is missing: no confusion matrix.")
        return
    size = result.confusion.shape[0]
    labels = names if len(names) == size else [f"class {i}" for i in range(size)]
    page.heading("Confusion matrices", 3)
    raw = plots.plot_confusion_matrix(result.confusion, labels, f"{prefix}_confusion_raw")
    page.figure(raw[0], "Pixel counts")
    normalized = plots.plot_confusion_matrix(result.confusion, labels, f"{prefix}_confusion_normalized", normalize=True)
    page.figure(normalized[0], "Row-normalised: each true class sums to 1 (diagonal = per-class recall)")
    counts = result.confusion.sum(axis=1)
    if counts.sum() > 0:
        title = f"Class pixels in {result.split}"
        histogram = plots.plot_class_histogram(counts, labels, f"{prefix}_class_pixels", title=title)
        page.figure(histogram[0], "Share of labelled pixels per class in the evaluated images")


def _add_per_image(page: _Page, result: EvalResult, prefix: str, opts: _Options) -> None:
    """Per-image IoU curve, a grid of sample predictions and the best / worst galleries."""
    if not result.per_image:
        page.note(f"{result.directory.name}/per_image.csv is missing: no per-image plots or galleries.")
        return
    page.heading("Per-image results", 3)
    ious = [_float_or_nan(r.get("iou")) for r in result.per_image]
    image_names = [Path(str(r.get("image", i))).name for i, r in enumerate(result.per_image)]
    curve = plots.plot_per_image_iou(image_names, ious, f"{prefix}_per_image_iou")
    page.figure(curve[0], f"IoU of each of the {len(ious)} images, one bar each, sorted from worst (left) to best, "
                          "with the mean (dashed)")
    bases = [result.directory, opts.run_dir]
    class_name = opts.names[opts.gallery_class] if opts.gallery_class is not None else None
    try:
        samples = [load_sample(row, bases, opts.load_mask) for row in result.per_image[: opts.max_samples]]
        grid = plots.plot_sample_grid(samples, opts.colors, f"{prefix}_samples", class_names=opts.names)
        page.figure(grid[0], f"First {len(samples)} predictions overlaid on their images")
        galleries = best_worst_galleries(
            result.per_image, bases, opts.colors, f"{prefix}_gallery", k=opts.k, class_index=opts.gallery_class,
            class_name=class_name, load_mask=opts.load_mask, class_names=opts.names,
        )
    except (SeglabError, OSError) as exc:
        # A report with everything else is more useful than none: say what is missing and why (a bug still raises).
        page.note(f"Could not draw predictions of {result.directory.name}: {exc}")
        return
    page.heading(f"Best and worst {opts.k}" + (f" for class {class_name!r}" if class_name else ""), 3)
    scored = sum(1 for v in ious if v == v) if opts.gallery_class is None else None
    if scored is not None and scored < opts.k:
        page.text(f"Only {scored} images were scored, fewer than {opts.k}: each gallery shows all of them.")
    columns = "image | label | prediction | overlay | errors (false positives and false negatives)"
    page.figure(galleries["best"][0], f"Best: {columns}")
    page.figure(galleries["worst"][0], f"Worst: {columns}")


def _add_eval(page: _Page, result: EvalResult, opts: _Options, table_id: str) -> None:
    """One evaluation section: metrics, per-class table and plots, confusion, samples and galleries."""
    page.heading(f"Evaluation: {result.split}", anchor=f"evaluation-{result.directory.name}")
    prefix = str(opts.figures_dir / result.directory.name)
    if result.metrics:
        page.table(["metric", "value"], _key_value_rows(_scalar_metrics(result.metrics, opts.tgs)))
    else:
        page.note(f"{result.directory.name}/metrics.json is missing.")
    _add_colors(page, opts, result.directory.name)
    _add_per_class(page, result, prefix, table_id)
    if opts.tgs:
        _add_coverage(page, result)
    else:
        _add_emptiness(page, result)
    _add_confusion(page, result, prefix, opts.names)
    _add_per_image(page, result, prefix, opts)


def _add_coverage(page: _Page, result: EvalResult) -> None:
    """Binary tasks: the TGS metric by true foreground coverage, i.e. where the score is lost."""
    rows = [r for r in (result.metrics or {}).get("tgs_by_coverage") or [] if r.get("images")]
    if not rows:
        return
    page.heading("TGS metric by true foreground coverage", level=3)
    page.table(BY_COVERAGE_HEADERS, [[format_value(c, r.get(c)) for c in BY_COVERAGE_KEYS] for r in rows],
               table_id=f"tgs-by-coverage-{result.directory.name}")
    page.text(BY_COVERAGE_NOTE)


def emptiness_of(metrics: dict[str, Any]) -> dict[str, int] | None:
    """A binary evaluation's empty-image counts: metrics.json's own, or (older evals) from its coverage table."""
    if all(isinstance(metrics.get(k), int) for k in EMPTINESS_KEYS):
        return {k: metrics[k] for k in EMPTINESS_KEYS}
    rows = [r for r in metrics.get("tgs_by_coverage") or [] if isinstance(r.get("images"), int)]
    if not rows:
        return None
    empty = [r for r in rows if r.get("bin") == "empty"]
    full = [r for r in rows if r.get("bin") != "empty"]
    return {"empty_images": sum(r["images"] for r in empty),
            "empty_predicted_with_object": sum(int(r.get("emptiness_errors") or 0) for r in empty),
            "images_with_object": sum(r["images"] for r in full),
            "object_missed": sum(int(r.get("emptiness_errors") or 0) for r in full)}


def _add_emptiness(page: _Page, result: EvalResult) -> None:
    """Binary tasks that are not TGS: empty images predicted with an object and objects missed, in plain words."""
    counts = emptiness_of(result.metrics or {})
    if counts is None:
        return
    page.heading("Empty images and missed objects", level=3)
    page.table(["", "images"], [
        ["empty image predicted with an object", f"{counts['empty_predicted_with_object']} of {counts['empty_images']}"],
        ["object missed (nothing predicted)", f"{counts['object_missed']} of {counts['images_with_object']}"],
    ], table_id=f"emptiness-{result.directory.name}")


def _add_colors(page: _Page, opts: _Options, name: str) -> None:
    """The legend of the colours every overlay and gallery below uses: classes, then errors."""
    skip = transparent_classes(opts.names, opts.colors)
    entries = [(f"{n} (left unpainted in overlays)" if i in skip else n, c)
               for i, (n, c) in enumerate(zip(opts.names, opts.colors.tolist()))]
    page.legend(entries, f"class-colors-{name}", "Class colours:")
    errors = list(ERROR_LABELS.items())[: 3 if len(opts.colors) > 2 else 2]
    page.legend([(label, color) for color, label in errors], f"error-colors-{name}", "Error map:")


def _run_mask_reader(codec: dict) -> MaskLoader:
    """Labels read as the run decoded them (data.json's codec): colour masks, 0/255 masks and class tables alike."""
    from ..data.io import read_mask_raw
    from ..data.masks import MaskCodec

    decoder = MaskCodec.from_dict(codec)
    return lambda path: decoder.decode(read_mask_raw(Path(path))[0], Path(path))


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    k: int = 6,
    gallery_class: str | int | None = None,
    load_mask: MaskLoader | None = None,
    max_samples: int = 8,
) -> Path:
    """Write one self-contained HTML report of ``run_dir`` (default ``RUN_DIR/report.html``); return its path.

    PNG and SVG of every figure are kept beside it in ``<report name>_files/``.
    """
    run_dir = require_run_dir(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    figures_dir = out.parent / f"{out.stem}_files"
    config, summary = load_config(run_dir), load_summary(run_dir)
    results = [load_eval(d) for d in find_eval_dirs(run_dir)]
    data_meta = load_data_meta(run_dir)
    if load_mask is None and isinstance(data_meta.get("codec"), dict):
        load_mask = _run_mask_reader(data_meta["codec"])
    names = class_names(config, results[0] if results else None)
    if not (config or {}).get("classes") and data_meta.get("class_names"):
        names = [str(n) for n in data_meta["class_names"]]
    # the run's class colours: data.json's class_colors (new runs), else the config's colors (older runs)
    colors = report_colors(max(1, len(names)), data_meta.get("class_colors") or (config or {}).get("colors"))
    tgs = is_tgs_run(config, data_meta)
    gallery_index = _resolve_class(gallery_class, names)

    page = _Page()
    title = f"seglab report: {run_dir.resolve().name}"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page.add(f"<h1>{html.escape(title)}</h1><p class=\"meta\">{html.escape(str(run_dir.resolve()))} · generated {stamp}</p>")
    page.heading("Summary", anchor="summary")
    if summary:
        page.table(["", "value"], _key_value_rows(summary))
    else:
        page.note("No summary.json: the run has not finished training.")
    _add_training(page, run_dir, figures_dir, summary, tgs)
    if not results:
        page.note("No evaluation yet: run `seglab eval` on this run folder to add metrics, confusion matrices and galleries.")
    opts = _Options(run_dir, names, colors, figures_dir, tgs, k, gallery_index, load_mask or default_load_mask,
                    max_samples)
    for i, result in enumerate(results):
        _add_eval(page, result, opts, table_id="per-class" if i == 0 else f"per-class-{result.split}")
    page.heading("Config", anchor="config")
    if config:
        page.add(f"<pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>")
    else:
        page.note("No config.yaml in this run folder.")

    document = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(page.parts)
        + "\n</body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document, encoding="utf-8")
    return out
