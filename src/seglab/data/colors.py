"""Display colours of classes: the dataset's own colour table when it has one, else the PASCAL VOC palette."""
from __future__ import annotations

import numpy as np


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved), (n, 3) uint8; class 0 is black."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def class_palette(num_classes: int, colors: list | None = None) -> np.ndarray:
    """(num_classes, 3) uint8 display colours; binary tasks show the object in white on black."""
    if colors and len(colors) >= num_classes and isinstance(colors[0], (list, tuple)):
        return np.array(colors[:num_classes], dtype=np.uint8)
    if num_classes == 2:
        return np.array([[0, 0, 0], [255, 255, 255]], dtype=np.uint8)
    return voc_palette(max(num_classes, 1))[:num_classes]


def colorize(index_map: np.ndarray, palette: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """Class-index map -> (H, W, 3) uint8 colour image (ignored pixels grey)."""
    idx = np.clip(index_map, 0, len(palette) - 1)
    out = palette[idx]
    if ignore_index is not None:
        out[index_map == ignore_index] = (128, 128, 128)
    return out


def overlay(image: np.ndarray, color_mask: np.ndarray, alpha: float = 0.7, index_map: np.ndarray | None = None) -> np.ndarray:
    """Blend a colour mask onto an image (alpha = weight of the mask); background pixels (index 0) stay as the image."""
    img = image
    if img.dtype != np.uint8:
        img = (img.astype(np.float32) / max(float(img.max()), 1.0) * 255).astype(np.uint8)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[..., :3].astype(np.float32)
    blend = (1 - alpha) * img + alpha * color_mask.astype(np.float32)
    if index_map is not None:
        blend = np.where((index_map > 0)[..., None], blend, img)
    return blend.clip(0, 255).astype(np.uint8)
