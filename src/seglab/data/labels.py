"""The truth about label maps: class tables with colours, void classes, and masks that are not clean label maps.

- ``read_class_table``: ``classes.csv`` (``name`` or ``index,name`` and optional ``r,g,b`` columns, header or not)
  or ``classes.txt`` beside the data: class names and their display colours.
- ``void_class``: the class a table names "Unlabelled", "void", "ignore", ... (left out of loss and metrics).
- ``inspect_mask``: one stored mask's distinct values and the tell-tales of interpolation (grey or colour ramps
  along edges from a smoothing resize or anti-aliasing; JPEG compression), each a ``LabelFinding`` naming the file
  and the fix. ``plan_data`` refuses such data before training; ``seglab data check`` lists every file.
- ``resolve_class_colors``: one output colour per class (``palette=``, the class table, the masks' own colours or
  PNG palette, else the built-in palette), stored in a run's metadata as ``class_colors``.
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# Class names (case-insensitive, "_"/" " read as "-") that mean "no label here": ignored in loss and metrics.
VOID_NAMES = ("unlabelled", "unlabeled", "void", "ignore", "ignored", "background-ignore", "dontcare", "don't-care")
_GENERIC_NAME = re.compile(r"^class[ _-]?\d+$", re.IGNORECASE)  # the names seglab gives classes nobody named
# Class names that mean "nothing of interest here": left unpainted in overlays, not measured as grains. A first class
# named otherwise (quartz, Sky) is a class like the others.
BACKGROUND_NAMES = ("background", "-background-", "bg", "backdrop", "none", "other", "matrix")
# A value on fewer than this share of a mask's pixels is "minor" (a ramp or noise value, or a really rare class);
# the others are the mask's main values, named in the messages.
MINOR_SHARE = 0.005
# Interpolation is suspected when at least this many values lie mostly between other values along edges.
MIN_RAMP_VALUES = 3
# Values on more than this share of a mask's pixels are never taken for ramp values.
RAMP_SHARE = 0.05
# A gray mask with more distinct values than this is not a label map of a few classes unless the user says so.
MANY_VALUES = 64
JPEG_MAGIC = b"\xff\xd8\xff"
FIX_RESAMPLE = "re-export the masks as PNG (lossless) resized with nearest-neighbour resampling (no smoothing, " \
               "no anti-aliasing)"


@dataclass
class LabelFinding:
    """One problem with one mask file: what it is, the evidence, and the fix; ``error`` ones stop training."""

    path: Path
    kind: str  # interpolated | jpeg | many_values
    detail: str
    fix: str
    error: bool = True

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}; fix: {self.fix}"


# ---- class tables ----------------------------------------------------------------------------------------------

def _is_int(text: str) -> bool:
    try:
        int(text.strip())
        return True
    except ValueError:
        return False


def read_class_table(root: Path) -> tuple[list[str], list[list[int]]]:
    """Class names and colours ([] when the table has none) from ``classes.csv`` or ``classes.txt`` in ``root``.

    ``classes.csv`` takes a header (``name``/``class``, optional ``index``/``id``, ``r,g,b`` or ``red,green,blue``)
    or none (rows ``name``, ``name,r,g,b`` or ``index,name,r,g,b``); rows are put in ``index`` order when given.
    """
    from ..errors import DataError

    csv_path, txt_path = root / "classes.csv", root / "classes.txt"
    if csv_path.exists():
        try:
            with csv_path.open(newline="", encoding="utf-8-sig") as f:
                rows = [[c.strip() for c in r] for r in csv.reader(f) if r and any(c.strip() for c in r)]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"{csv_path}: cannot read the class table ({e})") from None
        return _parse_class_rows(rows, csv_path)
    if txt_path.exists():
        try:
            lines = txt_path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{txt_path}: cannot read the class list ({e})") from None
        return [ln.strip() for ln in lines if ln.strip()], []
    return [], []


def _parse_class_rows(rows: list[list[str]], path: Path) -> tuple[list[str], list[list[int]]]:
    """Names and colours of class-table rows (see ``read_class_table``)."""
    from ..errors import DataError

    if not rows:
        return [], []
    head = [c.lower() for c in rows[0]]
    names_col = next((head.index(k) for k in ("name", "class", "class_name", "label") if k in head), None)
    if names_col is not None or not any(_is_int(c) for c in rows[0]) and len(rows[0]) != 1:
        if names_col is None:
            names_col = 0
        index_col = next((head.index(k) for k in ("index", "id", "idx", "value") if k in head), None)
        rgb_cols = next(([head.index(k) for k in ks] for ks in (("r", "g", "b"), ("red", "green", "blue"))
                         if all(k in head for k in ks)), None)
        body = rows[1:]
    else:  # no header: name | name,r,g,b | index,name,r,g,b
        width = len(rows[0])
        index_col = 0 if width in (2, 5) and _is_int(rows[0][0]) else None
        names_col = 1 if index_col == 0 else 0
        rgb_cols = [names_col + 1, names_col + 2, names_col + 3] if width >= names_col + 4 else None
        body = rows
    entries = []
    for n, row in enumerate(body):
        try:
            name = row[names_col] if names_col < len(row) else str(n)
            index = int(row[index_col]) if index_col is not None else n
            color = [int(row[c]) for c in rgb_cols] if rgb_cols else None
        except (ValueError, IndexError):
            raise DataError(f"{path}: row {n + 1 + (body is not rows)} {row} is not 'name' + optional index and "
                            "r,g,b whole numbers") from None
        if color is not None and not all(0 <= v <= 255 for v in color):
            raise DataError(f"{path}: class {name!r} has colour {color} outside 0..255")
        entries.append((index, name or str(index), color))
    entries.sort(key=lambda e: e[0])
    names = [name for _, name, _ in entries]
    colors = [color for _, _, color in entries] if rgb_cols and all(e[2] is not None for e in entries) else []
    return names, colors


def is_void_name(name: str) -> bool:
    """True for class names meaning "no label" (Unlabelled, unlabeled, void, ignore, background-ignore, ...)."""
    key = str(name).strip().lower().replace("_", "-").replace(" ", "-")
    return key in VOID_NAMES


def is_background_name(name: str) -> bool:
    """True for class names meaning "nothing of interest" (background, bg, matrix, none, ...) or void-like names."""
    key = str(name).strip().lower().replace("_", "-").replace(" ", "-")
    return key in BACKGROUND_NAMES or key in VOID_NAMES


def is_generic_name(name: str) -> bool:
    """True for the names seglab gives classes nobody named (class0, class_3)."""
    return bool(_GENERIC_NAME.match(str(name).strip()))


def class0_is_a_phase(names: Sequence[str]) -> bool:
    """True when class 0 is one of several named things (quartz of five minerals), not a background."""
    return len(names) > 2 and not is_generic_name(names[0]) and not is_background_name(names[0])


def transparent_classes(names: Sequence[str], colors: np.ndarray) -> set[int]:
    """Classes an overlay leaves unpainted: a binary task's background, and class 0 when it is black or named so."""
    if len(colors) == 2:
        return {0}
    named = bool(names) and is_background_name(names[0])
    return {0} if len(colors) and (named or not np.any(colors[0])) else set()


