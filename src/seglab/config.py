"""Typed run configuration: defaults.yaml < training plan < recipe < cfg file < key=value overrides.

The dataclass gives every key its type; ``defaults.yaml`` beside this file documents them (a test keeps
the two in step). Values are parsed with ``yaml.safe_load`` and checked against the field types;
nothing is ever ``eval``-ed. ``build_config`` records which source set each key (``config_sources``), so the
training plan computed from the data fills only the keys no source set, and the log can say who decided what.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import NoneType, UnionType
from typing import Any

import yaml

from .choices import CHOICES, SCALES
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
    palette: list = field(default_factory=list)
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
    samples_per_epoch: Any = "auto"
    cat_max_ratio: float = 0.75
    scale: float = 1.0
    rare_windows: float = 0.33
    mean: list = field(default_factory=list)
    std: list = field(default_factory=list)
    # optimisation
    epochs: int = 30
    batch: Any = 8  # images per step, or "auto": the plan's rule (on a GPU: the memory probe, runtime/autobatch)
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
    loader: str = "auto"
    compile: bool = False
    sync_bn: bool = False
    cpu_procs: int = 1
    seed: int = 0
    deterministic: bool = False
    patience: int = 0
    metric: str = "auto"
    time_limit: float = 0.0
    val_every: Any = 1
    val_share: float = 0.1
    val_tile: int = 0
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
    # Which source set each key (see config_sources); not a config key. A field, so dataclasses.replace keeps it.
    _sources: dict = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (what config.yaml in a run folder holds)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if not k.startswith("_")}


# List keys that also take a comma-separated string (what ``key=a,b`` gives on the command line).
COMMA_LISTS = ("image_dirs",)

_FIELDS = {f.name: f for f in dataclasses.fields(Config) if not f.name.startswith("_")}
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
    return coerce_value(key, value, _TYPES[key])


_BOOL_TEXT = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
_NONE_TEXT = ("", "none", "null")


def _union_members(typ: Any) -> tuple[Any, ...]:
    """The members of ``X | Y`` (or ``Optional[X]``); ``(typ,)`` for a plain type."""
    if typing.get_origin(typ) in (typing.Union, UnionType):
        return typing.get_args(typ)
    return (typ,)


def _type_name(typ: Any) -> str:
    """``int``, ``int or None``: how an error message names a type."""
    return " or ".join("None" if t is NoneType else getattr(t, "__name__", str(t)) for t in _union_members(typ))


def coerce_value(key: str, value: Any, typ: Any) -> Any:
    """Check and convert one value to ``typ``: bool, int, float, str, list, dict, Any, or a union (``int | None``).

    Every ``key=value`` parser in seglab (run config, classify, measure, explain, export) converts through here,
    so ``true``/``1``, ``1e-3``, ``none`` and lists mean the same thing in every command.
    """
    members = _union_members(typ)
    if len(members) > 1:
        if NoneType in members and (value is None or isinstance(value, str) and value.strip().lower() in _NONE_TEXT):
            return None
        for member in members:  # in the order written: ``int | str`` reads 1 as a number, ``bool | str`` auto as text
            if member is not NoneType:
                try:
                    return coerce_value(key, value, member)
                except ConfigError:
                    continue
    elif typ is Any:
        return value
    elif typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
            return _BOOL_TEXT[value.strip().lower()]
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
    raise ConfigError(f"config key {key!r} expects {_type_name(typ)}, got {value!r}")


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
    return read_key_values(args, _TYPES)


def _keeps_text(typ: Any) -> bool:
    """True for a field that takes text but no number: ``0.10`` or ``007`` stay exactly as typed there."""
    members = _union_members(typ)
    return str in members and int not in members and float not in members


def read_key_values(args: list[str], types: Mapping[str, Any]) -> dict[str, Any]:
    """Split ``key=value`` strings and read each value as YAML (``safe_load``, never eval); nothing is checked yet.

    ``types`` only decides which keys keep numbers as typed text; checking is ``parse_key_values``'s job (or
    ``build_config``'s, after a recipe and a cfg file have been merged in).
    """
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
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _keeps_text(types.get(key)):
            value = raw  # keep "0.10" or "007" exactly as typed for string fields
        out[key] = value
    return out


def schema_types(schema: Any) -> dict[str, Any]:
    """``{key: type}`` of a dataclass (class or instance), a TypedDict, or a plain ``{key: type}`` mapping."""
    if dataclasses.is_dataclass(schema) or typing.is_typeddict(schema):
        return typing.get_type_hints(schema if isinstance(schema, type) else type(schema))
    if isinstance(schema, Mapping):
        return dict(schema)
    raise TypeError(f"expected a dataclass, a TypedDict or a mapping of key -> type, got {schema!r}")


def parse_key_values(args: list[str], schema: Any) -> dict[str, Any]:
    """Parse and check ``key=value`` strings against a dataclass or a typed dict; returns only the keys given.

    Unknown keys get the closest valid names; values follow the run config's rules (``coerce_value``).
    """
    types = schema_types(schema)
    out: dict[str, Any] = {}
    for key, value in read_key_values(args, types).items():
        if key not in types:
            raise unknown_option_error(key, list(types))
        _check_acyclic(key, value)
        out[key] = coerce_value(key, value, types[key])
    return out


def unknown_option_error(key: str, valid: list[str]) -> ConfigError:
    """``unknown_key_error`` for a command's own options: without a near miss, list them (``seglab help`` does not)."""
    if difflib.get_close_matches(key, valid, n=1, cutoff=0.6):
        return unknown_key_error(key, valid)
    return ConfigError(f"unknown key {key!r}. Valid keys: {', '.join(valid)}")


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


