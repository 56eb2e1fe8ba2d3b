"""Pictures of CAMs: colour heatmaps, overlays on the image, a per-layer panel and a sweep grid."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from pytorch_grad_cam.utils.image import show_cam_on_image


def heatmap_rgb(cam: np.ndarray) -> np.ndarray:
    """(H, W) CAM in 0..1 -> (H, W, 3) uint8 jet-coloured heatmap (the colour map Grad-CAM papers use)."""
    import cv2

    return cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * np.clip(cam, 0, 1)), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def cam_overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """Blend the heatmap of a (H, W) CAM over an (H, W, 3) uint8 image."""
    if image.shape[:2] != cam.shape:
        raise ValueError(f"image {image.shape[:2]} and CAM {cam.shape} differ in size")
    return show_cam_on_image(image.astype(np.float32) / 255.0, np.clip(cam, 0, 1), use_rgb=True,
                             image_weight=image_weight)


def file_safe(name: str) -> str:
    """A layer name usable in a file name (``encoder.model.layer4`` stays readable)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "layer"


def save_layer_images(image: np.ndarray, cam: np.ndarray, out_dir: Path, prefix: str, layer: str) -> dict[str, Path]:
    """Write ``{prefix}_{layer}`` heatmap, overlay and image | heatmap | overlay panel PNGs; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = f"{prefix}_{file_safe(layer)}"
    heat, over = heatmap_rgb(cam), cam_overlay(image, cam)
    files = {"heatmap": out_dir / f"{base}_heatmap.png", "overlay": out_dir / f"{base}_overlay.png",
             "panel": out_dir / f"{base}.png"}
    Image.fromarray(heat).save(files["heatmap"])
    Image.fromarray(over).save(files["overlay"])
    fig = Figure(figsize=(9, 3.3))
    titles = ("image", f"Grad-CAM {layer}", "overlay")
    for ax, picture, title in zip(fig.subplots(1, 3), (image, heat, over), titles, strict=True):
        ax.imshow(picture)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(files["panel"], dpi=100)
    return files


def save_sweep_grid(image: np.ndarray, cams: dict[str, np.ndarray], mask: np.ndarray, path: Path,
                    title: str = "", columns: int = 4) -> Path:
    """One PNG: the image with the explained class outlined, then the overlay of every layer, shallow to deep."""
    tiles = len(cams) + 1
    cols = min(columns, tiles)
    rows = math.ceil(tiles / cols)
    fig = Figure(figsize=(3 * cols, 3.2 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    axes[0].imshow(image)
    if mask.any() and not mask.all():
        axes[0].contour(mask, levels=[0.5], colors="lime", linewidths=1)
    axes[0].set_title("image (class outlined)", fontsize=8)
    for ax, (name, cam) in zip(axes[1:], cams.items(), strict=False):  # spare tiles stay blank
        ax.imshow(cam_overlay(image, cam))
        ax.set_title(name, fontsize=8)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
