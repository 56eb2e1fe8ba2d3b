"""Turn stored masks (index, 0/255 binary, palette, RGB colour) into class-index arrays.

``infer_mask_codec`` looks at a sample of masks once and decides how they are encoded; the
resulting ``MaskCodec`` is saved with the run so evaluation and prediction decode the same way.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .io import read_mask_raw

MAX_TABLE_COLOURS = 64
# More classes than this are never inferred from mask values alone: num_classes= must say so.
MANY_CLASSES = 64


def _pack(rgb: np.ndarray) -> np.ndarray:
    """Pack (..., 3) uint colours into one int64 per pixel for fast look-ups."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 32) | (rgb[..., 1] << 16) | rgb[..., 2]


def _fmt(key: int | Sequence[int]) -> str:
    """A colour or gray value as the user would write it in `colors`."""
    return f"[{', '.join(str(int(v)) for v in key)}]" if isinstance(key, (list, tuple)) else str(int(key))


@dataclass
class MaskCodec:
    """How masks are stored and how to decode them into class indices (ignore_index kept)."""

    mode: str  # index | binary | palette | rgb (a colour or gray-value table)
    num_classes: int
    ignore_index: int = 255
    fg_value: int = 255  # binary: the stored value of the object
    colors: list = field(default_factory=list)  # rgb: one colour [r,g,b] (or gray value) per class index

    def to_dict(self) -> dict:
        """Plain dict to store in a run's config and checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MaskCodec":
        """Inverse of to_dict."""
        return cls(**d)

    @property
    def binary(self) -> bool:
        """True for two-class tasks, which use one logit and a sigmoid."""
        return self.num_classes == 2

    def decode(self, raw: np.ndarray, path: str | Path = "<mask>") -> np.ndarray:
        """Raw mask -> (H, W) int64 class indices; unknown colours or out-of-range indices raise DataError."""
        if self.mode == "rgb":
            return self._decode_table(raw, path)
        if raw.ndim == 3:
            raise DataError(f"{path}: RGB colour mask, but masks were detected as {self.mode!r}; "
                            "set mask_mode=rgb and colors=[[r,g,b],...] (run `seglab data check` to get the table)")
        if self.mode == "binary":
            out = (raw.astype(np.int64) * 2 > self.fg_value).astype(np.int64)  # tolerate JPEG-style noise
            if self.ignore_index not in (0, 1, self.fg_value):
                out[raw == self.ignore_index] = self.ignore_index
            return out
        out = raw.astype(np.int64)
        bad = (out >= self.num_classes) & (out != self.ignore_index) | (out < 0)
        if bad.any():
            values = sorted(int(v) for v in np.unique(out[bad]))[:8]
            raise DataError(f"{path}: class index {values} out of range for num_classes={self.num_classes} "
                            f"(valid 0..{self.num_classes - 1}, ignore_index={self.ignore_index}); "
                            "raise num_classes or set ignore_index")
        return out

    def _decode_table(self, raw: np.ndarray, path: str | Path) -> np.ndarray:
        """Map colours (or gray values) through the colour table."""
        rgb_table = bool(self.colors) and isinstance(self.colors[0], (list, tuple))
        gray = raw
        if rgb_table and raw.ndim == 2:
            raw = np.repeat(raw[..., None], 3, axis=2)  # gray-looking mask, colour table
        if not rgb_table and raw.ndim == 3:
            raise DataError(f"{path}: RGB mask but `colors` lists gray values; give [r,g,b] per class")
        keys = _pack(raw) if rgb_table else raw.astype(np.int64)
        table = np.array([_pack(np.array(c)) if rgb_table else int(c) for c in self.colors], dtype=np.int64)
        order = np.argsort(table)
        pos = np.clip(np.searchsorted(table[order], keys), 0, len(table) - 1)
        found = table[order][pos] == keys
        if not found.all():
            if gray.ndim == 2 and rgb_table:
                values = np.unique(gray[~found])
                if looks_like_class_indices(values.tolist(), self.ignore_index):
                    raise DataError(index_masks_with_colors(path, values.tolist(), self.colors))
            unknown = Counter(map(int, keys[~found].ravel()[:100000])).most_common(5)
            shown = ", ".join(_fmt(_unpack(k) if rgb_table else k) + f" ({n} px)" for k, n in unknown)
            raise DataError(f"{path}: unknown mask colour(s) {shown}; known: "
                            f"{', '.join(_fmt(c) for c in self.colors)}. Make each a class (a row name,r,g,b of "
                            "classes.csv, or an entry of colors=[...]), or repaint those pixels; `seglab data check` "
                            "lists every file")
        return order[pos].astype(np.int64)


# Masks whose values are all below this (ignore_index aside) look like class indices rather than colours.
MAX_INDEX_VALUE = 64


def looks_like_class_indices(values: Sequence[int], ignore_index: int) -> bool:
    """True for gray mask values that are all small integers (0, 1, 2, ...): class indices, not colours."""
    real = [int(v) for v in values if int(v) != ignore_index]
    return bool(real) and max(real) < MAX_INDEX_VALUE


def index_masks_with_colors(where: str | Path, values: Sequence[int], colors: Sequence) -> str:
    """The message for index masks read through an RGB colour table (e.g. a recipe's ``colors``)."""
    shown = sorted(int(v) for v in values)[:12]
    return (f"{where}: the masks hold small integers {shown}, which look like class indices, but `colors` "
            f"{[list(c) if isinstance(c, (list, tuple)) else c for c in colors][:6]} (perhaps from a recipe) maps RGB "
            "colours to classes; pass mask_mode=index (or colors=[]) to read the masks as class indices")


def _unpack(key: int) -> list[int]:
    """Inverse of _pack for one colour."""
    return [(key >> 32) & 0xFFFF, (key >> 16) & 0xFFFF, key & 0xFFFF]


@dataclass
class MaskSurvey:
    """What a sample of masks looks like: value/colour counts, storage kinds, and the files that are no label maps.

    Files with findings that are errors (interpolated, lossy JPEG, hundreds of values) are left out of the counts,
    so one anti-aliased mask cannot turn a binary dataset into 255 classes; ``findings`` names them.
    """

    value_counts: Counter = field(default_factory=Counter)  # gray values or packed colours -> pixels
    rgb: bool = False
    gray: bool = False
    palette: bool = False
    files: int = 0
    inspected: int = 0  # masks read, suspicious ones included
    findings: list = field(default_factory=list)  # LabelFinding per suspicious file
    file_values: dict = field(default_factory=dict)  # path -> sorted distinct gray values (gray masks only)
    palette_file: Path | None = None  # a palette PNG (its colour table gives VOC-style class colours)

    def add(self, raw: np.ndarray, palette: bool, path: Path | None = None) -> None:
        """Count one raw mask."""
        self.files += 1
        self.palette |= palette
        if palette and self.palette_file is None:
            self.palette_file = path
        if raw.ndim == 3:
            self.rgb = True
            keys, counts = np.unique(_pack(raw), return_counts=True)
        else:
            self.gray = True
            keys, counts = np.unique(raw, return_counts=True)
            if path is not None:
                self.file_values[path] = [int(k) for k in keys[:4096].tolist()]
        for k, n in zip(keys.tolist(), counts.tolist()):
            self.value_counts[int(k)] += int(n)
            if len(self.value_counts) > 4096:
                break


def survey_masks(paths: Sequence[Path], max_files: int = 64, declared: bool = False,
                 ignore_index: int = 255) -> MaskSurvey:
    """Read an evenly spaced sample of masks, inspect each (``labels.inspect_mask``) and count their values."""
    from .labels import inspect_mask

    survey = MaskSurvey()
    step = max(1, len(paths) // max_files)
    errors = []
    suspects = []
    for p in list(paths)[::step][:max_files]:
        try:
            raw, palette = read_mask_raw(p)
        except DataError as e:  # reported with every other bad file when the dataset is decoded
            errors.append(e)
            continue
        survey.inspected += 1
        _, found = inspect_mask(p, raw, declared, ignore_index, palette)
        survey.findings += found
        if any(f.error for f in found):
            suspects.append((raw, palette, p))
            continue
        survey.add(raw, palette, p)
    if not survey.files:  # every mask is suspicious: count them all (the findings still stop training)
        for raw, palette, p in suspects:
            survey.add(raw, palette, p)
    if not survey.files:
        raise errors[0] if errors else DataError("no mask files to inspect")
    return survey


def infer_mask_codec(paths: Sequence[Path], mode: str = "auto", num_classes: int = 0, ignore_index: int = 255,
                     colors: Sequence = (), strict: bool = True, table_colors: Sequence = (),
                     survey: MaskSurvey | None = None) -> tuple[MaskCodec, list[str]]:
    """Decide how masks are encoded from a sample; returns the codec and notices for the user.

    Masks that are no clean label maps (``labels.inspect_mask``) are refused by name when ``strict`` (unless the
    user declared how to read them: mask_mode=, colors=, num_classes=); otherwise they are left out of the decision.
    ``table_colors``: a class table's colours (classes.csv r,g,b), the decode table for RGB masks when ``colors``
    is not given.
    """
    if not paths:
        raise DataError("no mask files to inspect")
    declared = mode != "auto" or bool(colors) or num_classes > 0
    survey = survey or survey_masks(paths, declared=declared, ignore_index=ignore_index)
    notes: list[str] = []
    if strict and any(f.error for f in survey.findings):
        from .labels import format_findings

        raise DataError(format_findings(survey.findings, survey.inspected))
    notes += [f"{f} (warning)" for f in survey.findings if not f.error]
    values = sorted(survey.value_counts)
    if not colors and table_colors and (mode == "rgb" or (mode == "auto" and survey.rgb)):
        colors = [list(c) for c in table_colors]
        notes.append(f"RGB colour masks read through the class table's colours ({len(colors)} classes, "
                     "classes.csv r,g,b)")
    if colors or mode == "rgb":
        if not colors:
            colors = suggest_colors(survey)
            notes.append(f"mask colours taken in order of pixel frequency: colors={colors}; "
                         "set `colors` to fix the class order")
        _need_two_classes(colors, paths[0].parent)
        _refuse_index_masks_with_colour_table(survey, colors, ignore_index, paths[0].parent)
        return MaskCodec("rgb", len(colors), ignore_index, colors=[list(c) if isinstance(c, (list, tuple)) else c
                                                                     for c in colors]), notes
    if survey.rgb and mode == "auto":
        if len(values) > MAX_TABLE_COLOURS:
            raise DataError(f"{paths[0].parent}: RGB masks with {len(values)}+ distinct colours look like photos, "
                            "not label masks; check mask_dir")
        colors = suggest_colors(survey)
        _need_two_classes(colors, paths[0].parent)
        notes.append(f"RGB colour masks: {len(colors)} colours, classes in order of pixel frequency: colors={colors}. "
                     "Set `colors` in your config to fix this order")
        return MaskCodec("rgb", len(colors), ignore_index, colors=colors), notes
    if survey.palette and mode in ("auto", "palette"):
        n = num_classes or max(v for v in values if v != ignore_index) + 1
        return MaskCodec("palette", n, ignore_index), notes
    fg = [v for v in values if v != 0]
    if mode in ("auto", "binary") and len(fg) == 1 and fg[0] in (255, 65535) and num_classes in (0, 2):
        notes.append(f"binary masks stored as 0/{fg[0]}: mapped to background 0 / object 1")
        return MaskCodec("binary", 2, ignore_index, fg_value=fg[0]), notes  # stored fg wins over ignore_index
    if mode == "binary":
        top = max(values)
        return MaskCodec("binary", 2, ignore_index, fg_value=top if top > 1 else 1), notes
    real = [v for v in values if v != ignore_index]
    if mode == "auto" and len(real) >= 2 and max(real) >= 2 * len(real) and len(real) <= 16 and num_classes == 0:
        notes.append(f"gray-level masks with values {real}: mapped to classes 0..{len(real) - 1} in ascending order; "
                     f"set colors={real} to make this explicit")
        return MaskCodec("rgb", len(real), ignore_index, colors=real), notes
    n = num_classes or (max(real) + 1 if real else 2)
    if n > MANY_CLASSES and not num_classes:
        msg = (f"{paths[0].parent}: the masks hold values up to {max(real)}, which as class indices would be {n} "
               "classes; seglab does not switch to that many classes on its own. If they are real classes, set "
               f"num_classes={n}; if the masks were resized or saved with smoothing, re-export them with "
               "nearest-neighbour resampling as PNG (run `seglab data check` to see the values of each file)")
        if strict:
            raise DataError(msg)
        notes.append(msg)
    return MaskCodec("index", max(n, 2), ignore_index), notes


def _need_two_classes(colors: Sequence, folder: Path) -> None:
    """A colour table with one entry would train a one-class model that learns nothing: say so instead."""
    if len(colors) < 2:
        raise DataError(f"{folder}: the masks hold a single colour/value {list(colors)}, so there is nothing to "
                        "segment; check mask_dir, or list every class in `colors` (at least two)")


def _refuse_index_masks_with_colour_table(survey: MaskSurvey, colors: Sequence, ignore_index: int,
                                          folder: Path) -> None:
    """Gray masks of small integers that an RGB colour table does not list: say they are indices, before training."""
    rgb_table = bool(colors) and isinstance(colors[0], (list, tuple))
    if not rgb_table or survey.rgb:
        return
    known = {_pack(np.array(c)) for c in colors}
    unknown = [v for v in survey.value_counts if int(_pack(np.array([v, v, v]))) not in known]
    if unknown and looks_like_class_indices(list(survey.value_counts), ignore_index):
        raise DataError(index_masks_with_colors(folder, list(survey.value_counts), colors))


def suggest_colors(survey: MaskSurvey) -> list:
    """Colour table in order of pixel frequency (background is usually the most frequent)."""
    ordered = [k for k, _ in survey.value_counts.most_common()]
    return [_unpack(k) for k in ordered] if survey.rgb else ordered
