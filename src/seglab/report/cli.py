"""``seglab report RUN_DIR [out=FILE] [k=6] [class=NAME]`` and ``seglab compare RUN_DIR... [out=DIR] [split=NAME]``.

Options use seglab's ``key=value`` style; a token counts as an option only when its key is a
known option, so run folders whose names contain "=" still work.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from rich.console import Console

from ..errors import ConfigError, SeglabError
from .compare import compare_runs, plot_compare_curves, print_table, to_markdown, write_csv
from .html import write_report

REPORT_USAGE = """usage: seglab report RUN_DIR [out=FILE.html] [k=6] [class=NAME|INDEX]
  Write one self-contained HTML report (default RUN_DIR/report.html) with curves, tables, plots and galleries.
  k      number of best and worst images in the galleries
  class  rank the galleries by the IoU of this class instead of per_image.csv's IoU"""

COMPARE_USAGE = """usage: seglab compare RUN_DIR [RUN_DIR...] [out=DIR] [split=NAME]
  Print one row per run: model, encoder, parameters, GFLOPs, training time, images/s and every eval metric.
  out    also write DIR/comparison.md, DIR/comparison.csv and DIR/comparison_curves.png/.svg
  split  compare eval_<split>/ results instead of eval/"""


def _parse(argv: Sequence[str], options: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Split argv into positional arguments and known ``key=value`` options."""
    positional, values = [], {}
    for token in argv:
        key, sep, value = token.partition("=")
        if sep and key in options:
            if not value:
                raise ConfigError(f"option {key}= needs a value, e.g. {key}=...")
            values[key] = value
        elif token.startswith("-"):
            raise ConfigError(f"unknown option {token!r}: options are {', '.join(o + '=' for o in options)}")
        else:
            positional.append(token)
    return positional, values


def _wants_help(argv: Sequence[str]) -> bool:
    """True for -h / --help / help."""
    return any(a in ("-h", "--help", "help") for a in argv)


def report_main(argv: list[str]) -> int:
    """Entry point of ``seglab report``; returns the exit code."""
    if _wants_help(argv):
        print(REPORT_USAGE)
        return 0
    try:
        positional, options = _parse(argv, ("out", "k", "class"))
        if len(positional) != 1:
            raise ConfigError(f"give exactly one RUN_DIR (got {len(positional)})\n{REPORT_USAGE}")
        k_text = options.get("k", "6")
        if not k_text.isdigit() or int(k_text) < 1:
            raise ConfigError(f"k={k_text} must be a positive integer")
        path = write_report(positional[0], options.get("out"), k=int(k_text), gallery_class=options.get("class"))
    except (SeglabError, FileNotFoundError) as exc:  # the user's mistake: one line; a bug keeps its traceback
        print(f"seglab report: error: {exc}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    return 0


def compare_main(argv: list[str]) -> int:
    """Entry point of ``seglab compare``; returns the exit code."""
    if _wants_help(argv):
        print(COMPARE_USAGE)
        return 0
    try:
        run_dirs, options = _parse(argv, ("out", "split"))
        if not run_dirs:
            raise ConfigError(f"give at least one RUN_DIR\n{COMPARE_USAGE}")
        rows = compare_runs(run_dirs, split=options.get("split"))
        console = Console()
        if not console.is_terminal:  # piped or logged: rich would squeeze a dozen columns into 80 characters
            console = Console(width=240)
        print_table(rows, console)
        if "out" in options:
            out = Path(options["out"])
            out.mkdir(parents=True, exist_ok=True)
            (out / "comparison.md").write_text(to_markdown(rows))
            write_csv(rows, out / "comparison.csv")
            written = [out / "comparison.md", out / "comparison.csv"]
            try:
                written += plot_compare_curves(run_dirs, out / "comparison_curves")
            except SeglabError as exc:  # runs without metrics.csv still get their tables
                print(f"seglab compare: no curves plot: {exc}", file=sys.stderr)
            print(f"compared {len(rows)} runs; wrote " + ", ".join(str(p) for p in written))
        else:
            print(f"compared {len(rows)} runs (out=DIR writes the table as Markdown and CSV, and the curves)")
    except (SeglabError, FileNotFoundError) as exc:
        print(f"seglab compare: error: {exc}", file=sys.stderr)
        return 2
    return 0
