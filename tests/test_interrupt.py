"""Training that is interrupted (signals, kill -9, a full disk) or fails numerically (NaN/Inf, low-precision overflow).

SIGKILL mid-training followed by a resume that reproduces the uninterrupted metrics is tested in
test_workflow.py; here: SIGTERM/SIGINT to a real training process, kill -9 in the middle of checkpoint
writes, failed writes that must keep the previous checkpoint, and the loop's handling of non-finite losses.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import signal_after_first_epoch, write_png
from torch import nn

from seglab.cli.main import main
from seglab.runtime import checkpoint as checkpoint_module
from seglab.engine import build as build_module
from seglab.engine import trainer as trainer_module
from seglab.models import model_from_checkpoint
from seglab.runtime.checkpoint import load_checkpoint, save_checkpoint
from seglab.engine.loop import NonFiniteLoss, train_one_epoch
from seglab.runtime.normalize import Normalizer
from seglab.runtime.precision import Precision
from seglab.errors import CheckpointError

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = ["model=unet_small", "workers=0", "precision=fp32", "augment=none"]


def _rows(run: Path) -> list[dict]:
    if not (run / "metrics.csv").exists():
        return []
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _tiny_dataset(root: Path, n: int = 8, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        write_png(root / "images" / f"{i:02d}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        mask = np.zeros((size, size), np.uint8)
        mask[4:12, 4 + i:12 + i] = 255
        write_png(root / "masks" / f"{i:02d}.png", mask)
    return root


# ---- SIGTERM / SIGINT to a real training process ------------------------------------------------------------

def test_sigterm_mid_training_finishes_the_step_and_leaves_a_loadable_checkpoint(tmp_path):
    signum = signal.SIGTERM
    run = tmp_path / "run"
    data = _tiny_dataset(tmp_path / "data", n=12)
    cmd = [sys.executable, "-m", "seglab", "train", f"data={data}", "epochs=50", "batch=1", "split=1:0:0",
           f"project={tmp_path}", "name=run", *TINY]
    code, out, err, sent = signal_after_first_epoch(cmd, run, tmp_path, signum, ENV, wait=60)
    assert time.time() - sent < 60
    assert code == 143, f"not the shell's code for SIGTERM (128 + 15): {code}\n{err}"
    assert f"{signum.name} received: finishing this step, then stopping with the last complete epoch saved" in out
    assert f"continue with: seglab train resume={run}" in out, out
    assert "Traceback" not in err and err.strip().endswith("stopped by SIGTERM")
    rows = _rows(run)
    assert 1 <= len(rows) < 50
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] + 1 == int(rows[-1]["epoch"])  # metrics.csv numbers epochs from 1, the checkpoint from 0
    model_from_checkpoint(state, run / "checkpoints" / "last.pt")
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def _signal_self_during(epoch: int, step: int, signum: int = signal.SIGTERM):
    """A train_one_epoch wrapper that sends ``signum`` to this process at one step (deterministic interruption)."""
    real = trainer_module.train_one_epoch

    def wrapped(model, loader, loss_fn, *args, **kwargs):
        calls = iter(range(10**9))

        def loss_then_signal(output, target):
            if kwargs["epoch"] == epoch and next(calls) == step:
                os.kill(os.getpid(), signum)
            return loss_fn(output, target)
        return real(model, loader, loss_then_signal, *args, **kwargs)
    return wrapped


def test_sigint_mid_epoch_stops_after_that_step_and_keeps_the_last_epoch(tmp_path, monkeypatch, capsys):
    data = _tiny_dataset(tmp_path / "data")
    monkeypatch.setattr(trainer_module, "train_one_epoch", _signal_self_during(epoch=1, step=1, signum=signal.SIGINT))
    assert main(["train", f"data={data}", "epochs=5", "batch=2", "split=1:0:0", f"project={tmp_path}", "name=run",
                 *TINY]) == 130  # the shell's code for Ctrl-C: scripts see the run did not finish
    out = capsys.readouterr().out
    run = tmp_path / "run"
    assert "SIGINT received: finishing this step" in out
    # epochs counted from 1, as the epoch lines count them: the second epoch (index 1) was cut short
    assert f"interrupted during epoch 2: the last complete epoch (1) is saved in {run / 'checkpoints' / 'last.pt'}; " \
           f"continue with: seglab train resume={run}" in out
    assert [r["epoch"] for r in _rows(run)] == ["1"] and load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was put back


def test_interrupt_in_the_first_epoch_leaves_nothing_to_resume_and_says_so(tmp_path, monkeypatch, capsys):
    """Before the first epoch completes there is no trained state: no last.pt, one plain line, no -1 or -inf."""
    data = _tiny_dataset(tmp_path / "data")
    monkeypatch.setattr(trainer_module, "train_one_epoch", _signal_self_during(epoch=0, step=1))
    assert main(["train", f"data={data}", "epochs=3", "batch=2", f"project={tmp_path}", "name=run", *TINY]) == 143
    captured = capsys.readouterr()
    out = captured.out
    assert "SIGTERM received" in out
    assert "interrupted during epoch 1: stopped before the first epoch finished; nothing to resume, run again" in out
    assert "(-1)" not in out and "-inf" not in out and "epoch 0" not in out and "continue with" not in out
    assert captured.err.strip() == "stopped by SIGTERM"
    run = tmp_path / "run"
    assert not (run / "checkpoints" / "last.pt").exists()
    summary = (run / "summary.json").read_text()
    assert "Infinity" not in summary and json.loads(summary)["stopped_by"] == "SIGTERM"
    assert json.loads(summary)["best_value"] is None and json.loads(summary)["epochs_complete"] == 0
    assert main(["train", f"resume={run}"]) == 2 and "nothing to resume" in capsys.readouterr().err


# ---- kill -9 while checkpoints are being written -----------------------------------------------------------

def _save_forever(path: Path, epoch: int, conn) -> None:
    """Write checkpoints of growing epochs to ``path`` until killed, telling ``conn`` when each write starts."""
    while True:
        # numpy, not torch, fills the 32 MB: torch's OpenMP pool does not survive a fork (the child would hang)
        weights = torch.from_numpy(np.full(8_000_000, epoch, np.float32))
        conn.send(epoch)
        save_checkpoint({"weights": weights, "epoch": epoch}, path)
        epoch += 1


def test_kill_9_during_checkpoint_writes_leaves_the_last_complete_one(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"weights": torch.zeros(8_000_000), "epoch": 0}, path)
    fork = multiprocessing.get_context("fork")  # the test process has torch loaded already: no slow re-import
    last, mid_write = 0, 0
    for round_, delay in enumerate((0.0, 0.0, 0.002, 0.01, 0.05), start=1):
        first = 100 * round_  # epochs this writer numbers its checkpoints from
        receiver, sender = fork.Pipe(duplex=False)
        proc = fork.Process(target=_save_forever, args=(path, first, sender), daemon=True)
        proc.start()
        assert receiver.poll(60) and receiver.recv() == first  # the first write has begun
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        temps = [p for p in path.parent.iterdir() if p != path]
        state = load_checkpoint(path)  # whatever moment the kill hit, the file is one complete checkpoint
        assert state["epoch"] == last or state["epoch"] >= first
        assert torch.equal(state["weights"], torch.full((8_000_000,), float(state["epoch"])))
        mid_write += bool(temps)
        for temp in temps:  # a half-written temp file is all a kill can leave, and never under the real name
            assert temp.name.startswith(".last.pt.") and temp.name.endswith(".tmp")
            temp.unlink()
        last = state["epoch"]
    assert mid_write, "no kill landed in the middle of a write: the test did not test atomicity"


# ---- a write that fails keeps the previous checkpoint ---------------------------------------------------------

def _dev_full(monkeypatch) -> None:
    """Send the checkpoint's bytes to /dev/full, where the kernel answers every write with ENOSPC."""
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is Linux only")
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        if "w" not in mode:
            return real_fdopen(fd, mode, *args, **kwargs)
        os.close(fd)
        return open("/dev/full", mode)
    monkeypatch.setattr(checkpoint_module.os, "fdopen", fdopen)


