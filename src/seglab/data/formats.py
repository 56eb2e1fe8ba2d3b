"""Find image/mask pairs in the layouts users have, and the splits those layouts carry.

Layouts (``format=auto`` tries them in this order):
- ``voc``: ``JPEGImages/`` + ``SegmentationClass/`` + ``ImageSets/Segmentation/{train,val,test}.txt``
- ``list``: ``train.txt``/``val.txt``/``test.txt`` with ``image mask`` per line (CamVid style), or one list file
- ``folders``: split folders (``train/``, ``val/``, ``test/``) or the root, each holding an image folder and a
  mask folder (``images``/``masks``, ``image``/``label``, ``X``/``Xannot``...) matched by file stem plus an optional
  mask suffix; ``tgs`` is this layout with masks optionally given as run-length CSV (``train.csv``)
- ``suffix``: images and masks side by side in one folder, ``x.jpg`` <-> ``x_mask.png``

Several views per sample (e.g. plane- and cross-polarised photographs of one thin section): a list-file
line names the views, then the mask (``ppl/2a.jpg xpl/2a.jpg masks/2a.ome.tiff``); folder layouts take
``image_dirs=ppl,xpl``, whose files are paired with each other and with the masks by a key (``pair_by``).
The views are stacked as channels when read (``dataset.load_sample_image``).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError
from .io import IMAGE_EXTS

IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "JPEGImages", "inputs", "input", "x", "X")
MASK_DIR_NAMES = ("masks", "mask", "labels", "label", "annotations", "annotation", "annot", "gt", "groundtruth",
                  "SegmentationClass", "targets", "target", "y", "Y")
MASK_SUFFIXES = ("", "_mask", "_label", "_labels", "_gt", "-mask", "_seg", "_annot", "_m")
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
# Extensions of two parts, removed whole from a file name to get its pairing key (x.ome.tiff -> x, not x.ome).
COMPOUND_EXTS = (".ome.tiff", ".ome.tif", ".nii.gz")
LIST_EXTS = (".txt", ".lst", ".csv")


@dataclass(frozen=True)
class Sample:
    """One image (or several views of one scene) and its mask (None when unlabelled), with an id for outputs.

    ``image`` is the first view; ``extra_views`` the others, in the order they are stacked as channels.
    """

    image: Path
    mask: Path | None
    id: str
    extra_views: tuple[Path, ...] = ()

    @property
    def views(self) -> tuple[Path, ...]:
        """Every view, first to last (one path for ordinary one-image samples)."""
        return (self.image, *self.extra_views)


def as_sample(item: Sample | str | Path) -> Sample:
    """A Sample as given, or a one-view unlabelled Sample of an image path."""
    if isinstance(item, Sample):
        return item
    return Sample(Path(item), None, file_stem(Path(item)))


def file_stem(path: Path) -> str:
    """File name without its extension, compound ones removed whole: ``2a.ome.tiff`` -> ``2a``."""
    lower = path.name.lower()
    for ext in COMPOUND_EXTS:
        if lower.endswith(ext) and len(lower) > len(ext):
            return path.name[: -len(ext)]
    return path.stem


def check_pair_by(pair_by: str) -> str:
    """Validate a ``pair_by`` rule (stem, prefix<SEP>, regex:PATTERN) and return it."""
    if pair_by == "stem":
        return pair_by
    if pair_by.startswith("prefix") and len(pair_by) > len("prefix"):
        return pair_by
    if pair_by.startswith("regex:"):
        try:
            re.compile(pair_by[len("regex:"):])
        except re.error as e:
            raise ConfigError(f"pair_by={pair_by!r}: not a valid regular expression ({e})") from None
        return pair_by
    raise ConfigError(f"pair_by={pair_by!r}: use stem (file name without extension), prefix_ (the text before the "
                      "first '_'; any separator after 'prefix' works, e.g. prefix-) or regex:PATTERN (its first group)")


def pair_key(path: Path, pair_by: str) -> str | None:
    """The key that pairs views and masks of one sample under ``pair_by``; None when a regex does not match."""
    stem = file_stem(path)
    if pair_by == "stem":
        return stem
    if pair_by.startswith("regex:"):
        match = re.search(pair_by[len("regex:"):], stem)
        if match is None:
            return None
        return match.group(1) if match.groups() else match.group(0)
    return stem.split(pair_by[len("prefix"):], 1)[0]


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
    incomplete: list[str] = field(default_factory=list)  # multi-view samples missing a view, one message each
    view_dirs: list[str] = field(default_factory=list)  # image_dirs of a multi-view folder layout
    pair_by: str = "stem"

    def all_samples(self) -> list[Sample]:
        """Every labelled sample over all splits."""
        return [s for split in self.splits.values() for s in split]


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside a folder, sorted (hidden files skipped).

    Broken or looping symlinks are kept: reading them then names the file, instead of the pair vanishing silently.
    """
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
                  and (p.is_file() or (p.is_symlink() and not p.exists())))


