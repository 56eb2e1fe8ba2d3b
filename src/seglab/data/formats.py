"""Find image/mask pairs in the layouts users have, and the splits those layouts carry.

Layouts (``format=auto`` tries them in this order):
- ``voc``: ``JPEGImages/`` + ``SegmentationClass/`` + ``ImageSets/Segmentation/{train,val,test}.txt``
- ``list``: ``train.txt``/``val.txt``/``test.txt`` with ``image mask`` per line (CamVid style), or one list file
- ``folders``: split folders (``train/``, ``val/``, ``test/``) or the root, each holding an image folder and a
  mask folder (``images``/``masks``, ``image``/``label``, ``X``/``Xannot``...) matched by file stem plus an optional
  mask suffix; ``tgs`` is this layout with masks optionally given as run-length CSV (``train.csv``)
- ``suffix``: images and masks side by side in one folder, ``x.jpg`` <-> ``x_mask.png``
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .io import IMAGE_EXTS

IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "JPEGImages", "inputs", "input", "x", "X")
MASK_DIR_NAMES = ("masks", "mask", "labels", "label", "annotations", "annotation", "annot", "gt", "groundtruth",
                  "SegmentationClass", "targets", "target", "y", "Y")
MASK_SUFFIXES = ("", "_mask", "_label", "_labels", "_gt", "-mask", "_seg", "_annot", "_m")
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


@dataclass(frozen=True)
class Sample:
    """One image and its mask (None for unlabelled images), with an id for reports and submissions."""

    image: Path
    mask: Path | None
    id: str


@dataclass
class DataSource:
    """What was found under ``data``: the layout, samples per split, and side information."""

    root: Path
    format: str
    splits: dict[str, list[Sample]]
    unpaired_images: list[Path] = field(default_factory=list)
    unpaired_masks: list[Path] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    class_colors: list[list[int]] = field(default_factory=list)
    rle_csv: Path | None = None

    def all_samples(self) -> list[Sample]:
        """Every labelled sample over all splits."""
        return [s for split in self.splits.values() for s in split]


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside a folder, sorted (hidden files skipped).

    Broken or looping symlinks are kept: reading them then names the file, instead of the pair vanishing silently.
    """
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
                  and (p.is_file() or (p.is_symlink() and not p.exists())))


def _find_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    """First existing sub-folder of root among names (case-insensitive)."""
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for n in names:
        if n.lower() in children:
            return children[n.lower()]
    return None


def _index_by_stem(files: list[Path], what: str) -> dict[str, Path]:
    """Map file stem -> path, refusing duplicate stems (x.png and x.jpg) that would pair ambiguously."""
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise DataError(f"{f.parent}: two {what} files share the stem {f.stem!r}: {out[f.stem].name} and {f.name}; "
                            "remove or rename one")
        out[f.stem] = f
    return out


def _choose_suffix(image_stems: list[str], mask_stems: set[str], suffix: str) -> str:
    """The mask suffix that pairs the most images (or the user's choice)."""
    if suffix != "auto":
        return suffix
    best = max(MASK_SUFFIXES, key=lambda s: sum(st + s in mask_stems for st in image_stems))
    return best


def pair_folders(image_dir: Path, mask_dir: Path | None, suffix: str = "auto") -> tuple[list[Sample], list[Path], list[Path]]:
    """Pair images with masks by stem (+ suffix); returns samples, unpaired images, unpaired masks."""
    images = list_images(image_dir)
    if not images:
        raise DataError(f"{image_dir}: no image files ({', '.join(IMAGE_EXTS)})")
    if mask_dir is None:
        return [Sample(p, None, p.stem) for p in images], [], []
    masks = _index_by_stem(list_images(mask_dir), "mask")
    same_dir = image_dir.resolve() == mask_dir.resolve()
    if same_dir:  # suffix layout: masks are the files carrying the suffix
        sfx = suffix if suffix != "auto" else max(MASK_SUFFIXES[1:], key=lambda s: sum(m.endswith(s) for m in masks))
        images = [p for p in images if not p.stem.endswith(sfx)]
    stems = _index_by_stem(images, "image")
    sfx = _choose_suffix(list(stems), set(masks), suffix) if not same_dir else sfx
    samples, unpaired, used = [], [], set()
    for stem, img in stems.items():
        m = masks.get(stem + sfx)
        if m is None:
            unpaired.append(img)
        else:
            samples.append(Sample(img, m, stem))
            used.add(stem + sfx)
    orphan_masks = [p for s, p in masks.items() if s not in used and not (same_dir and s in stems)]
    return samples, unpaired, orphan_masks


