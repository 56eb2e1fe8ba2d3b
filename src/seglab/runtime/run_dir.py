"""Run folders: one per run, holding config.yaml, metrics.csv, summary.json, checkpoints/ and eval/."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..config import Config, build_config, load_yaml
from ..errors import ConfigError

# Keys a resumed run may change; everything else comes from the run's own config.yaml.
RESUME_OVERRIDABLE = {"epochs", "device", "workers", "time_limit", "precision", "patience", "cache", "logger",
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

    ``create=False`` returns the name without creating the folder.
    """
    path, i = base, 2
    while path.exists() and not exist_ok and any(path.iterdir()):
        path, i = base.with_name(f"{base.name}{i}"), i + 1
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


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