def _find_dir(root: Path, names: tuple[str, ...], exclude: list[str] | tuple[str, ...] = ()) -> Path | None:
    """First existing sub-folder of root among names (case-insensitive), other than those in ``exclude``."""
    skip = {e.lower() for e in exclude}
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and p.name.lower() not in skip}
    for n in names:
        if n.lower() in children:
            return children[n.lower()]
    return None


def _index_by_stem(files: list[Path], what: str, pair_by: str = "stem") -> dict[str, Path]:
    """Map pairing key (file stem by default) -> path, refusing duplicate keys that would pair ambiguously."""
    out: dict[str, Path] = {}
    for f in files:
        key = pair_key(f, pair_by)
        if key is None:  # regex rule that does not match: the file takes part in no pairing
            continue
        if key in out:
            how = f"stem {key!r}" if pair_by == "stem" else f"key {key!r} (pair_by={pair_by})"
            fix = "remove or rename one" + ("" if pair_by == "stem" else
                                            ", or choose a pair_by rule that tells them apart")
            raise DataError(f"{f.parent}: two {what} files share the {how}: {out[key].name} and {f.name}; {fix}")
        out[key] = f
    return out


def _choose_suffix(image_stems: list[str], mask_stems: set[str], suffix: str) -> str:
    """The mask suffix that pairs the most images (or the user's choice)."""
    if suffix != "auto":
        return suffix
    best = max(MASK_SUFFIXES, key=lambda s: sum(st + s in mask_stems for st in image_stems))
    return best


def masks_beside_images(files: Sequence[Path]) -> set[Path]:
    """The files of one folder that are the masks of others beside them (``x.tif`` + ``x_mask.png``): the suffix
    pairing the most files, if it pairs any."""
    stems = {file_stem(f): f for f in files}
    counts = {s: sum(1 for st in stems if st.endswith(s) and st[: -len(s)] in stems) for s in MASK_SUFFIXES[1:]}
    best = max(counts, key=counts.get) if counts else ""
    if not best or counts[best] == 0:
        return set()
    return {f for st, f in stems.items() if st.endswith(best) and st[: -len(best)] in stems}


def pair_folders(image_dir: Path, mask_dir: Path | None, suffix: str = "auto",
                 pair_by: str = "stem") -> tuple[list[Sample], list[Path], list[Path]]:
    """Pair images with masks by stem (+ suffix); returns samples, unpaired images, unpaired masks."""
    if pair_by != "stem" and (mask_dir is None or image_dir.resolve() != mask_dir.resolve()):
        samples, unpaired, orphans, _ = pair_views([image_dir], mask_dir, suffix, pair_by)
        return samples, unpaired, orphans
    images = list_images(image_dir)
    if not images:
        raise DataError(f"{image_dir}: no image files ({', '.join(IMAGE_EXTS)})")
    if mask_dir is None:
        return [Sample(p, None, file_stem(p)) for p in images], [], []
    masks = _index_by_stem(list_images(mask_dir), "mask")
    same_dir = image_dir.resolve() == mask_dir.resolve()
    if same_dir:  # suffix layout: masks are the files carrying the suffix
        sfx = suffix if suffix != "auto" else max(MASK_SUFFIXES[1:], key=lambda s: sum(m.endswith(s) for m in masks))
        images = [p for p in images if not file_stem(p).endswith(sfx)]
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


