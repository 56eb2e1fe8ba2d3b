"""What ``predict``, ``measure``, ``explain`` and ``export`` read: samples of as many views as the model takes.

A source is one of:
- an image file (one-view models);
- a folder: its images (one view), or for N views its view folders (the training's ``image_dirs``, or
  ``image_dirs=`` given now) paired by ``pair_by``;
- a list file (.txt/.lst): per line the N views and an optional mask, as for training;
- comma-separated paths: N image files = the views of one sample, N folders = one folder per view.

With ``keep_unreadable``, files that cannot be read are kept as samples (a folder's .heic photographs, a list
line naming a missing file) so that reading them fails by name: ``predict``, ``measure`` and ``explain`` then skip
them (``on_error=skip``, their default for folders and lists, see ``default_on_error``) and list them with the
reason at the end (``BadFiles``), instead of stopping the whole folder or dropping them without a word.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..choices import ON_ERROR
from ..errors import ConfigError, DataError
from .formats import (LIST_EXTS, Sample, check_pair_by, file_stem, list_images, masks_beside_images, pair_views,
                      read_list_file)
from .io import IMAGE_EXTS, OTHER_IMAGE_EXTS

ON_ERROR_RAISE, ON_ERROR_SKIP = ON_ERROR


def read_source(source: str | Path, views: int = 1, view_dirs: Sequence[str] = (),
                pair_by: str = "stem", keep_unreadable: bool = False) -> list[Sample]:
    """Samples of ``views`` views each from a file, folder, list file or comma-separated paths."""
    if not str(source):
        raise ConfigError("no source given: pass source=IMAGE, FOLDER or LIST.txt")
    check_pair_by(pair_by)
    path = Path(source)
    if not path.exists() and "," in str(source):
        return _comma_source([Path(p.strip()) for p in str(source).split(",") if p.strip()], views, pair_by)
    if path.is_dir():
        return _folder_source(path, views, view_dirs, pair_by, keep_unreadable)
    if path.is_file():
        if path.suffix.lower() in LIST_EXTS:
            return read_list_file(path, views=views, keep_missing=keep_unreadable)
        if path.suffix.lower() in IMAGE_EXTS + OTHER_IMAGE_EXTS:  # the others fail by name when read
            if views > 1:
                raise DataError(f"{path}: one image, but the model takes {views} views per sample; pass its "
                                f"{views} views comma-separated (source=a.jpg,b.jpg), a list file with {views} images "
                                "per line, or a folder holding one folder per view")
            return [Sample(path, None, file_stem(path))]
        raise DataError(f"{path}: unsupported format ({path.suffix.lower() or 'no extension'}); give an image "
                        f"({', '.join(IMAGE_EXTS)}), a folder of them or a list file ({', '.join(LIST_EXTS)})")
    raise DataError(f"{path}: no such file or folder")


def model_source(source: str | Path, meta: dict, image_dirs: Sequence[str] = (), pair_by: str = "",
                 keep_unreadable: bool = False) -> list[Sample]:
    """``read_source`` for a trained model: its number of views, and its view folders and pairing unless given."""
    views = int(meta.get("views", 1))
    dirs = list(image_dirs) or list(meta.get("view_dirs") or [])
    rule = pair_by or (meta.get("pair_by") or "stem")
    return read_source(source, views, dirs, rule, keep_unreadable)


def is_collection(source: str | Path, samples: Sequence[Sample] = ()) -> bool:
    """True for a folder, a list file or several samples: sources whose bad files are skipped by default."""
    path = Path(source)
    try:
        if path.is_dir() or (path.is_file() and path.suffix.lower() in LIST_EXTS):
            return True
    except (OSError, ValueError):  # a name the OS cannot look up
        pass
    return len(samples) > 1


def default_on_error(source: str | Path, samples: Sequence[Sample] = ()) -> str:
    """What ``predict``, ``measure`` and ``explain`` do with a bad file when ``on_error`` is not set: ``skip`` for
    folders and lists (the other files are worth finishing), ``raise`` for one image (the error is the answer)."""
    return ON_ERROR_SKIP if is_collection(source, samples) else ON_ERROR_RAISE


def check_on_error(value: str) -> str:
    """A command's own ``on_error=`` option: ``raise``, ``skip`` or "" (unset: ``default_on_error`` decides)."""
    if value and value not in ON_ERROR:
        raise ConfigError(f"on_error={value!r}: choose {' or '.join(ON_ERROR)} (default: skip for a folder or list "
                          "of images, raise for one)")
    return value


