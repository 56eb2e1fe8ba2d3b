"""Training on random windows of big images, and validating on tiles of them.

When images are much larger than the training crop (20 thin sections of 1600x1200 with crop 512), one random crop
per image per epoch makes an epoch one optimiser step and leaves most pixels unseen. Instead an epoch draws
``samples`` windows (nnU-Net draws 250 batches per epoch, MMSegmentation iterates without epochs):

- images are picked in proportion to their area (each image's count exact to less than one, its windows spread
  evenly through the epoch, so a batch holds distinct images as far as the areas allow), a window position
  uniformly inside the image;
- ``cat_max_ratio`` (MMSegmentation's RandomCrop): a window smaller than its image is re-drawn, up to ``max_tries``
  times, while one class fills more than that share of its labelled pixels (the last draw is kept);
- ``rare_windows`` (nnU-Net's 1/3 foreground oversampling): that share of windows is centred on a pixel of a class
  other than the most frequent one; the class is drawn with weight 1/sqrt(its pixel share), so rarer classes come
  first, then the pixel uniformly among that class's pixels of the training set (its image in proportion to its
  count there);
- the draw depends only on (seed, epoch): every DDP rank draws the same list and rank r takes windows r, r+w, ...,
  so the ranks' shares are disjoint and together are the epoch's draw.

``WindowSampler`` yields ``Window`` keys, ``WindowDataset`` turns a key into the cropped, augmented sample; the
DataLoader passes keys from one to the other, so no state is shared with worker processes. ``TileDataset`` cuts
validation images into tiles that score every pixel exactly once.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .io import image_size
from .transforms import pad_for_eval

MAX_TRIES = 10  # cat_max_ratio re-draws, as MMSegmentation
MAX_LOCATIONS = 1000  # stored pixel positions per class and image for rare windows (nnU-Net keeps 10k per class)


class Window(NamedTuple):
    """A training window: image ``index``, top-left (``y``, ``x``), size ``h`` x ``w``; ``rare`` = centred class."""

    index: int
    y: int
    x: int
    h: int
    w: int
    rare: int = -1  # the class whose pixel the window is centred on; -1 for a plain random window


def window_size(size: tuple[int, int], crop: int) -> tuple[int, int]:
    """Window (h, w) in an image of ``size``: ``crop`` square, cut to the image (the transform pads it back)."""
    h, w = size
    return (h, w) if crop <= 0 else (min(crop, h), min(crop, w))


class WindowIndex:
    """Per training image: size, class pixel counts, class-count integrals on a coarse grid, class pixel positions.

    The integrals give any window's class histogram in O(classes) for ``cat_max_ratio``; positions (a uniform
    subsample of at most ``MAX_LOCATIONS`` per class) give rare windows their centres.
    """

    def __init__(self, sizes: Sequence[tuple[int, int]], counts: np.ndarray, cell: int,
                 integrals: list[dict[int, np.ndarray]], locations: list[dict[int, np.ndarray]]):
        self.sizes = [(int(h), int(w)) for h, w in sizes]
        self.counts, self.cell, self.integrals, self.locations = counts, cell, integrals, locations

    @classmethod
    def from_masks(cls, masks: Iterable[np.ndarray | None], num_classes: int, ignore_index: int, cell: int = 16,
                   max_locations: int = MAX_LOCATIONS, seed: int = 0) -> "WindowIndex":
        """Index decoded (H, W) class-index masks (None = unlabelled: no classes), one pass."""
        rng = np.random.default_rng(abs(int(seed)))
        sizes, counts, integrals, locations = [], [], [], []
        for mask in masks:
            if mask is None:
                raise ValueError("window sampling needs every training image's mask")
            h, w = mask.shape[:2]
            sizes.append((h, w))
            valid = (mask != ignore_index) & (mask >= 0) & (mask < num_classes)
            flat = np.where(valid, mask, num_classes).astype(np.int64).ravel()
            counts.append(np.bincount(flat, minlength=num_classes + 1)[:num_classes])
            gh, gw = -(-h // cell), -(-w // cell)
            padded = np.full((gh * cell, gw * cell), num_classes, dtype=np.int64)
            padded[:h, :w] = flat.reshape(h, w)
            grid_of, where = {}, {}
            for c in np.flatnonzero(counts[-1]):
                cells = (padded == c).reshape(gh, cell, gw, cell).sum((1, 3), dtype=np.int32)
                grid_of[int(c)] = np.pad(cells.cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32), ((1, 0), (1, 0)))
                pos = np.flatnonzero(flat == c)
                where[int(c)] = pos if len(pos) <= max_locations else rng.choice(pos, max_locations, replace=False)
            integrals.append(grid_of)
            locations.append(where)
        if not sizes:
            raise ValueError("no training masks to index")
        return cls(sizes, np.stack(counts), cell, integrals, locations)

    @classmethod
    def from_dataset(cls, ds, cell: int = 16, seed: int = 0) -> "WindowIndex":
        """Index a SegmentationDataset's masks (its cache when decoded, else decoding each pair once)."""
        cached = ds.cached_arrays()
        masks = (m for _, m in cached) if cached is not None else (ds.load_pair(s)[1] for s in ds.samples)
        return cls.from_masks(masks, ds.codec.num_classes, ds.codec.ignore_index, cell, seed=seed)

    def class_shares(self) -> np.ndarray:
        """Pixel share of each class over the indexed masks (ignore_index not counted)."""
        total = self.counts.sum(0).astype(np.float64)
        return total / max(total.sum(), 1.0)

    def max_share(self, i: int, y: int, x: int, h: int, w: int) -> float:
        """Share of the window's labelled pixels held by its most frequent class; 1.0 with fewer than two classes.

        Counted on the coarse grid (window edges rounded to cells): exact enough to compare with 0.75.
        """
        c = self.cell
        y0, y1 = round(y / c), max(round((y + h) / c), round(y / c) + 1)
        x0, x1 = round(x / c), max(round((x + w) / c), round(x / c) + 1)
        found = []
        for grid in self.integrals[i].values():
            gy1, gx1 = min(y1, grid.shape[0] - 1), min(x1, grid.shape[1] - 1)
            n = int(grid[gy1, gx1] - grid[y0, gx1] - grid[gy1, x0] + grid[y0, x0])
            if n > 0:
                found.append(n)
        return max(found) / sum(found) if len(found) > 1 else 1.0


