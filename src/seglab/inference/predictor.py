"""Turn raw image batches into class probabilities: one model or an ensemble, with test-time augmentation."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from ..choices import TTA_SHIFT, TTA_VIEWS
from ..data.transforms import tta_unseen_in_training
from ..models import model_from_checkpoint
from ..runtime.checkpoint import load_checkpoint
from ..runtime.normalize import Normalizer
from ..runtime.precision import AUTOCAST_DTYPES, Precision, resolve_precision
from ..errors import CheckpointError
from .fold_bn import fold_batchnorm
from .tta import parse_tta, tta_probs


def _warn_untrained_tta(tta: str, augment: object, src: Path) -> None:
    """Print a note when the TTA views include transforms the checkpoint's training never applied."""
    if tta == "none" or not isinstance(augment, str):
        return
    try:
        unseen = tta_unseen_in_training(tta, augment)
    except ValueError:  # an augment spec this version does not know: nothing to compare with
        return
    if unseen:
        # the suggestion keeps +shift when the user asked for it and training saw translations
        strongest_first = [v for v in reversed(TTA_VIEWS) if v != "none"]
        order = [f"{v}+{TTA_SHIFT}" for v in strongest_first] + [TTA_SHIFT] if TTA_SHIFT in tta else []
        fits = [m for m in order + strongest_first if not tta_unseen_in_training(m, augment)]
        print(f"note: tta={tta} adds {' and '.join(unseen)} views, which {src} never saw in training "
              f"(augment={augment}); they usually make predictions worse. Use tta={fits[0] if fits else 'none'}.")


class Predictor:
    """Averages the probabilities of one or more models over test-time augmentations."""

    def __init__(self, models: Sequence[nn.Module], meta: dict, precision: Precision, tta: str = "none",
                 fold_bn: bool = True):
        parse_tta(tta)  # a clear error for an unknown mode
        self.precision, self.meta, self.tta = precision, meta, tta
        models = [m.eval() for m in models]
        if fold_bn:  # inference only: BatchNorm folded into the convs (checked to give the same logits)
            example = torch.rand(1, meta["in_channels"], 128, 128, device=next(models[0].parameters()).device)
            models = [fold_batchnorm(m, example)[0] for m in models]
        self.models = [precision.prepare_model(m).eval() for m in models]
        self.normalize = Normalizer(meta["mean"], meta["std"], meta["scale"]).to(precision.device)

    backend = "torch"

    @property
    def num_classes(self) -> int:
        """Classes including background (2 for binary tasks)."""
        return self.meta["codec"]["num_classes"]

    def describe(self) -> str:
        """What computes the predictions, for the last line of a command: ``backend torch, precision bf16, device
        cpu``."""
        names = {dtype: name for name, dtype in AUTOCAST_DTYPES.items()}
        return f"backend {self.backend}, precision {names[self.precision.dtype]}, device {self.precision.device}"

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Raw-batch logits of the first model without TTA (for validation losses)."""
        x = self.normalize(self.precision.to_input(images))
        with self.precision.autocast():
            return self.models[0](x).float()

    @torch.inference_mode()
    def probs(self, images: torch.Tensor, sizes: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
        """(N, K, H, W) probabilities for a raw (N, C, H, W) batch: K=1 foreground probability for binary.

        ``sizes``: each image's (h, w) before evaluation's centre padding, which ``tta=...+shift`` needs.
        """
        return tta_probs(self._mean_probs, images, self.tta, sizes, self.meta.get("pad_to") or 0,
                         self.meta.get("pad_mode", "reflect"))

    def _mean_probs(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities of one view of a raw batch, averaged over the ensemble's models."""
        x = self.normalize(self.precision.to_input(images))
        total = None
        for model in self.models:
            with self.precision.autocast():
                logits = model(x).float()
            p = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1)
            total = p if total is None else total + p
        return total / len(self.models)


def load_predictor(weights: str | Sequence[str], device: str = "auto", precision: str = "auto",
                   tta: str = "none", fold_bn: bool = True) -> Predictor:
    """Build a Predictor from checkpoint paths or run folders (comma-separated string or list = ensemble)."""
    paths = [w.strip() for w in weights.split(",")] if isinstance(weights, str) else list(weights)
    paths = [p for p in paths if p]
    if not paths:
        raise CheckpointError("no weights given: pass weights=RUN_DIR or weights=path/to/best.pt")
    models, metas, augments = [], [], set()
    for p in paths:
        path = Path(p)
        if path.is_dir() and (path / "folds.json").exists():  # a k-fold run: every fold's best model
            subs = sorted(path.glob("fold*/checkpoints/best.pt"))
            if not subs:
                raise CheckpointError(f"{path}: k-fold run without fold checkpoints")
            states = [(s, load_checkpoint(s)) for s in subs]
        else:
            states = [(path, load_checkpoint(path))]
        for src, state in states:
            if "meta" not in state:
                raise CheckpointError(f"{src}: not a seglab training checkpoint (no data meta)")
            models.append(model_from_checkpoint(state, src))
            metas.append(state["meta"])
            augment = (state.get("config") or {}).get("augment")
            if augment not in augments:  # one note per training setting, not per fold of an ensemble
                augments.add(augment)
                _warn_untrained_tta(tta, augment, src)
    first = metas[0]
    for m, p in zip(metas[1:], paths[1:] + paths[:0]):
        if m["codec"]["num_classes"] != first["codec"]["num_classes"] or m["in_channels"] != first["in_channels"]:
            raise CheckpointError(f"ensemble members disagree on classes or channels ({p}); "
                                  "ensembles need models trained on the same task")
    meta = dict(first)
    tuned = [m.get("tuned") for m in metas if m.get("tuned")]
    if len(paths) == 1 and tuned:
        meta["tuned"] = tuned[0]
    return Predictor(models, meta, resolve_precision(precision, device), tta, fold_bn)
