"""From a Config to concrete data: samples per split, mask codec, channels and class names."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..choices import DATA_SPLITS
from ..config import Config
from ..errors import DataError
from .formats import DataSource, Sample, _read_classes_file, discover, read_list_file
from .labels import png_palette, resolve_class_colors, void_class
from .masks import MaskCodec, infer_mask_codec, survey_masks
from .dataset import infer_in_channels, split_channels
from .split import split_samples


@dataclass
class DataPlan:
    """Everything a run needs to know about its data before building loaders."""

    source: DataSource
    splits: dict[str, list[Sample]]
    codec: MaskCodec
    in_channels: int
    class_names: list[str]
    notes: list[str] = field(default_factory=list)
    rle: dict[str, str] | None = None
    view_channels: list[int] = field(default_factory=list)  # channels of each view; [in_channels] for one view
    class_colors: list[list[int]] = field(default_factory=list)  # [r, g, b] per class index: output colours

    def views_meta(self) -> dict:
        """What a checkpoint stores about the views: their number, channels, folders and pairing rule."""
        channels = self.view_channels or [self.in_channels]
        return {"views": len(channels), "view_channels": list(channels), "view_dirs": list(self.source.view_dirs),
                "pair_by": self.source.pair_by}


FEW_HELD_OUT = 3  # a val or test split of fewer images scores images, not the data: said once in the log


def resolve_splits(source: DataSource, cfg: Config) -> tuple[dict[str, list[Sample]], list[str]]:
    """train/val/test samples: explicit lists win, then the layout's own splits, then a seeded ratio split."""
    notes: list[str] = []
    lists = {"train": cfg.train_list, "val": cfg.val_list, "test": cfg.test_list}
    if any(lists.values()):
        splits = {k: read_list_file(Path(v), source.root) for k, v in lists.items() if v}
    else:
        splits = {k: v for k, v in source.splits.items()}
    if "all" in splits:
        pool = splits.pop("all")
        splits.update(split_samples(pool, cfg.split, cfg.seed))
        notes.append(f"no split in the data: {cfg.split} split with seed {cfg.seed} -> "
                     f"{len(splits['train'])} train / {len(splits['val'])} val / {len(splits['test'])} test")
    elif "train" in splits and "val" not in splits:
        pool, test = splits.pop("train"), splits.get("test")
        parts = split_samples(pool, cfg.split if not test else _train_val_only(cfg.split), cfg.seed)
        splits["train"], splits["val"] = parts["train"], parts["val"]
        splits["test"] = test if test else parts["test"]
        notes.append(f"train split divided {cfg.split if not test else 'train:val'} with seed {cfg.seed} -> "
                     f"{len(splits['train'])} train / {len(splits['val'])} val / {len(splits['test'])} test")
    if "train" not in splits:
        raise DataError(f"{source.root}: no training split found (splits: {sorted(splits)})")
    splits.setdefault("val", [])
    splits.setdefault("test", [])
    few = [f"{k} {len(splits[k])}" for k in DATA_SPLITS[1:] if 0 < len(splits[k]) < FEW_HELD_OUT]  # val, test
    if few:
        notes.append(f"few held-out images ({', '.join(few)}): their scores are those of one or two images, not of "
                     f"the data; {_more_held_out(splits, cfg, bool(any(lists.values())))} before trusting or "
                     "comparing them")
    return splits, notes


def _more_held_out(splits: dict[str, list[Sample]], cfg: Config, listed: bool) -> str:
    """How to hold out at least FEW_HELD_OUT images each: a ratio that does, else more images or list files."""
    every = [x for v in splits.values() for x in v]
    if not listed:
        for ratio in ("6:2:2", "2:1:1", "1:1:1"):
            parts = split_samples(every, ratio, cfg.seed)
            if min(len(parts["val"]), len(parts["test"])) >= FEW_HELD_OUT and ratio != cfg.split:
                return f"split={ratio} holds out {len(parts['val'])} val and {len(parts['test'])} test images of " \
                       f"{len(every)}"
    return "add images (or larger val_list=/test_list= files)"


def class_names_beside_lists(cfg: Config, source: DataSource) -> list[str]:
    """Names from a classes.csv / classes.txt beside the list files (``data=train.txt``, ``train_list=...``)."""
    return class_table(cfg, source)[0]


def class_table(cfg: Config, source: DataSource) -> tuple[list[str], list[list[int]]]:
    """Names and colours of the data's class table: beside the data, else beside the list files."""
    if source.class_names:
        return list(source.class_names), list(source.class_colors)
    folders = [source.root] + [Path(v).expanduser().parent for v in (cfg.train_list, cfg.val_list, cfg.test_list) if v]
    for folder in dict.fromkeys(folders):  # in order, each folder once
        names, colors = _read_classes_file(folder)
        if names:
            return names, colors
    return [], []


