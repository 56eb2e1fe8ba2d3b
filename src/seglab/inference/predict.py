"""``seglab predict``: a file or folder of images in; class-index PNG, colour PNG and overlay blend out.

Outputs have the input's size whatever padding the model needed. Images larger than ``tile`` (or
2048 px when tile=0) go through sliding-window prediction so memory stays bounded.

Nothing is overwritten: each run writes a new folder (``runs/predict``, ``runs/predict2``, ... also when ``name=``
names a folder that holds files) unless ``exist_ok=true``. A folder or list source skips files it cannot read
(``on_error=skip`` is predict's default there; ``on_error=raise`` stops at the first) and lists them at the end.
The last line says what was written where, and which backend and precision computed it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..choices import SAVE_OUTPUTS
from ..config import Config, config_sources
from ..data.colors import colorize, display_colors, overlay_classes, to_display_rgb, write_legend
from ..data.dataset import load_sample_image, meta_view_channels
from ..data.formats import Sample
from ..data.io import image_size
from ..data.labels import transparent_classes
from ..data.sources import BadFiles, default_on_error, model_source, read_source
from ..data.transforms import pad_for_eval
from ..errors import ConfigError, DataError
from ..runtime.progress import track
from ..runtime.run_dir import output_dir, saved_line
from .predictor import Predictor, load_predictor

WHOLE_IMAGE_LIMIT = 2048
PICTURE_PIXELS = 80e6  # a large TIFF's colour mask and overlay are drawn in memory up to this size (~1 GB at peak)
OUTPUTS = SAVE_OUTPUTS
# What each saved output is called in the closing line ("13 masks, 13 overlays"); large TIFFs add "label TIFF".
OUTPUT_NOUNS = {"index": "mask", "color": "colour mask", "overlay": "overlay", "probs": "probability map"}


def source_images(source: str) -> list[Path]:
    """Image files of a file, folder or list-file argument (one view per sample; see ``source_samples``)."""
    if not source:
        raise ConfigError("predict needs source=IMAGE_OR_FOLDER")
    return [s.image for s in read_source(source)]


def source_samples(source: str, meta: dict, cfg: Config | None = None, keep_unreadable: bool = False) -> list[Sample]:
    """The samples of a source argument, with as many views as the model takes (``data.sources``).

    ``cfg``'s ``image_dirs``/``pair_by``, when set, replace the view folders and pairing the model was trained with.
    ``keep_unreadable`` keeps files that will fail to read (a folder's .heic, a list line's missing file) as
    samples, so that they are skipped and listed by name.
    """
    if not source:
        raise ConfigError("predict needs source=IMAGE, FOLDER or LIST.txt")
    image_dirs = cfg.image_dirs if cfg else ()
    pair_by = cfg.pair_by if cfg and (cfg.image_dirs or cfg.pair_by != "stem") else ""
    return model_source(source, meta, image_dirs, pair_by, keep_unreadable)


def effective_on_error(cfg: Config, samples: list[Sample]) -> str:
    """``on_error`` as set (command line, cfg file or recipe), else predict's default: skip bad files of a folder or
    list, stop on a bad single image (training and eval keep the config default, raise)."""
    if config_sources(cfg).get("on_error", "default") != "default":
        return cfg.on_error
    return default_on_error(cfg.source, samples)


def first_view(image: np.ndarray, meta: dict) -> np.ndarray:
    """The channels of a (stacked) image that belong to its first view, for overlays and display."""
    return image[..., : meta_view_channels(meta)[0]]


def remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Binary post-processing: a prediction with fewer foreground pixels than ``min_area`` becomes empty."""
    if min_area > 0 and 0 < mask.sum() < min_area:
        return np.zeros_like(mask)
    return mask


def run_tile(cfg: Config, meta: dict, given: bool | None = None) -> int:
    """The sliding-window tile to predict or score with: ``tile=`` when given, else the run's ``val_tile``, else 0."""
    # A run that validated large images by tiles is predicted and scored the same way, so that predict's maps are
    # the ones eval scored; tile=0 given explicitly still means whole images. ``given``: whether the user set tile=
    # (default: read from the config's sources; eval rebuilds its config from the run's and says it itself).
    if given is None:
        given = config_sources(cfg)["tile"] != "default"
    return cfg.tile if given else int(cfg.tile or meta.get("val_tile") or 0)


def predict_image(predictor: Predictor, image: np.ndarray, threshold: float, tile: int = 0,
                  overlap: float = 0.25) -> tuple[np.ndarray, np.ndarray | None]:
    """(class-index map, probabilities or None for tiled) of one (H, W, C) image at its own size."""
    meta = predictor.meta
    h, w = image.shape[:2]
    if tile or max(h, w) > WHOLE_IMAGE_LIMIT:
        from .tiled import predict_tiled

        channels = 1 if predictor.num_classes == 2 else predictor.num_classes
        probs = predict_tiled(lambda x: predictor.probs(x), image, num_classes=channels, tile=tile or 1024,
                              overlap=overlap, batch_size=2, return_probs=True, progress=False,
                              preprocess=lambda t: torch.from_numpy(np.ascontiguousarray(t.transpose(2, 0, 1))))
        labels = (probs[..., 0] > threshold) if channels == 1 else probs.argmax(-1)
        return labels.astype(np.uint8), None
    padded, _, (top, _, left, _) = pad_for_eval(image, None, meta["pad_to"], meta["pad_mode"], 0)
    probs = predictor.probs(torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None], [(h, w)])[0]
    probs = probs[:, top:top + h, left:left + w].float().cpu()
    pred = (probs[0] > threshold).long() if probs.shape[0] == 1 else probs.argmax(0)
    return pred.numpy().astype(np.uint8), probs.numpy()


