"""The real commands end to end on a tiny dataset: train -> eval -> predict -> measure -> report, and resume."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.cli.main import main

TINY = ["model=unet_small", "batch=4", "lr=0.003", "workers=0", "augment=flips"]


def _rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained_run(grains_dir, tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("runs")
    assert main(["train", f"data={grains_dir}", "epochs=3", f"project={project}", "name=tiny", *TINY]) == 0
    return project / "tiny"


def test_train_writes_config_metrics_checkpoints_summary(trained_run):
    assert (trained_run / "config.yaml").exists()
    rows = _rows(trained_run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]  # numbered from 1, as the epoch lines
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["epochs_done"] == 3 and summary["params"] > 1e6 and summary["best_metric"] == "fg_iou"
    assert (trained_run / "checkpoints" / "best.pt").exists() and (trained_run / "checkpoints" / "last.pt").exists()
    assert not list((trained_run / "checkpoints").glob("*.tmp"))


def test_eval_writes_metrics_tables_predictions_and_report(trained_run, capsys):
    assert main(["eval", f"weights={trained_run}", "eval_split=test"]) == 0
    printed = capsys.readouterr()
    out = trained_run / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("pixel_acc", "miou", "mpa", "precision", "recall", "f1", "fwiou", "fg_iou"):
        assert 0.0 <= metrics[key] <= 1.0, key
    # grains are not TGS data: no TGS metric nor coverage table, plain words on empty images and missed objects
    assert "tgs" not in metrics and "tgs_by_coverage" not in metrics
    assert metrics["empty_images"] + metrics["images_with_object"] == 2
    text = printed.out + printed.err
    assert "salt" not in text and "Emptiness" not in text and "TGS" not in text
    assert "empty images predicted with an object" in text
    lines = [line for line in text.splitlines() if any(c.isalnum() for c in line)]
    assert len(lines) == len(set(lines)), "a line printed twice"
    assert metrics["split"] == "test" and metrics["images"] == 2 + 1 - 1  # 8:1:1 of 24 -> 2 test images
    confusion = np.load(out / "confusion.npy")
    assert confusion.shape == (2, 2) and confusion.sum() == 2 * 64 * 64
    with (out / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(Path(r["pred"]).exists() for r in rows)
    pred = np.array(Image.open(rows[0]["pred"]))
    assert pred.shape == (64, 64) and set(np.unique(pred)) <= {0, 1}
    for r in rows:  # coverage columns are the true and predicted foreground fractions of each image
        truth = np.array(Image.open(r["mask"]).convert("RGB"))[..., 1] > 128  # grains: green object on red
        assert float(r["coverage"]) == pytest.approx(truth.mean(), abs=1e-5)
        assert float(r["pred_coverage"]) == pytest.approx((np.array(Image.open(r["pred"])) == 1).mean(), abs=1e-5)
    report = (trained_run / "report.html").read_text()
    assert report.count('<table id="per-class"') == 1 and "background" in report and "object" in report
    assert report.count('<table id="tgs-by-coverage-eval"') == 0 and report.count('<table id="emptiness-eval"') == 1
    plots = {p.stem for p in (trained_run / "report_files").glob("*.png")}  # every plot, from this real run
    assert {"curves", "eval_confusion_raw", "eval_confusion_normalized", "eval_per_image_iou", "eval_per_class_iou",
            "eval_gallery_best", "eval_gallery_worst", "eval_samples", "eval_class_pixels"} <= plots
    assert all((trained_run / "report_files" / f"{p}.png").stat().st_size > 2000 for p in plots)
    assert "object" in (trained_run / "report_files" / "eval_confusion_raw.svg").read_text()  # class names drawn
    # a second eval of the run says it replaces the first and keeps the first's scores
    assert main(["eval", f"weights={trained_run}", "eval_split=test", "report=false"]) == 0
    assert f"note: {out} held an earlier evaluation: replaced" in capsys.readouterr().out
    assert json.loads((out / "metrics_previous.json").read_text())["miou"] == metrics["miou"]


def test_predict_outputs_have_input_size_even_for_odd_sizes(trained_run, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (101, 77, 3), dtype=np.uint8)).save(src / "odd.png")
    Image.fromarray(rng.integers(0, 255, (50, 60), dtype=np.uint8)).save(src / "gray.png")  # gray into an RGB model
    assert main(["predict", f"weights={trained_run}", f"source={src}", f"project={tmp_path}", "name=pred",
                 "alpha=0.5", "tta=flip"]) == 0
    out = tmp_path / "pred"
    assert np.array(Image.open(out / "odd_mask.png")).shape == (101, 77)
    assert np.array(Image.open(out / "odd_color.png")).shape == (101, 77, 3)
    assert np.array(Image.open(out / "odd_overlay.png")).shape == (101, 77, 3)
    assert np.array(Image.open(out / "gray_mask.png")).shape == (50, 60)


def test_measure_from_model_prediction(trained_run, grains_dir, tmp_path):
    image = sorted((grains_dir / "images").iterdir())[0]
    assert main(["measure", f"image={image}", f"weights={trained_run}", f"out={tmp_path / 'm'}",
                 "pixel_size=0.65um"]) == 0
    assert (tmp_path / "m" / "grains.csv").exists() and (tmp_path / "m" / "classes.csv").exists()


def test_unknown_key_and_bad_value_are_clear(trained_run, capsys):
    assert main(["predict", f"weights={trained_run}", "sauce=x.png"]) == 2
    assert "Did you mean: source" in capsys.readouterr().err
    assert main(["train", "optimizer=adamm"]) == 2
    assert "Did you mean 'adam" in capsys.readouterr().err


def _train_cmd(data: Path, project: Path, name: str, epochs: int) -> list[str]:
    return [sys.executable, "-m", "seglab", "train", f"data={data}", f"epochs={epochs}", f"project={project}",
            f"name={name}", "deterministic=true", "precision=fp32", "seed=5", *TINY]


def test_sigkill_mid_training_then_resume_matches_uninterrupted_run(grains_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_train_cmd(grains_dir, tmp_path, "ref", 4), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(_train_cmd(grains_dir, tmp_path, "killed", 4), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    run = tmp_path / "killed"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill as soon as two epochs are logged: the third is mid-flight
        if (run / "metrics.csv").exists() and len(_rows(run)) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(_rows(run)) < 4, "the run finished before it could be killed"
    resumed = subprocess.run([sys.executable, "-m", "seglab", "train", f"resume={run}"], env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    ref, got = _rows(tmp_path / "ref"), _rows(run)
    assert [r["epoch"] for r in got] == ["1", "2", "3", "4"]
    for key in ("train_loss", "val_loss", "val_fg_iou"):
        assert float(got[-1][key]) == pytest.approx(float(ref[-1][key]), rel=1e-5, abs=1e-6), key


def test_time_limit_fits_the_lr_schedule_to_the_budget(grains_dir, tmp_path, monkeypatch):
    """With time_limit, the run stops at the budget and its cosine schedule has annealed by then (not cut mid-way)."""
    import types

    from seglab.engine import build, trainer

    clock = iter(range(0, 10**6, 10))  # every clock read advances 10 s: one epoch = 20 s of wall time
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    monkeypatch.setattr(build, "time", types.SimpleNamespace(perf_counter=lambda: 0.0))  # setup: no simulated time
    # val_share=1: every epoch validates, 10 s after its 10 s of training (with 0.1, validations would wait)
    assert main(["train", f"data={grains_dir}", "epochs=50", "time_limit=1", "lr=0.01", f"project={tmp_path}",
                 "name=budget", "val_share=1", *[a for a in TINY if not a.startswith("lr=")]]) == 0
    rows = _rows(tmp_path / "budget")
    assert len(rows) == 3  # 60 s budget / 20 s per epoch
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[-1] < 0.0002 and lrs[0] > 0.005  # annealed to the floor at the end of the budget
    assert json.loads((tmp_path / "budget" / "summary.json").read_text())["epochs_done"] == 3
