"""Typed run configuration: defaults.yaml < recipe < cfg file < key=value overrides.

The dataclass gives every key its type; ``defaults.yaml`` beside this file documents them (a test keeps
the two in step). Values are parsed with ``yaml.safe_load`` and checked against the field types;
nothing is ever ``eval``-ed.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


@dataclass
class Config:
    """Every option of a seglab run; see defaults.yaml for what each one does."""

    # data
    data: str = ""
    format: str = "auto"
    image_dir: str = ""
    mask_dir: str = ""
    image_dirs: list = field(default_factory=list)
    pair_by: str = "stem"
    mask_suffix: str = "auto"
    mask_mode: str = "auto"
    colors: list = field(default_factory=list)
    classes: list = field(default_factory=list)
    num_classes: int = 0
    ignore_index: int = 255
    in_channels: int = 0
    split: str = "8:1:1"
    train_list: str = ""
    val_list: str = ""
    test_list: str = ""
    folds: int = 0
    fold: int = -1
    cache: str = "auto"
    cache_gb: float = 4.0
    on_error: str = "raise"
    # model
    model: str = "unet_small"
    encoder: str = ""
    encoder_weights: str = ""
    model_args: dict = field(default_factory=dict)
    freeze_epochs: int = 0
    # input and augmentation
    crop: int = 0
    pad_to: int = 0
    pad_mode: str = "reflect"
    augment: str = "flips"
    balance: float = 0.0
    mean: list = field(default_factory=list)
    std: list = field(default_factory=list)
    # optimisation
    epochs: int = 30
    batch: int = 8
    optimizer: str = "adamw"
    lr: float = 0.001
    weight_decay: float = 0.0001
    momentum: float = 0.9
    scheduler: str = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 10
    gamma: float = 0.1
    grad_clip: float = 0.0
    ema: float = 0.0
    loss: str = "auto"
    class_weights: Any = ""
    aux_weight: float = 0.4
    cls_weight: float = 0.05
    precision: str = "auto"
    device: str = "auto"
    workers: int = -1
    compile: bool = False
    sync_bn: bool = False
    cpu_procs: int = 1
    seed: int = 0
    deterministic: bool = False
    patience: int = 0
    metric: str = "auto"
    time_limit: float = 0.0
    val_every: int = 1
    logger: str = "csv"
    # run folder
    project: str = "runs"
    name: str = ""
    resume: Any = False
    exist_ok: bool = False
    # evaluation and prediction
    weights: str = ""
    source: str = ""
    eval_split: str = "test"
    tta: str = "none"
    threshold: float = 0.5
    min_area: int = 0
    alpha: float = 0.7
    tile: int = 0
    overlap: float = 0.25
    save: str = "index,color,overlay"
    submission: str = ""
    backend: str = "torch"
    report: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (what config.yaml in a run folder holds)."""
        return dataclasses.asdict(self)


CHOICES: dict[str, tuple[str, ...]] = {
    "format": ("auto", "folders", "suffix", "list", "voc", "tgs"),
    "mask_mode": ("auto", "index", "binary", "palette", "rgb"),
    "cache": ("auto", "ram", "none"),
    "on_error": ("raise", "skip"),
    "pad_mode": ("reflect", "constant"),
    "optimizer": ("adamw", "adam", "sgd"),
    "scheduler": ("cosine", "step", "poly", "none"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "eval_split": ("test", "val", "train", "all"),
    "tta": ("none", "hflip", "flip", "d4", "shift", "hflip+shift", "flip+shift", "d4+shift"),
    "backend": ("torch", "onnx"),
}

# List keys that also take a comma-separated string (what ``key=a,b`` gives on the command line).
COMMA_LISTS = ("image_dirs",)

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_TYPES = typing.get_type_hints(Config)


def field_names() -> list[str]:
    """All valid config keys."""
    return list(_FIELDS)


def unknown_key_error(key: str, valid: list[str] | None = None) -> ConfigError:
    """A ConfigError for an unknown key, suggesting the closest valid names."""
    valid = valid or field_names()
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else " Run `seglab help` to list the valid keys."
    return ConfigError(f"unknown config key {key!r}.{hint}")


def _coerce(key: str, value: Any) -> Any:
    """Check and convert one value to its field's type."""
    typ = _TYPES[key]
    if typ is Any:
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif typ is float:
        if isinstance(value, str):
            value = _float_text(value)  # YAML 1.1 reads 1e-3 (no dot, no exponent sign) as text
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ConfigError(f"config key {key!r}: {value} is too large for a float") from None
    elif typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if value is None:
            return ""
    elif typ is list:
        if isinstance(value, (list, tuple)) and key in COMMA_LISTS:  # folder names: 2021 means the folder "2021"
            if all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
                return [str(v) for v in value]
        elif isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str) and value.strip() == "":
            return []
        if isinstance(value, str) and key in COMMA_LISTS:  # image_dirs=ppl,xpl on the command line
            return [v.strip() for v in value.split(",") if v.strip()]
    elif typ is dict:
        if isinstance(value, dict):
            return dict(value)
        if value is None:
            return {}
    raise ConfigError(f"config key {key!r} expects {typ.__name__}, got {value!r}")