def spread_draw(p: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """``total`` image indices, each image's count its share ``p`` of ``total`` (systematic sampling: off by less
    than one), its draws spaced evenly through the epoch at a random phase.

    Independent draws (``rng.choice(p=...)``) put the same image twice into most batches of a small dataset (24
    images, batch 8: 7 batches in 10), and two windows of one image overlap: a smaller effective batch. Spread out,
    equal images give a batch distinct images as shuffled epochs do, and large images still get their share.
    """
    cum = np.concatenate([[0.0], np.cumsum(p, dtype=np.float64)])
    cum /= cum[-1]  # exactly 1 at the end, so the counts add up to total
    counts = np.diff(np.floor(cum * total + rng.random()).astype(np.int64))
    index = np.repeat(np.arange(len(p)), counts)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(index)) - np.repeat(start, counts)  # 0..count-1 within each image
    phase = (slot + rng.random(len(index))) / np.repeat(np.maximum(counts, 1), counts)  # evenly spaced, jittered
    return index[np.argsort(phase, kind="stable")]


class WindowSampler(torch.utils.data.Sampler):
    """``samples`` windows per epoch, the same draw on every rank for (seed, epoch); rank r takes r, r+world, ...

    ``samples`` is rounded up to a multiple of ``world`` so every rank runs the same number of steps (DDP would
    otherwise wait forever for the rank with fewer). ``index`` is needed for ``cat_max_ratio`` < 1 and
    ``rare_windows`` > 0. Call ``set_epoch`` before each epoch, as with DistributedSampler.
    """

    def __init__(self, sizes: Sequence[tuple[int, int]], crop: int, samples: int, seed: int, rank: int = 0,
                 world: int = 1, *, index: WindowIndex | None = None, cat_max_ratio: float = 1.0,
                 rare_windows: float = 0.0, max_tries: int = MAX_TRIES):
        if samples < 1:
            raise ValueError(f"samples={samples}: an epoch needs at least one window")
        if index is None and (cat_max_ratio < 1.0 or rare_windows > 0.0):
            raise ValueError("cat_max_ratio < 1 and rare_windows > 0 need a WindowIndex of the training masks")
        self.sizes = [(int(h), int(w)) for h, w in sizes]
        self.crop, self.seed, self.rank, self.world = crop, seed, rank, world
        self.total = math.ceil(samples / world) * world
        self.index, self.cat_max_ratio, self.rare_windows = index, cat_max_ratio, rare_windows
        self.max_tries = max_tries
        areas = np.array([h * w for h, w in self.sizes], dtype=np.float64)
        self.image_p = areas / areas.sum()
        self.epoch = 0
        self.rare_classes, self.rare_p, self.rare_image_p = self._rare_tables()

    def _rare_tables(self) -> tuple[list[int], np.ndarray, dict[int, np.ndarray]]:
        """Classes windows may be centred on (all but the most frequent), their draw weights and image weights."""
        if self.index is None or self.rare_windows <= 0:
            return [], np.zeros(0), {}
        total = self.index.counts.sum(0)
        dominant = int(total.argmax())
        classes = [int(c) for c in np.flatnonzero(total) if c != dominant]
        if not classes:
            return [], np.zeros(0), {}
        share = total[classes] / total.sum()
        weight = share ** -0.5  # rarer first, without one speck of a class taking every centred window
        image_p = {c: self.index.counts[:, c] / total[c] for c in classes}
        return classes, weight / weight.sum(), image_p

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draw ``__iter__`` yields."""
        self.epoch = epoch

    def draw(self, epoch: int) -> list[Window]:
        """The whole epoch's windows, for all ranks (deterministic in seed and epoch)."""
        rng = np.random.default_rng([abs(int(self.seed)), int(epoch)])
        rare = np.zeros(self.total, dtype=bool)
        if self.rare_classes:
            rare[: round(self.total * self.rare_windows)] = True
            rng.shuffle(rare)  # centred windows spread over the epoch's batches and over the ranks
        images = spread_draw(self.image_p, self.total, rng)
        return [self._centred(rng) if r else self._random(int(i), rng) for i, r in zip(images, rare)]

    def _random(self, i: int, rng: np.random.Generator) -> Window:
        """A uniform window position in image ``i``, re-drawn while one class fills more than cat_max_ratio."""
        H, W = self.sizes[i]
        h, w = window_size((H, W), self.crop)
        tries = self.max_tries if self.cat_max_ratio < 1.0 and (h, w) != (H, W) else 1
        for _ in range(tries):
            y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
            if tries == 1 or self.index.max_share(i, y, x, h, w) < self.cat_max_ratio:
                break
        return Window(i, y, x, h, w)

    def _centred(self, rng: np.random.Generator) -> Window:
        """A window centred (as far as the image allows) on a random pixel of a rare class."""
        c = self.rare_classes[int(rng.choice(len(self.rare_classes), p=self.rare_p))]
        i = int(rng.choice(len(self.sizes), p=self.rare_image_p[c]))
        H, W = self.sizes[i]
        h, w = window_size((H, W), self.crop)
        positions = self.index.locations[i][c]
        py, px = divmod(int(positions[rng.integers(len(positions))]), W)
        y, x = min(max(py - h // 2, 0), H - h), min(max(px - w // 2, 0), W - w)
        return Window(i, y, x, h, w, c)

    def __iter__(self) -> Iterator[Window]:
        return iter(self.draw(self.epoch)[self.rank:: self.world])

    def __len__(self) -> int:
        return self.total // self.world


def _to_item(image: np.ndarray, mask: np.ndarray, index: int, size: tuple[int, int], **extra) -> dict:
    """The sample dict SegmentationDataset hands out (image C,H,W in its dtype, mask int64)."""
    # np.require copies read-only cached arrays, which torch cannot wrap safely
    return {"image": torch.from_numpy(np.require(image.transpose(2, 0, 1), requirements=["C", "W"])),
            "mask": torch.from_numpy(np.require(mask, requirements=["C", "W"])).long(), "index": index,
            "size": size, **extra}


class WindowDataset(Dataset):
    """Training windows of a SegmentationDataset: crop its (cached or decoded) pair at a ``Window``, then transform.

    Keys are ``Window``s from a WindowSampler; an int key gives the whole image (as the base dataset would).
    ``transform`` is the usual training transform (build_train_transform with the same ``crop``: on a window of
    that size its crop is a no-op and its padding fills windows of images smaller than the crop).
    """

    def __init__(self, base, transform: Callable | None = None):
        self.base, self.transform, self.codec = base, transform, base.codec

    @property
    def samples(self) -> list:
        """The base dataset's samples (image i of a Window is samples[i])."""
        return self.base.samples

    def __len__(self) -> int:
        return len(self.base)

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``i`` and its mask (ignore_index where there is no mask), from the cache or decoded."""
        cached = self.base.cached_arrays()
        image, mask = cached[i] if cached is not None else self.base.load_pair(self.base.samples[i])
        if mask is None:
            mask = np.full(image.shape[:2], self.codec.ignore_index, dtype=np.int64)
        return image, mask

    def __getitem__(self, key: Window | int) -> dict:
        if isinstance(key, Window):
            image, mask = self.pair(key.index)
        else:
            image, mask = self.pair(int(key))
            key = Window(int(key), 0, 0, *image.shape[:2])
        image = image[key.y: key.y + key.h, key.x: key.x + key.w]
        mask = mask[key.y: key.y + key.h, key.x: key.x + key.w]
        if self.transform is not None:
            out = self.transform(image=np.ascontiguousarray(image), mask=np.ascontiguousarray(mask))
            image, mask = out["image"], out["mask"]
            if image.ndim == 2:
                image = image[..., None]
        return _to_item(image, mask, key.index, (key.h, key.w), window=(key.y, key.x))


def tile_starts(length: int, tile: int) -> list[tuple[int, int]]:
    """(start, first owned offset) of tiles covering ``length``: the last tile ends at the border, and the rows it
    shares with the previous tile are owned (scored) by that one."""
    if tile <= 0 or length <= tile:
        return [(0, 0)]
    starts = list(range(0, length - tile + 1, tile))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return [(s, max(0, (prev + tile) - s) if k else 0) for k, (s, prev) in enumerate(zip(starts, [0] + starts))]


class TileDataset(Dataset):
    """Validation tiles of ``tile`` px over each image of a SegmentationDataset, every pixel scored exactly once.

    Tiles overlap only where the last tile of a row or column is moved back inside the image; the pixels already
    scored by the previous tile are set to ignore_index in its mask, so the confusion matrix over all tiles equals
    the whole-image one (up to the model seeing less context at tile borders). Per-image metrics become per-tile.
    """

    def __init__(self, base, tile: int, sizes: Sequence[tuple[int, int]] | None = None):
        self.base, self.tile, self.codec = base, tile, base.codec
        if sizes is None:
            cached = base.cached_arrays()
            sizes = [img.shape[:2] for img, _ in cached] if cached is not None else \
                [image_size(Path(s.image)) for s in base.samples]
        self.tiles = [(i, y, x, oy, ox) for i, (h, w) in enumerate(sizes)
                      for y, oy in tile_starts(h, tile) for x, ox in tile_starts(w, tile)]

    @property
    def samples(self) -> list:
        """The base dataset's samples."""
        return self.base.samples

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, k: int) -> dict:
        i, y, x, oy, ox = self.tiles[k]
        cached = self.base.cached_arrays()
        image, mask = cached[i] if cached is not None else self.base.load_pair(self.base.samples[i])
        ignore = self.codec.ignore_index
        if mask is None:
            mask = np.full(image.shape[:2], ignore, dtype=np.int64)
        image = image[y: y + self.tile, x: x + self.tile] if self.tile > 0 else image
        mask = (mask[y: y + self.tile, x: x + self.tile] if self.tile > 0 else mask).astype(np.int64)
        mask[:oy] = ignore  # scored by the tile above
        mask[:, :ox] = ignore  # scored by the tile to the left
        if self.base.pad_to:
            image, mask, _ = pad_for_eval(image, mask, self.base.pad_to, self.base.pad_mode, ignore)
        return _to_item(image, mask, i, image.shape[:2], tile=(y, x))
