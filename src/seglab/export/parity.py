"""Check that an ONNX export predicts what the PyTorch checkpoint predicts, on real images."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.formats import Sample
from ..inference.predictor import load_predictor
from .onnx_export import deploy_input
from ..inference.onnx_predictor import OnnxPredictor


def check_parity(weights: str | Path, onnx_path: str | Path, images: Sequence[str | Path | Sample]) -> dict:
    """Run images through the fp32 PyTorch model and onnxruntime (CPU); compare logits and class maps.

    Each image (a path, or a Sample of several views) is prepared as ``seglab predict`` does (read to the
    model's channels, views stacked, padded to ``pad_to``). Returns max_abs_logit_diff, mask_agreement
    (fraction of equal pixels over all images), images and pixels.
    """
    if not images:
        raise ValueError("check_parity needs at least one image")
    torch_predictor = load_predictor(str(weights), device="cpu", precision="fp32")
    onnx_predictor = OnnxPredictor(onnx_path)
    meta = torch_predictor.meta
    threshold = float((meta.get("tuned") or {}).get("threshold", meta.get("threshold", 0.5)))
    cut = float(np.log(threshold / (1 - threshold)))  # the logit at which sigmoid crosses the threshold
    max_diff, agree, pixels = 0.0, 0, 0
    for path in images:
        raw = torch.from_numpy(deploy_input(path, meta))
        ref = torch_predictor.logits(raw).cpu()
        out = onnx_predictor.logits(raw)
        max_diff = max(max_diff, float((ref - out).abs().max()))
        classes = [(x[:, 0] > cut) if x.shape[1] == 1 else x.argmax(1) for x in (ref, out)]
        agree += int((classes[0] == classes[1]).sum())
        pixels += classes[0].numel()
    return {"max_abs_logit_diff": max_diff, "mask_agreement": agree / pixels, "images": len(images),
            "pixels": pixels}