def pair_views(view_dirs: list[Path], mask_dir: Path | None, suffix: str = "auto",
               pair_by: str = "stem") -> tuple[list[Sample], list[Path], list[Path], list[str]]:
    """Pair the files of several view folders (and a mask folder) by key; one sample per complete key.

    Returns samples, unpaired images (complete view sets without a mask, first view), unpaired masks, and one
    message per key that lacks a view (naming the files found, the folder without it and the fix).
    With ``pair_by=stem`` masks may carry a suffix (``mask_suffix``); other rules key masks like views.
    """
    check_pair_by(pair_by)
    for d in view_dirs:
        if not d.is_dir():
            raise DataError(f"{d}: view folder not found (image_dirs names one folder per view, "
                            "e.g. image_dirs=ppl,xpl)")
    indexed = []
    for d in view_dirs:
        files = list_images(d)
        if not files:
            raise DataError(f"{d}: no image files ({', '.join(IMAGE_EXTS)})")
        index = _index_by_stem(files, "image", pair_by)
        if not index:
            raise DataError(f"{d}: no file name matches pair_by={pair_by}; check the pattern")
        indexed.append(index)
    keys = list(dict.fromkeys(k for index in indexed for k in index))  # first folder's order, then the rest
    complete = [k for k in keys if all(k in index for index in indexed)]
    incomplete = []
    for k in keys:
        missing = [d for d, index in zip(view_dirs, indexed) if k not in index]
        if missing:
            found = ", ".join(str(index[k]) for index in indexed if k in index)
            incomplete.append(f"{found}: no matching view in {', '.join(str(d) + '/' for d in missing)} "
                              f"(paired by {pair_by}: key {k!r}); add the missing view, remove the sample's other "
                              "files, or set pair_by= to a rule that pairs these names")
    masks: dict[str, Path] = {}
    sfx = ""
    if mask_dir is not None:
        masks = _index_by_stem(list_images(mask_dir), "mask", pair_by)
        sfx = _choose_suffix(complete, set(masks), suffix) if pair_by == "stem" else ""
    samples, unpaired, used = [], [], set()
    for k in complete:
        views = [index[k] for index in indexed]
        m = masks.get(k + sfx) if mask_dir is not None else None
        if mask_dir is not None and m is None:
            unpaired.append(views[0])
            continue
        samples.append(Sample(views[0], m, k, tuple(views[1:])))
        used.add(k + sfx)
    lacking = set(keys) - set(complete)  # their masks are no orphans: the missing view is the problem reported
    orphans = [p for k, p in masks.items() if k not in used and k[: len(k) - len(sfx)] not in lacking]
    return samples, unpaired, orphans, incomplete


def _pair_dirs(folder: Path) -> tuple[Path, Path] | None:
    """An (images, masks) folder pair inside ``folder``: named ones, or ``X`` + ``Xannot`` (CamVid)."""
    img, msk = _find_dir(folder, IMAGE_DIR_NAMES), _find_dir(folder, MASK_DIR_NAMES)
    if img and msk:
        return img, msk
    return None


