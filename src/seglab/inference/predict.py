"""``seglab predict``: a file or folder of images in; class-index PNG, colour PNG and overlay blend out.

Outputs have the input's size whatever padding the model needed. Images larger than ``tile`` (or
2048 px when tile=0) go through sliding-window prediction so memory stays bounded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..choices import SAVE_OUTPUTS
from ..config import Config
from ..data.colors import colorize, overlay, palette
from ..data.dataset import load_sample_image, meta_view_channels
from ..data.formats import Sample
from ..data.io import image_size
from ..data.sources import model_source, read_source
from ..data.transforms import pad_for_eval
from ..errors import ConfigError
from .predictor import Predictor, load_predictor

WHOLE_IMAGE_LIMIT = 2048
OUTPUTS = SAVE_OUTPUTS


def source_images(source: str) -> list[Path]:
    """Image files of a file, folder or list-file argument (one view per sample; see ``source_samples``)."""
    if not source:
        raise ConfigError("predict needs source=IMAGE_OR_FOLDER")
    return [s.image for s in read_source(source)]


def source_samples(source: str, meta: dict, cfg: Config | None = None) -> list[Sample]:
    """The samples of a source argument, with as many views as the model takes (``data.sources``).

    ``cfg``'s ``image_dirs``/``pair_by``, when set, replace the view folders and pairing the model was trained with.
    """
    if not source:
        raise ConfigError("predict needs source=IMAGE, FOLDER or LIST.txt")
    image_dirs = cfg.image_dirs if cfg else ()
    pair_by = cfg.pair_by if cfg and (cfg.image_dirs or cfg.pair_by != "stem") else ""
    return model_source(source, meta, image_dirs, pair_by)


def first_view(image: np.ndarray, meta: dict) -> np.ndarray:
    """The channels of a (stacked) image that belong to its first view, for overlays and display."""
    return image[..., : meta_view_channels(meta)[0]]


def remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Binary post-processing: a prediction with fewer foreground pixels than ``min_area`` becomes empty."""
    if min_area > 0 and 0 < mask.sum() < min_area:
        return np.zeros_like(mask)
    return mask


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
                              num_classes=channels, tile=cfg.tile or 1024, overlap=cfg.overlap, batch_size=2,
                              preprocess=preprocess, progress=True)


def display_rgb(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 view of any image for overlays: gray repeated, 16-bit scaled, extra channels dropped."""
    if image.dtype != np.uint8:
        image = (image.astype(np.float32) / max(float(image.max()), 1.0) * 255).astype(np.uint8)
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else np.ascontiguousarray(image[..., :3])


def run_predict(cfg: Config) -> Path:
    """Predict every source image; returns the output folder."""
    if cfg.backend == "onnx":
        from .onnx_predictor import load_onnx_predictor

        predictor = load_onnx_predictor(cfg.weights, cfg.tta)
    else:
        predictor = load_predictor(cfg.weights, cfg.device, cfg.precision, cfg.tta)
    meta = predictor.meta
    tuned = meta.get("tuned") or {}
    threshold = tuned.get("threshold", cfg.threshold)
    min_area = tuned.get("min_area", cfg.min_area)
    wanted = [s.strip() for s in cfg.save.split(",") if s.strip()]
    bad = [s for s in wanted if s not in OUTPUTS]
    if bad:
        raise ConfigError(f"save: unknown output(s) {bad}; choose from {', '.join(OUTPUTS)}")
    samples = source_samples(cfg.source, meta, cfg)
    out = Path(cfg.project) / (cfg.name or "predict")
    out.mkdir(parents=True, exist_ok=True)
    colors = meta["codec"].get("colors") if meta["codec"]["mode"] == "rgb" else None
    class_colors = palette(predictor.num_classes, colors if colors and isinstance(colors[0], list) else None)
    submission: dict[str, np.ndarray] = {}
    for sample in tqdm(samples, desc="predict", disable=None):
        path = sample.image
        # Window-by-window reading is for one file; several views are read whole and tiled in memory.
        if not sample.extra_views and path.suffix.lower() in (".tif", ".tiff") \
                and max(image_size(path)) > WHOLE_IMAGE_LIMIT:
            print(f"{path.name}: large image, predicted window by window -> {predict_huge(predictor, path, out, cfg)}")
            continue
        image = load_sample_image(sample, meta_view_channels(meta))
        pred, probs = predict_image(predictor, image, threshold, cfg.tile, cfg.overlap)
        if predictor.num_classes == 2:
            pred = remove_small(pred, min_area)
        stem = sample.id
        if "index" in wanted:
            Image.fromarray(pred).save(out / f"{stem}_mask.png")
        color = colorize(pred, class_colors)
        if "color" in wanted:
            Image.fromarray(color).save(out / f"{stem}_color.png")
        if "overlay" in wanted:
            Image.fromarray(overlay(display_rgb(first_view(image, meta)), color, cfg.alpha)).save(
                out / f"{stem}_overlay.png")
        if "probs" in wanted and probs is not None:
            np.save(out / f"{stem}_probs.npy", probs.astype(np.float16))
        if cfg.submission:
            submission[stem] = pred
    if cfg.submission:
        if predictor.num_classes != 2:
            raise ConfigError("submission= writes run-length CSV for binary tasks only")
        from ..data.rle import write_submission

        write_submission(cfg.submission, list(submission), [submission[k] for k in submission])
        print(f"submission written to {cfg.submission}")
    print(f"{len(samples)} prediction(s) written to {out}")
    return out
