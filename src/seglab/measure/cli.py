"""``seglab measure``: per-grain measurements from a given mask, or from a model's prediction of an image."""
from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from ..config import parse_key_values
from ..errors import ConfigError
from .run import run_measure


class MeasureOptions(TypedDict):
    """The options of ``seglab measure`` and their types (the parser checks values against them)."""

    mask: str
    image: str
    weights: str
    out: str
    pixel_size: float | str | None  # 0.65 with unit=um, or "0.65um"
    unit: str
    classes: list | None
    split_touching: bool
    min_distance: int
    min_area: int
    ignore_index: int | None
    connectivity: int
    labels: bool
    device: str
    tta: str


OPTIONS: MeasureOptions = {"mask": "", "image": "", "weights": "", "out": "runs/measure", "pixel_size": None,
                           "unit": "px", "classes": None, "split_touching": False, "min_distance": 7, "min_area": 0,
                           "ignore_index": None, "connectivity": 8, "labels": True, "device": "auto", "tta": "none"}


def measure_main(argv: list[str]) -> int:
    """Parse key=value options, predict the mask first when only an image and weights are given, measure."""
    opts = {**OPTIONS, **parse_key_values(argv, MeasureOptions)}
    mask, image = opts["mask"], opts["image"] or None
    jobs = [(mask, image, opts["out"])]  # (mask, image to draw on, output folder) per sample
    if not mask:
        if not (opts["weights"] and image):
            raise ConfigError("measure needs mask=MASK.png, or image=IMAGE with weights=RUN_DIR to predict the mask")
        jobs = _predict_masks(opts)
        if opts["classes"] is None:
            from ..runtime.checkpoint import load_checkpoint

            opts["classes"] = load_checkpoint(opts["weights"])["meta"]["class_names"]
    for mask, image, out in jobs:
        result = run_measure(mask, image, out_dir=out, pixel_size=opts["pixel_size"], unit=opts["unit"],
                             class_names=opts["classes"], split_touching=bool(opts["split_touching"]),
                             min_distance=int(opts["min_distance"]), min_area=int(opts["min_area"]),
                             ignore_index=opts["ignore_index"], connectivity=int(opts["connectivity"]),
                             draw_labels=bool(opts["labels"]))
        print(f"{len(result.table.rows)} grain(s) measured")
        for name, path in result.files.items():
            print(f"  {name}: {path}")
    return 0


def _predict_masks(opts: dict) -> list[tuple[Path, Path, Path]]:
    """Predict the class-index masks of the ``image`` source with ``weights``: (mask, first view, out) per sample.

    ``image`` is any predict source (an image, comma-separated views, a list file, a folder); with several
    samples each is measured into its own sub-folder of ``out``.
    """
    from ..config import build_config
    from ..data.sources import model_source
    from ..inference.predict import run_predict
    from ..runtime.checkpoint import load_checkpoint

    out = Path(opts["out"])
    samples = model_source(str(opts["image"]), load_checkpoint(opts["weights"])["meta"])
    run_predict(build_config({"weights": opts["weights"], "source": opts["image"], "project": str(out.parent),
                              "name": out.name, "save": "index", "device": opts["device"], "tta": opts["tta"]}))
    return [(out / f"{s.id}_mask.png", s.image, out if len(samples) == 1 else out / s.id) for s in samples]
