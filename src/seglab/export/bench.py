"""Inference speed per backend: PyTorch fp32, PyTorch bf16 + channels_last, onnxruntime fp32 and int8.

Every backend is timed through the interface ``seglab predict`` uses (``probs`` of a raw uint8 batch:
normalisation, forward, sigmoid/softmax), after warm-up calls, as the median of the timed calls.
"""
from __future__ import annotations

import copy
import functools
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..runtime.precision import cpu_supports_bf16, resolve_precision
from ..inference.predictor import Predictor

BACKENDS = ("torch_fp32", "torch_bf16", "onnxruntime", "onnxruntime_int8")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@dataclass
class BenchResult:
    """Timing of one backend at one image size and batch size."""

    backend: str
    imgsz: int
    batch: int
    latency_ms: float  # median milliseconds per batch
    images_per_s: float
    note: str = ""


def random_meta(in_channels: int = 3, num_logits: int = 1) -> dict:
    """The checkpoint meta of an untrained model: ImageNet normalisation of 8-bit images."""
    classes = 2 if num_logits == 1 else num_logits
    mean = (IMAGENET_MEAN * in_channels)[:in_channels]
    std = (IMAGENET_STD * in_channels)[:in_channels]
    return {"codec": {"mode": "index", "num_classes": classes, "ignore_index": 255}, "in_channels": in_channels,
            "class_names": [str(i) for i in range(classes)], "mean": mean, "std": std, "scale": 255.0,
            "pad_to": 0, "pad_mode": "reflect", "threshold": 0.5}


def time_calls(fn: Callable[[], object], warmup: int, iters: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median seconds of ``iters`` calls of ``fn`` after ``warmup`` untimed ones."""
    if iters < 1:
        raise ConfigError(f"iters must be >= 1, got {iters}")
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_backends(model: nn.Module, meta: dict, backends: Sequence[str], device: str, workdir: Path,
                   threads: int, export_size: int) -> dict[str, tuple[object, str]]:
    """{backend: (predictor with .probs, note)}; each torch backend gets its own copy of the model."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ConfigError(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    built: dict[str, tuple[object, str]] = {}
    model = model.float().eval()
    for name in backends:
        if name == "torch_fp32":
            built[name] = (Predictor([copy.deepcopy(model)], meta, resolve_precision("fp32", device)), "")
        elif name == "torch_bf16":
            precision = resolve_precision("bf16", device)
            slow = precision.device.type == "cpu" and not cpu_supports_bf16()
            built[name] = (Predictor([copy.deepcopy(model)], meta, precision),
                           "emulated: this CPU has no native bf16" if slow else "channels_last")
        else:
            from .onnx_export import export_model_onnx
            from ..inference.onnx_predictor import OnnxPredictor

            path = workdir / "model.onnx"
            if not path.exists():
                export_model_onnx(copy.deepcopy(model), meta, path, imgsz=export_size)
            note = "CPU provider"
            if name == "onnxruntime_int8":
                from .quantize import quantize_int8

                # Speed does not depend on the calibration images; noise keeps the benchmark self-contained.
                path, note = quantize_int8(path, noise_images(workdir, meta, export_size)), "int8, noise-calibrated"
            built[name] = (OnnxPredictor(path, threads=threads), note)
    return built


def noise_images(folder: Path, meta: dict, size: int, n: int = 4) -> list[Path]:
    """``n`` random 8-bit PNGs with the model's channels (1 or 3), for calibrating a speed-only int8 model."""
    import numpy as np
    from PIL import Image

    rng, paths = np.random.default_rng(0), []
    channels = meta["in_channels"]
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size, channels) if channels == 3 else (size, size), dtype=np.uint8)
        paths.append(folder / f"noise_{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def bench_model(model: nn.Module, meta: dict, sizes: Sequence[int] = (128, 512), batch: int = 1,
                warmup: int = 3, iters: int = 10, backends: Sequence[str] = BACKENDS, device: str = "cpu",
                threads: int = 0) -> list[BenchResult]:
    """Time ``probs`` of random uint8 batches for every backend and image size."""
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    threads = threads or previous_threads  # onnxruntime gets as many threads as PyTorch: a fair race
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="seglab-bench-") as tmp:
            built = build_backends(model, meta, backends, device, Path(tmp), threads, min(sizes))
            for size in sizes:
                raw = torch.randint(0, 256, (batch, meta["in_channels"], size, size), dtype=torch.uint8)
                for name, (predictor, note) in built.items():
                    on_cuda = name.startswith("torch") and predictor.precision.device.type == "cuda"
                    sync = torch.cuda.synchronize if on_cuda else (lambda: None)
                    seconds = time_calls(functools.partial(predictor.probs, raw), warmup, iters, sync)
                    results.append(BenchResult(name, size, batch, 1000 * seconds, batch / seconds, note))
    finally:
        torch.set_num_threads(previous_threads)
    return results


def _rate(value: float) -> str:
    """A latency or rate with one decimal, two below 10 (slow CPU rows would otherwise read 0.3)."""
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def to_markdown(results: Sequence[BenchResult], title: str = "") -> str:
    """A Markdown table of the results (one row per backend and size)."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| backend | imgsz | batch | latency (ms/batch) | images/s | note |", "|---|---:|---:|---:|---:|---|"]
    lines += [f"| {r.backend} | {r.imgsz} | {r.batch} | {_rate(r.latency_ms)} | {_rate(r.images_per_s)} | {r.note} |"
              for r in results]
    return "\n".join(lines) + "\n"


def print_results(results: Sequence[BenchResult], title: str = "") -> None:
    """Print the results as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None)
    for col in ("backend", "imgsz", "batch", "latency (ms/batch)", "images/s", "note"):
        numeric = col in ("imgsz", "batch", "latency (ms/batch)", "images/s")
        table.add_column(col, justify="right" if numeric else "left")
    for r in results:
        table.add_row(r.backend, str(r.imgsz), str(r.batch), _rate(r.latency_ms), _rate(r.images_per_s), r.note)
    Console().print(table)
