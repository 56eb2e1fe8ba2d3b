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

from ..config import Config
from ..data.colors import class_palette, colorize, overlay
from ..data.dataset import load_image
from ..data.formats import list_images
from ..data.io import IMAGE_EXTS
from ..data.transforms import pad_for_eval
from ..errors import ConfigError, DataError
from .predictor import Predictor, load_predictor

WHOLE_IMAGE_LIMIT = 2048
OUTPUTS = ("index", "color", "overlay", "probs")


def source_images(source: str) -> list[Path]:
    """Image files of a file, folder or list-file argument."""
    if not source:
        raise ConfigError("predict needs source=IMAGE_OR_FOLDER")
    path = Path(source)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise DataError(f"{path}: no image files ({', '.join(IMAGE_EXTS)})")
        return files
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTS:
            return [path]
        if path.suffix.lower() == ".txt":
            from ..data.formats import read_list_file

            return [s.image for s in read_list_file(path)]
    raise DataError(f"{path}: no such image, folder or list file")


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

        labels = predict_tiled(lambda x: predictor.probs(x), image, num_classes=max(2, predictor.num_classes),
                               tile=tile or 1024, overlap=overlap, batch_size=2,
                               preprocess=lambda t: torch.from_numpy(np.ascontiguousarray(t.transpose(2, 0, 1))),
                               progress=False, threshold=threshold)
        return labels, None
    padded, _, (top, _, left, _) = pad_for_eval(image, None, meta["pad_to"], meta["pad_mode"], 0)
    probs = predictor.probs(torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None])[0]
    probs = probs[:, top:top + h, left:left + w].float().cpu()
    pred = (probs[0] > threshold).long() if probs.shape[0] == 1 else probs.argmax(0)
    return pred.numpy().astype(np.uint8), probs.numpy()


def run_predict(cfg: Config) -> Path:
    """Predict every source image; returns the output folder."""
    predictor = load_predictor(cfg.weights, cfg.device, cfg.precision, cfg.tta)
    meta = predictor.meta
    tuned = meta.get("tuned") or {}
    threshold = tuned.get("threshold", cfg.threshold)
    min_area = tuned.get("min_area", cfg.min_area)
    wanted = [s.strip() for s in cfg.save.split(",") if s.strip()]
    bad = [s for s in wanted if s not in OUTPUTS]
    if bad:
        raise ConfigError(f"save: unknown output(s) {bad}; choose from {', '.join(OUTPUTS)}")
    files = source_images(cfg.source)
    out = Path(cfg.project) / (cfg.name or "predict")
    out.mkdir(parents=True, exist_ok=True)
    palette = class_palette(predictor.num_classes, meta["codec"].get("colors"))
    submission: dict[str, np.ndarray] = {}
    for path in tqdm(files, desc="predict", disable=None):
        image = load_image(path, meta["in_channels"])
        pred, probs = predict_image(predictor, image, threshold, cfg.tile, cfg.overlap)
        if predictor.num_classes == 2:
            pred = remove_small(pred, min_area)
        stem = path.stem
        if "index" in wanted:
            Image.fromarray(pred).save(out / f"{stem}_mask.png")
        color = colorize(pred, palette)
        if "color" in wanted:
            Image.fromarray(color).save(out / f"{stem}_color.png")
        if "overlay" in wanted:
            Image.fromarray(overlay(image, color, cfg.alpha, pred)).save(out / f"{stem}_overlay.png")
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
    print(f"{len(files)} prediction(s) written to {out}")
    return out
