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


def _check_spec_matches_meta(spec: dict[str, Any], meta: Any, path: str | Path) -> None:
    """The model spec must agree with the data meta (channels, classes) the checkpoint was trained on."""
    if not isinstance(meta, dict):
        return
    channels = meta.get("in_channels")
    if channels is not None and spec.get("in_channels") != channels:
        raise CheckpointError(f"{path}: model takes {spec.get('in_channels')} input channel(s) but the checkpoint's "
                              f"data has in_channels={channels}; the file is inconsistent")
    codec = meta.get("codec")
    classes = codec.get("num_classes") if isinstance(codec, dict) else None
    if isinstance(classes, int):
        outputs = 1 if classes == 2 else classes  # binary tasks use one logit
        if spec.get("num_classes") != outputs:
            raise CheckpointError(f"{path}: model has {spec.get('num_classes')} output(s) but the checkpoint's data "
                                  f"has {classes} classes (expects {outputs}); the file is inconsistent")


def _skeleton(name: Any, spec: dict[str, Any], path: str | Path) -> torch.nn.Module:
    """The described model on the meta device: its shapes, without memory (a forged spec cannot exhaust RAM)."""
    try:
        with torch.device("meta"):
            return create_model(name, **spec)
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot rebuild model {name!r} from the checkpoint ({e})") from None


def _check_weights_fit(skeleton: torch.nn.Module, weights: dict, name: Any, path: str | Path) -> None:
    """Every tensor the model needs is in ``weights`` with the model's shape, and nothing else is."""
    not_tensors = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: the weights hold non-tensor entries {not_tensors[:3]}")
    expected = skeleton.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [f"{k}: {tuple(weights[k].shape)} in the file, {tuple(v.shape)} in the model"
             for k, v in expected.items() if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: weights do not fit model {name!r} as the checkpoint describes it: "
                              f"{len(wrong)} shape mismatch(es) (e.g. {wrong[:2]}), {len(missing)} missing "
                              f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")


def model_from_checkpoint(state: dict[str, Any], path: str | Path = "<checkpoint>") -> torch.nn.Module:
    """Rebuild the model recorded in a seglab checkpoint and load its weights, checking that they fit."""
    spec = state.get("model_spec")
    weights = state.get("model")
    if not isinstance(spec, dict) or not isinstance(weights, dict) or "name" not in spec:
        raise CheckpointError(f"{path}: not a seglab checkpoint (no model_spec); "
                              "plain state dicts can be loaded with encoder_weights=PATH instead")
    _check_spec_matches_meta(spec, state.get("meta"), path)
    spec = dict(spec)
    name = spec.pop("name")
    spec.pop("encoder_weights", None)  # the checkpoint carries every weight already
    _check_weights_fit(_skeleton(name, spec, path), weights, name, path)
    bad = [k for k, v in weights.items() if torch.is_floating_point(v) and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: weights contain NaN/Inf in {bad[:3]}; the run diverged before this save")
    model = create_model(name, **spec)  # the skeleton proved the spec builds and matches the weights
    model.load_state_dict(weights)
    return model