def void_class(names: Sequence[str]) -> int | None:
    """Index of the first void-like class name, or None."""
    return next((i for i, n in enumerate(names) if is_void_name(n)), None)


# ---- mask inspection ---------------------------------------------------------------------------------------------

def is_jpeg(path: Path) -> bool:
    """True when the file holds JPEG bytes (whatever its name says)."""
    try:
        with open(path, "rb") as f:
            return f.read(3) == JPEG_MAGIC
    except OSError:
        return False


def _keys(raw: np.ndarray) -> np.ndarray:
    """One integer per pixel: the gray value, or the packed colour."""
    if raw.ndim == 3:
        rgb = raw.astype(np.int64)
        return (rgb[..., 0] << 32) | (rgb[..., 1] << 16) | rgb[..., 2]
    return raw.astype(np.int64)


def _fmt_key(key: int, rgb: bool) -> str:
    return f"[{(key >> 32) & 0xFFFF},{(key >> 16) & 0xFFFF},{key & 0xFFFF}]" if rgb else str(int(key))


def _ramp_values(raw: np.ndarray, keys: np.ndarray, values: np.ndarray, inverse: np.ndarray, counts: np.ndarray,
                 candidates: np.ndarray) -> tuple[list[int], list[int]]:
    """Candidate values whose pixels lie mostly strictly between their neighbours' values and have almost no interior.

    A smoothing resize, a blur or anti-aliasing puts in-between values in thin bands along the edges between
    classes; a real rare class has pixels whose 3x3 neighbourhood is all that class, and its value is rarely
    between its neighbours' in every channel. Also returns the "solid" values (most pixels inside a region of
    that value): the likely real classes. ``inverse``: each pixel's index into ``values`` (or its gray value).
    """
    from scipy import ndimage

    chans = raw[..., None] if raw.ndim == 2 else raw
    between = np.ones(keys.shape, dtype=bool)
    strict = np.zeros(keys.shape, dtype=bool)
    interior = np.ones(keys.shape, dtype=bool)
    for c in range(chans.shape[2]):
        a = np.ascontiguousarray(chans[..., c])
        lo = ndimage.minimum_filter(a, size=3, mode="nearest")
        hi = ndimage.maximum_filter(a, size=3, mode="nearest")
        between &= (lo <= a) & (a <= hi)
        strict |= (lo < a) & (a < hi)
        interior &= (lo == a) & (hi == a)
    between &= strict
    flat = inverse.ravel()
    n_between = np.bincount(flat, weights=between.ravel())
    n_interior = np.bincount(flat, weights=interior.ravel())
    if len(n_between) != len(values):  # inverse holds the gray values themselves
        n_between, n_interior = n_between[values], n_interior[values]
    ramp = candidates & (n_between >= 0.5 * counts) & (n_interior <= 0.1 * counts)
    solid = n_interior >= 0.5 * counts
    return [int(v) for v in values[ramp].tolist()], [int(v) for v in values[solid].tolist()]


