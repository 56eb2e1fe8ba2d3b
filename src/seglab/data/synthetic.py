"""A procedural "grains under the microscope" dataset for the demo and tests: seeded, no download.

Each image is a textured matrix with elliptical and polygonal grains of varying tone (some touching,
some cut by the border); masks are RGB colour masks, red background and green grain, as in the
tourmaline thin-section study, so the demo exercises the colour-table path too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import ellipse, polygon

BACKGROUND, GRAIN = (255, 0, 0), (0, 255, 0)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Low-frequency texture in [-1, 1]."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return n / (np.abs(n).max() + 1e-9)


def make_grain_image(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One RGB image (uint8) and its binary grain mask (bool)."""
    h = w = size
    mask = np.zeros((h, w), dtype=bool)
    base = rng.uniform(150, 200) + rng.uniform(-20, 20, size=3)  # matrix colour varies per image
    img = np.ones((h, w, 3)) * base
    img += 25 * _smooth_noise(rng, (h, w), 8)[..., None]
    grain_tone = np.zeros((h, w, 3))
    for _ in range(rng.integers(3, 9)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if rng.random() < 0.6:
            rr, cc = ellipse(cy, cx, rng.uniform(5, 18), rng.uniform(4, 12), shape=(h, w),
                             rotation=rng.uniform(0, np.pi))
        else:
            k = rng.integers(5, 8)
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = rng.uniform(6, 16, k)
            rr, cc = polygon(cy + rad * np.sin(ang), cx + rad * np.cos(ang), shape=(h, w))
        mask[rr, cc] = True
        # Grains are darker and greener/browner than the matrix, with overlap in brightness between images.
        grain_tone[rr, cc] = base * rng.uniform(0.35, 0.65) * np.array([0.9, 1.0, 0.75]) + rng.uniform(-15, 15, 3)
    img = np.where(mask[..., None], grain_tone, img)
    img += 8 * _smooth_noise(rng, (h, w), 1.5)[..., None]  # fine texture within grains and matrix
    img = ndimage.gaussian_filter(img, (0.8, 0.8, 0))  # optics blur the boundaries
    img += rng.normal(0, 6, img.shape)  # sensor noise
    return np.clip(img, 0, 255).astype(np.uint8), mask


def make_grains_dataset(out: str | Path, n: int = 120, size: int = 128, seed: int = 0) -> Path:
    """Write ``images/grain_NNN.png`` and RGB ``masks/grain_NNN.png`` (red background, green grains) under ``out``."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img, mask = make_grain_image(rng, size)
        colour = np.where(mask[..., None], np.array(GRAIN, np.uint8), np.array(BACKGROUND, np.uint8))
        Image.fromarray(img).save(out / "images" / f"grain_{i:03d}.png")
        Image.fromarray(colour.astype(np.uint8)).save(out / "masks" / f"grain_{i:03d}.png")
    return out
