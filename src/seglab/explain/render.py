"""Pictures of CAMs: colour heatmaps, overlays on the image, a per-layer panel and a sweep grid."""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
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


CAM_COLORMAP = "jet"  # matplotlib's jet is the colour map heatmap_rgb draws with (OpenCV's COLORMAP_JET)
CAM_SCALE_LABEL = "Grad-CAM strength\n(0 = none, 1 = strongest in this layer)"


def add_cam_colorbar(fig: Figure, axes: object) -> object:
    """A 0..1 jet colour bar for the CAM tiles ``axes`` (one Axes or several); returns the Colorbar."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=CAM_COLORMAP)
    bar = fig.colorbar(mappable, ax=axes, shrink=0.8, aspect=25, pad=0.02, ticks=[0, 0.25, 0.5, 0.75, 1])
    bar.set_label(CAM_SCALE_LABEL, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return bar


def _tile(ax: object, picture: np.ndarray, title: str, caption: str = "") -> None:
    """An image tile without ticks: ``title`` above, ``caption`` (the module path) small and grey below."""
    ax.imshow(picture)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if caption:
        ax.set_xlabel(caption, fontsize=7, color="0.35")
    for spine in ax.spines.values():
        spine.set_visible(False)


def save_layer_images(image: np.ndarray, cam: np.ndarray, out_dir: Path, prefix: str, layer: str,
                      label: str | None = None, views: Sequence[tuple[str, np.ndarray]] = ()) -> dict[str, Path]:
    """Write ``{prefix}_{layer}`` heatmap, overlay and image | heatmap | overlay panel PNGs; returns their paths.

    ``label`` is the layer's readable name ("encoder stage 5"); the panel shows it with the module path below.
    ``views``: (title, display image) of every view of a multi-view sample, ``image`` being the first; the panel
    then shows each view and the overlay on each (a class may show in one view only, as feldspar in crossed polars).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    base = f"{prefix}_{file_safe(layer)}"
    shown = list(views) or [("image", image)]
    overlays = [("overlay" if len(shown) == 1 else f"overlay on {title}", cam_overlay(view, cam))
                for title, view in shown]
    heat, over = heatmap_rgb(cam), overlays[0][1]  # the overlay file shows the first view
    files = {"heatmap": out_dir / f"{base}_heatmap.png", "overlay": out_dir / f"{base}_overlay.png",
             "panel": out_dir / f"{base}.png"}
    Image.fromarray(heat).save(files["heatmap"])
    Image.fromarray(over).save(files["overlay"])
    name = label or layer
    tiles = [*shown, (f"Grad-CAM, {name}", heat), *overlays]
    captions = [""] * len(tiles)
    captions[len(shown)] = f"module {layer} of the model" if name != layer else ""  # the title's layer, by path
    fig = Figure(figsize=(10 * len(tiles) / 3, 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(tiles)))
    for ax, (title, picture), caption in zip(axes, tiles, captions, strict=True):
        _tile(ax, picture, title, caption)
    add_cam_colorbar(fig, list(axes))
    fig.savefig(files["panel"], dpi=100)
    return files


def sweep_figure(image: np.ndarray, cams: dict[str, np.ndarray], mask: np.ndarray, title: str = "",
                 columns: int = 4, labels: dict[str, str] | None = None) -> Figure:
    """The image with the explained class outlined, then the overlay of every layer, shallow to deep.

    Each tile is titled with the layer's readable name from ``labels`` ("encoder stage 2") and the module path
    below it in small grey text; one colour bar on the right gives the CAM scale. Constrained layout keeps every
    title clear of the row above.
    """
    labels = labels or {}
    tiles = len(cams) + 1
    cols = min(columns, tiles)
    rows = math.ceil(tiles / cols)
    fig = Figure(figsize=(2.9 * cols + 1.2, 3.1 * rows + (0.4 if title else 0)), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.08, hspace=0.06)  # room between a tile's caption and the next title
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    _tile(axes[0], image, "image", "class outlined in green" if mask.any() and not mask.all() else "")
    if mask.any() and not mask.all():
        axes[0].contour(mask, levels=[0.5], colors="lime", linewidths=1)
    for ax, (name, cam) in zip(axes[1:], cams.items(), strict=False):
        label = labels.get(name, name)
        caption = ", ".join(part for part in (name if label != name else "", "" if cam.any() else "all zero") if part)
        _tile(ax, cam_overlay(image, cam), label, caption)
    for ax in axes[tiles:]:  # spare tiles stay blank
        ax.set_visible(False)
    add_cam_colorbar(fig, list(axes[:tiles]))
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def save_sweep_grid(image: np.ndarray, cams: dict[str, np.ndarray], mask: np.ndarray, path: Path,
                    title: str = "", columns: int = 4, labels: dict[str, str] | None = None) -> Path:
    """One PNG of ``sweep_figure``."""
    fig = sweep_figure(image, cams, mask, title, columns, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