# Where a key's value came from, lowest first; the training plan ranks between the defaults and a recipe.
SOURCES = ("default", "plan", "recipe", "cfg file", "command line")


def build_config(overrides: dict[str, Any] | None = None, cfg_file: str | Path | None = None,
                 recipe: str | None = None) -> Config:
    """Merge defaults, a recipe, a YAML file and overrides into a checked Config (sources: ``config_sources``)."""
    overrides = dict(overrides or {})
    recipe = overrides.pop("recipe", None) or recipe
    cfg_file = overrides.pop("cfg", None) or cfg_file
    layers: list[tuple[str, dict[str, Any]]] = []
    if recipe:
        layers.append(("recipe", load_yaml(recipe_path(str(recipe)))))
    if cfg_file:
        layers.append(("cfg file", load_yaml(str(cfg_file))))  # cfg=1.5 on the command line arrives as a number
    layers.append(("command line", overrides))
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, layer in layers:
        merged.update(layer)
        sources.update({key: name for key in layer})
    values = {}
    for key, value in merged.items():
        if key not in _FIELDS:
            raise unknown_key_error(str(key))  # YAML keys may be numbers or null
        _check_acyclic(key, value)
        if key == "time_limit" and isinstance(value, str) and (match := _TIME_RE.match(value)):  # 3min -> 3.0
            value = float(match.group(1)) * _TIME_UNITS[match.group(2)] / 60.0
        values[key] = _coerce(key, value)
    for key, normalise in _NORMALISE.items():
        if key in values:
            values[key] = normalise(values[key])
    _resolve_mask_mode(values, sources)
    _drop_foreign_encoder(values, sources, dict(layers))
    cfg = Config(**values, _sources={key: sources[key] for key in values})
    _check_choices(cfg)
    _check_window_keys(cfg)
    return cfg


def config_sources(cfg: Config) -> dict[str, str]:
    """Which source set each key: ``default``, ``plan``, ``recipe``, ``cfg file`` or ``command line``."""
    return {key: cfg._sources.get(key, "default") for key in _FIELDS}


def with_sources(cfg: Config, values: dict[str, Any], source: str) -> Config:
    """A copy of ``cfg`` with ``values`` set and recorded as coming from ``source`` (the plan uses it)."""
    return dataclasses.replace(cfg, **values, _sources={**cfg._sources, **{key: source for key in values}})


def _outranks(a: str | None, b: str | None) -> bool:
    """True when source ``a`` ranks above source ``b`` (an unset key ranks lowest)."""
    return SOURCES.index(a or "default") > SOURCES.index(b or "default")


def _drop_foreign_encoder(values: dict[str, Any], sources: dict[str, str], layers: dict[str, dict]) -> None:
    """A recipe's (or cfg file's) ``encoder`` belongs to the model named beside it: ``model=`` of another name from a
    higher source drops it, so the new model gets its own backbone.

    ``recipe=scenes-cpu model=bisenet_resnet18`` built a ResNet-34 BiSeNet from the recipe's ``encoder: resnet34``.
    An encoder set without a model in its layer, or from the same source as the model, is kept.
    """
    enc_from, model_from = sources.get("encoder"), sources.get("model")
    if not values.get("encoder") or not _outranks(model_from, enc_from):
        return
    beside = layers.get(enc_from or "", {}).get("model")
    if beside is not None and beside != values.get("model"):
        values["encoder"] = ""
        sources["encoder"] = model_from or "default"


