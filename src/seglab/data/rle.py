"""Kaggle run-length encoding of binary masks and the ``id,rle_mask`` CSV files that carry it.

Format (TGS Salt and most Kaggle segmentation competitions): pixels are numbered from 1 in
column-major (Fortran) order, i.e. top to bottom then left to right; the string is space-separated
"start length" pairs of foreground runs, sorted and non-overlapping; an empty mask is the empty string.
Hand-written because the format is a few lines of numpy and no maintained library implements this
exact column-major 1-based convention (pycocotools' RLE is a different, binary format).
"""
from __future__ import annotations

import csv
from pathlib import Path
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import DataError

ID_COLUMNS = ("id", "ImageId")
RLE_COLUMNS = ("rle_mask", "EncodedPixels")


def rle_encode(mask: np.ndarray) -> str:
    """Run-length encode a 2-D mask (non-zero = foreground) as 1-based column-major "start length" pairs."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"rle_encode needs a 2-D (H, W) mask; got shape {array.shape}")
    pixels = np.concatenate([[False], array.ravel(order="F") != 0, [False]])
    # Positions (1-based) where the value flips: run starts and run ends alternate.
    changes = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    starts, ends = changes[0::2], changes[1::2]
    return " ".join(f"{start} {length}" for start, length in zip(starts, ends - starts))


def _parse_runs(rle: str) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of an RLE string, as int64 arrays; DataError naming a bad token."""
    tokens = rle.split()
    if len(tokens) % 2:
        raise DataError(f"RLE has an odd number of values ({len(tokens)}); it must be 'start length' pairs")
    for token in tokens:
        if not (token.isascii() and token.isdigit()):
            raise DataError(f"RLE value {token!r} is not a non-negative integer")
    values = np.array(tokens, dtype=np.int64).reshape(-1, 2)
    return values[:, 0], values[:, 1]


def _is_mask_shape(shape: object) -> bool:
    """True for a (height, width) pair of positive integers."""
    try:
        sides = tuple(shape)  # type: ignore[arg-type]
    except TypeError:
        return False
    return len(sides) == 2 and all(
        isinstance(side, (int, np.integer)) and not isinstance(side, bool) and side >= 1 for side in sides
    )


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode a Kaggle RLE string into an ``(H, W)`` uint8 0/1 mask; DataError on malformed or out-of-bounds runs."""
    if not isinstance(rle, str):
        raise ValueError(f"rle must be a string ('' for an empty mask); got {type(rle).__name__} {rle!r}")
    if not _is_mask_shape(shape):
        raise ValueError(f"shape must be (height, width) with positive integers; got {shape!r}")
    height, width = int(shape[0]), int(shape[1])
    starts, lengths = _parse_runs(rle)
    num_pixels = height * width
    if (starts < 1).any():
        raise DataError(f"RLE run start {int(starts[starts < 1][0])} is invalid: pixel numbers start at 1")
    if (lengths < 1).any():
        bad = int(np.flatnonzero(lengths < 1)[0])
        raise DataError(f"RLE run {bad + 1} (start {int(starts[bad])}) has length 0; lengths must be >= 1")
    ends = starts + lengths - 1  # last pixel of each run, inclusive
    if (ends > num_pixels).any():
        bad = int(np.flatnonzero(ends > num_pixels)[0])
        raise DataError(
            f"RLE run {bad + 1} ({int(starts[bad])} {int(lengths[bad])}) ends at pixel {int(ends[bad])}, "
            f"beyond the {num_pixels} pixels of a {height}x{width} mask; check the shape"
        )
    if len(starts) > 1 and (starts[1:] <= ends[:-1]).any():
        bad = int(np.flatnonzero(starts[1:] <= ends[:-1])[0]) + 1
        raise DataError(
            f"RLE run {bad + 1} starts at pixel {int(starts[bad])} but the previous run ends at "
            f"{int(ends[bad - 1])}; runs must be sorted and must not overlap"
        )
    # +1 at each run start, -1 after each run end; the running sum is 1 inside runs.
    steps = np.zeros(num_pixels + 1, dtype=np.int32)
    steps[starts - 1] += 1
    steps[ends] -= 1
    flat = np.cumsum(steps[:-1]).astype(np.uint8)
    return flat.reshape((height, width), order="F")


def read_rle_csv(path: str | Path) -> dict[str, str]:
    """Read an ``id,rle_mask`` CSV (also ``ImageId,EncodedPixels``) into ``{id: rle}``; missing RLE = ''."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: not a readable RLE CSV ({error})") from None
    except OSError as error:
        raise DataError(f"cannot read RLE CSV {path}: {error.strerror or error}") from error
    if not rows:
        raise DataError(f"RLE CSV {path} is empty; expected a header 'id,rle_mask'")
    header = [name.strip() for name in rows[0]]
    id_col = next((header.index(name) for name in ID_COLUMNS if name in header), None)
    rle_col = next((header.index(name) for name in RLE_COLUMNS if name in header), None)
    if id_col is None or rle_col is None:
        raise DataError(
            f"RLE CSV {path} has header {header}; expected an id column ({' or '.join(ID_COLUMNS)}) "
            f"and an RLE column ({' or '.join(RLE_COLUMNS)})"
        )
    table: dict[str, str] = {}
    for line_number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) <= id_col:
            raise DataError(f"{path}, line {line_number}: missing the id column")
        image_id = row[id_col].strip()
        if image_id in table:
            raise DataError(f"{path}, line {line_number}: id {image_id!r} appears twice")
        table[image_id] = row[rle_col].strip() if len(row) > rle_col else ""
    return table


def write_submission(path: str | Path, ids: Sequence[str], masks: Iterable[np.ndarray]) -> Path:
    """Write a Kaggle ``id,rle_mask`` submission CSV, one RLE-encoded mask per id; returns the path."""
    path = Path(path)
    ids = [str(image_id) for image_id in ids]
    encoded = [rle_encode(mask) for mask in masks]
    if len(encoded) != len(ids):
        raise ValueError(f"write_submission got {len(ids)} ids but {len(encoded)} masks; pass one mask per id")
    if len(set(ids)) != len(ids):
        raise ValueError("write_submission got duplicate ids; each image must appear once")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "rle_mask"])
        writer.writerows(zip(ids, encoded))
    return path
