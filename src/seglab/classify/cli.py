"""``seglab classify train|eval|predict|compare|sweep key=value ...`` (the lead hooks ``main`` under ``seglab``)."""
from __future__ import annotations

import dataclasses
import inspect
import re
import sys

from . import runner
from .config import ClassifyConfig, parse_args
from .models import list_classifiers
from ..errors import SeglabError

MODES = {
    "train": runner.train,
    "eval": runner.evaluate_run,
    "predict": runner.predict_run,
    "compare": runner.compare_run,
    "sweep": runner.sweep_run,
}

USAGE = f"""usage: seglab classify MODE key=value ...

modes:
  train    data=digits|mnist:PATH|cifar10:PATH|FOLDER model=NAME epochs=N batch=N lr=X out=runs/classify/NAME
  eval     weights=RUN/best.pt [data=...]
  predict  weights=RUN/best.pt source=IMAGE_OR_FOLDER
  compare  models=NAME,NAME,... data=... epochs=N
  sweep    model=NAME param=epochs|filters|n_conv|kernel_size|padding|activation|width|lr|batch values=V1,V2,...

models: {', '.join(list_classifiers())}, or timm:<name>
example: seglab classify train data=digits epochs=1
"""


def keys_help() -> str:
    """Every classify key with its default and the comment beside it in ``ClassifyConfig``."""
    comments: dict[str, str] = {}
    try:
        source = inspect.getsource(ClassifyConfig)
    except (OSError, TypeError):  # no source (a frozen build): names and defaults only
        source = ""
    last = None
    for line in source.splitlines():
        field_line = re.match(r"\s{4}(\w+):[^#]*(?:#\s*(.*))?$", line)
        more = re.match(r"\s{4}#\s*(.*)$", line)
        if field_line:
            last = field_line.group(1)
            comments[last] = field_line.group(2) or ""
        elif more and last:
            comments[last] = f"{comments[last]} {more.group(1)}".strip()
    rows = []
    for f in dataclasses.fields(ClassifyConfig):
        default = "" if f.default is None else str(f.default).lower() if isinstance(f.default, bool) else f.default
        rows.append(f"  {f'{f.name}={default}':<22}{'  # ' + comments[f.name] if comments.get(f.name) else ''}".rstrip())
    return "keys (default; empty = the model's recipe or the mode decides):\n" + "\n".join(rows)


def main(argv: list[str]) -> int:
    """Run one classify mode; returns a process exit code (2 for bad arguments or data)."""
    if not argv or argv[0] in ("-h", "--help", "help") or any(a in ("-h", "--help") for a in argv[1:]):
        print(USAGE)
        if argv:
            print(keys_help())
        return 0 if argv else 2
    mode, args = argv[0], argv[1:]
    if mode not in MODES:
        print(f"error: unknown mode {mode!r}; choose one of {', '.join(MODES)}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        MODES[mode](parse_args(args))
    except (SeglabError, ValueError) as e:  # bad settings or data: a clear message, not a stack trace
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
