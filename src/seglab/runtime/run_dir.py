"""Run folders: one per run, holding config.yaml, metrics.csv, summary.json, checkpoints/ and eval/."""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..config import Config, build_config, load_yaml
from ..errors import ConfigError

# Keys a resumed run may change; everything else comes from the run's own config.yaml.
RESUME_OVERRIDABLE = {"epochs", "device", "workers", "loader", "time_limit", "precision", "patience", "cache", "logger",
                      "cpu_procs"}


def new_run_dir(cfg: Config, create: bool = True) -> Path:
    """project/name, made unique by a numeric suffix unless exist_ok (as Ultralytics does).

    ``create=False`` only chooses the folder: a run creates it once its config, model and data have been checked,
    so a start that fails leaves no folder behind.
    """
    name = cfg.name or f"{cfg.model}-{Path(str(cfg.data)).stem or 'data'}-{time.strftime('%Y%m%d-%H%M%S')}"
    return unique_dir(Path(cfg.project) / name, cfg.exist_ok, create)


def unique_dir(base: Path, exist_ok: bool = False, create: bool = True) -> Path:
    """Create and return ``base``, or (unless ``exist_ok``) ``base2``, ``base3``, ... when it holds files already.

    An empty folder is taken as it is; ``exist_ok`` writes into ``base`` even when it holds files (the files it
    writes again are replaced). Nothing that exists is ever overwritten otherwise. ``create=False`` returns the
    name without creating the folder.
    """
    path = free_dir(base, exist_ok)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def free_dir(base: Path, exist_ok: bool = False) -> Path:
    """The folder ``unique_dir`` would use, without creating it."""
    base = Path(base)
    path, i = base, 2
    while not exist_ok and _taken(path):
        path, i = base.with_name(f"{base.name}{i}"), i + 1
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} is a file, not a folder; choose another output name")
    return path


@contextmanager
def output_dir(base: Path, exist_ok: bool = False) -> Iterator[Path]:
    """``unique_dir`` for a command's outputs; a folder it made is removed again when the command fails (or is
    interrupted) before writing anything into it, so failed starts leave no empty numbered folders behind."""
    path = free_dir(base, exist_ok)
    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if made and path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        raise


def _taken(path: Path) -> bool:
    """True when ``path`` is a file or a folder that holds something."""
    if not path.exists():
        return False
    return not path.is_dir() or any(path.iterdir())


def refuse_existing(paths: list[Path], exist_ok: bool = False, fix: str = "") -> None:
    """A ConfigError naming the files of ``paths`` that exist already, unless ``exist_ok`` (then they are replaced).

    ``fix`` names the other way out besides ``exist_ok=true`` (e.g. ``out=OTHER.onnx``).
    """
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not exist_ok:
        names = ", ".join(existing)
        raise ConfigError(f"{names} exist{'s' if len(existing) == 1 else ''} already and would be replaced; pass "
                          f"exist_ok=true to replace {'it' if len(existing) == 1 else 'them'}"
                          + (f", or {fix}" if fix else ""))


def count_text(count: int, noun: str) -> str:
    """``1 mask``, ``13 masks``: a count with its noun (regular plurals)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def saved_line(out: str | Path, counts: Mapping[str, int], how: str, notes: Iterable[str] = ()) -> str:
    """The last line of predict, measure, explain and export: what they wrote, where, and what computed it.

    ``Results saved to runs/predict3: 13 masks, 13 overlays, 2 files skipped (backend torch, precision fp32, ...)``;
    ``counts`` maps a singular noun to how many such files were written; ``notes`` follow them (file names, skips).
    """
    parts = [count_text(n, noun) for noun, n in counts.items() if n] + list(notes) or ["no files"]
    return f"Results saved to {out}: {', '.join(parts)} ({how})"


def resume_run_dir(cfg: Config, overrides: dict[str, Any]) -> tuple[Path, Config]:
    """The run folder to resume and its saved config, with the few keys a resume may change applied."""
    if isinstance(cfg.resume, str) and cfg.resume not in ("", "true", "True"):
        path = Path(cfg.resume)
    elif cfg.name:
        path = Path(cfg.project) / cfg.name
    else:
        raise ConfigError("resume needs the run: pass resume=runs/NAME (or name=NAME with resume=true)")
    if (path / "checkpoints").is_dir() is False and (path.parent.name == "checkpoints"):
        path = path.parent.parent  # resume=runs/x/checkpoints/last.pt
    if not (path / "config.yaml").exists() or not (path / "checkpoints" / "last.pt").exists():
        raise ConfigError(f"{path}: nothing to resume (needs config.yaml and checkpoints/last.pt)")
    saved = load_yaml(path / "config.yaml")
    changed = {k: v for k, v in overrides.items() if k in RESUME_OVERRIDABLE}
    ignored = sorted(set(overrides) - RESUME_OVERRIDABLE - {"resume", "name", "project", "cfg", "recipe"})
    if ignored:
        print(f"note: resume keeps the run's own settings; ignoring {ignored}")
    saved.update(changed)
    saved["resume"] = False
    return path, build_config(saved)


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float), encoding="utf-8")
    tmp.replace(path)
