"""The ``seglab`` command: Ultralytics-style ``seglab COMMAND key=value ...``.

Each command is a small function here; the work lives in the package (engine, data, inference, ...).
Problems a user can fix (a SeglabError: ConfigError, DataError, CheckpointError; or a missing file) end as one
clear line on stderr and exit code 2. Anything else is a bug in seglab and keeps its traceback for the report.
"""
from __future__ import annotations

import difflib
import os
import re
import sys
import typing
from pathlib import Path
from typing import Callable

from ..choices import DATA_SPLITS
from ..config import Config, build_config, field_names, list_recipes, parse_overrides
from ..errors import ConfigError, SeglabError

USAGE = """usage: seglab COMMAND [PATH] [key=value ...]

  demo                 make a synthetic grains dataset, train, evaluate and predict (about 3 minutes on a CPU)
  train                train a model:        seglab train data=FOLDER model=unet epochs=30
  eval                 evaluate a run:       seglab eval runs/NAME [eval_split=test tta=flip]
  predict              predict images:       seglab predict FOLDER weights=runs/NAME
  data check           check a dataset:      seglab data check FOLDER
  data split           write split lists:    seglab data split FOLDER [split=8:1:1 folds=5 out=DIR]
  models               list models:          seglab models [pattern=unet* imgsz=256]
  report               HTML report of a run: seglab report runs/NAME
  compare              compare runs:         seglab compare runs/A runs/B [out=DIR]
  measure              grain measurements:   seglab measure mask=PRED.png [image=IMG pixel_size=0.65um]
  explain              Grad-CAM heatmaps:    seglab explain weights=runs/NAME source=IMG [class=1 layer=... | sweep=true]
  export               ONNX export + parity: seglab export weights=runs/NAME [check=IMAGES quantize=int8 calib=IMAGES]
  bench                inference speed:      seglab bench [model=unet_encoder | weights=RUN] imgsz=128,512
  classify             classification study: seglab classify train|eval|predict|compare|sweep ...
  help                 every config key with its default (the commented defaults file); help COMMAND: its keys

PATH is the one path a command is about, given bare or as its key: eval's weights= (a run folder or checkpoint),
predict's source=, data check's and data split's data=, report's run folder; not both ways at once.
key=value options override recipe=NAME and cfg=FILE.yaml; flags: --resume (= resume=true), --epochs 3 (= epochs=3).
COMMAND --help lists the keys that command reads, with their defaults.
"""

# The command's one path argument, given bare (``seglab eval runs/x``) or as this key (``weights=runs/x``).
POSITIONAL = {"eval": "weights", "val": "weights", "predict": "source", "data check": "data", "data split": "data"}
# What each bare path is, for the messages.
_PATH_NAMES = {"weights": "a run folder or a checkpoint (comma-separate several for an ensemble: weights=A,B)",
               "source": "an image, a folder or a list file (put many images in a folder or a list file)",
               "data": "a dataset folder, a list file or a dataset YAML"}
_HELP = ("-h", "--help")
# Flags that take no value: ``--resume runs/x`` is resume=true and the path, not resume=runs/x.
_FLAGS = {name for name, typ in typing.get_type_hints(Config).items() if typ is bool} | {"resume"}
_BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0")
_KEY = re.compile(r"-{0,2}[A-Za-z_][A-Za-z0-9_-]*")