def resolve_ignore_index(cfg: Config, names: list[str]) -> tuple[int, list[str]]:
    """``ignore_index``: the user's, else the index of a void-like class name (Unlabelled, void, ignore, ...)."""
    from ..config import config_sources

    explicit = cfg.ignore_index != 255 or config_sources(cfg).get("ignore_index") == "command line"
    void = void_class(names)
    if void is None or explicit or void == cfg.ignore_index:
        return cfg.ignore_index, []
    return void, [f"class {void} {names[void]!r} is a void label: its pixels are left out of loss and metrics "
                  f"(ignore_index={void}) instead of being trained as a class; set ignore_index= to change this"]


def _train_val_only(ratio: str) -> str:
    """Drop the test part of a ratio when the data already has a test split."""
    parts = ratio.replace(",", ":").split(":")
    return ":".join(parts[:2]) if len(parts) >= 2 else ratio


def plan_data(cfg: Config, need_masks: bool = True, problems: list[str] | None = None) -> DataPlan:
    """Discover the data, resolve splits, and infer mask encoding, channels, class names and colours.

    ``problems``: collect what would stop training (images without masks, samples missing a view, masks that are
    no clean label maps) into this list and go on, as ``seglab data check`` does; None raises on the first.
    """
    collect = problems is not None
    source = discover(cfg.data, cfg.format, cfg.image_dir, cfg.mask_dir, cfg.mask_suffix, cfg.image_dirs, cfg.pair_by)
    if source.incomplete and not collect:
        shown = "\n  ".join(source.incomplete[:10])
        more = f"\n  ... and {len(source.incomplete) - 10} more" if len(source.incomplete) > 10 else ""
        if cfg.on_error == "raise":
            raise DataError(f"{len(source.incomplete)} sample(s) miss a view:\n  {shown}{more}\n"
                            "Or pass on_error=skip to train on the complete samples only")
        import warnings

        warnings.warn(f"on_error=skip: leaving out {len(source.incomplete)} sample(s) that miss a view:\n  "
                      f"{shown}{more}")
    if source.unpaired_images and need_masks and not collect:
        shown = ", ".join(str(p) for p in source.unpaired_images[:5])
        more = f" and {len(source.unpaired_images) - 5} more" if len(source.unpaired_images) > 5 else ""
        if cfg.on_error == "raise":
            raise DataError(f"{len(source.unpaired_images)} image(s) have no mask: {shown}{more}. Check mask_dir / "
                            f"mask_suffix, or pass on_error=skip to use only the {len(source.all_samples())} pairs "
                            f"(`seglab data check {cfg.data}` lists every problem of the data at once)")
        import warnings

        warnings.warn(f"on_error=skip: leaving out {len(source.unpaired_images)} image(s) without a mask: {shown}{more}")
    splits, notes = resolve_splits(source, cfg)
    table_names, table_colors = class_table(cfg, source)
    names = list(cfg.classes) or table_names
    ignore_index, more = resolve_ignore_index(cfg, [str(n) for n in names])
    notes += more
    rle = None
    survey = None
    if source.rle_csv is not None and not any(s.mask for s in source.all_samples()):
        from .rle import read_rle_csv

        rle = read_rle_csv(source.rle_csv)
        codec = MaskCodec("binary", 2, ignore_index, fg_value=1)
        notes.append(f"masks read from run-length CSV {source.rle_csv.name}")
    else:
        mask_paths = [s.mask for s in source.all_samples() if s.mask is not None]
        if not mask_paths and need_masks:
            raise DataError(f"{source.root}: no masks found")
        colors = cfg.colors or ([c for c in table_colors] if cfg.mask_mode == "rgb" else [])
        declared = cfg.mask_mode != "auto" or bool(cfg.colors) or cfg.num_classes > 0
        survey = survey_masks(mask_paths, declared=declared, ignore_index=ignore_index)
        codec, more = infer_mask_codec(mask_paths, cfg.mask_mode, cfg.num_classes, ignore_index, colors,
                                       strict=not collect, table_colors=table_colors, survey=survey)
        notes += more
        if collect:
            problems += [str(f) for f in survey.findings if f.error]
        if cfg.num_classes and codec.mode in ("index", "palette"):
            codec.num_classes = cfg.num_classes
        if codec.mode == "rgb" and codec.ignore_index == len(codec.colors) - 1 and codec.num_classes > 2:
            codec.num_classes -= 1  # the table's last colour is void: decoded to ignore_index, no class of its own
        _check_declared_classes(cfg, codec, names, survey, ignore_index, problems)
    _check_named_classes(cfg, codec, ignore_index, problems)
    if codec.binary and not names:
        names = ["background", "object"]
    names = (names + [f"class{i}" for i in range(len(names), codec.num_classes)])[:codec.num_classes]
    view_channels = resolve_view_channels(cfg.in_channels, splits)
    if len(view_channels) > 1:
        notes.append(f"{len(view_channels)} views per sample stacked as {sum(view_channels)} channels "
                     f"({' + '.join(map(str, view_channels))})")
    palette_file = survey.palette_file if survey is not None and codec.mode == "palette" else None
    class_colors, origin = resolve_class_colors(
        codec.num_classes, cfg.palette, table_colors if not cfg.classes or len(cfg.classes) == len(table_colors)
        else [], codec.colors if codec.mode == "rgb" else [],
        png_palette(palette_file, codec.num_classes) if palette_file else [], names)
    if origin not in ("built-in", "mask colours"):  # mask colours were announced with the colour table
        notes.append(f"class colours from the {origin}: " + ", ".join(
            f"{n}={c}" for n, c in list(zip(names, class_colors))[:12]) + (" ..." if len(names) > 12 else ""))
    return DataPlan(source, splits, codec, sum(view_channels), [str(n) for n in names], notes, rle, view_channels,
                    class_colors)


