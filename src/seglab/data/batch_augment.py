"""Batched training augmentation on tensors: per-sample random parameters, one batch at a time, on any device.

The device-resident training path (``device_data``) gathers each batch from uint8 tensors already on the GPU and
augments it here, as the CPU loader's albumentations pipeline (``transforms.build_train_transform``) does per image:

- ``pad_to`` (centred, or at a random position with ``random_pad``), ``crop`` (padded up to it, then a random
  crop), ``hflip`` and ``vflip`` are 1-D index maps per sample and axis (``spatial_maps``): one gather of the stored
  pixels applies all of them and the collate padding at once (reflect padding is cv2's BORDER_REFLECT_101, as
  albumentations pads; constant padding fills the mask with ignore_index);
- ``rot90`` turns whole square batches (``torch.rot90`` on the samples drawn for each quarter turn);
- ``rotate`` and ``shift_scale_rotate`` are one affine per sample (``affine_grid`` + ``grid_sample``: bilinear for
  the image, nearest for the mask, so labels are never blended);
- ``color`` is brightness/contrast per sample (and, for RGB, a saturation jitter; the CPU path's +-0.02 hue jitter
  has no batched version and is left out).

Why not kornia.augmentation: it draws from the global torch RNG (no per-call Generator), its padding and cropping
do not reproduce albumentations' reflect-101 pads and mask fills, and the few ops above are small torch code.
Random parameters are drawn on the CPU from a ``torch.Generator``, so a (seed, epoch) gives the same batches on a
CPU and on a GPU, and a test on CPU tensors checks what the GPU runs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..choices import AUGMENTS

# Augment names without a batched version: a run asking for one keeps the CPU loader (per-pixel noise would be cheap
# on the GPU, but matching GaussNoise's per-image std draws is not done yet).
NOT_BATCHED = ("noise",)
BATCHED = tuple(name for name in AUGMENTS if name not in NOT_BATCHED)
FILL = -1  # an index map entry that reads no stored pixel: image 0, mask ignore_index


def unbatched(names: Sequence[str], square: bool) -> dict[str, str]:
    """The augment names of ``names`` the batched path cannot apply, each with why (``square``: every sample comes
    out square, which the batched ``rot90`` needs to keep the batch's shape)."""
    out = {name: "has no batched version" for name in names if name not in BATCHED}
    if "rot90" in names and not square:
        out["rot90"] = "needs square training inputs for batched quarter turns"
    return out


def reflect101(pos: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Positions folded into ``[0, length)`` as cv2.BORDER_REFLECT_101 does (``dcb|abcd|cba``), for any offset."""
    period = (2 * (length - 1)).clamp(min=1)
    folded = pos.remainder(period)
    folded = torch.where(folded >= length, period - folded, folded)
    return torch.where(length == 1, torch.zeros_like(folded), folded)


def uniform_int(high: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One integer per entry of ``high``, uniform in ``[0, high]`` (inclusive, as ``random.randint``)."""
    draw = torch.rand(high.shape, generator=generator, dtype=torch.float64)
    return torch.minimum((draw * (high + 1).double()).long(), high)


def pad_axis(maps: torch.Tensor, length: torch.Tensor, target: int, before: torch.Tensor,
             reflect: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad each sample's map to at least ``target`` entries, ``before`` of them in front (reflected or FILL)."""
    new_length = length.clamp(min=target)
    pos = torch.arange(int(new_length.max()))[None, :] - before[:, None]
    if reflect:
        src, inside = reflect101(pos, length[:, None]), torch.ones_like(pos, dtype=torch.bool)
    else:
        src, inside = pos, (pos >= 0) & (pos < length[:, None])
    picked = maps.gather(1, src.clamp(0, maps.shape[1] - 1))
    return torch.where(inside, picked, torch.full_like(picked, FILL)), new_length


def crop_axis(maps: torch.Tensor, size: int, offset: torch.Tensor) -> torch.Tensor:
    """``size`` entries of each sample's map from ``offset`` on (every map holds at least offset + size)."""
    return maps.gather(1, (torch.arange(size)[None, :] + offset[:, None]).clamp(max=maps.shape[1] - 1))


def flip_axis(maps: torch.Tensor, length: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Reverse the first ``length`` entries of the maps of the samples where ``flip`` is true."""
    pos = torch.arange(maps.shape[1])[None, :].expand(len(maps), -1)
    pos = torch.where(flip[:, None], length[:, None] - 1 - pos, pos)
    return maps.gather(1, pos.clamp(0, maps.shape[1] - 1))


def collate_axis(maps: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Every sample at the batch's longest length: entries past a sample's own length read FILL (pad_collate)."""
    width = int(length.max())
    maps = maps[:, :width]
    return torch.where(torch.arange(width)[None, :] < length[:, None], maps, torch.full_like(maps, FILL))


def to_dtype(x: torch.Tensor, dtype: torch.dtype, max_value: float) -> torch.Tensor:
    """Float results back to the stored dtype: rounded and clipped to its range for integer types."""
    if dtype.is_floating_point:
        return x.to(dtype)
    return x.round_().clamp_(0, max_value).to(dtype)


class BatchAugment:
    """The batched counterpart of ``build_train_transform(augment, crop, pad_to, pad_mode, ignore_index, ...)``.

    ``spatial_maps`` gives the per-sample row and column maps (pad, crop, flips, collate) for a batch of sample
    sizes; ``finish`` applies quarter turns, affines and colour to the gathered batch on its device. Probabilities
    follow the CPU pipeline: flips, rot90, rotate, shift_scale_rotate and brightness/contrast each with p=0.5,
    saturation with p=0.3. ``interpolation`` is the image's for affines (``nearest`` makes them exactly
    reproducible on the pixel grid, as the alignment tests use).
    """

    def __init__(self, names: Sequence[str], crop: int = 0, pad_to: int = 0, pad_mode: str = "reflect",
                 ignore_index: int = 255, channels: int = 3, max_value: float = 255.0,
                 interpolation: str = "bilinear"):
        bad = [name for name in names if name not in BATCHED]
        if bad:
            raise ValueError(f"no batched version of augment {bad}")
        self.names, self.crop, self.pad_to = tuple(names), int(crop), int(pad_to)
        self.reflect, self.ignore_index = pad_mode == "reflect", ignore_index
        self.channels, self.max_value, self.interpolation = channels, float(max_value), interpolation

    def describe(self) -> str:
        """The names applied in batches (what the start log line lists), or ``none``."""
        steps = [name for name in self.names if name != "crop"]
        if self.pad_to and "random_pad" not in steps:
            steps.insert(0, f"pad_to={self.pad_to}")
        if self.crop:
            steps.insert(0, f"crop={self.crop}")
        return ", ".join(steps) or "none"

    def spatial_maps(self, sizes: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column maps (N, H) and (N, W) into each sample's own window (FILL: no pixel), on the CPU."""
        rows, cols = sizes[:, 0].long(), sizes[:, 1].long()
        n = len(sizes)
        maps = [torch.arange(int(length.max()))[None, :].repeat(n, 1) for length in (rows, cols)]
        lengths = [rows, cols]
        if self.pad_to:  # PadIfNeeded(pad_to, position=random|center); the random draw is made for every sample
            for axis in (0, 1):
                room = (self.pad_to - lengths[axis]).clamp(min=0)
                before = uniform_int(room, generator) if "random_pad" in self.names else room // 2
                maps[axis], lengths[axis] = pad_axis(maps[axis], lengths[axis], self.pad_to, before, self.reflect)
        if self.crop:  # PadIfNeeded(crop) (centred), then RandomCrop(crop)
            for axis in (0, 1):
                room = (self.crop - lengths[axis]).clamp(min=0)
                maps[axis], lengths[axis] = pad_axis(maps[axis], lengths[axis], self.crop, room // 2, self.reflect)
            for axis in (0, 1):
                offset = uniform_int(lengths[axis] - self.crop, generator)
                maps[axis] = crop_axis(maps[axis], self.crop, offset)
                lengths[axis] = torch.full_like(lengths[axis], self.crop)
        for name, axis in (("hflip", 1), ("vflip", 0)):
            if name in self.names:
                flip = torch.rand(n, generator=generator) < 0.5
                maps[axis] = flip_axis(maps[axis], lengths[axis], flip)
        return collate_axis(maps[0], lengths[0]), collate_axis(maps[1], lengths[1])

    def finish(self, image: torch.Tensor, mask: torch.Tensor,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Quarter turns, affines and colour on a gathered batch (image N,C,H,W, mask N,H,W long), on its device."""
        if "rot90" in self.names:
            image, mask = self.rot90(image, mask, generator)
        if "rotate" in self.names or "shift_scale_rotate" in self.names:
            image, mask = self.affine(image, mask, generator)
        if "color" in self.names:
            image = self.color(image, generator)
        return image, mask

    def rot90(self, image: torch.Tensor, mask: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """RandomRotate90(p=0.5): the samples drawn turn by 0..3 quarter turns (square batches only)."""
        n = len(image)
        turns = torch.where(torch.rand(n, generator=generator) < 0.5,
                            torch.randint(0, 4, (n,), generator=generator), torch.zeros(n, dtype=torch.long))
        if image.shape[-1] != image.shape[-2] or not bool(turns.any()):
            return image, mask
        image, mask = image.clone(), mask.clone()
        for k in (1, 2, 3):
            chosen = (turns == k).nonzero().flatten().to(image.device)
            if len(chosen):
                image[chosen] = torch.rot90(image[chosen], k, dims=(-2, -1))
                mask[chosen] = torch.rot90(mask[chosen], k, dims=(-2, -1))
        return image, mask

    def affine_params(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Per sample: applied, angle (degrees), scale, shift (fractions of the size), as the CPU transforms draw."""
        angle, scale = torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
        shift = torch.zeros(n, 2, dtype=torch.float64)
        applied = torch.zeros(n, dtype=torch.bool)
        if "rotate" in self.names:  # A.Rotate(limit=45, p=0.5)
            chosen = torch.rand(n, generator=generator) < 0.5
            angle += torch.where(chosen, (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * 45, 0.0)
            applied |= chosen
        if "shift_scale_rotate" in self.names:  # A.Affine(scale 0.9..1.1, translate +-6.25 %, rotate +-15, p=0.5)
            chosen = torch.rand(n, generator=generator) < 0.5
            draws = torch.rand(n, 4, generator=generator, dtype=torch.float64) * 2 - 1
            angle += torch.where(chosen, draws[:, 0] * 15, 0.0)
            scale = torch.where(chosen, 1 + draws[:, 1] * 0.1, scale)
            shift = torch.where(chosen[:, None], draws[:, 2:] * 0.0625, shift)
            applied |= chosen
        return applied, angle, scale, shift

    def affine(self, image: torch.Tensor, mask: torch.Tensor,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotation about the centre, scale and shift per sample, in one resampling of the samples drawn."""
        applied, angle, scale, shift = self.affine_params(len(image), generator)
        if not bool(applied.any()):
            return image, mask
        chosen = applied.nonzero().flatten()
        theta = affine_theta(angle[chosen], scale[chosen], shift[chosen], *image.shape[-2:])
        chosen = chosen.to(image.device)
        grid = F.affine_grid(theta.to(image.device, torch.float32), [len(chosen), 1, *image.shape[-2:]],
                             align_corners=False)
        padding = "reflection" if self.reflect else "zeros"
        moved = F.grid_sample(image[chosen].float(), grid, mode=self.interpolation, padding_mode=padding,
                              align_corners=False)
        # The mask moves with the same grid, nearest (labels are never blended); a second channel of ones marks
        # where the grid left the image (constant padding: those pixels get ignore_index, as fill_mask does).
        labels = torch.stack([mask[chosen].float(), torch.ones_like(mask[chosen], dtype=torch.float32)], 1)
        labels = F.grid_sample(labels, grid, mode="nearest", padding_mode=padding, align_corners=False)
        new_mask = torch.where(labels[:, 1] > 0.5, labels[:, 0], float(self.ignore_index)).round().long()
        image, mask = image.clone(), mask.clone()
        image[chosen] = to_dtype(moved, image.dtype, self.max_value)
        mask[chosen] = new_mask
        return image, mask

    def color(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """RandomBrightnessContrast(0.2, 0.2, p=0.5): x * alpha + beta * max; RGB also a saturation jitter (p=0.3)."""
        n = len(image)
        chosen = torch.rand(n, generator=generator) < 0.5
        draws = torch.rand(n, 2, generator=generator) * 0.4 - 0.2
        alpha = torch.where(chosen, 1 + draws[:, 0], 1.0)
        beta = torch.where(chosen, draws[:, 1] * self.max_value, 0.0)
        saturate = torch.ones(n)
        if self.channels == 3:  # ColorJitter's saturation (0.9..1.1, p=0.3); its hue has no batched version here
            jitter = torch.rand(n, generator=generator) < 0.3
            saturate = torch.where(jitter, 0.9 + torch.rand(n, generator=generator) * 0.2, 1.0)
        if not bool(chosen.any()) and not bool((saturate != 1).any()):
            return image
        x = image.float() * alpha.to(image.device)[:, None, None, None] + beta.to(image.device)[:, None, None, None]
        if self.channels == 3 and image.shape[1] == 3:
            gray = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device)[None, :, None, None]).sum(1, keepdim=True)
            factor = saturate.to(x.device)[:, None, None, None]
            x = gray + (x - gray) * factor
        return to_dtype(x, image.dtype, self.max_value)


def affine_theta(angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, height: int,
                 width: int) -> torch.Tensor:
    """``affine_grid`` matrices (N, 2, 3) mapping output to input for a rotation by ``angle`` degrees about the
    centre, a ``scale`` and a ``shift`` (fractions of width and height), in normalised coordinates of a
    ``height`` x ``width`` image (the aspect ratio is taken into account, so rotations stay rotations)."""
    rad = angle * (math.pi / 180)
    cos, sin = torch.cos(rad) / scale, torch.sin(rad) / scale
    half_w, half_h = width / 2, height / 2
    # in pixels about the centre: p_in = R(-angle) (p_out - t) / scale; normalised by the half sizes
    tx, ty = shift[:, 0] * width, shift[:, 1] * height
    theta = torch.zeros(len(angle), 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos, sin * half_h / half_w
    theta[:, 1, 0], theta[:, 1, 1] = -sin * half_w / half_h, cos
    theta[:, 0, 2] = -(cos * tx + sin * ty) / half_w
    theta[:, 1, 2] = -(-sin * tx + cos * ty) / half_h
    return theta