def read_list_file(path: Path, root: Path | None = None, views: int = 0, keep_missing: bool = False) -> list[Sample]:
    """Read ``image [mask]`` lines, or ``view1 ... viewN [mask]`` for N views per sample.

    Relative paths resolve against the list's folder, then ``root``. ``views``: the views per sample when known
    (a model's); 0 infers it: lines of three or more fields are N views and a mask, and then every line must
    have that form (a two-field line would be ambiguous: two views, or one view and its mask).
    ``keep_missing``: a missing file is kept (resolved against the list's folder) to fail by name when read,
    instead of stopping here (``predict`` skips such lines and lists them).
    """
    samples = []
    bases = [path.parent] + ([root] if root and root != path.parent else [])
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read list file ({e})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        rows.append((n, line.split("\t") if "\t" in line else line.split()))
    widest = max((len(parts) for _, parts in rows), default=0)
    inferred = not views
    if inferred:
        views = widest - 1 if widest >= 3 else 1
    for n, parts in rows:
        if inferred and views > 1 and len(parts) != views + 1:
            raise DataError(f"{path}:{n}: {len(parts)} field(s), but other lines name {views} views and a mask; "
                            f"every line of a multi-view list is 'view1 ... view{views} mask' (paths with spaces "
                            "need tabs between fields)")
        if len(parts) not in (views, views + 1):
            form = "'image [mask]'" if views == 1 else \
                f"{views} views and an optional mask ('view1 ... view{views} [mask]')"
            raise DataError(f"{path}:{n}: expected {form}, got {len(parts)} fields (paths with spaces need a tab)")

        def resolve(p: str) -> Path:
            cand = [Path(p)] if Path(p).is_absolute() else [b / p for b in bases]
            for c in cand:
                if c.exists():
                    return c
            if keep_missing:
                return cand[0]
            hint = " (paths with spaces need tabs between fields)" if len(parts) > 2 and not tabbed else ""
            raise DataError(f"{path}:{n}: file not found: {p}{hint}")

        tabbed = "\t" in lines[n - 1]
        images = [resolve(p) for p in parts[:views]]
        mask = resolve(parts[views]) if len(parts) == views + 1 else None
        samples.append(Sample(images[0], mask, images[0].stem if views == 1 else file_stem(images[0]),
                              tuple(images[1:])))
    if not samples:
        raise DataError(f"{path}: list file has no entries")
    return samples