def _check_declared_classes(cfg: Config, codec: MaskCodec, names: list[str], survey, ignore_index: int,
                            problems: list[str] | None) -> None:
    """Index masks follow the declared classes (classes=, classes.csv): values beyond them stop with the files named.

    The declared count also sets the number of classes (a class table's trailing void class aside), so a class
    missing from the sampled masks still gets its output.
    """
    declared = len(names)
    if not declared or cfg.num_classes or codec.mode not in ("index", "palette"):
        return
    target = declared - 1 if ignore_index == declared - 1 and declared > 2 else declared
    if codec.num_classes <= target:
        codec.num_classes = max(codec.num_classes, target)
        return
    if problems is not None:  # data check: decoding every mask names each file with such values
        codec.num_classes = target
        return
    bad = {p: [v for v in vals if v >= target and v != ignore_index]
           for p, vals in (survey.file_values.items() if survey is not None else [])}
    shown = "\n  ".join([f"{p}: values {v[:8]}" for p, v in bad.items() if v][:10])
    where = "classes=" if cfg.classes else "the class table (classes.csv / classes.txt)"
    raise DataError(f"{where} declares {target} classes (0..{target - 1}, ignore_index={ignore_index}), but "
                    f"masks hold values outside them:\n  {shown}\nFix these masks, add the missing classes to "
                    f"{where}, or set num_classes= (and ignore_index=) to say what the values mean")


def _check_named_classes(cfg: Config, codec: MaskCodec, ignore_index: int, problems: list[str] | None) -> None:
    """``classes=`` on colour or binary masks names exactly their classes: a name too few or too many is an error,
    not a class silently called ``class2`` or a name silently dropped (index masks: ``_check_declared_classes``)."""
    if not cfg.classes or codec.mode in ("index", "palette"):
        return
    given = len(cfg.classes) - (1 if ignore_index == len(cfg.classes) - 1 and len(cfg.classes) > 2 else 0)
    if given == codec.num_classes:
        return
    what = (f"{len(codec.colors)} colours {codec.colors[:8]}" if codec.mode == "rgb" and codec.colors
            else "background and object (binary masks)" if codec.binary else f"{codec.num_classes} classes")
    message = (f"classes= names {given} class(es) {list(cfg.classes)}, but the masks hold {codec.num_classes}: "
               f"{what}; give one name per class, in that order")
    if problems is None:
        raise DataError(message)
    problems.append(message)


def resolve_view_channels(in_channels: int, splits: dict[str, list[Sample]]) -> list[int]:
    """Channels of each view: inferred from the train images, or ``in_channels`` (split over the views) when set.

    Every sample of every split must have the same number of views.
    """
    counts: dict[int, tuple[str, Sample]] = {}
    for split, samples in splits.items():
        for s in samples:
            counts.setdefault(len(s.views), (split, s))
    if len(counts) > 1:
        shown = "; ".join(f"{split} sample {s.id!r} has {n} ({', '.join(str(v) for v in s.views)})"
                          for n, (split, s) in sorted(counts.items()))
        raise DataError(f"samples differ in their number of views: {shown}; every sample needs the same views in "
                        "the same order")
    views = next(iter(counts), 1)
    inferred = [infer_in_channels(splits["train"], view=k) for k in range(views)] if not in_channels or views > 1 \
        else [in_channels]
    if in_channels and sum(inferred) != in_channels:  # the user's total wins; split it evenly over the views
        return split_channels(in_channels, views)
    return inferred