def _split_args(argv: list[str]) -> list[str]:
    """Turn flags into key=value (``--resume`` -> ``resume=true``, ``--epochs 3`` -> ``epochs=3``); -h/--help stay."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in _HELP:
            out.append(a)
        elif a.startswith("--") and "=" not in a:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and not nxt.startswith("--") and "=" not in nxt \
                    and (a[2:].replace("-", "_") not in _FLAGS or nxt.lower() in _BOOL_WORDS):
                out.append(f"{a[2:]}={nxt}")  # --epochs 3, --report false
                i += 2
                continue
            out.append(f"{a[2:]}=true")
        else:
            out.append(a.lstrip("-") if a.startswith("--") else a)
        i += 1
    return out


def _is_option(token: str) -> bool:
    """True for ``key=value``; ``runs/a=b`` (no key could be spelled so), or an existing ``a=b.png`` whose ``a`` is
    no setting, is a path with "=" in it."""
    key, sep, _ = token.partition("=")
    if not sep or _KEY.fullmatch(key) is None:
        return False
    return key.lstrip("-").replace("-", "_") in field_names() or not _exists(token)


def command_overrides(command: str, args: list[str]) -> dict:
    """The ``key=value`` options of ``command`` (``eval``, ``data check``, ...), its bare PATH under its key.

    A bare path is taken as text, exactly as typed. Given twice (bare and as key=value), or two bare paths, is a
    ConfigError that says how to write it.
    """
    tokens = _split_args(args)
    key = POSITIONAL.get(command)
    paths = [t for t in tokens if not _is_option(t)]
    opts = parse_overrides([t for t in tokens if _is_option(t)])
    if paths and key is None:
        hint = f"; did you mean data={paths[0]}?" if command == "train" and _exists(paths[0]) else ""
        raise ConfigError(f"{command}: expected key=value, got {paths[0]!r} (for example: epochs=10){hint}")
    if len(paths) > 1:
        raise ConfigError(f"seglab {command} takes one path ({key}=): {_PATH_NAMES[key]}; got {len(paths)}: "
                          f"{' '.join(paths)}")
    if paths:
        if key in opts:
            raise ConfigError(f"seglab {command}: {key} given twice, as the path {paths[0]!r} and as "
                              f"{key}={opts[key]}; give it once: seglab {command} PATH or {key}=PATH")
        opts[key] = paths[0]
    return opts


def _needs_path(command: str, cfg: Config) -> Config:
    """``cfg``, or a ConfigError showing both ways to give ``command`` its path when none was given."""
    key = POSITIONAL[command]
    if not getattr(cfg, key):
        raise ConfigError(f"seglab {command} needs {_PATH_NAMES[key].split(' (')[0]}: seglab {command} PATH "
                          f"(or {key}=PATH)" + (" weights=runs/NAME" if command == "predict" else ""))
    return cfg


def _exists(path: str) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def cmd_train(args: list[str]) -> int:
    from ..engine.dispatch import train

    overrides = command_overrides("train", args)
    train(build_config(overrides), overrides)
    return 0


def cmd_eval(args: list[str]) -> int:
    from ..evaluation.evaluator import run_eval

    overrides = command_overrides("eval", args)
    run_eval(_needs_path("eval", build_config(overrides)), overrides)
    return 0


def cmd_predict(args: list[str]) -> int:
    from ..inference.predict import run_predict

    run_predict(_needs_path("predict", build_config(command_overrides("predict", args))))
    return 0


def cmd_data(args: list[str]) -> int:
    if not args or args[0] not in ("check", "split"):
        raise SeglabError("usage: seglab data check FOLDER | seglab data split FOLDER [out=DIR] (FOLDER or data=FOLDER)")
    sub, rest = args[0], command_overrides(f"data {args[0]}", args[1:])
    if sub == "check":
        from ..data.check import check_data, print_check

        cfg = _needs_path("data check", build_config(rest))
        report = check_data(cfg)
        print_check(report)
        print(check_verdict(cfg, report))
        return 0 if report.ok else 1
    from ..data.splitcmd import write_splits

    out = rest.pop("out", None)
    written = write_splits(build_config(rest), out)
    for path in written:
        print(f"wrote {path}")
    print(f"{len(written)} list file(s) written to {written[0].parent if written else out}")
    return 0


def check_verdict(cfg: Config, report) -> str:
    """The last line of ``seglab data check``: what was checked and what was found."""
    images = sum(report.counts.get(split, 0) for split in DATA_SPLITS)
    splits = "/".join(str(report.counts.get(split, 0)) for split in DATA_SPLITS)
    found = "no problems found" if report.ok else f"{len(report.problems)} problem(s) found (listed above)"
    what = f"{images} image(s) ({'/'.join(DATA_SPLITS)} {splits}), {report.counts.get('classes', '?')} classes" \
        if report.counts else "no images read"
    return f"data check of {cfg.data or '(no data= given)'}: {what}: {found}"


def cmd_models(args: list[str]) -> int:
    from ..models import list_models

    opts = parse_overrides(_split_args(args))
    pattern, imgsz = str(opts.pop("pattern", "*")), opts.pop("imgsz", 256)
    if isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz < 1:
        raise ConfigError(f"models: imgsz={imgsz!r} must be a positive whole number of pixels, e.g. imgsz=256")
    if opts:
        raise SeglabError(f"models: unknown option(s) {sorted(opts)}; valid: pattern, imgsz")
    from rich.console import Console
    from rich.table import Table

    from ..models import create_model

    try:
        from ..models.summary import model_summary
    except ImportError:
        model_summary = None
    table = Table(title=f"seglab models (GFLOPs at 3x{imgsz}x{imgsz})")
    for col in ("model", "params (M)", "GFLOPs", "description"):
        table.add_column(col)
    from ..models.registry import _MODELS

    import torch

    for name in list_models(pattern):
        with torch.device("meta"):  # parameter and FLOP counts need no memory and no compute
            model = create_model(name, num_classes=2)
        info = model_summary(model, (3, imgsz, imgsz)) if model_summary else {"params": sum(
            p.numel() for p in model.parameters()), "gflops": float("nan")}
        doc = (_MODELS[name].__doc__ or "").strip().splitlines()[0] if _MODELS[name].__doc__ else ""
        table.add_row(name, f"{info['params'] / 1e6:.2f}", f"{info['gflops']:.2f}", doc)
    Console().print(table)
    return 0


def cmd_demo(args: list[str]) -> int:
    from ..demo import run_demo

    run_demo(**{k: v for k, v in parse_overrides(_split_args(args)).items()})
    return 0


def cmd_help(args: list[str]) -> int:
    """``seglab help``: every key with its default and meaning; ``seglab help COMMAND``: that command's keys."""
    if args and args[0] in COMMANDS and args[0] != "help":
        return command_help(args[0], [*args[1:], "--help"])
    print(USAGE)
    print(_defaults_text())
    print(f"recipes: {', '.join(list_recipes())}")
    return 0


