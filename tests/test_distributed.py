"""torchrun with two CPU processes (gloo): disjoint shards, one checkpoint writer, metrics equal to one process."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import rank_pids

from seglab.cli.main import main


def test_torchrun_two_ranks(grains_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m", "seglab",
           "train", f"data={grains_dir}", "model=unet_small", "epochs=2", "batch=4", "workers=0", "precision=fp32",
           f"project={tmp_path}", "name=ddp", "seed=3"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "ddp"
    assert done.stdout.count("run folder:") == 1  # only rank 0 prints
    shards = [(run / "ranks" / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert shards[0] and shards[1]
    assert not set(shards[0]) & set(shards[1]), "ranks trained on overlapping images"
    data = json.loads((run / "data.json").read_text())
    assert len(set(shards[0]) | set(shards[1])) == data["splits"]["train"]
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["best.pt", "last.pt"]  # written once, by rank 0, no temp leftovers
    with (run / "metrics.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    assert json.loads((run / "summary.json").read_text())["world_size"] == 2
    # The distributed validation (confusion matrices summed over ranks) equals one process evaluating last.pt.
    assert main(["eval", f"weights={run / 'checkpoints' / 'last.pt'}", "eval_split=val", "precision=fp32",
                 "report=false"]) == 0
    single = json.loads((run / "eval_val" / "metrics.json").read_text())
    for key in ("pixel_acc", "miou", "fg_iou"):
        assert float(last[f"val_{key}"]) == pytest.approx(single[key], abs=1e-6), key


def test_cpu_procs_trains_data_parallel_from_seglab_train_itself(grains_dir, tmp_path, capfd):
    """cpu_procs=2: two DDP ranks launched by `seglab train`, each on half the batch, one writer, resumable."""
    args = ["train", f"data={grains_dir}", "model=unet_small", "epochs=1", "batch=4", "workers=0",
            "precision=fp32", f"project={tmp_path}", "name=procs", "cpu_procs=2", "report=false"]
    assert main(args) == 0
    run = tmp_path / "procs"
    shards = [(run / "ranks" / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert shards[0] and not set(shards[0]) & set(shards[1])
    assert json.loads((run / "summary.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    out = capfd.readouterr().out  # the ranks are child processes: capture at the file-descriptor level
    per_rank = -(-json.loads((run / "data.json").read_text())["splits"]["train"] // 2)
    assert out.count("run folder:") == 1 and f"{per_rank // 2} steps/epoch" in out  # batches of 4 / 2 per rank
    # resume continues the same run with the same two ranks
    assert main(["train", f"resume={run}", "epochs=2", "cpu_procs=2"]) == 0
    with (run / "metrics.csv").open() as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]


def test_cpu_procs_needs_a_divisible_batch(grains_dir, tmp_path, capsys):
    assert main(["train", f"data={grains_dir}", "batch=5", "cpu_procs=2", f"project={tmp_path}"]) == 2
    assert "batch=5 must be divisible by cpu_procs=2" in capsys.readouterr().err


def test_cpu_procs_ranks_agree_on_the_budget_fit(tmp_path, capfd):
    """Two DDP ranks time their first steps together (a warm-up step alone may decide) and turn whole 480x320
    images into the same 256-px windows under a short time_limit, without waiting on each other forever."""
    from test_patch_training import make_blobs

    frames = make_blobs(tmp_path / "frames", n=5, h=320, w=480)
    args = ["train", f"data={frames}", "model=unet_small", "batch=4", "workers=0", "precision=fp32", "split=3:1:1",
            f"project={tmp_path}", "name=fit", "cpu_procs=2", "report=false", "time_limit=0.1"]
    assert main(args) == 0
    plan = json.loads((tmp_path / "fit" / "plan.json").read_text())
    assert plan["windows"] and plan["crop"] == 256 and "whole 480x320 images" in plan["reasons"]["crop"]
    assert capfd.readouterr().out.count("run folder:") == 1


STUCK_RANK = '''
import os, signal, time
from pathlib import Path


def stuck(folder, stuck_ranks):
    """A rank blocked where Python's signal handler cannot run (as inside a collective): Ctrl-C does nothing to the
    ranks in ``stuck_ranks``; the others end on it."""
    if int(os.environ["RANK"]) in stuck_ranks:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    Path(folder, f"ready{os.environ['RANK']}").write_text("")
    time.sleep(600)
'''

LAUNCHER = '''
import sys
sys.path.insert(0, sys.argv[1])
from stuck_rank import stuck
from seglab.runtime import cpu_ranks
cpu_ranks.KILL_GRACE_S = cpu_ranks.PEER_GRACE_S = 1.0
if __name__ == "__main__":  # spawned ranks import this file again
    cpu_ranks.launch_ranks(stuck, 2, (sys.argv[1], [int(r) for r in sys.argv[2].split(",")]))
    print("launcher returned", flush=True)
'''


@pytest.mark.parametrize("stuck_ranks, ctrl_c, killed", [
    ("0,1", "twice to the launcher", "killing 2 rank(s) still running 1 s after the second Ctrl-C"),
    ("1", "once to all", "killing 1 rank(s) still running 1 s after another rank stopped"),
])
def test_ranks_that_cannot_stop_are_killed(tmp_path, stuck_ranks, ctrl_c, killed):
    """Ranks stuck where Ctrl-C cannot reach them (a collective, the rendezvous) are killed after a second Ctrl-C, or
    after one Ctrl-C once another rank has ended (the rendezvous hang of a Ctrl-C while ranks start); the launcher
    returns instead of waiting for the 30-minute timeout."""
    (tmp_path / "stuck_rank.py").write_text(STUCK_RANK)
    (tmp_path / "launcher.py").write_text(LAUNCHER)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "launcher.py"), str(tmp_path), stuck_ranks],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(list(tmp_path.glob("ready*"))) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        ranks = rank_pids(proc.pid)
        assert len(ranks) == 2
        if ctrl_c == "once to all":
            os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: rank 0 ends, rank 1 cannot
        else:
            os.kill(proc.pid, signal.SIGINT)  # the first: the ranks decide how to stop (these cannot)
            time.sleep(2.5)
            assert proc.poll() is None  # one Ctrl-C with every rank still running never kills: they may be saving
            os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert killed in out and "launcher returned" in out, out
    assert not [pid for pid in ranks if Path(f"/proc/{pid}").exists()]


EARLY_CTRL_C_LAUNCHER = '''
import os, signal, sys
from pathlib import Path
from seglab.runtime import cpu_ranks


def work(folder):
    Path(folder, f"ran{os.environ['RANK']}").write_text("")


def spawn_then_ctrl_c(*args, **kwargs):
    context = start(*args, **kwargs)
    os.killpg(os.getpgrp(), signal.SIGINT)  # a terminal's Ctrl-C while the launcher is still spawning
    return context


if __name__ == "__main__":  # spawned ranks import this file again
    start = cpu_ranks.mp.start_processes
    cpu_ranks.mp.start_processes = spawn_then_ctrl_c
    cpu_ranks.launch_ranks(work, 2, (sys.argv[1],))
    print("launcher returned", flush=True)
'''


def test_a_ctrl_c_while_the_launcher_spawns_the_ranks_is_not_lost(tmp_path):
    """The CI failure of stop 47: a Ctrl-C that came while the launcher was still spawning was ignored by it and by the
    ranks, and the run went on to its end. Now the ranks see it and do no work."""
    (tmp_path / "launcher.py").write_text(EARLY_CTRL_C_LAUNCHER)
    done = subprocess.run([sys.executable, str(tmp_path / "launcher.py"), str(tmp_path)], capture_output=True,
                          text=True, timeout=120, start_new_session=True)
    assert done.returncode == 0 and "launcher returned" in done.stdout, done.stderr
    assert not list(tmp_path.glob("ran*")), "the ranks ran their work after a Ctrl-C"
    assert "Traceback" not in done.stderr, done.stderr
