"""Shared fixtures: the real datasets beside the repository (skipped when absent) and small generated ones."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    """Path of a real dataset in ../shared/data, skipping the test when it is not there."""
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name} not found at {path}")
    return path


@pytest.fixture(scope="session")
def grains_dir(tmp_path_factory) -> Path:
    """A small synthetic grains dataset (RGB colour masks, red background / green grain)."""
    from seglab.data.synthetic import make_grains_dataset

    return make_grains_dataset(tmp_path_factory.mktemp("grains"), n=24, size=64, seed=1)


def write_png(path: Path, array: np.ndarray, mode: str | None = None, palette: list[int] | None = None) -> Path:
    """Save an array as PNG (optionally as a palette image)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    if palette is not None:
        img = img.convert("P") if img.mode != "P" else img
        img.putpalette(palette)
    img.save(path)
    return path


def signal_after_first_epoch(cmd: list[str], run: Path, logs_dir: Path, signum: int, env: dict,
                             wait: float = 120) -> tuple[int, str, str, float]:
    """Start ``cmd`` (a real ``seglab train``), send ``signum`` once metrics.csv in ``run`` holds an epoch (the
    second has just begun), wait for the exit; returns (exit code, stdout, stderr, when the signal was sent)."""
    import subprocess
    import time

    def logged() -> bool:
        csv_path = run / "metrics.csv"
        return csv_path.exists() and len(csv_path.read_text().splitlines()) > 1

    logs = logs_dir / "stdout.txt", logs_dir / "stderr.txt"
    with logs[0].open("w") as stdout, logs[1].open("w") as stderr:  # files, not pipes: nothing can block the child
        proc = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=stderr, text=True)
        try:
            deadline = time.time() + 240
            while not logged() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, logs[1].read_text()
            sent = time.time()
            proc.send_signal(signum)
            proc.wait(timeout=wait)
        finally:
            if proc.poll() is None:
                proc.kill()
    return proc.returncode, logs[0].read_text(), logs[1].read_text(), sent


def rank_pids(launcher: int) -> list[int]:
    """The spawned rank processes of a ``cpu_procs`` launcher (Linux /proc)."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children")
    pids = children.read_text().split() if children.exists() else []
    return [int(p) for p in pids if Path(f"/proc/{p}/cmdline").exists()
            and b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