def _defaults_text() -> str:
    from importlib import resources

    return (resources.files("seglab") / "defaults.yaml").read_text(encoding="utf-8")


def defaults_sections() -> list[tuple[str, list[tuple[str, str]]]]:
    """defaults.yaml as ``[(section title, [(key, its lines: value, comment and continued comment)])]``."""
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    for line in _defaults_text().splitlines():
        header = re.match(r"#\s*-+\s*(.*?)\s*-+\s*$", line)
        key = re.match(r"([A-Za-z_]\w*):", line)
        if header:
            sections.append((header.group(1), []))
        elif key and sections:
            sections[-1][1].append((key.group(1), line))
        elif line.startswith((" ", "\t")) and line.strip().startswith("#") and sections and sections[-1][1]:
            name, text = sections[-1][1][-1]
            sections[-1][1][-1] = (name, f"{text}\n{line}")
    return sections


def _section_keys(*titles: str) -> list[str]:
    return [key for title, keys in defaults_sections() if title in titles for key, _ in keys]


_DATA_KEYS = lambda: [k for k in _section_keys("data") if k not in ("cache", "cache_gb")] + ["seed"]  # noqa: E731

# Per command: its usage, the defaults.yaml keys it reads (a function: defaults.yaml is read only for help), a note.
COMMAND_HELP: dict[str, tuple[str, Callable[[], list[str]], str]] = {
    "train": ("seglab train data=FOLDER [model=NAME epochs=N key=value ...] [recipe=NAME] [cfg=FILE.yaml]",
              lambda: _section_keys("data", "model", "input and augmentation", "optimisation", "run folder"),
              "cfg=FILE.yaml and recipe=NAME load settings (recipes: {recipes}); keys given here win. "
              "The run folder is made once the config, the model and the data have been checked."),
    "eval": ("seglab eval RUN [key=value ...]        RUN: weights=RUN, a run folder or checkpoint (A,B: an ensemble)",
             lambda: ["weights", "eval_split", "tta", "threshold", "tile", "overlap", "report", "data", "batch",
                      "device", "precision", "project"],
             "A run's own data settings (its config.yaml) are used; data keys given here replace them. Results go "
             "to RUN/eval/ (RUN/eval_SPLIT/ for another split), without a run folder to project/eval."),
    "predict": ("seglab predict SOURCE weights=RUN [key=value ...]   SOURCE: source=SOURCE, an image, folder or "
                "list file",
                lambda: ["source", "weights", "backend", "save", "tta", "threshold", "min_area", "tile", "overlap",
                         "alpha", "submission", "image_dirs", "pair_by", "device", "precision", "project", "name"],
                "Outputs go to project/name (default runs/predict)."),
    "data check": ("seglab data check FOLDER [key=value ...]   FOLDER: data=FOLDER", _DATA_KEYS,
                   "Reads every image and mask once; exit code 1 when a problem was found."),
    "data split": ("seglab data split FOLDER [split=8:1:1 folds=5 out=DIR]   FOLDER: data=FOLDER", _DATA_KEYS,
                   "out=DIR  where the list files go (default FOLDER/splits)."),
    "models": ("seglab models [pattern=unet* imgsz=256]", lambda: [],
               "pattern  shell-style filter of the model names\nimgsz    image side at which GFLOPs are counted"),
    "demo": ("seglab demo [out=runs/demo images=128 epochs=N key=value ...]", lambda: [],
             "out     folder of the demo's dataset and runs\nimages  synthetic images to generate\n"
             "epochs  training epochs (default: the demo's); other train keys (see seglab train --help) pass on"),
}
# Delegated commands without a help of their own: module, options table and meanings table (usage: USAGE).
OPTION_TABLES = {"measure": ("measure.cli", "OPTIONS", "OPTION_HELP"),
                 "explain": ("explain.cli", "OPTIONS", "OPTION_HELP"),
                 "export": ("export.cli", "EXPORT_OPTIONS", "EXPORT_HELP"),
                 "bench": ("export.cli", "BENCH_OPTIONS", "BENCH_HELP")}


