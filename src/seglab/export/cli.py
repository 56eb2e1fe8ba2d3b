"""``seglab export`` (checkpoint -> ONNX, optional parity check) and ``seglab bench`` (inference speed per backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import torch
import torch.nn as nn

from ..config import parse_key_values
from ..errors import ConfigError


class ExportOptions(TypedDict):
    """The options of ``seglab export`` and their types (the parser checks values against them)."""

    weights: str
    out: str
    exist_ok: bool
    opset: int
    imgsz: int
    dynamic: bool
    dynamo: bool
    verify: bool
    check: str
    quantize: str
    calib: str
    calib_images: int


class BenchOptions(TypedDict):
    """The options of ``seglab bench`` and their types."""

    model: str
    encoder: str
    weights: str
    imgsz: str | list  # 128,512 or [128, 512]
    batch: int
    warmup: int
    iters: int
    backends: str
    device: str
    threads: int
    in_channels: int
    num_classes: int
    out: str


EXPORT_OPTIONS: ExportOptions = {"weights": "", "out": "", "exist_ok": False, "opset": 17, "imgsz": 128,
                                  "dynamic": True, "dynamo": False, "verify": True, "check": "", "quantize": "", "calib": "",
                                  "calib_images": 64}
BENCH_OPTIONS: BenchOptions = {"model": "unet_encoder", "encoder": "", "weights": "", "imgsz": "128,512",
                               "batch": 1, "warmup": 3, "iters": 10,
                               "backends": "torch_fp32,torch_bf16,onnxruntime,onnxruntime_int8", "device": "cpu",
                               "threads": 0, "in_channels": 3, "num_classes": 1, "out": ""}

# What each option does, for ``seglab export --help`` and ``seglab bench --help``.
EXPORT_HELP = {
    "weights": "run folder or checkpoint to export (a run folder: its best.pt)",
    "out": "the .onnx file to write (default: best.onnx beside the checkpoint)",
    "exist_ok": "replace an existing .onnx",
    "opset": "ONNX opset version",
    "imgsz": "side of the example input the graph is traced with",
    "dynamic": "accept any batch and image size (false: fixed to imgsz)",
    "dynamo": "export with torch.onnx's dynamo exporter instead of the TorchScript one",
    "verify": "compare onnxruntime's output with PyTorch's on a random input",
    "check": "images (folder or list file) to compare onnxruntime with PyTorch on",
    "quantize": "int8: also write an int8 model (best.int8.onnx), calibrated on calib=",
    "calib": "images (folder or list file) to calibrate int8 quantisation on: a few dozen training images",
    "calib_images": "at most this many calibration images",
}
BENCH_HELP = {
    "model": "model to time (any name from seglab models), when no weights= are given",
    "encoder": "timm encoder of an encoder model",
    "weights": "a run folder or checkpoint to time instead of a fresh model",
    "imgsz": "input sides to time, e.g. 128,512",
    "batch": "images per call",
    "warmup": "untimed calls before timing",
    "iters": "timed calls per backend and size",
    "backends": "comma list of torch_fp32, torch_bf16, onnxruntime, onnxruntime_int8",
    "device": "cpu | cuda",
    "threads": "CPU threads (0: torch's default)",
    "in_channels": "input channels of a fresh model",
    "num_classes": "classes of a fresh model (1: binary)",
    "out": "also write the table to this Markdown file",
}


def _int_list(value: Any, key: str) -> list[int]:
    """``128,512`` / ``[128, 512]`` / ``128`` -> [128, 512] / [128]."""
    items = value if isinstance(value, list) else str(value).split(",")
    try:
        out = [int(v) for v in items if str(v).strip()]
    except ValueError:
        raise ConfigError(f"{key}={value!r}: expected integers such as {key}=128,512") from None
    if not out or min(out) < 1:
        raise ConfigError(f"{key}={value!r}: expected positive integers such as {key}=128,512")
    return out


def export_main(argv: list[str]) -> int:
    """``seglab export weights=RUN [out= opset=17 imgsz=128 dynamic=true check=IMAGES quantize=int8 calib=IMAGES]``.

    Writes beside the weights by default (``best.pt`` -> ``best.onnx``, so ``predict backend=onnx weights=RUN`` finds
    it), and never replaces a file that exists unless ``exist_ok=true``.
    """
    from ..inference.onnx_predictor import default_onnx_path
    from ..runtime.run_dir import refuse_existing, saved_line
    from .onnx_export import export_onnx, export_source
    from .quantize import int8_path

    opts = {**EXPORT_OPTIONS, **parse_key_values(argv, ExportOptions)}
    if not opts["weights"]:
        raise ConfigError("export needs weights=RUN_DIR or weights=path/to/best.pt")
    if opts["quantize"] not in ("", "none", "int8"):
        raise ConfigError(f"quantize={opts['quantize']!r}: choose quantize=int8 (or leave it out for fp32)")
    if opts["quantize"] == "int8" and not opts["calib"]:
        raise ConfigError("quantize=int8 needs calib=path/to/images (a few dozen training images) to measure "
                          "activation ranges")
    target = Path(opts["out"]) if opts["out"] else default_onnx_path(opts["weights"])
    targets = [target] + ([int8_path(target)] if opts["quantize"] == "int8" else [])
    refuse_existing(targets, bool(opts["exist_ok"]), fix="out=OTHER.onnx to write a new file")
    # the image sources are read before anything is written: a bad check= or calib= leaves no half-done export
    calib = export_source(opts["weights"], str(opts["calib"])) if opts["quantize"] == "int8" else []
    check = export_source(opts["weights"], str(opts["check"])) if opts["check"] else []
    path = export_onnx(opts["weights"], target, opset=int(opts["opset"]), dynamic=bool(opts["dynamic"]),
                       imgsz=int(opts["imgsz"]), dynamo=bool(opts["dynamo"]), verify=bool(opts["verify"]))
    paths = [path]
    try:
        print(f"ONNX model written to {path} (input: raw pixels as float32, normalisation inside)")
        if opts["quantize"] == "int8":
            from .quantize import quantize_int8

            paths.append(quantize_int8(path, calib, max_images=int(opts["calib_images"])))
            print(f"int8 model written to {paths[-1]} (calibrated on {min(len(calib), int(opts['calib_images']))} "
                  f"image(s)); predict with backend=onnx weights={paths[-1]}")
        if check:
            from .parity import check_parity

            for onnx_path in paths:
                parity = check_parity(opts["weights"], onnx_path, check)
                print(f"parity of {onnx_path.name} on {parity['images']} image(s): max |logit difference| "
                      f"{parity['max_abs_logit_diff']:.2e}, mask agreement {100 * parity['mask_agreement']:.3f}%")
    except BaseException:  # an export that failed (or was interrupted) half-way is removed, so a rerun can write it
        for written in paths:
            written.unlink(missing_ok=True)
        print(f"removed {', '.join(str(p) for p in paths)} (the export did not finish)")
        raise
    precisions = " and ".join(["fp32", "int8"][:len(paths)])
    models = f"ONNX model{'s' if len(paths) > 1 else ''} {' and '.join(p.name for p in paths)}"
    print(saved_line(path.parent, {}, f"backend onnx, precision {precisions}, exported from the torch fp32 model",
                     [models]))
    return 0


def bench_target(opts: dict[str, Any]) -> tuple[nn.Module, dict, str]:
    """(model, meta, title) from weights= (a checkpoint) or model= [encoder=] (random weights)."""
    if opts["weights"]:
        from ..models import model_from_checkpoint
        from ..runtime.checkpoint import load_checkpoint

        state = load_checkpoint(opts["weights"])
        if "meta" not in state:
            raise ConfigError(f"{opts['weights']}: not a seglab training checkpoint (no data meta)")
        return model_from_checkpoint(state, opts["weights"]), state["meta"], f"{opts['weights']}"
    from ..models import create_model, encoder_name
    from .bench import random_meta

    kwargs = {"encoder": opts["encoder"]} if opts["encoder"] else {}  # unet_encoder's own default is resnet34
    model = create_model(opts["model"], num_classes=int(opts["num_classes"]), in_channels=int(opts["in_channels"]),
                         **kwargs)
    encoder = encoder_name(model)
    title = f"{opts['model']}" + (f" ({encoder})" if encoder else "") + ", random weights"
    return model, random_meta(int(opts["in_channels"]), int(opts["num_classes"])), title


def bench_main(argv: list[str]) -> int:
    """``seglab bench [model=unet_encoder encoder=resnet34 | weights=RUN] imgsz=128,512 batch=1 iters=10``."""
    from .bench import bench_model, print_results, to_markdown

    opts = {**BENCH_OPTIONS, **parse_key_values(argv, BenchOptions)}
    model, meta, title = bench_target(opts)
    backends = [b.strip() for b in str(opts["backends"]).split(",") if b.strip()]
    results = bench_model(model, meta, _int_list(opts["imgsz"], "imgsz"), batch=int(opts["batch"]),
                          warmup=int(opts["warmup"]), iters=int(opts["iters"]), backends=backends,
                          device=str(opts["device"]), threads=int(opts["threads"]))
    title = f"{title}; {int(opts['threads']) or torch.get_num_threads()} thread(s) on {opts['device']}"
    print_results(results, title)
    if opts["out"]:
        out = Path(opts["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(to_markdown(results, title), encoding="utf-8")
        print(f"Markdown table written to {out}")
    return 0