class BadFiles:
    """Files that failed to read, with the reason: re-raised under ``on_error=raise``, collected under ``skip``.

    ``with bad.guard(sample): ...`` runs the work of one sample; a DataError (unreadable, unsupported format,
    missing, wrong channels or size) either propagates or is recorded, and the loop goes on to the next sample.
    """

    def __init__(self, on_error: str):
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error={on_error!r}: choose {' or '.join(ON_ERROR)}")
        self.on_error = on_error
        self.items: list[tuple[str, str]] = []  # (name, reason)

    def guard(self, sample: Sample | Path | str) -> "_Guard":
        """A context manager that records (under skip) or re-raises a DataError of ``sample``."""
        return _Guard(self, sample)

    def add(self, sample: Sample | Path | str, error: Exception) -> None:
        """Record ``sample`` as skipped because of ``error``."""
        name = ",".join(str(v) for v in sample.views) if isinstance(sample, Sample) else str(sample)
        self.items.append((name, str(error)))

    def extend(self, other: "BadFiles") -> None:
        """Take over the skipped files of another collector (measure: those predict skipped)."""
        self.items.extend(other.items)

    def __len__(self) -> int:
        return len(self.items)

    def note(self) -> list[str]:
        """``["2 files skipped as listed above"]`` for the closing line, or ``[]``."""
        n = len(self.items)
        return [f"{n} file{'' if n == 1 else 's'} skipped as listed above"] if n else []

    def lines(self) -> list[str]:
        """``skipped N file(s):`` and one indented line per file with its reason (none when nothing was skipped)."""
        if not self.items:
            return []
        out = [f"skipped {len(self.items)} file(s) that could not be used (on_error=skip; on_error=raise stops at "
               "the first):"]
        for name, reason in self.items:
            # Reasons from the readers start with the file's path; others get the sample's name in front.
            out.append(f"  {reason}" if reason.startswith(name.split(",")[0]) else f"  {name}: {reason}")
        return out

    def print(self) -> None:
        """Print ``lines()``."""
        for line in self.lines():
            print(line)


class _Guard:
    """The context manager of ``BadFiles.guard``."""

    def __init__(self, bad: BadFiles, sample: Sample | Path | str):
        self.bad, self.sample, self.failed = bad, sample, False

    def __enter__(self) -> "_Guard":
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: object) -> bool:
        if error is None or not isinstance(error, DataError) or self.bad.on_error == ON_ERROR_RAISE:
            return False
        self.bad.add(self.sample, error)
        self.failed = True
        return True


def _folder_source(folder: Path, views: int, view_dirs: Sequence[str], pair_by: str,
                   keep_unreadable: bool = False) -> list[Sample]:
    """The images of a folder (one view), or the paired files of its view folders."""
    if views == 1 and not (view_dirs and all((folder / d).is_dir() for d in view_dirs)):
        files = list_images(folder)
        if keep_unreadable:  # photographs in formats seglab cannot read: reported when read, not dropped unseen
            files = sorted(files + [p for p in folder.iterdir() if p.suffix.lower() in OTHER_IMAGE_EXTS
                                    and not p.name.startswith(".") and p.is_file()])
        if not files:
            raise DataError(f"{folder}: no image files ({', '.join(IMAGE_EXTS)})")
        masks = masks_beside_images(files)  # a farmland-style folder: x.tif beside x_mask.png; the masks are no input
        return [Sample(p, None, file_stem(p)) for p in files if p not in masks]
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
