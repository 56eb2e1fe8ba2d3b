"""benchmarks/bench_gpu.py and probe_compile.py: a clean exit without CUDA, the pack round trip, and the whole script
path on the CPU (--cpu-smoke) on a tiny subset."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_gpu.py"
PROBE = ROOT / "benchmarks" / "probe_compile.py"


def load(path: Path):
    """Import a benchmark script as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def no_gpu_env() -> dict:
    """This interpreter with seglab's sources and no visible GPU (on a GPU machine too)."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT / "src"), "SEGLAB_HEARTBEAT": "0"}


@pytest.mark.parametrize("script", [BENCH, PROBE])
def test_without_cuda_it_says_so_and_exits_cleanly(script):
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=no_gpu_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no CUDA GPU on this machine" in out.stdout and "nothing measured" in out.stdout
    assert "|" not in out.stdout  # no table: nothing was measured


def test_pack_and_unpack_give_back_the_tgs_layout(tmp_path):
    bench = load(BENCH)
    source = bench.synthetic_tgs(tmp_path / "src", n=6)
    pack = bench.pack_tgs(source, tmp_path / "pack" / "tgs-salt.npz.xz")
    assert pack.name.endswith(".npz.xz") and pack.stat().st_size > 0
    folder = bench.unpack_tgs(pack)
    assert folder == tmp_path / "pack" / "tgs-salt"
    for name in sorted(p.name for p in (source / "train" / "images").glob("*.png")):
        for kind in ("images", "masks"):
            before = np.asarray(Image.open(source / "train" / kind / name).convert("L"))
            after = np.asarray(Image.open(folder / "train" / kind / name))
            assert np.array_equal(before, after), (kind, name)
    assert (folder / "depths.csv").read_text() == (source / "depths.csv").read_text()
    from seglab.config import build_config
    from seglab.data.plan import plan_data

    plan = plan_data(build_config({"data": str(folder)}))
    assert plan.source.format == "tgs" and sum(len(v) for v in plan.splits.values()) == 6


def test_the_table_marks_skipped_and_failed_rows():
    bench = load(BENCH)

    class Args:
        minutes = 1.5

    text = bench.table({"ceiling_seglab": {"rows": [{"batch": 32, "images_per_s": 900.0, "peak_gb": 3.2}]},
                        "ceiling_smp": {"skipped": "segmentation_models_pytorch is not installed"},
                        "seglab_auto": {"failed": "failed (exit 1)"},
                        "seglab_shipped": {"images_per_s": 430.0, "peak_gb": 4.0, "epochs": 7, "val": 0.71,
                                           "batch": 32, "note": ""}}, Args())
    lines = text.splitlines()
    assert lines[0].startswith("| run | batch | img/s | peak GPU mem (GB) | epochs | val TGS |")
    assert "| model-only ceiling: seglab tgs-salt model | 32 | 900 | 3.2 |" in text
    assert "smp Unet(resnet34) | - | - | - | - | - | segmentation_models_pytorch is not installed |" in text
    assert "batch=auto | - | - | - | - | - | failed (exit 1) |" in text
    assert "(as shipped) | 32 | 430 | 4.0 | 7 | 0.7100 |" in text
    assert "smp plain loop, 1.5 min | - |" in text  # not run


def test_cpu_smoke_runs_the_script_path(tmp_path):
    """The parent's path (a tiny pack written and read back, a child process, its RESULT line, the table) on one
    row; the full --cpu-smoke runs every row as children (about a minute on two cores: imports dominate)."""
    out_md = tmp_path / "table.md"
    out = subprocess.run([sys.executable, str(BENCH), "--cpu-smoke", "--only", "seglab_auto", "--out", str(out_md)],
                         capture_output=True, text=True, env=no_gpu_env(), timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = out_md.read_text()
    row = next(line for line in table.splitlines() if "batch=auto |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    # on a CPU batch=auto is the plan's rule: 24 training images (30, split 8:1:1) -> 8 for two steps per epoch
    assert cells[1] == "8" and float(cells[2]) > 0 and cells[4] == "1"
    assert "not run" in table and "failed" not in table


def test_ceiling_and_smp_rows_in_process(tmp_path):
    bench = load(BENCH)
    seglab = bench.ceiling("seglab", [2], 1, 32, "cpu")
    assert [r["batch"] for r in seglab["rows"]] == [2] and seglab["rows"][0]["images_per_s"] > 0
    pytest.importorskip("segmentation_models_pytorch")
    smp = bench.ceiling("smp", [2, 3], 1, 32, "cpu")
    assert [r["batch"] for r in smp["rows"]] == [2, 3]
    folder = bench.synthetic_tgs(tmp_path / "tgs", n=20)
    loop = bench.smp_loop(folder, 0.5, 4, "cpu", 0)
    assert loop["images_per_s"] > 0 and loop["epochs"] > 0 and 0.0 <= loop["val"] <= 1.0


def test_probe_compile_budget_rule_and_smoke():
    probe = load(PROBE)
    results = [{"mode": "eager", "warm_s": 2.0, "images_per_s": 400.0},
               {"mode": "default", "warm_s": 60.0, "images_per_s": 600.0},
               {"mode": "reduce-overhead", "warm_s": 20.0, "images_per_s": 800.0}]
    rows = probe.budget_table(results, 90.0, 32).splitlines()
    assert rows[2].startswith("| eager | 2.0 | 400 | 1.00x | 35200 | - |")
    assert rows[3] == "| default | 60.0 | 600 | 1.50x | 18000 | no |"  # faster, but 60 s of compiling lose
    assert rows[4] == "| reduce-overhead | 20.0 | 800 | 2.00x | 56000 | yes |"
    out = subprocess.run([sys.executable, str(PROBE), "--cpu-smoke", "--modes", "eager,reduce-overhead"],
                         capture_output=True, text=True, env=no_gpu_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| eager |" in out.stdout and "CUDA graphs: GPU only" in out.stdout
