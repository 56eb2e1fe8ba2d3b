"""Explain a trained checkpoint's prediction of an image with Grad-CAM: one layer, or a sweep over many."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from ..data.colors import to_display_rgb
from ..data.dataset import load_sample_image, meta_view_channels
from ..data.formats import Sample, as_sample
from ..data.transforms import pad_for_eval
from ..errors import ConfigError
from ..inference.predictor import load_predictor
from ..runtime.progress import track
from .gradcam import grad_cams
from .layers import ALL_CONV, cam_layers, conv_layers, layer_names, resolve_layer
from .render import file_safe, save_layer_images, save_sweep_grid

SWEEP_PROGRESS_LAYERS = 8  # sweeps over more layers than this show a progress bar while their pictures are written


class Explainer:
    """A checkpoint loaded once, in fp32 (see ``gradcam``), to explain many images."""

    def __init__(self, weights: str, device: str = "auto"):
        # Unfolded: Grad-CAM may target any named layer, BatchNorms included.
        predictor = load_predictor(weights, device=device, precision="fp32", fold_bn=False)
        if len(predictor.models) != 1:
            raise ConfigError(f"explain looks at one model at a time, but {weights!r} holds {len(predictor.models)} "
                              "(an ensemble or k-fold run): pass one checkpoint, e.g. weights=RUN/fold0")
        self.model: nn.Module = predictor.models[0].eval()
        self.normalize = predictor.normalize
        self.meta = predictor.meta
        self.device = predictor.precision.device
        self.threshold = float((self.meta.get("tuned") or {}).get("threshold", self.meta.get("threshold", 0.5)))

    def describe(self) -> str:
        """What computes the CAMs: always PyTorch in fp32 (gradients flow through every layer)."""
        return f"backend torch, precision fp32, device {self.device}"

    @property
    def class_names(self) -> list[str]:
        """Class names in index order (background first)."""
        names = list(self.meta.get("class_names") or [])
        count = self.meta["codec"]["num_classes"]
        return names if len(names) == count else [str(i) for i in range(count)]

    def class_index(self, value: int | str) -> int:
        """A class given by index or name -> its index, or a ConfigError listing the classes."""
        names = self.class_names
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            if value not in names:
                raise ConfigError(f"class {value!r} is not one of this model's classes: {', '.join(names)}")
            return names.index(value)
        index = int(value)
        if not 0 <= index < len(names):
            listing = ", ".join(f"{i}={n}" for i, n in enumerate(names))
            raise ConfigError(f"class {index} does not exist; this model has classes {listing}")
        return index

    def layers(self, layer: str | None = None, sweep: bool = False,
               layers: str | Sequence[str] | None = None) -> dict[str, nn.Module]:
        """The layers to explain: ``layer`` (default: the deepest CAM layer), or a sweep over ``layers``.

        ``layers`` for a sweep: None (every CAM layer), ``"all_conv"`` (every encoder convolution)
        or dotted module names (a list or one comma-separated string).
        """
        in_ch = self.meta["in_channels"]
        if layer and (sweep or layers):
            raise ConfigError("give layer=NAME for one layer, or sweep=true [layers=...] for several, not both")
        if not (sweep or layers):
            if layer:
                name, module = resolve_layer(self.model, layer, in_ch)
                return {name: module}
            name, module = list(cam_layers(self.model, in_ch).items())[-1]
            return {name: module}
        if layers is None or layers == "cam":
            return cam_layers(self.model, in_ch)
        if layers == ALL_CONV:
            return conv_layers(self.model)
        names = [n.strip() for n in layers.split(",")] if isinstance(layers, str) else list(layers)
        return dict(resolve_layer(self.model, n, in_ch) for n in names if n)

    def explain(self, image_path: str | Path | Sample, class_index: int | str = 1, layer: str | None = None,
                sweep: bool = False, layers: str | Sequence[str] | None = None,
                out_dir: str | Path | None = "runs/explain") -> dict:
        """Grad-CAM of one image (a path, or a Sample of several views); writes per-layer pictures (and the sweep
        grid) to ``out_dir`` unless it is None.

        Returns image, class_index, class_name, class_pixels (pixels predicted as the class; 0 means
        every CAM is zero), layers (module paths), layer_names ({module path: readable name such as
        "encoder stage 2"}), cams ({layer: (H, W) float32 in 0..1 at the image size}), mask, files and
        notes (why a CAM is empty, when one is). A sweep also writes ``{prefix}_sweep.json``: the class and
        each layer's name, module path and overlay file.
        """
        sample = as_sample(image_path)
        path = sample.image
        index = self.class_index(class_index)
        chosen = self.layers(layer, sweep, layers)
        view_channels = meta_view_channels(self.meta)
        image = load_sample_image(sample, view_channels)
        h, w = image.shape[:2]
        padded, _, (top, _, left, _) = pad_for_eval(image, None, self.meta["pad_to"], self.meta["pad_mode"], 0)
        raw = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None].to(self.device)
        cams, mask = grad_cams(self.model, self.normalize(raw), chosen, index, self.threshold)
        cams = {name: cam[top:top + h, left:left + w] for name, cam in cams.items()}
        mask = mask[top:top + h, left:left + w]
        names = layer_names(self.model, list(cams), self.meta["in_channels"])
        result = {"image": path, "class_index": index, "class_name": self.class_names[index],
                  "class_pixels": int(mask.sum()), "layers": list(cams), "layer_names": names, "cams": cams,
                  "mask": mask, "files": {},
                  "notes": explain_notes(cams, int(mask.sum()), self.class_names[index], names)}
        if out_dir is not None:
            out = Path(out_dir)
            views = []
            if len(view_channels) > 1:  # show every view: a class may be visible in one of them only
                starts = np.cumsum([0, *view_channels])
                views = [(f"view {k + 1}: {view.parent.name}/{view.name}",
                          to_display_rgb(image[..., starts[k]:starts[k + 1]])) for k, view in enumerate(sample.views)]
            # the first view (the others share its pixels) for the overlay file and the sweep grid
            display = views[0][1] if views else to_display_rgb(image[..., : view_channels[0]])
            prefix = f"{sample.id}_cam_{file_safe(self.class_names[index])}"  # one class never overwrites another
            # a sweep of every convolution writes three pictures for each of dozens of layers: show how far it is
            many = len(cams) > SWEEP_PROGRESS_LAYERS
            for name, cam in track(cams.items(), f"{sample.id}: layer pictures", unit="layer", enabled=many):
                result["files"][name] = save_layer_images(display, cam, out, prefix, name, names[name], views)
            if len(cams) > 1:
                title = f"{path.name}: Grad-CAM of class {index} ({self.class_names[index]}), shallow to deep"
                result["files"]["grid"] = save_sweep_grid(display, cams, mask, out / f"{prefix}_sweep.png", title,
                                                          labels=names)
                result["files"]["layers_json"] = write_sweep_json(result, out / f"{prefix}_sweep.json")
        return result


def write_sweep_json(result: dict, path: Path) -> Path:
    """The sweep's legend as JSON: the class, and per layer (shallow to deep) its readable name, module path (what
    ``layer=`` takes, as does the name) and overlay file."""
    layers = [{"name": result["layer_names"][layer], "module": layer,
               "overlay": result["files"][layer]["overlay"].name} for layer in result["layers"]]
    legend = {"image": str(result["image"]), "class_index": result["class_index"], "class_name": result["class_name"],
              "class_pixels": result["class_pixels"], "cam_scale": "0..1, scaled per layer (1 = strongest in it)",
              "layers": layers}
    path.write_text(json.dumps(legend, indent=2) + "\n", encoding="utf-8")
    return path


def explain_notes(cams: dict[str, np.ndarray], class_pixels: int, class_name: str,
                  names: dict[str, str] | None = None) -> list[str]:
    """Plain-language reasons for empty CAMs, so an all-blue heatmap is not mistaken for a result."""
    if class_pixels == 0:
        return [f"no pixel is predicted as {class_name!r}, so there is nothing to explain: every CAM is zero"]
    names = names or {}
    called = {name: f"{names[name]} ({name})" if names.get(name, name) != name else name for name in cams}
    return [f"layer {called[name]}: all-zero CAM, no positive evidence for {class_name!r} at this depth (in U-Nets "
            "the skip connections often carry the decision; sweep=true compares every level)"
            for name, cam in cams.items() if not cam.any()]


def explain_image(weights: str, image_path: str | Path, class_index: int | str = 1, layer: str | None = None,
                  sweep: bool = False, out_dir: str | Path | None = "runs/explain",
                  layers: str | Sequence[str] | None = None, device: str = "auto") -> dict:
    """Grad-CAM of one image for one class of a checkpoint (see ``Explainer.explain`` for the result)."""
    return Explainer(weights, device).explain(image_path, class_index, layer, sweep, layers, out_dir)
