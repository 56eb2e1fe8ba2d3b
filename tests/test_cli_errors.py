"""The command line prints a user's mistake (a SeglabError or a missing file) as one line and exit code 2;
any other exception is a bug in seglab and keeps its traceback."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seglab.cli.main import main
from seglab.errors import ConfigError, DataError, SeglabError
from seglab.report.cli import compare_main, report_main
from seglab.runtime.precision import resolve_device

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}


def seglab(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    """Run ``seglab ARGS`` in a fresh interpreter, after ``prelude`` (e.g. a monkeypatch)."""
    code = textwrap.dedent(prelude) + "\nimport sys\nfrom seglab.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *args], env=ENV, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, says", [
    (["train", "epoch=3"], "unknown config key 'epoch'"),
    (["eval", "tta=sideways"], "tta='sideways' is not one of"),
    (["predict", "precision=fp8"], "precision='fp8' is not one of"),
    (["train", "epochs=many"], "config key 'epochs' expects int"),
    (["train", "recipe=no-such-recipe"], "unknown recipe"),
    (["models", "imgsz=big"], "imgsz='big'"),
    (["data", "frobnicate"], "usage: seglab data"),
])
def test_a_bad_key_or_value_is_one_line_and_exit_code_2(args, says, capsys):
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and says in err and "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1, err


def test_a_missing_file_is_one_line(monkeypatch, capsys):
    import seglab.data.check as check

    def missing(cfg):
        raise FileNotFoundError(2, "No such file or directory", "/nowhere/images")

    monkeypatch.setattr(check, "check_data", missing)
    assert main(["data", "check", "data=/nowhere"]) == 2
    assert capsys.readouterr().err.startswith("error: [Errno 2] No such file or directory: '/nowhere/images'")


@pytest.mark.parametrize("bug", [ValueError, TypeError, RuntimeError, KeyError])
def test_an_internal_error_inside_a_command_is_not_turned_into_a_one_liner(bug, monkeypatch, capsys):
    import seglab.data.check as check

    def broken(cfg):
        raise bug("internal bug in check_data")

    monkeypatch.setattr(check, "check_data", broken)
    with pytest.raises(bug, match="internal bug"):
        main(["data", "check", "data=/anywhere"])
    assert "error:" not in capsys.readouterr().err


def test_seglab_debug_shows_the_trace_of_a_user_error_too(monkeypatch):
    monkeypatch.setenv("SEGLAB_DEBUG", "1")
    with pytest.raises(ConfigError, match="unknown config key"):
        main(["train", "epoch=3"])


def test_the_command_prints_a_traceback_for_a_bug_and_one_line_for_a_mistake():
    bug = seglab("data", "check", "data=/anywhere", prelude="""
        import seglab.data.check
        def broken(cfg):
            raise ValueError("internal bug in check_data")
        seglab.data.check.check_data = broken
    """)
    assert bug.returncode == 1 and "Traceback (most recent call last)" in bug.stderr
    assert "ValueError: internal bug in check_data" in bug.stderr
    mistake = seglab("train", "epoch=3")
    assert mistake.returncode == 2 and "Traceback" not in mistake.stderr
    assert mistake.stderr.strip().splitlines() == [mistake.stderr.strip()]
    assert mistake.stderr.startswith("error: unknown config key 'epoch'")


def test_report_and_compare_print_a_mistake_and_raise_a_bug(tmp_path, monkeypatch, capsys):
    assert report_main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("seglab report: error: run folder")
    assert compare_main(["-x"]) == 2
    assert "unknown option '-x'" in capsys.readouterr().err
    import seglab.report.cli as report_cli

    def broken(*args, **kwargs):
        raise ValueError("internal bug in write_report")

    monkeypatch.setattr(report_cli, "write_report", broken)
    with pytest.raises(ValueError, match="internal bug"):
        report_main([str(tmp_path)])


def test_seglab_warnings_print_as_one_warning_line_without_python_source_echo():
    prelude = """
        import os, warnings
        import seglab.cli.main as cli
        def warn(rest):
            warnings.warn_explicit("on_error=skip: leaving out 1 image(s) without a mask: a.tif", UserWarning,
                                   filename=os.path.join("x", "seglab", "data", "plan.py"), lineno=125)
            return 0
        cli.COMMANDS["models"] = warn
    """
    result = seglab("models", prelude=prelude)
    assert result.returncode == 0 and result.stderr == \
        "warning: on_error=skip: leaving out 1 image(s) without a mask: a.tif\n", result.stderr


def test_user_errors_are_seglab_errors_and_still_value_errors():
    for cls in (ConfigError, DataError):
        assert issubclass(cls, SeglabError) and issubclass(cls, ValueError)
    with pytest.raises(ConfigError, match="device='gpu0'"):
        resolve_device("gpu0")


@pytest.mark.parametrize("command", ["measure", "explain", "export", "bench"])
def test_delegated_command_help_says_what_each_key_means(command: str, capsys) -> None:
    import importlib

    from seglab.cli.main import OPTION_TABLES, main

    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    module, options_attr, help_attr = OPTION_TABLES[command]
    options = getattr(importlib.import_module(f"seglab.{module}"), options_attr)
    meanings = getattr(importlib.import_module(f"seglab.{module}"), help_attr)
    assert set(meanings) == set(options), "every option needs a meaning, and every meaning an option"
    for key in options:  # each key's line carries its meaning
        line = next(row for row in out.splitlines() if row.strip().startswith(f"{key}="))
        assert meanings[key] in line
