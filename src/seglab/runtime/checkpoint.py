"""Atomic checkpoint writes and safe, validated loads (``weights_only=True``: a model file is not code)."""
from __future__ import annotations

import os
import pickle
import pickletools
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to a temp file in the same folder, fsync, then rename: readers never see half a file.

    A full disk raises CheckpointError and leaves the previous checkpoint untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch's zip writer reports some failed writes as RuntimeError
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise CheckpointError(f"{path}: could not write checkpoint ({reason}); "
                              "the previous checkpoint is kept. Free disk space and resume.") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; pickles carrying code are refused with a clear message."""
    path = Path(path)
    if path.is_dir():
        for cand in (path / "checkpoints" / "best.pt", path / "best.pt", path / "checkpoints" / "last.pt"):
            if cand.exists():
                path = cand
                break
        else:
            raise CheckpointError(f"{path}: no checkpoints/best.pt in this run folder")
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        culprit = _code_reference(str(e), path)
        if culprit:
            raise CheckpointError(f"{path}: refused to load: the file contains Python objects other than weights "
                                  f"(it references {culprit}); unpickling it could run code. Only seglab checkpoints "
                                  "and plain state dicts are accepted.") from None
        reason = next((ln.strip() for ln in str(e).splitlines() if "nsupported" in ln), "unknown content")[:200]
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {reason}") from None
    except Exception as e:  # a damaged file makes torch.load raise almost anything (KeyError, EOFError, RuntimeError)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else "empty or cut short"
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {first_line}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(state).__name__}")
    return state


def _code_reference(error: str, path: Path) -> str | None:
    """The callable a refused pickle names: from torch's weights-only error, else by reading the opcodes.

    torch reports ``GLOBAL module.name`` for its own formats; a raw pickle (protocol 4+) fails earlier, on
    its framing, so its opcodes are listed with ``pickletools`` (which parses, never executes) to find it.
    """
    culprit = re.search(r"GLOBAL ([\w.]+)", error)
    if culprit:
        return culprit.group(1)
    strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(path.read_bytes()):
            if opcode.name == "GLOBAL":
                return str(arg).replace(" ", ".")
            if opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                return f"{strings[-2]}.{strings[-1]}"
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # not a pickle at all (or a damaged one): nothing refers to code
        return None
    return None
