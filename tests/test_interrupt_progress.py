"""A training run that keeps people informed and never loses their work (issue 30, the training side).

Progress within epochs (counted in images; heartbeat lines with rate and ETA when the output is not a terminal),
the line that says how ``time_limit`` set the number of epochs, exit codes of stopped runs (130 for Ctrl-C, 143 for
SIGTERM) with a resumable last epoch, a run stopped before its first epoch that says there is nothing to resume, and
the warning when validation predicts one class for nearly every pixel. SIGTERM to a real process (exit 143) and the
first-epoch interruption are in test_interrupt.py.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from conftest import rank_pids, signal_after_first_epoch, write_png
from torch import nn

from seglab.classify.engine import train_one_epoch as classify_epoch
from seglab.classify.data import ImageSplit
from seglab.cli.main import main
from seglab.engine import build as build_module
from seglab.engine import trainer as trainer_module
from seglab.engine.collapse import CollapseWatch, collapsed_class, collapse_warning
from seglab.engine.loop import images_per_pass, train_one_epoch
from seglab.runtime.normalize import Normalizer
from seglab.runtime.precision import Precision

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = ["model=unet_small", "workers=0", "precision=fp32", "augment=none", "report=false"]
HEARTBEAT = re.compile(r"^train (\d+)/(\d+): (\d+)/(\d+) img \((\d+)%\), [\d.e+]+ img/s, ETA \d+s, loss [\d.]+, lr ")


def _dataset(root: Path, n: int = 12, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        write_png(root / "images" / f"{i:02d}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        mask = np.zeros((size, size), np.uint8)
        mask[4:16, 4 + i % 8:16 + i % 8] = 255
        write_png(root / "masks" / f"{i:02d}.png", mask)
    return root


def _rows(run: Path) -> list[dict]:
    if not (run / "metrics.csv").exists():
        return []
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


# ---- exit codes and resume of a real `python -m seglab train` ------------------------------------------------------

def test_ctrl_c_exits_130_and_resume_true_runs_to_the_end(tmp_path):
    data, run = _dataset(tmp_path / "data"), tmp_path / "run"
    cmd = [sys.executable, "-m", "seglab", "train", f"data={data}", "epochs=50", "batch=2", "split=1:0:0",
           f"project={tmp_path}", "name=run", *TINY]
    code, out, err, _ = signal_after_first_epoch(cmd, run, tmp_path, signal.SIGINT, ENV)
    assert code == 130, f"{code}\n{out}\n{err}"
    assert "SIGINT received" in out and f"continue with: seglab train resume={run}" in out
    assert err.strip().endswith("stopped by SIGINT") and "Traceback" not in err
    done = len(_rows(run))
    assert 1 <= done < 50
    assert json.loads((run / "summary.json").read_text())["stopped_by"] == "SIGINT"
    # resume=true (with project and name) goes on from the saved epoch to the end, here one more epoch
    resumed = subprocess.run([sys.executable, "-m", "seglab", "train", "resume=true", f"project={tmp_path}",
                              "name=run", f"epochs={done + 1}"], env=ENV, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run} from epoch {done}" in resumed.stdout
    assert [int(r["epoch"]) for r in _rows(run)] == list(range(1, done + 2))  # metrics.csv numbers from 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_by"] is None and summary["epochs_complete"] == done + 1
    assert resumed.stdout.rstrip().splitlines()[-1].startswith("done: best fg_iou=")


def test_ctrl_c_on_a_cpu_procs_run_exits_130_from_the_launcher_too(grains_dir, tmp_path):
    """cpu_procs ranks are child processes that end quietly on Ctrl-C; the launching process still exits 130."""
    run = tmp_path / "procs"
    cmd = [sys.executable, "-m", "seglab", "train", f"data={grains_dir}", "epochs=50", "batch=2", "cpu_procs=2",
           f"project={tmp_path}", "name=procs", *TINY]
    with (tmp_path / "out.txt").open("w") as stdout, (tmp_path / "err.txt").open("w") as stderr:
        # its own process group, as a terminal's foreground job: Ctrl-C reaches the launcher and both ranks
        proc = subprocess.Popen(cmd, env=ENV, stdout=stdout, stderr=stderr, start_new_session=True)
        try:
            deadline = time.time() + 300
            while not _rows(run) and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, (tmp_path / "err.txt").read_text()
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:  # say where the ranks wait (they print their stacks on SIGUSR1)
                for pid in rank_pids(proc.pid):
                    os.kill(pid, signal.SIGUSR1)
                time.sleep(3)
                raise AssertionError(f"still running 120 s after Ctrl-C\n{(tmp_path / 'out.txt').read_text()}\n"
                                     f"{(tmp_path / 'err.txt').read_text()}") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    out, err = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert proc.returncode == 130, f"{proc.returncode}\n{out}\n{err}"
    assert out.count("SIGINT received") == 1 and "Traceback" not in err  # rank 0 speaks for both
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGINT" and summary["world_size"] == 2 and summary["epochs_complete"] >= 1


def test_ctrl_c_while_cpu_procs_ranks_start_ends_as_interrupted_not_a_launcher_trace(grains_dir, tmp_path):
    """A Ctrl-C while the ranks are still starting (importing torch) stops them before they train; the launcher says
    the run was interrupted (exit 130) instead of raising torch's ProcessExitedException or training to the end."""
    cmd = [sys.executable, "-m", "seglab", "train", f"data={grains_dir}", "epochs=50", "batch=2", "cpu_procs=2",
           f"project={tmp_path}", "name=early", *TINY]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(rank_pids(proc.pid)) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)  # the ranks have just been spawned: they are importing
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, f"{proc.returncode}\n{out}\n{err}"
    assert "ProcessExitedException" not in err and "stopped by SIGINT" in err


