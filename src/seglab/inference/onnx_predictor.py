"""Predict with an exported ONNX model through onnxruntime, behind the same interface as ``Predictor``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError
from .tta import parse_tta, tta_probs

INPUT_NAME, OUTPUT_NAME = "image", "logits"  # the graph's tensor names, shared with seglab export


def default_onnx_path(weights: str | Path) -> Path:
    """Where ``export`` writes by default: beside the checkpoint, ``best.pt`` -> ``best.onnx``."""
    path = Path(weights)
    if path.is_dir():
        for cand in (path / "checkpoints" / "best.pt", path / "best.pt"):
            if cand.exists():
                return cand.with_suffix(".onnx")
        raise CheckpointError(f"{path}: no checkpoints/best.pt in this run folder")
    return path.with_suffix(".onnx")


class OnnxPredictor:
    """``probs(raw_batch)``, ``logits(raw_batch)``, ``meta`` and ``num_classes`` like ``Predictor``, on onnxruntime."""

    def __init__(self, path: str | Path, tta: str = "none", providers: list[str] | None = None,
                 threads: int = 0):
        import onnxruntime as ort

        parse_tta(tta)  # a clear error for an unknown mode
        self.path, self.tta = Path(path), tta
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such ONNX file; create it with `seglab export weights=RUN`")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001  (onnxruntime's load errors, e.g. InvalidProtobuf, derive from Exception)
            raise CheckpointError(f"{self.path}: onnxruntime cannot load it ({e})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if "seglab_meta" not in props:
            raise CheckpointError(f"{self.path}: not a seglab ONNX export (no seglab_meta in its metadata); "
                                  "export with `seglab export weights=RUN`")
        self.meta: dict = json.loads(props["seglab_meta"])
        self.stride = int(self.meta.get("pad_stride", 1))
        self.device = torch.device("cpu")
        # seglab export quantize=int8 marks its files ("int8 (static QDQ, N images)"); every other export is fp32
        self.precision_name = "int8" if props.get("quantization", "").startswith("int8") else "fp32"

    backend = "onnx"

    @property
    def num_classes(self) -> int:
        """Classes including background (2 for binary tasks)."""
        return self.meta["codec"]["num_classes"]

    def describe(self) -> str:
        """``backend onnx, precision int8, device cpu``: what computes the predictions."""
        provider = self.session.get_providers()[0].replace("ExecutionProvider", "").lower()
        return f"backend {self.backend}, precision {self.precision_name}, device {provider}"

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a float (N, C, H, W) batch; sides under the stride are mirror-padded first and cropped back."""
        h, w = x.shape[-2:]
        pixels = x.float().cpu().numpy()
        if h < self.stride or w < self.stride:
            # The graph's reflect padding needs sides >= the stride (a pad must be shorter than the side);
            # numpy's reflect repeats the reflection as far as needed.
            pixels = np.pad(pixels, ((0, 0), (0, 0), (0, max(0, self.stride - h)), (0, max(0, self.stride - w))),
                            mode="reflect" if min(h, w) > 1 else "edge")
        logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(pixels)})[0]
        return torch.from_numpy(logits[..., :h, :w])

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Raw-batch logits without TTA."""
        return self._run(images)

    def probs(self, images: torch.Tensor, sizes: list[tuple[int, int]] | None = None) -> torch.Tensor:
        """(N, K, H, W) probabilities for a raw (N, C, H, W) batch: K=1 foreground probability for binary."""
        return tta_probs(self._probs, images, self.tta, sizes, self.meta.get("pad_to") or 0,
                         self.meta.get("pad_mode", "reflect"))

    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities of one view of a raw batch."""
        logits = self._run(images)
        return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1)


def load_onnx_predictor(path: str | Path, tta: str = "none") -> OnnxPredictor:
    """An OnnxPredictor for a .onnx file, or for a run folder / checkpoint exported beside it (best.onnx)."""
    if "," in str(path):
        raise ConfigError("backend=onnx predicts with one model; ensembles need backend=torch")
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        path = default_onnx_path(path)
    return OnnxPredictor(path, tta)
