"""Deployment: ONNX export with the normalisation inside, an onnxruntime predictor, parity checks, speed benchmarks.

onnx and onnxruntime are optional dependencies (``pip install seglab[export]``); they are imported on use.
"""
from .onnx_export import DeployModel, ExportError, export_model_onnx, export_onnx

__all__ = ["DeployModel", "ExportError", "export_model_onnx", "export_onnx", "OnnxPredictor", "load_onnx_predictor",
           "check_parity", "bench_model"]


def __getattr__(name: str):
    """Import the onnxruntime-backed helpers on first use (PEP 562)."""
    if name in ("OnnxPredictor", "load_onnx_predictor"):
        from ..inference import onnx_predictor

        return getattr(onnx_predictor, name)
    if name == "check_parity":
        from .parity import check_parity

        return check_parity
    if name == "bench_model":
        from .bench import bench_model

        return bench_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
