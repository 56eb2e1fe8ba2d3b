"""``seglab measure``: per-grain measurements from a given mask, or from a model's prediction of an image.

Each run writes a new folder (``runs/measure``, ``runs/measure2``, ... also when ``out=`` names a folder that
holds files) unless ``exist_ok=true``. Predicting from a folder or list skips files that cannot be read
(``on_error=skip``, the default there) and lists them at the end; the last line says what was written where.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TypedDict

from ..config import parse_key_values
from ..data.sources import BadFiles, check_on_error, default_on_error
from ..errors import ConfigError
from .background import resolve_background
from .grains import GrainTable
from .run import run_measure

# How each output of ``write_measurements`` is counted in the closing line.
MEASURE_NOUNS = {"grains_csv": "grain table", "classes_csv": "class table", "left_out_csv": "left-out table",
                 "size_distribution_png": "size distribution", "outlined_png": "outlined image"}


class MeasureOptions(TypedDict):
    """The options of ``seglab measure`` and their types (the parser checks values against them)."""

    mask: str
    image: str
    weights: str
    out: str
    exist_ok: bool
    on_error: str  # "" = skip for a folder or list of images, raise for one
    pixel_size: float | str | None  # 0.65 with unit=um, or "0.65um"
    unit: str
    classes: list | None
    split_touching: bool
    min_distance: int
    min_area: int
    min_grain: int | str  # smallest grain counted: pixels (9) or an area with pixel_size, e.g. "5um2"
    keep_border: bool  # count objects touching the image border too
    background: str | list  # auto | none | class ids or names not measured: 0, matrix,pore or [0, 4]
    ignore_index: int | None
    connectivity: int
    labels: bool
    device: str
    precision: str
    backend: str
    tta: str


OPTIONS: MeasureOptions = {"mask": "", "image": "", "weights": "", "out": "runs/measure", "exist_ok": False,
                           "on_error": "", "pixel_size": None, "unit": "px", "classes": None, "split_touching": False,
                           "min_distance": 7, "min_area": 0, "min_grain": 9, "keep_border": False, "background": "auto",
                           "ignore_index": None, "connectivity": 8, "labels": True,
                           "device": "auto", "precision": "auto", "backend": "torch", "tta": "none"}

# What each option does, for ``seglab measure --help``.
OPTION_HELP = {
    "mask": "a class-index mask to measure (PNG/TIFF); or give image= and weights= to predict it first",
    "image": "image to predict and measure (with weights=): a file, a folder, a list file, or views a.jpg,b.jpg",
    "weights": "run folder or checkpoint that predicts the mask of image=",
    "out": "output folder (a new numbered one unless exist_ok=true)",
    "exist_ok": "write into out= even when it holds files",
    "on_error": "raise | skip: an unreadable file stops the run, or is skipped and listed (skip for folders)",
    "pixel_size": "size of one pixel, e.g. 0.65um: adds areas and lengths in that unit",
    "unit": "unit of a bare-number pixel_size (um, nm, mm)",
    "classes": "class names in index order, e.g. [matrix,tourmaline] (default: the model's, else class_N)",
    "background": "classes not measured: auto (class 0 when named like a background, unnamed or binary; a "
                  "named first class such as quartz is measured), none, or ids/names, e.g. 0 or matrix,pore",
    "split_touching": "separate touching grains of one class by a distance-transform watershed",
    "min_distance": "split_touching: smallest distance in px between two grain centres it separates",
    "min_area": "drop objects smaller than this many px before measuring (silently, as predict's cleanup)",
    "min_grain": "leave out and list specks smaller than this: px (9), or an area with pixel_size, e.g. 5um2",
    "keep_border": "also count objects touching the image border (cut by the field of view)",
    "ignore_index": "mask value that is no class (neither grain nor part of the area fractions)",
    "connectivity": "8 or 4: whether diagonal neighbours belong to one grain",
    "labels": "number each grain in outlined.png with its row label in grains.csv",
    "device": "auto | cpu | cuda (predicting the mask)",
    "precision": "auto | fp32 | bf16 (predicting the mask)",
    "backend": "torch | onnx (predicting the mask)",
    "tta": "test-time augmentation of the prediction: none | hflip | flip | d4",
}


def measure_main(argv: list[str]) -> int:
    """Parse key=value options, predict the mask first when only an image and weights are given, measure."""
    from ..runtime.run_dir import count_text, output_dir, saved_line

    opts = {**OPTIONS, **parse_key_values(argv, MeasureOptions)}
    check_on_error(str(opts["on_error"]))
    mask, image = opts["mask"], opts["image"] or None
    written: Counter = Counter()
    if mask:
        if opts["classes"] is None:
            opts["classes"], opts["class_colors"] = class_table_beside(Path(mask))
        with output_dir(Path(opts["out"]), bool(opts["exist_ok"])) as out:
            bad = BadFiles(opts["on_error"] or "raise")
            grains = _measure_all([(Path(mask), image, out, Path(mask).name)], opts, out, bad, written)
        backend = "measured the given mask; no model ran"
    else:
        if not (opts["weights"] and image):
            raise ConfigError("measure needs mask=MASK.png, or image=IMAGE with weights=RUN_DIR to predict the mask")
        out, jobs, bad, backend, class_names, colors = _predict_masks(opts)
        written["predicted mask"] = len(jobs)
        if opts["classes"] is None:
            opts["classes"] = class_names
        opts["class_colors"] = colors
        grains = _measure_all(jobs, opts, out, bad, written)
    bad.print()
    print(saved_line(out, written, backend, [f"{count_text(grains, 'object')} measured", *bad.note()]))
    return 0


def class_table_beside(mask: Path) -> tuple[list[str] | None, list[list[int]] | None]:
    """Class names and colours from a classes.csv / classes.txt in the mask's folder or the one above it (a dataset's
    ``masks/`` beside its table), as training reads them; (None, None) when there is none."""
    from ..data.labels import read_class_table

    for folder in (mask.parent, mask.parent.parent):
        if (folder / "grains.csv").exists():  # a measure output folder: its classes.csv holds totals, not names
            continue
        names, colors = read_class_table(folder)
        if names:
            print(f"note: class names from the class table in {folder}: {', '.join(names)} (classes= overrides)")
            return names, colors or None
    return None, None


def measured_text(table: GrainTable, counts: Counter) -> str:
    """``132 objects measured (pore 94, crack 38)``: the words of the mask's own classes, not "grains" of pores;
    ``counts``: objects per class id."""
    from ..runtime.run_dir import count_text

    per_class = ", ".join(f"{n} {counts[c]}" for c, n in table.class_names.items())
    return f"{count_text(len(table.rows), 'object')} measured" + (f" ({per_class})" if per_class else "")


def _measure_all(jobs: list[tuple[Path, Path | None, Path, str]], opts: dict, out: Path, bad: BadFiles,
                 written: Counter) -> int:
    """Measure each (mask, image to draw on, output folder, name) job, skipping (or raising) bad files; returns the
    number of grains and counts the files written into ``written``."""
    grains = 0
    background, note = resolve_background(opts["background"], opts["classes"])
    print(f"note: {note}")
    for mask_path, image_path, folder, name in jobs:
        with bad.guard(image_path or mask_path) as guard:
            result = run_measure(mask_path, image_path, out_dir=folder, pixel_size=opts["pixel_size"],
                                 unit=opts["unit"], class_names=opts["classes"],
                                 split_touching=bool(opts["split_touching"]), min_distance=int(opts["min_distance"]),
                                 min_area=int(opts["min_area"]), ignore_index=opts["ignore_index"],
                                 connectivity=int(opts["connectivity"]), draw_labels=bool(opts["labels"]),
                                 min_grain=opts["min_grain"], keep_border=bool(opts["keep_border"]),
                                 background=background, class_colors=opts.get("class_colors"))
        if guard.failed:
            continue
        grains += len(result.table.rows)
        written.update(MEASURE_NOUNS.get(kind, kind) for kind in result.files)
        counts = Counter(int(r["class_id"]) for r in result.table.rows)
        print(f"{name}: {measured_text(result.table, counts)}" + (f" -> {folder}" if folder != out else ""))
        missing = [n for c, n in result.table.class_names.items() if not counts[c]]
        if missing and result.table.rows:
            print(f"note: no {', '.join(repr(n) for n in missing)} found in {name}")
    return grains


def _predict_masks(opts: dict) -> tuple[Path, list[tuple[Path, Path, Path, str]], BadFiles, str, list | None,
                                        list | None]:
    """Predict the class-index masks of the ``image`` source with ``weights`` into a new output folder.

    Returns (folder, jobs, skipped files, backend text, class names); a job is (mask, first view, folder to write
    the measurements into, name) per predicted sample. ``image`` is any predict source (an image, comma-separated
    views, a list file, a folder); with several samples each is measured into its own sub-folder.
    """
    from ..config import build_config
    from ..inference.predict import predict_source

    out = Path(opts["out"])
    keys = {"weights": opts["weights"], "source": opts["image"], "project": str(out.parent), "name": out.name,
            "exist_ok": bool(opts["exist_ok"]), "save": "index", "device": opts["device"],
            "precision": opts["precision"], "backend": opts["backend"], "tta": opts["tta"]}
    if opts["on_error"]:
        keys["on_error"] = opts["on_error"]
    result = predict_source(build_config(keys))
    single = len(result.done) + len(result.skipped) == 1
    jobs = []
    for s in result.done:
        mask = result.out / f"{s.id}_mask.png"
        if not mask.exists() and (result.out / f"{s.id}_mask.tif").exists():  # a large TIFF, predicted by windows
            mask = result.out / f"{s.id}_mask.tif"
        jobs.append((mask, s.image, result.out if single else result.out / s.id, s.id))
    bad = BadFiles(opts["on_error"] or default_on_error(str(opts["image"]), result.done))
    bad.extend(result.skipped)
    from ..inference.predict import run_colors

    colors = run_colors(result.meta, len(result.meta.get("class_names") or [])).tolist() \
        if result.meta.get("class_names") else None
    return result.out, jobs, bad, result.backend, (list(result.meta.get("class_names") or []) or None), colors

