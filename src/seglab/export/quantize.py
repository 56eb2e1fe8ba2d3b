"""Post-training int8 quantisation of an exported ONNX model, calibrated on real images (onnxruntime's quantiser).

Why: on CPUs without native bf16 (AVX2-only x86, e.g. AMD Zen 3), int8 kernels are the fastest inference path:
U-Net-ResNet34 at 128 px, batch 32, runs 1.5-2x faster than onnxruntime fp32 and 1.8x faster than seglab's PyTorch
fp32 + channels_last (benchmarks/LOG.md, issue 7). int8 is not bit-exact: ``seglab export quantize=int8 check=IMAGES``
reports how many mask pixels still agree with the fp32 PyTorch model.
Static QDQ quantisation with per-channel weights: activation ranges come from calibration images fed exactly as the
deployed model sees them (raw pixels, padded like ``seglab predict``), so no user-side preprocessing is involved.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.formats import Sample, as_sample
from ..errors import ConfigError
from ..runtime.progress import Progress
from .onnx_export import INPUT_NAME, deploy_input


def int8_path(onnx_path: str | Path) -> Path:
    """Where the quantised model goes by default: ``best.onnx`` -> ``best.int8.onnx``."""
    path = Path(onnx_path)
    return path.with_name(path.stem + ".int8.onnx")


class _ImageReader:
    """onnxruntime CalibrationDataReader over image files (or multi-view Samples), one raw (1, C, H, W) float32
    image per call.

    Calibration runs the model on every image (minutes for a large model on a CPU), so it shows its progress: a bar
    on a terminal, a heartbeat line every ~30 s elsewhere. An image counts once the quantiser asks for the next one.
    """

    def __init__(self, images: Sequence[Path | Sample], meta: dict):
        self._images, self._meta, self._next = list(images), meta, 0
        self._progress: Progress | None = None

    def get_next(self) -> dict | None:
        """The next calibration input, or None when done (the reader protocol)."""
        if self._progress is None:
            self._progress = Progress(len(self._images), "int8 calibration", "img")
        if self._next > self._progress.done:  # the images handed out so far are calibrated
            self._progress.update(self._next - self._progress.done)
        if self._next >= len(self._images):
            self._progress.close()
            return None
        path = self._images[self._next]
        self._next += 1
        return {INPUT_NAME: deploy_input(path, self._meta).astype(np.float32)}


def quantize_int8(onnx_path: str | Path, calib_images: Sequence[str | Path | Sample],
                  out_path: str | Path | None = None, max_images: int = 64) -> Path:
    """Write an int8 copy of a seglab ONNX export, calibrated on up to ``max_images`` of ``calib_images``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx_path = Path(onnx_path)
    if max_images < 1:
        raise ConfigError(f"calib_images={max_images}: calibrate on at least one image (32-64 is typical)")
    if not calib_images:
        raise ConfigError("quantize=int8 needs calibration images: calib=path/to/images (a few dozen training "
                          "images are enough)")
    source = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in source.metadata_props}
    if "seglab_meta" not in props:
        raise ConfigError(f"{onnx_path}: not a seglab ONNX export; export it with `seglab export weights=RUN`")
    meta = json.loads(props["seglab_meta"])
    # An even spread over the files (sorted by name), so calibration does not see only the first few classes.
    images = [as_sample(p) for p in calib_images]
    images = [images[i] for i in np.linspace(0, len(images) - 1, min(max_images, len(images))).round().astype(int)]
    out_path = Path(out_path) if out_path else int8_path(onnx_path)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # ONNX shape inference and graph folding, as the quantiser advises; the symbolic pass is for transformers and
        # only logs noise about the dynamic padding of a CNN.
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        # reduce_range (7-bit weights): on AVX2 CPUs without VNNI the u8 x s8 kernels can saturate; with it the
        # TGS U-Net's masks agree with fp32 on 99.88% of held-out pixels (98.18% without), at the same speed.
        quantize_static(str(prepared), str(out_path), _ImageReader(images, meta), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    quantised = onnx.load(str(out_path))
    onnx.helper.set_model_props(quantised, {**props, "quantization": f"int8 (static QDQ, {len(images)} images)"})
    onnx.save(quantised, str(out_path))
    return out_path