# ---- progress within an epoch --------------------------------------------------------------------------------

def test_a_piped_run_prints_heartbeat_lines_with_images_rate_and_eta(tmp_path):
    data = _dataset(tmp_path / "data", n=16, size=64)
    done = subprocess.run([sys.executable, "-m", "seglab", "train", f"data={data}", "epochs=1", "batch=1",
                           "split=3:1:0", f"project={tmp_path}", "name=run", *TINY],
                          env={**ENV, "SEGLAB_HEARTBEAT": "0.05"}, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    beats = [HEARTBEAT.match(line) for line in done.stdout.splitlines()]
    beats = [m for m in beats if m]
    assert beats, done.stdout
    assert {(m[1], m[2], m[4]) for m in beats} == {("1", "1", "12")}  # epoch 1 of 1, 12 training images
    counts = [int(m[3]) for m in beats]
    assert counts == sorted(counts) and counts[-1] <= 12  # images (batch 1 here), growing
    assert "\r" not in done.stdout and "\r" not in done.stderr  # no bar drawn into a pipe


class _Bce(nn.Module):
    def forward(self, output, target):
        return nn.functional.binary_cross_entropy_with_logits(output[:, 0].float(), target.float())


def test_progress_counts_images_not_batches(capsys, monkeypatch):
    monkeypatch.setenv("SEGLAB_HEARTBEAT", "1e-9")  # a line after every step
    torch.manual_seed(0)
    model = nn.Conv2d(1, 1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    dataset = [{"image": torch.randint(0, 255, (1, 4, 4), dtype=torch.uint8), "mask": torch.randint(0, 2, (4, 4))}
               for _ in range(6)]
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    assert images_per_pass(loader) == 6 and images_per_pass([1, 2]) is None
    train_one_epoch(model, loader, _Bce(), optimizer, scheduler, Precision(torch.device("cpu"), None, False),
                    Normalizer([0.5], [0.25], 255.0), epoch=2)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("train 3:")]
    assert [ln.split(",")[0] for ln in lines] == ["train 3: 2/6 img (33%)", "train 3: 4/6 img (67%)",
                                                  "train 3: 6/6 img (100%)"]
    assert all("img/s" in ln and "ETA" in ln and "loss" in ln for ln in lines)


def test_classify_epochs_count_images_too(capsys, monkeypatch):
    monkeypatch.setenv("SEGLAB_HEARTBEAT", "1e-9")
    torch.manual_seed(0)
    split = ImageSplit(torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 2, (10,)))
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    model.register_forward_pre_hook(lambda module, inputs: (inputs[0].float() / 255,))  # uint8 in, as Normalized
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    classify_epoch(model, split, optimizer, scheduler, Precision(torch.device("cpu"), None, False), batch_size=4,
                   desc="train 1/3")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("train 1/3:")]
    assert [ln.split(",")[0] for ln in lines] == ["train 1/3: 4/8 img (50%)", "train 1/3: 8/8 img (100%)"]


