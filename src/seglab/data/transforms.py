"""Augmentation pipelines (albumentations) and the padding rules for training and evaluation.

Images stay in their stored dtype (uint8/uint16) through augmentation and are normalised later, in
the training loop on the device: this keeps workers cheap and batches small to pass between processes.
"""
from __future__ import annotations

import cv2
import albumentations as A
import numpy as np

from ..choices import AUGMENT_PRESETS as PRESETS
from ..choices import AUGMENTS, TTA_VIEWS
from ..errors import ConfigError


def parse_augment(spec: str) -> tuple[str, ...]:
    """A preset name or a comma list of augmentation names -> tuple of names."""
    if spec in PRESETS:
        return PRESETS[spec]
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    bad = [n for n in names if n not in AUGMENTS]
    if bad:
        raise ConfigError(f"augment: unknown {bad}; use a preset ({', '.join(PRESETS)}) or a comma list of "
                          f"{', '.join(AUGMENTS)}")
    return names


# The transforms each TTA view set applies, to compare with what training showed the model ("+shift" adds "shift").
_TTA_TRANSFORMS = {"none": (), "hflip": ("hflip",), "flip": ("hflip", "vflip"), "d4": ("hflip", "vflip", "rot90")}
assert tuple(_TTA_TRANSFORMS) == TTA_VIEWS, "every TTA view set of choices.TTA_VIEWS needs its transforms here"


def tta_unseen_in_training(tta: str, augment: str) -> list[str]:
    """The transforms of ``tta`` that training with ``augment`` never showed the model (they can hurt, not help)."""
    names = set(parse_augment(augment))
    views, _, shift = ("none+shift" if tta == "shift" else tta).partition("+")
    seen = {"rot90": "rot90" in names,  # rot90 with one flip generates the other flip (dihedral group)
            "hflip": "hflip" in names or {"vflip", "rot90"} <= names,
            "vflip": "vflip" in names or {"hflip", "rot90"} <= names,
            "shift": bool({"random_pad", "shift_scale_rotate", "crop"} & names)}
    return [t for t in _TTA_TRANSFORMS[views] + ((shift,) if shift else ()) if not seen[t]]


def _border(pad_mode: str) -> int:
    return cv2.BORDER_REFLECT_101 if pad_mode == "reflect" else cv2.BORDER_CONSTANT


def build_train_transform(augment: str, crop: int = 0, pad_to: int = 0, pad_mode: str = "reflect",
                          ignore_index: int = 255, channels: int = 3, seed: int | None = None) -> A.Compose:
    """Training pipeline: pad (fixed or random position), geometric and photometric augmentation, crop."""
    names = parse_augment(augment)
    border = _border(pad_mode)
    fill_mask = ignore_index if pad_mode == "constant" else 0
    ops: list = []
    if pad_to:
        position = "random" if "random_pad" in names else "center"
        ops.append(A.PadIfNeeded(pad_to, pad_to, position=position, border_mode=border, fill=0, fill_mask=fill_mask))
    if crop:
        ops.append(A.PadIfNeeded(crop, crop, border_mode=border, fill=0, fill_mask=fill_mask))
        ops.append(A.RandomCrop(crop, crop))
    if "hflip" in names:
        ops.append(A.HorizontalFlip(p=0.5))
    if "vflip" in names:
        ops.append(A.VerticalFlip(p=0.5))
    if "rot90" in names:
        ops.append(A.RandomRotate90(p=0.5))
    if "rotate" in names:
        ops.append(A.Rotate(limit=45, border_mode=border, fill=0, fill_mask=fill_mask, p=0.5))
    if "shift_scale_rotate" in names:
        ops.append(A.Affine(scale=(0.9, 1.1), translate_percent=(-0.0625, 0.0625), rotate=(-15, 15),
                            border_mode=border, fill=0, fill_mask=fill_mask, p=0.5))
    if "color" in names:
        ops.append(A.RandomBrightnessContrast(0.2, 0.2, p=0.5))
        if channels == 3:
            ops.append(A.ColorJitter(0.1, 0.1, 0.1, 0.02, p=0.3))
    if "noise" in names:
        ops.append(A.GaussNoise(std_range=(0.01, 0.05), p=0.3))
    return A.Compose(ops, seed=seed)


def pad_for_eval(image: np.ndarray, mask: np.ndarray | None, pad_to: int, pad_mode: str,
                 ignore_index: int) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int, int, int]]:
    """Centre-pad to ``pad_to`` like training saw; the mask is padded with ignore_index so metrics skip it.

    Returns the padded image, mask and the (top, bottom, left, right) padding to crop predictions back.
    """
    h, w = image.shape[:2]
    ph, pw = max(0, pad_to - h), max(0, pad_to - w)
    pads = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
    if not (ph or pw):
        return image, mask, (0, 0, 0, 0)
    mode = "reflect" if pad_mode == "reflect" and ph < h and pw < w else "constant"
    image = np.pad(image, ((pads[0], pads[1]), (pads[2], pads[3]), (0, 0)), mode=mode)
    if mask is not None:
        mask = np.pad(mask, ((pads[0], pads[1]), (pads[2], pads[3])), constant_values=ignore_index)
    return image, mask, pads