def predict_huge(predictor: Predictor, path: Path, out: Path, cfg: Config) -> Path:
    """Window-by-window prediction of a large (Geo)TIFF into a label TIFF; memory depends on the tile only."""
    from .tiled import predict_large_file

    channels = 1 if predictor.num_classes == 2 else predictor.num_classes
    in_ch = predictor.meta["in_channels"]

    def preprocess(tile: np.ndarray) -> torch.Tensor:
        if tile.shape[2] != in_ch:  # e.g. gray-as-RGB scenes for a 1-channel model
            tile = tile[..., :1] if in_ch == 1 else np.repeat(tile[..., :1], in_ch, axis=2)
        return torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1)))

    return predict_large_file(lambda x: predictor.probs(x), path, out / f"{path.stem}_mask.tif",
                              num_classes=channels, tile=run_tile(cfg, predictor.meta) or 1024, overlap=cfg.overlap,
                              batch_size=2,
                              preprocess=preprocess, progress=True)


@dataclass
class PredictResult:
    """What a predict run did: the folder, the samples predicted, files written by kind and the files skipped."""

    out: Path
    backend: str
    meta: dict = field(default_factory=dict)
    done: list[Sample] = field(default_factory=list)
    written: Counter = field(default_factory=Counter)
    skipped: BadFiles = field(default_factory=lambda: BadFiles("skip"))
    submission: str = ""

    def summary(self) -> str:
        """``Results saved to runs/predict3: 13 masks, 13 overlays (backend torch, precision fp32, device cpu)``."""
        notes = [f"submission CSV {self.submission}"] if self.submission else []
        return saved_line(self.out, self.written, self.backend, notes + self.skipped.note())


def load_any_predictor(cfg: Config) -> Predictor:
    """The PyTorch Predictor, or the onnxruntime one for ``backend=onnx``."""
    if cfg.backend == "onnx":
        from .onnx_predictor import load_onnx_predictor

        return load_onnx_predictor(cfg.weights, cfg.tta)  # type: ignore[return-value]
    return load_predictor(cfg.weights, cfg.device, cfg.precision, cfg.tta)


def predict_source(cfg: Config, out: Path | None = None, predictor: Predictor | None = None) -> PredictResult:
    """Predict every sample of ``cfg.source`` into ``out`` (default: a new ``project/name`` folder); prints nothing
    but progress. Bad files are skipped or raised by ``effective_on_error``; when every file fails, a DataError."""
    predictor = predictor or load_any_predictor(cfg)
    wanted = [s.strip() for s in cfg.save.split(",") if s.strip()]
    bad = [s for s in wanted if s not in OUTPUTS]
    if bad:
        raise ConfigError(f"save: unknown output(s) {bad}; choose from {', '.join(OUTPUTS)}")
    if cfg.submission and predictor.num_classes != 2:
        raise ConfigError("submission= writes run-length CSV for binary tasks only")
    samples = source_samples(cfg.source, predictor.meta, cfg, keep_unreadable=True)
    skipped = BadFiles(effective_on_error(cfg, samples))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        return _predict_all(predictor, samples, out, cfg, wanted, skipped)
    # The folder is made once the weights, options and source are known good, and removed again when nothing
    # could be written into it: failed starts leave no empty numbered folders behind.
    with output_dir(Path(cfg.project) / (cfg.name or "predict"), cfg.exist_ok) as folder:
        return _predict_all(predictor, samples, folder, cfg, wanted, skipped)


def _predict_all(predictor: Predictor, samples: list[Sample], out: Path, cfg: Config, wanted: list[str],
                 skipped: BadFiles) -> PredictResult:
    """The loop of ``predict_source``: each sample predicted and written, or skipped by ``skipped``."""
    meta = predictor.meta
    tuned = meta.get("tuned") or {}
    threshold = tuned.get("threshold", cfg.threshold)
    min_area = tuned.get("min_area", cfg.min_area)
    describe = getattr(predictor, "describe", None)
    result = PredictResult(out, describe() if describe else f"backend {cfg.backend}", meta, skipped=skipped)
    class_colors = run_colors(meta, predictor.num_classes)
    submission: dict[str, np.ndarray] = {}
    for sample in track(samples, desc="predict", unit="img"):
        with skipped.guard(sample) as guard:
            pred = _predict_one(predictor, sample, out, cfg, wanted, threshold, min_area, class_colors, result)
        if guard.failed:
            continue
        result.done.append(sample)
        if cfg.submission and pred is not None:
            submission[sample.id] = pred
    if samples and not result.done:
        skipped.print()
        raise DataError(f"none of the {len(samples)} image(s) of {cfg.source} could be predicted (reasons above)")
    if result.done and {"color", "overlay"} & set(wanted):  # the key to the colours, once per folder
        names = list(meta.get("class_names") or [f"class {i}" for i in range(len(class_colors))])
        for c in transparent_classes(list(meta.get("class_names") or []), class_colors):
            names[c] = f"{names[c]} (unpainted in overlays)"
        write_legend(out / "legend.png", names, class_colors)
        result.written["legend"] += 1
    if cfg.submission:
        from ..data.rle import write_submission

        write_submission(cfg.submission, list(submission), [submission[k] for k in submission])
        result.submission = cfg.submission
    return result


