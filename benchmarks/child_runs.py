"""Run benchmark variants as child processes: pinned to one core each (or all cores), results read from their logs.

A child prints one ``RESULT {json}`` line when it finishes; everything else it prints goes to its log file.
Shared by bench_tgs.py and tgs_recipe_probe.py, so both launch and collect candidates the same way.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def start_child(cmd: list[str], log_path: Path, core: int | None = None) -> subprocess.Popen:
    """Start ``cmd`` logging to ``log_path``; with ``core``, pinned to that core with one thread (no contention)."""
    with open(log_path, "w") as log:  # the child keeps its own copy of the file descriptor
        if core is None:
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=lambda: os.sched_setaffinity(0, {core}))  # noqa: PLW1509 (single-threaded parent)


def child_result(name: str, proc: subprocess.Popen, log_path: Path) -> dict:
    """Wait for a child and return its RESULT; exit naming the log when it failed."""
    proc.wait()
    lines = [ln for ln in log_path.read_text().splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"{name} failed (exit code {proc.returncode}); see {log_path}")
    return json.loads(lines[0][len("RESULT "):])


def result_or_failure(label: str, proc: subprocess.Popen, log_path: Path) -> dict:
    """Wait for a child; its RESULT, or a failure record naming its log and last line (so the other variants go on)."""
    proc.wait()
    text = log_path.read_text(errors="replace").splitlines()
    lines = [ln for ln in text if ln.startswith("RESULT ")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1][len("RESULT "):])
    last = [ln for ln in text if ln.strip()][-1:] or ["(no output)"]
    print(f"{label} failed (exit code {proc.returncode}): {last[0]}; see {log_path}", flush=True)
    return {"status": "failed", "error": last[0][:300], "log": str(log_path)}


def print_result(result: dict) -> None:
    """The line a child prints last, which child_result reads back."""
    print("RESULT " + json.dumps(result), flush=True)