def command_help(cmd: str, args: list[str]) -> int:
    """``seglab COMMAND --help``: the command's usage and the keys it reads, with defaults and meanings."""
    if cmd in ("report", "compare", "classify"):  # they have helps of their own
        return COMMANDS[cmd](args)
    if cmd in ("eval", "val"):
        cmd = "eval"
    if cmd == "data":
        subs = [f"data {args[0]}"] if args and args[0] in ("check", "split") else ["data check", "data split"]
        for sub in subs:
            print_command_help(sub)
        return 0
    if cmd in OPTION_TABLES:
        import importlib

        module, attr, help_attr = OPTION_TABLES[cmd]
        options = getattr(importlib.import_module(f"seglab.{module}"), attr)
        meanings = getattr(importlib.import_module(f"seglab.{module}"), help_attr)
        line = next((u for u in USAGE.splitlines() if u.strip().startswith(cmd + " ")), "")
        print(f"usage: {line.split(':', 1)[-1].strip() if ':' in line else 'seglab ' + cmd}\n\n"
              "options (default, meaning):")
        shown = {key: f"{key}={'' if value is None else value}" for key, value in options.items()}
        width = min(24, max(map(len, shown.values())))  # a long default (bench backends) does not push every line
        for key, text in shown.items():
            print(f"  {text:<{width}}  {meanings.get(key, '')}".rstrip())
        return 0
    print_command_help(cmd)
    return 0


