"""Atomic checkpoint writes and safe, validated loads (``weights_only=True``: a model file is not code)."""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..models import create_model


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
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"{path}: could not write checkpoint ({e.strerror or e}); "
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
        raise CheckpointError(f"{path}: refused to load: the file contains Python objects other than weights "
                              f"(it could run code). Only seglab checkpoints and plain state dicts are accepted. ({e})"
                              ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(state).__name__}")
    return state


def model_from_checkpoint(state: dict[str, Any], path: str | Path = "<checkpoint>") -> torch.nn.Module:
    """Rebuild the model recorded in a seglab checkpoint and load its weights, checking that they fit."""
    spec = state.get("model_spec")
    weights = state.get("model")
    if not isinstance(spec, dict) or not isinstance(weights, dict) or "name" not in spec:
        raise CheckpointError(f"{path}: not a seglab checkpoint (no model_spec); "
                              "plain state dicts can be loaded with encoder_weights=PATH instead")
    spec = dict(spec)
    name = spec.pop("name")
    spec.pop("encoder_weights", None)  # the checkpoint carries every weight already
    try:
        model = create_model(name, **spec)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot rebuild model {name!r} from the checkpoint ({e})") from None
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit model {name!r}: {len(missing)} missing "
                              f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    bad = [k for k, v in weights.items() if torch.is_floating_point(v) and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: weights contain NaN/Inf in {bad[:3]}; the run diverged before this save")
    return model