def _pair_dirs(folder: Path) -> tuple[Path, Path] | None:
    """An (images, masks) folder pair inside ``folder``: named ones, or ``X`` + ``Xannot`` (CamVid)."""
    img, msk = _find_dir(folder, IMAGE_DIR_NAMES), _find_dir(folder, MASK_DIR_NAMES)
    if img and msk:
        return img, msk
    return None


def read_list_file(path: Path, root: Path | None = None) -> list[Sample]:
    """Read ``image [mask]`` lines; relative paths resolve against the list's folder, then ``root``."""
    samples = []
    bases = [path.parent] + ([root] if root and root != path.parent else [])
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read list file ({e})") from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) > 2:
            raise DataError(f"{path}:{n}: expected 'image [mask]', got {len(parts)} fields (paths with spaces need a tab)")

        def resolve(p: str) -> Path:
            cand = [Path(p)] if Path(p).is_absolute() else [b / p for b in bases]
            for c in cand:
                if c.exists():
                    return c
            raise DataError(f"{path}:{n}: file not found: {p}")

        image = resolve(parts[0])
        mask = resolve(parts[1]) if len(parts) == 2 else None
        samples.append(Sample(image, mask, image.stem))
    if not samples:
        raise DataError(f"{path}: list file has no entries")
    return samples