def write_list_file(path: Path, samples: list[Sample]) -> None:
    """Write ``view... <TAB>mask`` lines with paths relative to the list file's folder when possible."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def rel(p: Path) -> str:
        try:
            return str(p.resolve().relative_to(path.parent.resolve()))
        except ValueError:
            return str(p.resolve())

    rows = ["\t".join(rel(v) for v in s.views) + ("\t" + rel(s.mask) if s.mask else "") for s in samples]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    tmp.replace(path)


def _read_classes_file(root: Path) -> tuple[list[str], list[list[int]]]:
    """Class names (and colours) from classes.csv (name[,r,g,b]) or classes.txt beside the data."""
    from .labels import read_class_table

    return read_class_table(root)


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


def _detect_folders(root: Path, suffix: str, pair_by: str = "stem") -> DataSource | None:
    """Split folders each with image+mask folders, or image+mask folders at the root."""
    splits, unp_i, unp_m = {}, [], []
    split_dirs = {_split_of(p.name): p for p in root.iterdir() if p.is_dir() and _split_of(p.name)}
    for split, folder in sorted(split_dirs.items()):
        pair = _pair_dirs(folder)
        if pair is None and (root / f"{folder.name}annot").is_dir():  # CamVid: train/ + trainannot/
            pair = (folder, root / f"{folder.name}annot")
        if pair is None:
            continue
        samples, ui, um = pair_folders(pair[0], pair[1], suffix, pair_by)
        splits[split], unp_i, unp_m = samples, unp_i + ui, unp_m + um
    if not splits:
        pair = _pair_dirs(root)
        if pair is None:
            return None
        splits["all"], unp_i, unp_m = pair_folders(pair[0], pair[1], suffix, pair_by)
    fmt = "tgs" if (root / "depths.csv").exists() or (root / "train.csv").exists() else "folders"
    return DataSource(root, fmt, splits, unp_i, unp_m)


def _detect_tgs_rle(root: Path) -> DataSource | None:
    """TGS layout whose masks exist only as run-length CSV (train.csv: id,rle_mask)."""
    img_dir = root / "train" / "images" if (root / "train" / "images").is_dir() else root / "images"
    if not (img_dir.is_dir() and (root / "train.csv").exists()):
        return None
    images = list_images(img_dir)
    return DataSource(root, "tgs", {"train": [Sample(p, None, p.stem) for p in images]}, rle_csv=root / "train.csv")


def _views_source(root: Path, image_dirs: list[str], mask_dir: str, suffix: str, pair_by: str) -> DataSource:
    """Several view folders (``image_dirs``) at the root or inside each split folder, paired by ``pair_by``."""
    def pair_in(folder: Path) -> tuple[list[Sample], list[Path], list[Path], list[str]]:
        masks = folder / mask_dir if mask_dir else _find_dir(folder, MASK_DIR_NAMES, exclude=image_dirs)
        if mask_dir and not masks.is_dir():
            raise DataError(f"{masks}: mask folder not found (mask_dir is relative to data or its split folders)")
        return pair_views([folder / d for d in image_dirs], masks, suffix, pair_by)

    folders = {"all": root} if all((root / d).is_dir() for d in image_dirs) else {
        split: p for p in sorted(root.iterdir())
        if p.is_dir() and (split := _split_of(p.name)) and all((p / d).is_dir() for d in image_dirs)}
    if not folders:
        raise DataError(f"{root}: image_dirs={','.join(image_dirs)} names folders that are not here (nor inside "
                        f"train/ val/ test/ folders); give one folder per view, relative to data")
    source = DataSource(root, "folders", {}, view_dirs=list(image_dirs), pair_by=pair_by)
    for split, folder in folders.items():
        samples, ui, um, missing = pair_in(folder)
        source.splits[split] = samples
        source.unpaired_images += ui
        source.unpaired_masks += um
        source.incomplete += missing
    return source


def discover(data: str | Path, fmt: str = "auto", image_dir: str = "", mask_dir: str = "",
             mask_suffix: str = "auto", image_dirs: list[str] | tuple[str, ...] = (),
             pair_by: str = "stem") -> DataSource:
    """Find the samples and splits under ``data`` (a folder or a list file).

    ``image_dirs``: one folder per view (several views per sample), paired with each other and the masks by
    ``pair_by``. List files name the views on each line.
    """
    if not str(data):
        raise DataError("no data given: pass data=FOLDER (images + masks), a list file, or a dataset YAML")
    check_pair_by(pair_by)
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix.lower() in LIST_EXTS:
            return DataSource(root.parent, "list", {"all": read_list_file(root)})
        raise DataError(f"{root}: expected a folder, a list file (.txt) or a dataset YAML")
    if image_dirs:
        source = _views_source(root, list(image_dirs), mask_dir, mask_suffix, pair_by)
    elif image_dir:
        samples, ui, um = pair_folders(root / image_dir, root / mask_dir if mask_dir else None, mask_suffix, pair_by)
        source = DataSource(root, "folders", {"all": samples}, ui, um, pair_by=pair_by)
    else:
        detectors = {
            "voc": lambda: _detect_voc(root),
            "list": lambda: _detect_lists(root),
            "folders": lambda: _detect_folders(root, mask_suffix, pair_by),
            "tgs": lambda: _detect_folders(root, mask_suffix, pair_by) or _detect_tgs_rle(root),
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
        lacking = f"; {len(source.incomplete)} sample(s) miss a view, e.g. {source.incomplete[0]}" \
            if source.incomplete else ""
        raise DataError(f"{root}: no image/mask pairs found in split(s) {empty}; "
                        f"{len(source.unpaired_images)} images have no mask (check mask_suffix / mask_dir){lacking}")
    return source


def _suffix_source(root: Path, suffix: str) -> DataSource | None:
    """Images and masks in one folder, told apart by the mask suffix."""
    files = list_images(root)
    sfx = [s for s in MASK_SUFFIXES[1:] if any(f.stem.endswith(s) for f in files)]
    if not files or (suffix == "auto" and not sfx):
        return None
    samples, ui, um = pair_folders(root, root, suffix)
    return DataSource(root, "suffix", {"all": samples}, ui, um) if samples else None

