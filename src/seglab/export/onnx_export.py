"""Export a seglab model to ONNX with its input normalisation inside, so deployment needs no Python preprocessing.

The exported graph takes a float32 (N, C, H, W) tensor of raw pixel values (0..255 for 8-bit images,
0..65535 for 16-bit: what the image file holds) and returns (N, K, H, W) logits at the input size. Batch,
height and width are dynamic. The checkpoint meta (class names, threshold, channels, stride, the full
seglab meta as JSON) goes into the ONNX ``metadata_props``.

The classic TorchScript exporter (``dynamo=False``) is the default: on a CPU it exports a U-Net in
seconds where the torch.export-based exporter takes about ten times longer; ``dynamo=True`` selects the
latter (it needs onnxscript) for when the classic one is retired.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.dataset import load_sample_image, meta_view_channels
from ..data.formats import Sample, as_sample
from ..data.sources import model_source
from ..data.transforms import pad_for_eval
from ..models import input_stride, model_from_checkpoint
from ..runtime.checkpoint import load_checkpoint
from ..inference.onnx_predictor import INPUT_NAME, OUTPUT_NAME, default_onnx_path
from ..runtime.normalize import Normalizer
from ..errors import CheckpointError, ConfigError, SeglabError

DEFAULT_STRIDE = 32  # a multiple of every usual network stride, for models that do not state theirs
PARITY_ATOL = 1e-3


class ExportError(SeglabError):
    """The exported ONNX model does not reproduce the PyTorch model."""


class DeployModel(nn.Module):
    """Raw pixels in, logits out: normalisation, padding to the network stride, the model, crop back."""

    def __init__(self, model: nn.Module, normalize: Normalizer, stride: int):
        super().__init__()
        self.model, self.normalize, self.stride = model, normalize, int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # The models pad to their stride themselves, but behind a Python `if`, which tracing freezes at
        # the export size. Padding here with tensor arithmetic (reflect, bottom/right, like the models)
        # keeps it in the graph for every size; the models' own branch then never pads.
        pad_h = (self.stride - h % self.stride) % self.stride
        pad_w = (self.stride - w % self.stride) % self.stride
        x = F.pad(self.normalize(x), (0, pad_w, 0, pad_h), mode="reflect")
        return self.model(x)[..., :h, :w]


def deploy_input(path: str | Path | Sample, meta: dict) -> np.ndarray:
    """An image file (or a Sample's stacked views) as the exported model takes it: raw pixels, (1, C, H, W),
    padded to ``pad_to`` like predict."""
    image = load_sample_image(as_sample(path), meta_view_channels(meta))
    image, _, _ = pad_for_eval(image, None, meta["pad_to"], meta["pad_mode"], 0)
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None])


def export_source(weights: str | Path, source: str) -> list[Sample]:
    """The samples of a check/calib source, read with the views of the checkpoint ``weights``."""
    state = load_checkpoint(weights)
    if "meta" not in state:
        raise CheckpointError(f"{weights}: not a seglab training checkpoint (no data meta)")
    return model_source(source, state["meta"])


def model_stride(model: nn.Module) -> int:
    """The factor a model's input sides must be multiples of (its ``stride``, else 32)."""
    return input_stride(model, DEFAULT_STRIDE)


def onnx_metadata(meta: dict, stride: int, num_logits: int) -> dict[str, str]:
    """String key/values for the ONNX ``metadata_props``: the seglab meta plus what a deployer needs at a glance."""
    threshold = (meta.get("tuned") or {}).get("threshold", meta.get("threshold", 0.5))
    return {
        "seglab_meta": json.dumps({**meta, "pad_stride": stride}),
        "class_names": json.dumps(list(meta.get("class_names") or [])),
        "num_classes": str(meta["codec"]["num_classes"]),
        "threshold": str(threshold),
        "in_channels": str(meta["in_channels"]),
        "views": str(meta.get("views", 1)),
        "pad_stride": str(stride),
        "input": f"{INPUT_NAME}: float32 (N, {meta['in_channels']}, H, W) raw pixel values as stored in the image "
                 f"(0..255 for 8-bit); normalisation is inside the model; H, W >= {stride}"
                 + (f"; {meta['views']} views stacked as channels {meta_view_channels(meta)}"
                    if meta.get("views", 1) > 1 else ""),
        "output": f"{OUTPUT_NAME}: float32 (N, {num_logits}, H, W); "
                  + ("sigmoid(logit) > threshold is foreground" if num_logits == 1 else "argmax over classes"),
    }


def export_model_onnx(model: nn.Module, meta: dict, out_path: str | Path, imgsz: int = 128, opset: int = 17,
                      dynamic: bool = True, dynamo: bool = False, verify: bool = True) -> Path:
    """Export ``model`` with the normalisation of ``meta`` to ``out_path``; checks another size against PyTorch."""
    import onnx

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    normalize = Normalizer(meta["mean"], meta["std"], meta["scale"])
    stride = model_stride(model)
    if imgsz < stride:
        raise ConfigError(f"imgsz={imgsz} is smaller than the model stride {stride}; export at imgsz >= {stride}")
    deploy = DeployModel(model, normalize, stride).eval()
    example = torch.rand(1, meta["in_channels"], imgsz, imgsz) * meta["scale"]
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings name the models' own padding branches, frozen on purpose (DeployModel pads instead),
        # and the classic exporter announces its deprecation; neither is actionable for the user.
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=stride),
                    3: torch.export.Dim("width", min=stride)} if dynamic else None
            torch.onnx.export(deploy, (example,), str(out_path), dynamo=True, opset_version=max(opset, 18),
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], external_data=False,
                              dynamic_shapes={"x": dims} if dims else None)
        else:
            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(deploy, (example,), str(out_path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None)
        num_logits = deploy(example).shape[1]
    proto = onnx.load(str(out_path))
    onnx.helper.set_model_props(proto, onnx_metadata(meta, stride, num_logits))
    onnx.save(proto, str(out_path))
    if verify:
        size = (imgsz, imgsz) if not dynamic else (max(stride, imgsz // 2) + 5, max(stride, imgsz // 2) + 11)
        diff = _max_logit_diff(model, normalize, out_path, size, meta["in_channels"], meta["scale"],
                               batch=2 if dynamic else 1)
        if diff > PARITY_ATOL:
            raise ExportError(f"{out_path}: the ONNX model differs from PyTorch by {diff:.3g} in the logits at "
                              f"{size[0]}x{size[1]}; this model does not export with dynamic sizes. "
                              f"Export at the deployment size with dynamic=false imgsz=SIZE")
    return out_path


def _max_logit_diff(model: nn.Module, normalize: Normalizer, onnx_path: Path, size: tuple[int, int],
                    in_channels: int, scale: float, batch: int = 2) -> float:
    """Largest |logit| difference between PyTorch and onnxruntime on random pixels of one size."""
    import onnxruntime as ort

    x = torch.rand(batch, in_channels, *size, generator=torch.Generator().manual_seed(0)) * scale
    with torch.no_grad():
        ref = model(normalize(x)).float().numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    if out.shape != ref.shape:
        return float("inf")
    return float(np.abs(out - ref).max())


def export_onnx(weights: str | Path, out_path: str | Path | None = None, opset: int = 17, dynamic: bool = True,
                imgsz: int = 128, dynamo: bool = False, verify: bool = True) -> Path:
    """Export a seglab checkpoint (or run folder) to ONNX; ``out_path`` defaults to best.onnx beside best.pt."""
    state = load_checkpoint(weights)
    if "meta" not in state:
        raise CheckpointError(f"{weights}: not a seglab training checkpoint (no data meta); cannot export")
    model = model_from_checkpoint(state, weights)
    return export_model_onnx(model, state["meta"], out_path or default_onnx_path(weights), imgsz, opset,
                             dynamic, dynamo, verify)