def _resolve_mask_mode(values: dict[str, Any], sources: dict[str, str]) -> None:
    """An explicit mask_mode=index/binary/palette above a recipe's ``colors`` clears them, and colours above it win.

    A recipe written for RGB masks (tourmaline-bisenet's red/green) must not stop a user whose masks hold class
    indices: ``mask_mode=index`` on the command line says how the masks are stored and outranks the recipe.
    """
    mode, colors = values.get("mask_mode", "auto"), values.get("colors") or []
    if mode in ("auto", "rgb") or not colors:
        return
    mode_from, colors_from = sources.get("mask_mode"), sources.get("colors")
    if _outranks(mode_from, colors_from):
        values["colors"] = []
        sources["colors"] = mode_from
    elif _outranks(colors_from, mode_from):
        values["mask_mode"] = "rgb"
        sources["mask_mode"] = colors_from
    else:
        raise ConfigError(f"mask_mode={mode} reads mask pixels as class indices, but colors={colors} maps colours to "
                          f"classes (both from the {colors_from}); keep one: mask_mode=rgb with colors, or "
                          f"mask_mode={mode} with colors=[]")


_TIME_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_TIME_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)\s*$")


def parse_val_every(value: Any) -> tuple[str, float]:
    """``val_every`` as ("epochs", N) or ("seconds", S): an int counts epochs, ``2m``/``90s``/``1h`` is a time."""
    if isinstance(value, bool):
        raise ConfigError(f"val_every={value!r}: give whole epochs (e.g. 2) or a time such as 2m or 90s")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"val_every={value}: validate at least every epoch (1) or give a time such as 2m or 90s")
        return "epochs", float(value)
    match = _TIME_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f"val_every={value!r}: give whole epochs (e.g. 2) or a time such as 2m, 90s or 1h")
    seconds = float(match.group(1)) * _TIME_UNITS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"val_every={value!r}: the time between validations must be above 0")
    return "seconds", seconds


def _normalise_val_every(value: Any) -> Any:
    """An int for epochs, or the time as compact text (``2 min`` -> ``2min``), checked by parse_val_every."""
    kind, amount = parse_val_every(value)
    return int(amount) if kind == "epochs" else re.sub(r"\s+", "", str(value)).lower()


def _auto_or_whole(value: Any) -> Any:
    """``auto`` (any case) as "auto", whole numbers written as text or floats as ints; anything else unchanged."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _normalise_samples(value: Any) -> Any:
    """``samples_per_epoch``: ``auto`` or a whole number >= 0 (0 = one random crop per image, as before windows)."""
    value = _auto_or_whole(value)
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ConfigError(f"samples_per_epoch={value!r}: use auto (the plan decides), 0 (one random crop per image) "
                      "or the number of training windows per epoch, e.g. 256")


def _normalise_batch(value: Any) -> Any:
    """``batch``: a whole number, or ``auto`` (the plan decides: its CPU rule, or on a GPU the memory probe)."""
    value = _auto_or_whole(value)
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ConfigError(f"batch={value!r}: give the images per step (e.g. 32) or auto (the plan decides; on a GPU the "
                      "largest batch that fits a share of its memory)")


def batch_or(batch: Any, default: int) -> int:
    """``batch`` as a number, ``default`` where it is still ``auto`` (not yet resolved by a training plan)."""
    return default if batch == "auto" else int(batch)


_NORMALISE = {"val_every": _normalise_val_every, "samples_per_epoch": _normalise_samples, "batch": _normalise_batch}


def _check_window_keys(cfg: Config) -> None:
    """Ranges of the window-sampling and validation keys, with the fix in the message."""
    if not 0.0 < cfg.cat_max_ratio <= 1.0:
        raise ConfigError(f"cat_max_ratio={cfg.cat_max_ratio!r}: the largest share one class may fill of a training "
                          "window must be in (0, 1], e.g. 0.75; 1 = off")
    if not 0.0 <= cfg.rare_windows <= 1.0:
        raise ConfigError(f"rare_windows={cfg.rare_windows!r}: the share of training windows centred on rare classes "
                          "must be in [0, 1], e.g. 0.33; 0 = off")
    if not 0.0 < cfg.val_share <= 1.0:
        raise ConfigError(f"val_share={cfg.val_share!r}: the largest share of the time budget spent validating must "
                          "be in (0, 1], e.g. 0.1; 1 = no bound")
    if cfg.val_tile < 0:
        raise ConfigError(f"val_tile={cfg.val_tile}: tile side in pixels, or 0 to validate whole images")
    if cfg.scale not in SCALES:
        raise ConfigError(f"scale={cfg.scale!r}: the share of the images' resolution the model works at must be one "
                          f"of {', '.join(f'{s:g}' for s in sorted(SCALES, reverse=True))} (1 = full resolution)")


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