def write_list_file(path: Path, samples: list[Sample]) -> None:
    """Write ``image<TAB>mask`` lines with paths relative to the list file's folder when possible."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def rel(p: Path) -> str:
        try:
            return str(p.resolve().relative_to(path.parent.resolve()))
        except ValueError:
            return str(p.resolve())

    rows = [rel(s.image) + ("\t" + rel(s.mask) if s.mask else "") for s in samples]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    tmp.replace(path)


def _read_classes_file(root: Path) -> tuple[list[str], list[list[int]]]:
    """Class names (and colours) from classes.csv (name[,r,g,b]) or classes.txt beside the data."""
    csv_path, txt_path = root / "classes.csv", root / "classes.txt"
    if csv_path.exists():
        with csv_path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        names = [r.get("name") or r.get("class") or str(i) for i, r in enumerate(rows)]
        colors = [[int(r["r"]), int(r["g"]), int(r["b"])] for r in rows] if rows and {"r", "g", "b"} <= set(rows[0]) else []
        return names, colors
    if txt_path.exists():
        return [ln.strip() for ln in txt_path.read_text(encoding="utf-8").splitlines() if ln.strip()], []
    return [], []


def _split_of(name: str) -> str | None:
    """Canonical split name of a folder or list-file stem."""
    for split, names in SPLIT_NAMES.items():
        if name.lower() in names:
            return split
    return None


def _detect_voc(root: Path) -> DataSource | None:
    """PASCAL VOC layout."""
    img_dir, mask_dir = root / "JPEGImages", root / "SegmentationClass"
    if not (img_dir.is_dir() and mask_dir.is_dir()):
        return None
    sets = root / "ImageSets" / "Segmentation"
    masks = _index_by_stem(list_images(mask_dir), "mask")
    images = _index_by_stem(list_images(img_dir), "image")
    splits: dict[str, list[Sample]] = {}
    if sets.is_dir():
        for txt in sorted(sets.glob("*.txt")):
            split = _split_of(txt.stem)
            if split is None:
                continue
            ids = [ln.strip() for ln in txt.read_text().splitlines() if ln.strip()]
            missing = [i for i in ids if i not in images]
            if missing:
                raise DataError(f"{txt}: {len(missing)} listed ids have no image in JPEGImages, e.g. {missing[:3]}")
            splits[split] = [Sample(images[i], masks.get(i), i) for i in ids]
    if not splits:
        splits["all"] = [Sample(images[s], m, s) for s, m in masks.items() if s in images]
    return DataSource(root, "voc", splits, unpaired_masks=[m for s, m in masks.items() if s not in images])


def _detect_lists(root: Path) -> DataSource | None:
    """train.txt / val.txt / test.txt list files."""
    lists = {_split_of(p.stem): p for p in sorted(root.glob("*.txt")) if _split_of(p.stem)}
    if not lists:
        return None
    try:
        first = next(ln for ln in lists[next(iter(lists))].read_text().splitlines() if ln.strip())
    except (StopIteration, OSError, UnicodeDecodeError):
        return None
    if not (root / first.split()[0]).exists():
        return None  # a .txt of ids or notes, not a list of paths
    return DataSource(root, "list", {s: read_list_file(p, root) for s, p in lists.items()})


def _detect_folders(root: Path, suffix: str) -> DataSource | None:
    """Split folders each with image+mask folders, or image+mask folders at the root."""
    splits, unp_i, unp_m = {}, [], []
    split_dirs = {_split_of(p.name): p for p in root.iterdir() if p.is_dir() and _split_of(p.name)}
    for split, folder in sorted(split_dirs.items()):
        pair = _pair_dirs(folder)
        if pair is None and (root / f"{folder.name}annot").is_dir():  # CamVid: train/ + trainannot/
            pair = (folder, root / f"{folder.name}annot")
        if pair is None:
            continue
        samples, ui, um = pair_folders(pair[0], pair[1], suffix)
        splits[split], unp_i, unp_m = samples, unp_i + ui, unp_m + um
    if not splits:
        pair = _pair_dirs(root)
        if pair is None:
            return None
        splits["all"], unp_i, unp_m = pair_folders(pair[0], pair[1], suffix)
    fmt = "tgs" if (root / "depths.csv").exists() or (root / "train.csv").exists() else "folders"
    return DataSource(root, fmt, splits, unp_i, unp_m)


def _detect_tgs_rle(root: Path) -> DataSource | None:
    """TGS layout whose masks exist only as run-length CSV (train.csv: id,rle_mask)."""
    img_dir = root / "train" / "images" if (root / "train" / "images").is_dir() else root / "images"
    if not (img_dir.is_dir() and (root / "train.csv").exists()):
        return None
    images = list_images(img_dir)
    return DataSource(root, "tgs", {"train": [Sample(p, None, p.stem) for p in images]}, rle_csv=root / "train.csv")


def discover(data: str | Path, fmt: str = "auto", image_dir: str = "", mask_dir: str = "",
             mask_suffix: str = "auto") -> DataSource:
    """Find the samples and splits under ``data`` (a folder or a list file)."""
    if not str(data):
        raise DataError("no data given: pass data=FOLDER (images + masks), a list file, or a dataset YAML")
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix.lower() in (".txt", ".lst", ".csv"):
            return DataSource(root.parent, "list", {"all": read_list_file(root)})
        raise DataError(f"{root}: expected a folder, a list file (.txt) or a dataset YAML")
    if image_dir:
        samples, ui, um = pair_folders(root / image_dir, root / mask_dir if mask_dir else None, mask_suffix)
        source = DataSource(root, "folders", {"all": samples}, ui, um)
    else:
        detectors = {
            "voc": lambda: _detect_voc(root),
            "list": lambda: _detect_lists(root),
            "folders": lambda: _detect_folders(root, mask_suffix),
            "tgs": lambda: _detect_folders(root, mask_suffix) or _detect_tgs_rle(root),
            "suffix": lambda: _suffix_source(root, mask_suffix),
        }
        order = list(detectors) if fmt == "auto" else [fmt]
        source = None
        for name in order:
            source = detectors[name]()
            if source is not None:
                break
        if source is None:
            raise DataError(
                f"{root}: cannot find images and masks here (format={fmt}). Expected one of: an images/ + masks/ folder "
                "pair (or image/ + label/), train/ val/ test/ folders holding such pairs, train.txt/val.txt lists of "
                "'image mask' lines, a PASCAL VOC root (JPEGImages, SegmentationClass), or x.png + x_mask.png side by "
                "side. Or set image_dir= and mask_dir=.")
    source.class_names, source.class_colors = _read_classes_file(root)
    empty = [s for s, v in source.splits.items() if not v]
    if empty and not source.rle_csv:
        raise DataError(f"{root}: no image/mask pairs found in split(s) {empty}; "
                        f"{len(source.unpaired_images)} images have no mask (check mask_suffix / mask_dir)")
    return source


def _suffix_source(root: Path, suffix: str) -> DataSource | None:
    """Images and masks in one folder, told apart by the mask suffix."""
    files = list_images(root)
    sfx = [s for s in MASK_SUFFIXES[1:] if any(f.stem.endswith(s) for f in files)]
    if not files or (suffix == "auto" and not sfx):
        return None
    samples, ui, um = pair_folders(root, root, suffix)
    return DataSource(root, "suffix", {"all": samples}, ui, um) if samples else None

