"""Segmentation metrics from one accumulated confusion matrix (bincount on the device, all_reduce across ranks)."""
from __future__ import annotations

import torch
import torch.distributed as dist


class ConfusionMatrix:
    """Counts (true class, predicted class) pixel pairs; ignore_index pixels are skipped."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255, device: torch.device | str = "cpu"):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, sync_free: bool | None = None) -> None:
        """Add a batch of predicted and true class-index maps (same shape).

        ``sync_free`` (default: on CUDA) counts without a host sync: boolean indexing (``target[valid]``) must
        learn its result's size and ``torch.bincount`` its input's maximum, each a device-to-host read per batch;
        there every pixel is scattered into the matrix, invalid ones into a spare bin that is dropped. On a CPU
        reads cost nothing and bincount is the faster count.
        """
        valid = (target >= 0) & (target < self.num_classes)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        n = self.num_classes
        if self.mat.device.type == "cuda" if sync_free is None else sync_free:
            idx = torch.where(valid, target.long() * n + pred.long().clamp(0, n - 1), n * n).flatten()
            counts = torch.zeros(n * n + 1, dtype=torch.int64, device=self.mat.device)
            counts.scatter_add_(0, idx, torch.ones_like(idx))
            self.mat += counts[: n * n].view(n, n)
            return
        idx = target[valid] * n + pred[valid].clamp_(0, n - 1)
        self.mat += torch.bincount(idx, minlength=n**2).view(n, n)

    def all_reduce(self) -> None:
        """Sum the matrix over all ranks of a torch.distributed job (no-op otherwise)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat)

    def reset(self) -> None:
        """Zero the counts."""
        self.mat.zero_()

    def compute(self) -> dict:
        """All metrics as plain floats; see ``metrics_from_confusion``."""
        return metrics_from_confusion(self.mat)


def metrics_from_confusion(mat: torch.Tensor) -> dict:
    """Pixel accuracy, per-class IoU/accuracy/precision/recall/F1, their means and frequency-weighted IoU.

    Means are over classes that occur in the ground truth or the prediction (a class absent from both
    has no defined IoU); for two classes ``fg_iou`` is the IoU of class 1.
    """
    m = mat.double()
    tp = m.diag()
    gt = m.sum(1)  # pixels of each true class
    pr = m.sum(0)  # pixels predicted as each class
    union = gt + pr - tp
    present = union > 0

    def safe(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(b > 0, a / b.clamp(min=1), torch.full_like(a, float("nan")))

    iou, recall, precision = safe(tp, union), safe(tp, gt), safe(tp, pr)
    f1 = safe(2 * tp, gt + pr)
    total = m.sum()
    freq = gt / total.clamp(min=1)
    out = {
        "pixel_acc": float(tp.sum() / total.clamp(min=1)),
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "mpa": float(recall[gt > 0].mean()) if (gt > 0).any() else float("nan"),
        "precision": float(precision[present & (pr > 0)].mean()) if (present & (pr > 0)).any() else float("nan"),
        "recall": float(recall[gt > 0].mean()) if (gt > 0).any() else float("nan"),
        "f1": float(f1[present].mean()) if present.any() else float("nan"),
        "fwiou": float((freq[present] * iou[present]).sum()),
        "per_class": [
            {"class": i, "iou": _f(iou[i]), "acc": _f(recall[i]), "precision": _f(precision[i]),
             "recall": _f(recall[i]), "f1": _f(f1[i]), "pixels": int(gt[i])}
            for i in range(m.shape[0])
        ],
    }
    if m.shape[0] == 2:
        out["fg_iou"] = _f(iou[1])
        out["dice"] = _f(f1[1])
    return out


def _f(x: torch.Tensor) -> float:
    return float(x)


def per_image_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None) -> torch.Tensor:
    """IoU per image: of class 1 for binary tasks, else the mean over classes present in label or prediction.

    An image where the class is absent from both label and prediction scores 1 (nothing to find, nothing found).
    """
    n = pred.shape[0]
    valid = (target != ignore_index) if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    classes = [1] if num_classes == 2 else list(range(num_classes))
    inter = torch.zeros(n, len(classes), device=pred.device)
    union = torch.zeros_like(inter)
    for j, c in enumerate(classes):
        p, t = (pred == c) & valid, (target == c) & valid
        inter[:, j] = (p & t).flatten(1).sum(1).float()
        union[:, j] = (p | t).flatten(1).sum(1).float()
    present = union > 0
    iou = torch.where(present, inter / union.clamp(min=1), torch.zeros_like(inter))
    counts = present.sum(1)
    return torch.where(counts > 0, iou.sum(1) / counts.clamp(min=1), torch.ones(n, device=pred.device))