def print_command_help(cmd: str) -> None:
    """Usage, the defaults.yaml lines of the keys ``cmd`` reads (in the file's order, by section), and a note."""
    usage, keys, note = COMMAND_HELP[cmd]
    wanted = keys()
    print(f"usage: {usage}\n")
    if wanted:
        print(f"keys of seglab {cmd} (default, meaning; seglab help lists every key):")
        for title, entries in defaults_sections():
            chosen = [text for key, text in entries if key in wanted]
            if chosen:
                print(f"# ---- {title}")
                print("\n".join(chosen))
        print()
    print(note.format(recipes=", ".join(list_recipes())) + "\n")


def _delegate(module: str, func: str) -> Callable[[list[str]], int]:
    """A command implemented by a sub-package's own ``main(argv)``."""
    def run(args: list[str]) -> int:
        import importlib

        return int(getattr(importlib.import_module(f"seglab.{module}"), func)(_split_args(args)) or 0)
    return run


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": cmd_train,
    "eval": cmd_eval,
    "val": cmd_eval,
    "predict": cmd_predict,
    "data": cmd_data,
    "models": cmd_models,
    "demo": cmd_demo,
    "help": cmd_help,
    "report": _delegate("report.cli", "report_main"),
    "compare": _delegate("report.cli", "compare_main"),
    "measure": _delegate("measure.cli", "measure_main"),
    "classify": _delegate("classify.cli", "main"),
    "explain": _delegate("explain.cli", "explain_main"),
    "export": _delegate("export.cli", "export_main"),
    "bench": _delegate("export.cli", "bench_main"),
}


def _plain_warnings() -> None:
    """seglab's own warnings print as ``warning: ...`` lines, without Python's file:line and source echo
    (SEGLAB_DEBUG=1 keeps Python's format). Only the format changes: recorded warnings stay recorded."""
    import warnings

    if getattr(warnings.formatwarning, "seglab", False):
        return
    python_format = warnings.formatwarning

    def plain(message, category, filename, lineno, line=None):  # noqa: ANN001 (the stdlib's signature)
        if f"{os.sep}seglab{os.sep}" not in str(filename) or os.environ.get("SEGLAB_DEBUG"):
            return python_format(message, category, filename, lineno, line)
        return f"warning: {message}\n"

    plain.seglab = True  # type: ignore[attr-defined]
    warnings.formatwarning = plain


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``seglab`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] in ("--version", "version"):
        from .. import __version__

        print(__version__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        close = difflib.get_close_matches(cmd, list(COMMANDS), n=1)
        print(f"error: unknown command {cmd!r}." + (f" Did you mean {close[0]!r}?" if close else "") + "\n" + USAGE,
              file=sys.stderr)
        return 2
    if cmd != "help" and any(a in _HELP for a in rest):
        return command_help(cmd, rest)
    _plain_warnings()
    try:
        return COMMANDS[cmd](rest)
    except (SeglabError, FileNotFoundError) as e:
        # Problems with the user's input end as one line; SEGLAB_DEBUG=1 shows the full trace for bug reports.
        # Any other exception (a ValueError, TypeError, RuntimeError from inside seglab) is a bug: let it show.
        if os.environ.get("SEGLAB_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # Ctrl-C, or a stop signal training handled (it saved the last complete epoch first): exit as a shell
        # reports a process ended by that signal, 130 for SIGINT and 143 for SIGTERM (engine.loop.TrainingStopped).
        print(str(e) or "interrupted", file=sys.stderr)
        return getattr(e, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
