"""What ``predict``, ``measure``, ``explain`` and ``export`` read: samples of as many views as the model takes.

A source is one of:
- an image file (one-view models);
- a folder: its images (one view), or for N views its view folders (the training's ``image_dirs``, or
  ``image_dirs=`` given now) paired by ``pair_by``;
- a list file (.txt/.lst): per line the N views and an optional mask, as for training;
- comma-separated paths: N image files = the views of one sample, N folders = one folder per view.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, DataError
from .formats import LIST_EXTS, Sample, check_pair_by, file_stem, list_images, pair_views, read_list_file
from .io import IMAGE_EXTS


def read_source(source: str | Path, views: int = 1, view_dirs: Sequence[str] = (),
                pair_by: str = "stem") -> list[Sample]:
    """Samples of ``views`` views each from a file, folder, list file or comma-separated paths."""
    if not str(source):
        raise ConfigError("no source given: pass source=IMAGE, FOLDER or LIST.txt")
    check_pair_by(pair_by)
    path = Path(source)
    if not path.exists() and "," in str(source):
        return _comma_source([Path(p.strip()) for p in str(source).split(",") if p.strip()], views, pair_by)
    if path.is_dir():
        return _folder_source(path, views, view_dirs, pair_by)
    if path.is_file():
        if path.suffix.lower() in LIST_EXTS:
            return read_list_file(path, views=views)
        if path.suffix.lower() in IMAGE_EXTS:
            if views > 1:
                raise DataError(f"{path}: one image, but the model takes {views} views per sample; pass its "
                                f"{views} views comma-separated (source=a.jpg,b.jpg), a list file with {views} images "
                                "per line, or a folder holding one folder per view")
            return [Sample(path, None, file_stem(path))]
    raise DataError(f"{path}: no such image, folder or list file")


def model_source(source: str | Path, meta: dict, image_dirs: Sequence[str] = (), pair_by: str = "") -> list[Sample]:
    """``read_source`` for a trained model: its number of views, and its view folders and pairing unless given."""
    views = int(meta.get("views", 1))
    dirs = list(image_dirs) or list(meta.get("view_dirs") or [])
    rule = pair_by or (meta.get("pair_by") or "stem")
    return read_source(source, views, dirs, rule)


def _folder_source(folder: Path, views: int, view_dirs: Sequence[str], pair_by: str) -> list[Sample]:
    """The images of a folder (one view), or the paired files of its view folders."""
    if views == 1 and not (view_dirs and all((folder / d).is_dir() for d in view_dirs)):
        files = list_images(folder)
        if not files:
            raise DataError(f"{folder}: no image files ({', '.join(IMAGE_EXTS)})")
        return [Sample(p, None, file_stem(p)) for p in files]
    if len(view_dirs) != views or not all((folder / d).is_dir() for d in view_dirs):
        expected = f"the folders {', '.join(view_dirs)}" if len(view_dirs) == views else "one folder per view"
        raise DataError(f"{folder}: the model takes {views} view(s) per sample; expected {expected} inside it. "
                        "Name them with image_dirs=A,B, or pass comma-separated folders or a list file")
    return _paired(pair_views([folder / d for d in view_dirs], None, pair_by=pair_by))


def _comma_source(paths: list[Path], views: int, pair_by: str) -> list[Sample]:
    """Comma-separated image files (the views of one sample) or folders (one per view)."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise DataError(f"{', '.join(str(p) for p in missing)}: no such file or folder")
    if all(p.is_dir() for p in paths):
        if len(paths) != views:
            raise DataError(f"{len(paths)} folders given, but the model takes {views} view(s): "
                            "give one folder per view")
        return _paired(pair_views(paths, None, pair_by=pair_by))
    if all(p.is_file() for p in paths):
        if views == 1:
            return [Sample(p, None, file_stem(p)) for p in paths]
        if len(paths) != views:
            raise DataError(f"{', '.join(map(str, paths))}: {len(paths)} images, but the model takes {views} views "
                            "per sample; give one image per view, in the training's order")
        return [Sample(paths[0], None, file_stem(paths[0]), tuple(paths[1:]))]
    raise DataError(f"{', '.join(map(str, paths))}: mix of files and folders; give image files or folders")


def _paired(result: tuple[list[Sample], list[Path], list[Path], list[str]]) -> list[Sample]:
    """Samples of ``pair_views``, refusing incomplete view sets by name."""
    samples, _, _, incomplete = result
    if incomplete:
        shown = "\n  ".join(incomplete[:10])
        more = f"\n  ... and {len(incomplete) - 10} more" if len(incomplete) > 10 else ""
        raise DataError(f"{len(incomplete)} sample(s) miss a view:\n  {shown}{more}")
    if not samples:
        raise DataError("no sample has all its views")
    return samples