def test_int8_calibration_reports_its_progress(capsys, monkeypatch):
    from seglab.export import quantize

    monkeypatch.setenv("SEGLAB_HEARTBEAT", "1e-9")
    monkeypatch.setattr(quantize, "deploy_input", lambda path, meta: np.zeros((1, 1, 2, 2)))
    reader = quantize._ImageReader(["a.png", "b.png", "c.png"], {})
    while reader.get_next() is not None:
        pass
    assert reader.get_next() is None  # asked again after the end: nothing counted twice
    lines = [ln.split(",")[0] for ln in capsys.readouterr().out.splitlines()]
    assert lines == ["int8 calibration: 1/3 img (33%)", "int8 calibration: 2/3 img (67%)",
                     "int8 calibration: 3/3 img (100%)"]


# ---- how the time budget set the epochs ----------------------------------------------------------------------

def test_the_log_says_how_time_limit_set_the_epochs(grains_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEGLAB_HEARTBEAT", "1e-9")  # a progress line after every batch
    clock = iter(range(0, 10**6, 10))  # every clock read of the trainer advances 10 s: one epoch = 20 s of wall time
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    monkeypatch.setattr(build_module, "time", types.SimpleNamespace(perf_counter=lambda: 0.0))  # setup: no time
    # val_share=1: every epoch validates (10 s after its 10 s of training), so the pace is 20 s an epoch
    assert main(["train", f"data={grains_dir}", "epochs=50", "time_limit=1", f"project={tmp_path}", "name=budget",
                 "batch=4", "val_share=1", *TINY]) == 0
    out = capsys.readouterr().out
    steps = int(re.search(r"(\d+) steps/epoch", out)[1])
    lines = [ln for ln in out.splitlines() if ln.startswith("time_limit=")]
    assert lines == [f"time_limit=1 min at {20 / steps:.2g} s/step fits 3 of the 50 epochs (schedule refitted)"]
    assert len(_rows(tmp_path / "budget")) == 3
    # until the budget line, progress names the total as an upper bound (the first refit does not know validation's
    # cost); after it, the fitted count
    names = {ln.split(":")[0] for ln in out.splitlines() if ln.startswith("train ")}
    assert names == {"train 1/<=50", "train 2/<=6", "train 3/3"}


def test_reading_the_data_counts_in_time_limit(grains_dir, tmp_path, monkeypatch, capsys):
    """time_limit is the command's wall clock: 30 s of reading 12 large TIFFs leave 30 s of a 1-minute budget."""
    clock = iter(range(0, 10**6, 10))
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    setup = iter([0.0, 30.0])  # build_run's clock: started, then 30 s later once the data and model are ready
    monkeypatch.setattr(build_module, "time", types.SimpleNamespace(perf_counter=lambda: next(setup, 30.0)))
    assert main(["train", f"data={grains_dir}", "epochs=50", "time_limit=1", f"project={tmp_path}", "name=setup",
                 "batch=4", "val_share=1", *TINY]) == 0
    out = capsys.readouterr().out
    assert "time_limit: 30 s of it went to reading the data and building the model" in out
    assert len(_rows(tmp_path / "setup")) == 2  # 30 s left at 20 s an epoch: one, and a shortened last; not three


def test_budget_line_when_every_epoch_fits():
    assert trainer_module.budget_line(60, 0.25, 20, 20) == "time_limit=60 min at 0.25 s/step fits all 20 epochs"
    assert trainer_module.budget_line(12, 14.2, 4, 20) == \
        "time_limit=12 min at 14 s/step fits 4 of the 20 epochs (schedule refitted)"


# ---- a model that collapses to one class ---------------------------------------------------------------------

def test_collapse_is_read_from_the_predicted_class_totals():
    assert collapsed_class(torch.tensor([[990, 0], [10, 0]])) == (0, 1.0, 0.99)  # the foreground never predicted
    assert collapsed_class(torch.tensor([[995, 1], [1, 4]])) is None  # 99.5% background truly, foreground found
    assert collapsed_class(torch.tensor([[600, 0], [390, 10]])) == (0, 0.99, 0.6)  # 40% foreground, 1% found
    assert collapsed_class(torch.tensor([[500, 0], [10, 0]]), share=0.99) == (0, 1.0, 500 / 510)
    assert collapsed_class(torch.tensor([[0, 60, 0], [0, 30, 0], [0, 10, 0]]))[:2] == (1, 1.0)  # a middle class
    assert collapsed_class(torch.tensor([[600, 200], [150, 50]])) is None
    assert collapsed_class(torch.zeros(2, 2)) is None  # nothing validated


def test_collapse_warns_once_after_three_in_a_row_or_at_the_end_of_a_short_run():
    one_class, healthy = torch.tensor([[95, 0], [5, 0]]), torch.tensor([[90, 5], [2, 3]])
    watch = CollapseWatch()
    assert [watch.observe(m) for m in (one_class, one_class, healthy, one_class, one_class)] == [False] * 5
    assert watch.observe(one_class) is True  # three in a row
    watch.warn(["background", "grain"], types.SimpleNamespace(lr=0.1, class_weights="", balance=0, data="d"), False)
    assert not watch.observe(one_class) and not watch.at_end()  # once
    short = CollapseWatch()
    short.observe(one_class)
    short.observe(one_class)
    assert short.at_end()  # two validations, both collapsed: all of them
    mixed = CollapseWatch()
    mixed.observe(healthy)
    mixed.observe(one_class)
    assert not mixed.at_end()


def test_collapse_warning_names_the_likely_causes():
    cfg = types.SimpleNamespace(lr=0.5, class_weights="", balance=0.0, rare_windows=0.33, data="data/x")
    text = collapse_warning("background", 0.998, 0.97, 3, cfg, windows=False)
    assert text.startswith("warning: validation predicted 'background' for 99.8% of the pixels in 3 validations in "
                           "a row: the model has collapsed to one class.")
    assert "class_weights=auto" in text and "balance=0.5" in text and "lr=0.5" in text
    assert "seglab data check data=data/x" in text
    assert "rare_windows" in collapse_warning("background", 1.0, 0.97, 3, cfg, windows=True)
    masks_first = collapse_warning("background", 1.0, 1.0, 3, cfg, windows=False)
    assert masks_first.index("seglab data check") < masks_first.index("class imbalance")


def test_a_model_stuck_on_one_class_is_warned_about_in_the_log_and_summary(tmp_path, monkeypatch, capsys):
    real = build_module.create_model

    def constant_background(*args, **kwargs):  # the real model, its output pinned to "background" everywhere
        model = real(*args, **kwargs)
        model.register_forward_hook(lambda module, inputs, output: output * 0 - 10)
        return model
    monkeypatch.setattr(build_module, "create_model", constant_background)
    data = _dataset(tmp_path / "data", n=8)
    assert main(["train", f"data={data}", "epochs=4", "batch=4", "split=3:1:0", f"project={tmp_path}", "name=run",
                 *TINY]) == 0
    out = capsys.readouterr().out
    warnings = [ln for ln in out.splitlines() if "collapsed to one class" in ln]
    assert len(warnings) == 1 and "'background' for 100.0% of the pixels in 3 validations in a row" in warnings[0]
    # given by the third validation, just before its epoch line
    assert out.index("epoch 2/4") < out.index(warnings[0]) < out.index("epoch 3/4")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["warnings"] == [warnings[0]] and summary["stopped_by"] is None


def test_a_short_collapsed_run_is_warned_about_at_the_end(tmp_path, monkeypatch, capsys):
    real = build_module.create_model

    def constant_background(*args, **kwargs):
        model = real(*args, **kwargs)
        model.register_forward_hook(lambda module, inputs, output: output * 0 - 10)
        return model
    monkeypatch.setattr(build_module, "create_model", constant_background)
    data = _dataset(tmp_path / "data", n=8)
    assert main(["train", f"data={data}", "epochs=1", "batch=4", "split=3:1:0", f"project={tmp_path}",
                 "name=run", *TINY]) == 0
    out = capsys.readouterr().out
    assert out.count("collapsed to one class") == 1 and "in 1 validation:" in out
