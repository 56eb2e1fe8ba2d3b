"""The ``seglab`` command: Ultralytics-style ``seglab COMMAND key=value ...``.

Each command is a small function here; the work lives in the package (engine, data, inference, ...).
Problems a user can fix (a SeglabError: ConfigError, DataError, CheckpointError; or a missing file) end as one
clear line on stderr and exit code 2. Anything else is a bug in seglab and keeps its traceback for the report.
"""
from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import Callable

from ..config import build_config, list_recipes, parse_overrides
from ..errors import ConfigError, SeglabError

USAGE = """usage: seglab COMMAND [key=value ...]

  demo                 make a synthetic grains dataset, train, evaluate and predict (about 3 minutes on a CPU)
  train                train a model:        seglab train data=FOLDER model=unet epochs=30
  eval                 evaluate a run:       seglab eval weights=runs/NAME [eval_split=test tta=flip]
  predict              predict images:       seglab predict weights=runs/NAME source=FOLDER
  data check           check a dataset:      seglab data check data=FOLDER
  data split           write split lists:    seglab data split data=FOLDER [split=8:1:1 folds=5 out=DIR]
  models               list models:          seglab models [pattern=unet* imgsz=256]
  report               HTML report of a run: seglab report runs/NAME
  compare              compare runs:         seglab compare runs/A runs/B [out=DIR]
  measure              grain measurements:   seglab measure mask=PRED.png [image=IMG pixel_size=0.65um]
  explain              Grad-CAM heatmaps:    seglab explain weights=runs/NAME source=IMG [class=1 layer=... | sweep=true]
  export               ONNX export + parity: seglab export weights=runs/NAME [check=IMAGES quantize=int8 calib=IMAGES]
  bench                inference speed:      seglab bench [model=unet_encoder | weights=RUN] imgsz=128,512
  classify             classification study: seglab classify train|eval|predict|compare|sweep ...
  help                 every config key with its default (the commented defaults file)

key=value options override recipe=NAME and cfg=FILE.yaml; flags: --resume (= resume=true).
"""


def _split_args(argv: list[str]) -> list[str]:
    """Turn flags into key=value (``--resume`` -> ``resume=true``, ``--epochs 3`` -> ``epochs=3``)."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "=" not in a:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--") and "=" not in argv[i + 1] \
                    and a[2:] not in ("resume", "exist-ok", "exist_ok", "compile", "deterministic"):
                out.append(f"{a[2:]}={argv[i + 1]}")
                i += 2
                continue
            out.append(f"{a[2:]}=true")
        else:
            out.append(a.lstrip("-") if a.startswith("--") else a)
        i += 1
    return out


def cmd_train(args: list[str]) -> int:
    from ..engine.dispatch import train

    overrides = parse_overrides(_split_args(args))
    train(build_config(overrides), overrides)
    return 0


def cmd_eval(args: list[str]) -> int:
    from ..evaluation.evaluator import run_eval

    overrides = parse_overrides(_split_args(args))
    run_eval(build_config(overrides), overrides)
    return 0


def cmd_predict(args: list[str]) -> int:
    from ..inference.predict import run_predict

    run_predict(build_config(parse_overrides(_split_args(args))))
    return 0


def cmd_data(args: list[str]) -> int:
    if not args or args[0] not in ("check", "split"):
        raise SeglabError("usage: seglab data check data=FOLDER | seglab data split data=FOLDER [out=DIR]")
    sub, rest = args[0], parse_overrides(_split_args(args[1:]))
    if sub == "check":
        from ..data.check import check_data, print_check

        report = check_data(build_config(rest))
        print_check(report)
        return 0 if report.ok else 1
    from ..data.splitcmd import write_splits

    out = rest.pop("out", None)
    for path in write_splits(build_config(rest), out):
        print(f"wrote {path}")
    return 0


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
    from importlib import resources

    print(USAGE)
    print((resources.files("seglab") / "defaults.yaml").read_text(encoding="utf-8"))
    print(f"recipes: {', '.join(list_recipes())}")
    return 0


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
    if any(a in ("-h", "--help") for a in rest):
        return cmd_help([])
    try:
        return COMMANDS[cmd](rest)
    except (SeglabError, FileNotFoundError) as e:
        # Problems with the user's input end as one line; SEGLAB_DEBUG=1 shows the full trace for bug reports.
        # Any other exception (a ValueError, TypeError, RuntimeError from inside seglab) is a bug: let it show.
        if os.environ.get("SEGLAB_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
