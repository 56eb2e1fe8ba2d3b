"""Test-time augmentation: average a model's probabilities over flipped, rotated and shifted views of a batch.

A mode is a set of flip/rotation views (``none``, ``hflip``, ``flip``, ``d4``), optionally followed by ``+shift``.
``+shift`` is for images smaller than ``pad_to`` (TGS salt: 101 px padded to 128): besides the centred padding
that evaluation uses, the image is also placed at the corners and edge midpoints of the padded frame (3x3
positions, as ``random_pad`` shows it in training), and the nine predictions, shifted back, are averaged. On the
TGS salt benchmark this took one model from 0.786 to 0.791, for 9x the inference (benchmarks/LOG.md, issue 4).

Written here because the TTA wrappers we know (ttach) neither re-pad from the unpadded image nor skip the views a
non-square batch cannot take; both Predictor (torch) and OnnxPredictor (onnxruntime) use this one loop.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from ..choices import TTA_MODES, TTA_SHIFT, TTA_VIEWS
from ..errors import ConfigError

# (k rotations by 90 degrees, flip width, flip height) per view. "hflip" is for images with an up and a down
# (seismic sections, street scenes), "flip" adds the vertical flip, "d4" is the whole dihedral group.
VIEWS = {
    "none": [(0, False, False)],
    "hflip": [(0, False, False), (0, True, False)],
    "flip": [(0, False, False), (0, True, False), (0, False, True)],
    "d4": [(k, f, False) for k in range(4) for f in (False, True)],
}
assert tuple(VIEWS) == TTA_VIEWS, "a TTA view set needs both its name in choices.TTA_VIEWS and its views here"
SHIFT = TTA_SHIFT


def tta_modes() -> tuple[str, ...]:
    """Every accepted ``tta`` value: the view sets, ``shift`` alone, and each view set with ``+shift``."""
    return TTA_MODES


def parse_tta(tta: str) -> tuple[str, bool]:
    """``"hflip+shift"`` -> ``("hflip", True)``; a ConfigError (a ValueError) for an unknown mode."""
    if tta not in TTA_MODES:
        raise ConfigError(f"tta must be one of {', '.join(tta_modes())}, got {tta!r}")
    if tta == SHIFT:
        return "none", True
    views, _, shift = tta.partition("+")
    return views, bool(shift)


def apply_view(x: torch.Tensor, k: int, fw: bool, fh: bool) -> torch.Tensor:
    """One view of a (N, C, H, W) batch: flips, then k quarter turns."""
    if fw:
        x = x.flip(-1)
    if fh:
        x = x.flip(-2)
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def undo_view(x: torch.Tensor, k: int, fw: bool, fh: bool) -> torch.Tensor:
    """Map a view's output back to the original orientation."""
    if k:
        x = torch.rot90(x, -k, dims=(-2, -1))
    if fh:
        x = x.flip(-2)
    return x.flip(-1) if fw else x


def sum_over_views(view_probs: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                   views: str) -> tuple[torch.Tensor, int]:
    """Sum of ``view_probs`` over the flip/rotation views (mapped back), and how many views were summed."""
    total, n = None, 0
    for k, fw, fh in VIEWS[views]:
        if k % 2 and images.shape[-1] != images.shape[-2]:
            continue  # 90-degree turns of a non-square batch only change its shape; skip them
        p = undo_view(view_probs(apply_view(images, k, fw, fh)), k, fw, fh)
        total = p if total is None else total + p
        n += 1
    return total, n


def shifted_batches(images: torch.Tensor, sizes: Sequence[tuple[int, int]], pad_to: int, pad_mode: str
                    ) -> Iterator[tuple[list[int], tuple[int, int, int, int], tuple[int, int], torch.Tensor]]:
    """For images centre-padded to ``pad_to`` (as evaluation pads them), the same images padded at the other
    3x3 positions: yields (batch indices, content box (top, left, h, w), offset (oy, ox), re-padded batch)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (h, w) in enumerate(sizes):
        groups[(int(h), int(w))].append(i)
    for (h, w), idx in groups.items():
        ph, pw = max(0, pad_to - h), max(0, pad_to - w)
        if not (ph or pw) or h + ph > images.shape[-2] or w + pw > images.shape[-1]:
            continue  # nothing to shift (the image fills its frame), or not padded the way evaluation pads
        top, left = ph // 2, pw // 2
        crop = images[idx, :, top:top + h, left:left + w].float()  # reflect padding needs floats
        # the rule of transforms.pad_for_eval: mirror when it can, else zeros
        mode = "reflect" if pad_mode == "reflect" and ph < h and pw < w else "constant"
        for oy in sorted({0, top, ph}):
            for ox in sorted({0, left, pw}):
                if (oy, ox) != (top, left):  # the centred view is the un-shifted batch itself
                    yield idx, (top, left, h, w), (oy, ox), F.pad(crop, (ox, pw - ox, oy, ph - oy), mode=mode)


def tta_probs(view_probs: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, tta: str,
              sizes: Sequence[tuple[int, int]] | None = None, pad_to: int = 0,
              pad_mode: str = "reflect") -> torch.Tensor:
    """Average of ``view_probs`` (raw batch -> probabilities) over the views of ``tta``.

    ``+shift`` needs each image's unpadded ``sizes`` and the ``pad_to`` it was centre-padded to; images without
    room to shift (or calls without sizes, such as tiles of a large image) get the flip/rotation views only.
    """
    views, shift = parse_tta(tta)
    total, n = sum_over_views(view_probs, images, views)
    if not (shift and sizes and pad_to):
        return total / n
    count = torch.full_like(total[:, :1], float(n))
    for idx, (top, left, h, w), (oy, ox), batch in shifted_batches(images, sizes, pad_to, pad_mode):
        probs, m = sum_over_views(view_probs, batch, views)
        total[idx, :, top:top + h, left:left + w] += probs[:, :, oy:oy + h, ox:ox + w]
        count[idx, :, top:top + h, left:left + w] += m
    return total / count