def run_colors(meta: dict, num_classes: int) -> np.ndarray:
    """The colours predictions are painted in: the run's ``class_colors`` (classes.csv, palette=, the masks' own
    colours), for older checkpoints the RGB masks' ``colors``, else the built-in palette; a grey binary foreground
    becomes amber."""
    colors = meta.get("class_colors")
    if not colors and meta["codec"]["mode"] == "rgb":
        colors = meta["codec"].get("colors")
    return display_colors(num_classes, colors if colors and isinstance(colors[0], (list, tuple)) else None)


def _predict_one(predictor: Predictor, sample: Sample, out: Path, cfg: Config, wanted: list[str], threshold: float,
                 min_area: int, class_colors: np.ndarray, result: PredictResult) -> np.ndarray | None:
    """Predict one sample and write its outputs (counted in ``result.written``); returns the class map, or None
    for a large TIFF predicted window by window."""
    path = sample.image
    # Window-by-window reading is for one file; several views are read whole and tiled in memory.
    if not sample.extra_views and path.suffix.lower() in (".tif", ".tiff") \
            and max(size := image_size(path)) > WHOLE_IMAGE_LIMIT:
        label_tif = predict_huge(predictor, path, out, cfg)
        result.written["label TIFF"] += 1
        pictures = [k for k in ("color", "overlay") if k in wanted]
        if pictures and size[0] * size[1] > PICTURE_PIXELS:
            print(f"{path.name}: large image ({size[1]}x{size[0]}), predicted window by window -> {label_tif}; no "
                  f"{' or '.join(pictures)} PNG above {PICTURE_PIXELS / 1e6:g} Mpx (open the label TIFF in a GIS)")
        elif pictures:
            import tifffile

            pred = tifffile.imread(label_tif)
            image = load_sample_image(sample, meta_view_channels(predictor.meta))
            result.written.update(OUTPUT_NOUNS[k] for k in _write_pictures(pred, image, sample.id, out, pictures,
                                                                           predictor.meta, class_colors, cfg.alpha))
        return None
    image = load_sample_image(sample, meta_view_channels(predictor.meta))
    pred, probs = predict_image(predictor, image, threshold, run_tile(cfg, predictor.meta), cfg.overlap)
    if predictor.num_classes == 2:
        pred = remove_small(pred, min_area)
    stem, written = sample.id, []
    if "index" in wanted:
        Image.fromarray(pred).save(out / f"{stem}_mask.png")
        written.append("index")
    written += _write_pictures(pred, image, stem, out, wanted, predictor.meta, class_colors, cfg.alpha)
    if "probs" in wanted and probs is not None:
        np.save(out / f"{stem}_probs.npy", probs.astype(np.float16))
        written.append("probs")
    result.written.update(OUTPUT_NOUNS[kind] for kind in written)
    return pred


def _write_pictures(pred: np.ndarray, image: np.ndarray, stem: str, out: Path, wanted: list[str], meta: dict,
                    class_colors: np.ndarray, alpha: float) -> list[str]:
    """The colour mask and the overlay of one prediction, as ``wanted``; returns the kinds written."""
    written = []
    if "color" in wanted:
        Image.fromarray(colorize(pred, class_colors)).save(out / f"{stem}_color.png")
        written.append("color")
    if "overlay" in wanted:
        shown = to_display_rgb(first_view(image, meta))  # shown as the report shows it (16-bit stretched)
        # a background (binary task's class 0, a class 0 named or coloured so) stays as the image is
        skip = transparent_classes(list(meta.get("class_names") or []), class_colors)
        Image.fromarray(overlay_classes(shown, pred, class_colors, skip, alpha)).save(out / f"{stem}_overlay.png")
        written.append("overlay")
    return written


def run_predict(cfg: Config) -> Path:
    """``seglab predict``: predict every source image into a new folder, list skipped files, and end with one line
    saying what was written where and by which backend and precision; returns the output folder."""
    predictor = load_any_predictor(cfg)
    tile = run_tile(cfg, predictor.meta)
    if tile and not cfg.tile:
        print(f"note: images larger than {tile} px are predicted by sliding {tile}-px windows, as the run validated "
              f"(val_tile); tile=0 predicts whole images")
    result = predict_source(cfg, predictor=predictor)
    result.skipped.print()
    print(result.summary())
    return result.out