def _value_counts(raw: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct keys, each pixel's index (or, for small non-negative gray values, the value) and the counts."""
    if raw.ndim == 2 and raw.dtype.kind in "ub" and raw.dtype.itemsize <= 2:
        full = np.bincount(raw.ravel().astype(np.intp))
        values = np.flatnonzero(full)
        return values.astype(np.int64), raw.astype(np.intp), full[values]
    values, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return values, inverse.reshape(keys.shape), counts


def inspect_mask(path: Path, raw: np.ndarray, declared: bool = False, ignore_index: int = 255,
                 palette: bool = False) -> tuple[int, list[LabelFinding]]:
    """Distinct values of one stored mask and its findings (interpolation, JPEG, too many values).

    ``declared``: the user set mask_mode=, colors= or num_classes=, so findings are warnings, not errors.
    ``palette``: a palette PNG, whose indices cannot have been smoothed (a resize of a palette image picks
    neighbours); its thin objects between background and VOC's 255 outlines are not taken for ramps.
    """
    path = Path(path)
    keys = _keys(raw)
    values, inverse, counts = _value_counts(raw, keys)
    rgb = raw.ndim == 3
    share = counts / max(1, keys.size)
    minor = (share < MINOR_SHARE) & (values != ignore_index if not rgb else True)
    candidates = (share < RAMP_SHARE) & (values != ignore_index if not rgb else True)
    findings: list[LabelFinding] = []
    major = [_fmt_key(v, rgb) for v in values[~minor][np.argsort(-counts[~minor])][:4].tolist()]
    ramps, solid = ([], values[~minor].tolist())
    if int(candidates.sum()) >= MIN_RAMP_VALUES and not palette:
        ramps, solid = _ramp_values(raw, keys, values, inverse, counts, candidates)
    ramp_share = float(share[np.isin(values, ramps)].sum()) if ramps else 0.0
    kept = [v for v in values.tolist() if v not in set(ramps)] if ramps and ramp_share < 0.25 else solid
    fix = _fix(kept, rgb, declared)
    if len(ramps) >= MIN_RAMP_VALUES:
        shown = ", ".join(_fmt_key(v, rgb) for v in ramps[:6]) + (", ..." if len(ramps) > 6 else "")
        findings.append(LabelFinding(
            path, "interpolated",
            f"looks interpolated (anti-aliased or resized with smoothing): {len(values)} distinct "
            f"{'colours' if rgb else 'values'}, {len(ramps)} of them ({shown}; {ramp_share:.1%} of the pixels) in "
            "thin bands along the edges between " + (" and ".join(major[:2]) if ramp_share < 0.25 else "other values"),
            fix, error=not declared))
    elif not rgb and len(values) > MANY_VALUES:
        findings.append(LabelFinding(
            path, "many_values",
            f"{len(values)} distinct values ({_fmt_key(values[0], rgb)}..{_fmt_key(values[-1], rgb)}): as class "
            f"indices that would be {int(values[values != ignore_index].max(initial=0)) + 1} classes",
            fix + ("" if declared else "; if these really are classes, set num_classes= to say so"),
            error=not declared))
    if is_jpeg(path):
        noisy = bool(ramps) or bool(candidates.any())
        findings = [f for f in findings if f.kind != "interpolated"]  # one finding per file: JPEG is the cause
        findings.append(LabelFinding(
            path, "jpeg",
            "mask stored as JPEG, whose lossy compression changes label values along edges" +
            (f" ({len(values)} distinct {'colours' if rgb else 'values'} here)" if noisy else
             " (this one happens to hold clean values)"),
            fix, error=noisy and not declared))
    return len(values), findings


def _fix(main_values: list[int], rgb: bool, declared: bool) -> str:
    """The fix for an interpolated or lossy mask, with the settings that read it as intended where there are any."""
    if declared:
        return f"{FIX_RESAMPLE}; for now it is read with the mask_mode=/colors=/num_classes= you set"
    main = sorted(int(v) for v in main_values)
    if not rgb and len(main) == 2 and main[0] == 0:
        return f"{FIX_RESAMPLE}, or set mask_mode=binary (values above half of {main[1]} become the object)"
    what = "colours" if rgb else "values"
    return (f"{FIX_RESAMPLE}; if the in-between {what} really are classes, say so with "
            f"{'mask_mode=rgb colors=[[r,g,b], ...]' if rgb else 'num_classes= (or colors=[...])'} listing every class")


def format_findings(findings: Sequence[LabelFinding], total_files: int = 0, limit: int = 10) -> str:
    """The message that names the files with label problems (one per line) and the fix."""
    errors = [f for f in findings if f.error]
    kinds = Counter(f.kind for f in errors)
    # One file of each kind first, so a JPEG mask is not hidden behind ten interpolated ones (each kind has its fix);
    # then the others in order, up to ``limit``, all listed in file order.
    firsts = {}
    for i, f in enumerate(errors):
        firsts.setdefault(f.kind, i)
    picked = list(firsts.values())[:limit]
    picked += [i for i in range(len(errors)) if i not in firsts.values()][:limit - len(picked)]
    listed = [errors[i] for i in sorted(picked)]
    shown = "\n  ".join(str(f) for f in listed)
    more = f"\n  ... and {len(errors) - len(listed)} more" if len(errors) > len(listed) else ""
    of = f" of the {total_files} inspected" if total_files else ""
    by_kind = f" ({', '.join(f'{n} {k}' for k, n in kinds.items())})" if len(kinds) > 1 else ""
    return (f"{len(errors)} mask file(s){of} are not clean label maps{by_kind} (each value of a mask should be one "
            f"class):\n  {shown}{more}\nRun `seglab data check` to list every file; seglab does not guess classes "
            "from such masks")


# ---- class colours -----------------------------------------------------------------------------------------------

def resolve_class_colors(num_classes: int, palette: Sequence[Any] = (), table: Sequence[Sequence[int]] = (),
                         mask_colors: Sequence[Any] = (), png_palette: Sequence[Sequence[int]] = (),
                         names: Sequence[str] = ()) -> tuple[list[list[int]], str]:
    """One [r, g, b] per class and where they came from: palette=, class table, mask colours, PNG palette, built-in.

    The built-in (VOC) colours make class 0 black, a background's colour; when ``names`` make class 0 a phase of
    its own (quartz of five minerals) it takes the next unused VOC colour instead, so overlays paint it.
    """
    from .colors import palette as builtin, voc_palette

    if palette:
        return builtin(num_classes, list(palette)).tolist(), "palette="
    for colors, origin in ((table, "class table"), (mask_colors, "mask colours"), (png_palette, "PNG palette")):
        rgb = [list(c) for c in colors if isinstance(c, (list, tuple)) and len(c) == 3]
        if len(rgb) == len(colors) and len(rgb) >= num_classes > 0:
            return [[int(v) for v in c] for c in rgb[:num_classes]], origin
    colors = builtin(num_classes).tolist()
    if len(names) >= num_classes > 2 and class0_is_a_phase(names):
        colors[0] = voc_palette(num_classes + 1)[num_classes].tolist()
    return colors, "built-in"


def png_palette(path: Path, num_classes: int) -> list[list[int]]:
    """The first ``num_classes`` colours of a palette PNG's own palette (VOC's class colours), or []."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            flat = img.getpalette() if img.mode == "P" else None
    except Exception:  # unreadable files are reported where they are decoded
        return []
    if not flat or len(flat) < 3 * num_classes:
        return []
    colors = [flat[3 * i: 3 * i + 3] for i in range(num_classes)]
    return colors if len({tuple(c) for c in colors}) == num_classes else []  # a flat gray palette names nothing
