"""One precision path for every loop: pick device, autocast dtype and memory format once."""
from __future__ import annotations

import contextlib
import platform
import warnings
from dataclasses import dataclass

import torch

from ..choices import PRECISIONS
from ..errors import ConfigError

# The autocast dtype of each precision but "auto" (None = plain fp32).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """What a run computes in: device, autocast dtype (None = fp32) and memory format."""

    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool

    @property
    def enabled(self) -> bool:
        """True when autocast is on."""
        return self.dtype is not None

    def label(self) -> str:
        """The numeric format and memory layout, e.g. 'fp32 + channels_last' (summary.json's ``precision``)."""
        dtype = str(self.dtype).replace("torch.", "") if self.dtype else "fp32"
        return f"{dtype}{' + channels_last' if self.channels_last else ''}"

    def describe(self) -> str:
        """Human-readable summary, e.g. 'fp32 + channels_last on cpu'."""
        return f"{self.label()} on {self.device}"

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for forward passes (a no-op in fp32)."""
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.enabled)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Move an input batch to the device in the chosen memory format."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move a model to the device in the chosen memory format."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


def _cpuinfo() -> str:
    """The text of /proc/cpuinfo, or "" where there is none (macOS, Windows)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix units (AMX or AVX512-BF16), where bf16 pays off."""
    flags = _cpuinfo()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def describe_cpu() -> str:
    """CPU model and whether it has native bf16, e.g. 'AMD EPYC (no native bf16)', for benchmark reports."""
    names = [line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")]
    name = names[0] if names else platform.processor() or platform.machine()
    return f"{name} ({'native bf16' if cpu_supports_bf16() else 'no native bf16'}), {torch.get_num_threads()} threads"


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:  # torch's message for an unknown type or a malformed index
        raise ConfigError(f"device={device!r} is not a device: use auto, cpu, cuda, cuda:1 or mps ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: this machine has no usable CUDA GPU (torch {torch.__version__}); "
                          "use device=auto or device=cpu")
    return dev


def resolve_precision(precision: str = "auto", device: str | torch.device = "auto") -> Precision:
    """Turn ``precision`` (auto, fp32, bf16, fp16) and ``device`` into a Precision."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif dev.type == "cpu" and cpu_supports_bf16():
            precision = "bf16"
        else:
            precision = "fp32"
    if precision == "fp16" and dev.type == "cpu":
        raise ConfigError("precision=fp16 is not supported on CPU; use bf16 or fp32")
    if precision == "bf16" and dev.type == "cpu" and not cpu_supports_bf16():
        warnings.warn("precision=bf16 on a CPU without native bf16 (no AMX / AVX512-BF16) is emulated and several "
                      "times slower than fp32; use precision=auto or fp32 here", stacklevel=2)
    dtype = AUTOCAST_DTYPES[precision]
    # channels_last: oneDNN's CPU conv kernels prefer it in every dtype (fp32 U-Net-ResNet34 trains 1.35x and infers
    # 1.4x faster with it on an AVX2-only AMD EPYC, where bf16 is emulated and 5x slower); CUDA gains with tensor
    # cores, i.e. under autocast.
    channels_last = dev.type == "cpu" or (dev.type == "cuda" and dtype is not None)
    return Precision(dev, dtype, channels_last)