def _half_then(error: BaseException):
    """A torch.save that writes half of the real bytes, then fails with ``error``."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise error
    return save


FAILURES = {
    "dev_full": _dev_full,
    "half_then_ENOSPC": lambda mp: mp.setattr(torch, "save", _half_then(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))),
    "torch_writer_error": lambda mp: mp.setattr(torch, "save", _half_then(RuntimeError(
        "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/3: file write failed"))),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    path = save_checkpoint({"epoch": 1, "w": torch.arange(1000.0)}, tmp_path / "last.pt")
    before = path.read_bytes()
    FAILURES[failure](monkeypatch)
    with pytest.raises(CheckpointError, match=r"last\.pt: could not write checkpoint .*the previous checkpoint is kept"):
        save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_ctrl_c_during_a_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"epoch": 1}, tmp_path / "last.pt")
    monkeypatch.setattr(torch, "save", _half_then(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1 and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_disk_full_during_training_is_one_error_line_and_keeps_the_last_epoch(tmp_path, monkeypatch, capsys):
    data = _tiny_dataset(tmp_path / "data")
    real_save = torch.save

    def save_until_disk_full(obj, f, *args, **kwargs):  # epoch 0 is saved; from epoch 1 on the disk is full
        if obj["epoch"] >= 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save_until_disk_full)
    code = main(["train", f"data={data}", "epochs=3", "batch=4", "split=1:0:0", f"project={tmp_path}", "name=run",
                 *TINY])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 2 and "could not write checkpoint (No space left on device)" in err and "Traceback" not in err
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"] == 0
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))


# ---- non-finite losses --------------------------------------------------------------------------------------

def _loop_parts(steps: int, seed: int = 0):
    """A one-conv model, its optimiser and a loader of ``steps`` batches of two 4x4 gray images."""
    torch.manual_seed(seed)
    model = nn.Conv2d(1, 1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    gen = torch.Generator().manual_seed(seed)
    loader = [{"image": torch.randint(0, 255, (2, 1, 4, 4), dtype=torch.uint8, generator=gen),
               "mask": torch.randint(0, 2, (2, 4, 4), generator=gen)} for _ in range(steps)]
    return model, optimizer, scheduler, loader


def bce(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(output[:, 0].float(), target.float())


class NanAt(nn.Module):
    """A loss that turns NaN (still attached to the graph, so its gradients would be NaN too) at given calls."""

    def __init__(self, bad_calls: set[int] | None = None):
        super().__init__()
        self.bad_calls, self.calls, self.finite = bad_calls, 0, []

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = bce(output, target)
        bad = self.bad_calls is None or self.calls in self.bad_calls
        self.calls += 1
        if bad:
            return loss * float("nan")
        self.finite.append(float(loss))
        return loss


FP32 = Precision(torch.device("cpu"), None, False)
NORMALIZE = Normalizer([0.5], [0.25], 255.0)


def test_nan_steps_are_skipped_reported_and_training_goes_on(capsys):
    model, optimizer, scheduler, loader = _loop_parts(steps=5)
    loss_fn = NanAt({1, 3})
    result = train_one_epoch(model, loader, loss_fn, optimizer, scheduler, FP32, NORMALIZE, epoch=0)
    assert result["skipped"] == 2 and result["images"] == 3 * 2
    assert result["loss"] == pytest.approx(np.mean(loss_fn.finite), rel=1e-6)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN gradients never reached the weights
    assert scheduler.last_epoch == 5  # the schedule keeps its pace through skipped steps
    out = capsys.readouterr().out
    assert "non-finite loss at epoch 0 step 1: step skipped" in out and "epoch 0 step 3" in out


def test_repeated_nan_stops_training_with_a_clear_message():
    model, optimizer, scheduler, loader = _loop_parts(steps=6)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLoss, match=r"loss was NaN/Inf in 3 consecutive steps at epoch 4; lower lr, "
                                            r"enable grad_clip, or use precision=fp32"):
        train_one_epoch(model, loader, NanAt(), optimizer, scheduler, FP32, NORMALIZE, epoch=4, max_bad_steps=3)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_an_epoch_with_only_nan_steps_is_not_reported_as_loss_zero():
    model, optimizer, scheduler, loader = _loop_parts(steps=2)
    with pytest.raises(NonFiniteLoss):
        train_one_epoch(model, loader, NanAt(), optimizer, scheduler, FP32, NORMALIZE, epoch=0, max_bad_steps=5)


def test_nan_training_ends_in_one_error_line(tmp_path, monkeypatch, capsys):
    data = _tiny_dataset(tmp_path / "data", n=12)  # 6 steps per epoch: more than max_bad_steps
    monkeypatch.setattr(build_module, "build_loss", lambda *a, **k: NanAt())
    code = main(["train", f"data={data}", "epochs=2", "batch=2", "split=1:0:0", f"project={tmp_path}", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: loss was NaN/Inf in 5 consecutive steps") and "Traceback" not in err


def test_fp16_overflow_is_recomputed_in_fp32(capsys):
    """A real overflow: 1000 x 100 is above float16's 65504, and well inside float32."""
    model, optimizer, scheduler, loader = _loop_parts(steps=3)
    with torch.no_grad():
        model.weight.fill_(1000.0)
    half = Precision(torch.device("cpu"), torch.float16, False)
    result = train_one_epoch(model, loader, bce, optimizer, scheduler, half, Normalizer([0.0], [0.01], 255.0), epoch=0)
    assert result["skipped"] == 0 and result["fp32_fallbacks"] >= 1 and result["images"] == 6
    assert np.isfinite(result["loss"]) and all(torch.isfinite(p).all() for p in model.parameters())
    assert "overflowed in torch.float16 and were recomputed in fp32" in capsys.readouterr().out


def test_bf16_failure_falls_back_to_fp32(capsys):
    """A model whose output is NaN whenever autocast is on stands in for a bf16 overflow."""
    model, optimizer, scheduler, loader = _loop_parts(steps=3)
    model.register_forward_hook(lambda m, i, out: out * float("nan") if torch.is_autocast_enabled("cpu") else out)
    before = model.weight.detach().clone()
    bf16 = Precision(torch.device("cpu"), torch.bfloat16, False)
    result = train_one_epoch(model, loader, bce, optimizer, scheduler, bf16, NORMALIZE, epoch=0)
    assert result["skipped"] == 0 and result["fp32_fallbacks"] == 3 and result["images"] == 6
    assert not torch.equal(before, model.weight) and torch.isfinite(model.weight).all()
    assert "3 step(s) of epoch 0 overflowed in torch.bfloat16" in capsys.readouterr().out