def _check_acyclic(key: str, value: Any, parents: tuple = ()) -> None:
    """Reject a value that contains itself (YAML ``&a [*a]``): no setting means that, and saving it would recurse."""
    if isinstance(value, (list, tuple, dict)):
        if any(value is parent for parent in parents):
            raise ConfigError(f"config key {key!r} contains itself (a YAML alias inside its own anchor)")
        for item in value.values() if isinstance(value, dict) else value:
            _check_acyclic(key, item, (*parents, value))


def _float_text(text: str) -> Any:
    """``text`` as a float when it spells a finite number (``1e-3``), else unchanged."""
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _check_choices(cfg: Config) -> None:
    """Reject values outside a key's documented choices."""
    for key, choices in CHOICES.items():
        value = getattr(cfg, key)
        if value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}.{hint}")
    if cfg.cpu_procs < 1:
        raise ConfigError(f"cpu_procs={cfg.cpu_procs}: needs at least 1 process")
    if not 0.0 <= cfg.balance <= 1.0:
        raise ConfigError(f"balance={cfg.balance!r}: must be between 0 (plain shuffling) and 1 (every coverage bin "
                          "drawn equally often); 0.5 is square-root balancing")
    if not 0.0 <= cfg.ema < 1.0:
        raise ConfigError(f"ema={cfg.ema!r}: the decay of the weight average must be in [0, 1), e.g. 0.999; 0 = off")
    for key in ("aux_weight", "cls_weight"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key}={getattr(cfg, key)!r}: a loss weight must be >= 0 (0 switches that part off)")


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are read as YAML scalars/lists (``safe_load``, never eval)."""
    out: dict[str, Any] = {}
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"expected key=value, got {arg!r} (for example: epochs=10)")
        key, raw = arg.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except (yaml.YAMLError, ValueError, RecursionError):
            # not YAML (paths with colons, a bad date such as 2020-13-45, absurd nesting): keep the text as typed
            value = raw
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _TYPES.get(key) is str:
            value = raw  # keep "0.10" or "007" exactly as typed for string fields
        out[key] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with safe_load, with an error naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, ValueError) as e:  # a folder, no permission, not UTF-8 text, a NUL in the path
        raise ConfigError(f"{path}: cannot read config file ({e})") from None
    try:
        data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # safe_load's constructors raise ValueError (bad dates)
        raise ConfigError(f"{path}: not valid YAML ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def list_recipes() -> list[str]:
    """Names of the recipes shipped with seglab."""
    folder = resources.files("seglab") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _exists(path: Path) -> bool:
    """``path.exists()``, with names the OS cannot even look up (too long, a NUL) counting as absent."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def recipe_path(name: str) -> Path:
    """Path of a shipped recipe by name, or of a user's recipe file."""
    if Path(name).suffix in (".yaml", ".yml") and _exists(Path(name)):
        return Path(name)
    path = Path(str(resources.files("seglab") / "recipes" / f"{name}.yaml"))
    if not _exists(path):
        close = difflib.get_close_matches(name, list_recipes(), n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown recipe {name!r}.{hint} Shipped recipes: {', '.join(list_recipes())}")
    return path


def build_config(overrides: dict[str, Any] | None = None, cfg_file: str | Path | None = None,
                 recipe: str | None = None) -> Config:
    """Merge defaults, a recipe, a YAML file and overrides into a checked Config."""
    merged: dict[str, Any] = {}
    overrides = dict(overrides or {})
    recipe = overrides.pop("recipe", None) or recipe
    cfg_file = overrides.pop("cfg", None) or cfg_file
    if recipe:
        merged.update(load_yaml(recipe_path(str(recipe))))
    if cfg_file:
        merged.update(load_yaml(str(cfg_file)))  # cfg=1.5 on the command line arrives as a number
    merged.update(overrides)
    values = {}
    for key, value in merged.items():
        if key not in _FIELDS:
            raise unknown_key_error(str(key))  # YAML keys may be numbers or null
        _check_acyclic(key, value)
        values[key] = _coerce(key, value)
    cfg = Config(**values)
    _check_choices(cfg)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
