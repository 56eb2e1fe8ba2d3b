"""Data-parallel training on one CPU machine: ``cpu_procs=N`` runs N single-machine DDP ranks (gloo).

Why: where one PyTorch process scales poorly over its intra-op threads (many-core CPUs, small images, a host
shared with other work), N processes with cores/N threads each get more done. This is what
``torchrun --nproc_per_node=N`` does, launched from ``seglab train`` itself so that no launcher is needed;
``batch`` stays the global batch (each rank takes batch / N). On a quiet 2-core machine the gradient all-reduce
costs more than it saves (BENCHMARKS.md), so the default is one process.
"""
from __future__ import annotations

import faulthandler
import functools
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.multiprocessing as mp

from ..config import Config
from ..errors import ConfigError


def wants_cpu_ranks(cfg: Config) -> bool:
    """True when this call should launch ``cpu_procs`` ranks (not already inside a distributed launch)."""
    return cfg.cpu_procs > 1 and "RANK" not in os.environ


def check_cpu_ranks(cfg: Config) -> None:
    """Refuse settings that cannot work with ``cpu_procs``, with the fix."""
    if cfg.device != "cpu" and (cfg.device != "auto" or torch.cuda.is_available()):  # a GPU: by name, or auto's
        raise ConfigError(f"cpu_procs={cfg.cpu_procs} is for CPU training; on GPUs use "
                          "torchrun --nproc_per_node=N -m seglab train ...")
    if cfg.batch != "auto" and cfg.batch % cfg.cpu_procs:  # auto: the plan decides it later
        raise ConfigError(f"batch={cfg.batch} must be divisible by cpu_procs={cfg.cpu_procs} "
                          f"(each process takes batch / cpu_procs), e.g. batch={cfg.batch - cfg.batch % cfg.cpu_procs}")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity set where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_rank_env(rank: int, world: int, port: int) -> None:
    """The environment torchrun would give rank ``rank`` of a one-machine job."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})


def free_port() -> int:
    """A free TCP port on localhost for the rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


KILL_GRACE_S = 10.0  # after a second Ctrl-C, ranks still running this long later are killed
PEER_GRACE_S = 30.0  # after a Ctrl-C and the end of one rank, the others get this long (rank 0 may be saving)


def _run_rank(rank: int, target: Callable[..., Any], world: int, port: int, threads: int, args: tuple,
              interrupted: Any) -> None:
    """One rank: torchrun's environment, its share of the cores, then ``target(*args)``."""
    # Started with Ctrl-C blocked (see launch_ranks): one that came while it started is pending here, and the launcher
    # has set ``interrupted``. From here a Ctrl-C ends this rank quietly (torch's spawn wrapper swallows
    # KeyboardInterrupt) until the training loop takes over stopping.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupted.is_set():
        return
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if hasattr(signal, "SIGUSR1"):  # ``kill -USR1 <rank pid>`` prints where a rank that seems stuck is waiting
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    set_rank_env(rank, world, port)
    torch.set_num_threads(threads)
    target(*args)


def launch_ranks(target: Callable[..., Any], nprocs: int, args: tuple = (), threads: int = 0) -> None:
    """Run ``target(*args)`` in ``nprocs`` spawned processes with torchrun's environment, and wait for them.

    Each rank gets ``threads`` intra-op threads (0: an equal share of this process's cores). Ctrl-C reaches the
    ranks, which decide how to stop; this waiting parent only records it (and passes on one that came while it was
    still spawning them). A second Ctrl-C stops them at once. A rank blocked in
    native code (a collective, the rendezvous) cannot run Python's signal handler, so this parent kills any rank
    still running ``KILL_GRACE_S`` after the second Ctrl-C, or ``PEER_GRACE_S`` after a Ctrl-C and the end of
    another rank (its peers are gone: it would wait for them until the 30-minute timeout). ``target`` must be
    picklable (a module-level function or a partial of one).
    """
    threads = threads or max(1, available_cores() // nprocs)
    interrupted = mp.get_context("spawn").Event()
    interrupts: list[float] = []

    def on_sigint(signum, frame) -> None:
        interrupts.append(time.monotonic())
        interrupted.set()

    # The ranks inherit Ctrl-C *blocked* (the signal mask survives fork and exec): one interrupted mid-import would
    # print a traceback from inside torch; each rank looks at ``interrupted`` once it runs instead (_run_rank). Blocked,
    # not ignored: this process handles a Ctrl-C that comes while it spawns (as pending, or in another thread) where an
    # ignored one would be lost and the run go on to its end.
    old = signal.signal(signal.SIGINT, on_sigint)
    mask = hasattr(signal, "pthread_sigmask")
    try:
        if mask:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            context = mp.start_processes(_run_rank, args=(target, nprocs, free_port(), threads, args, interrupted),
                                         nprocs=nprocs, join=False, start_method="spawn")
        finally:
            if mask:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a pending Ctrl-C runs on_sigint now
        first_end = 0.0  # when the first rank ended after a Ctrl-C
        while True:
            try:
                if context.join(timeout=1.0, grace_period=KILL_GRACE_S):  # False while ranks run
                    return
            except (mp.ProcessExitedException, mp.ProcessRaisedException) as e:
                # After a Ctrl-C, a rank that died of it or of its peer's exit means the run was interrupted, not
                # broken. The caller sees what the ranks left (no summary: stopped before an epoch completed).
                if interrupts or getattr(e, "signal_name", None) in ("SIGINT", "SIGTERM"):
                    return
                raise
            now, running = time.monotonic(), sum(p.is_alive() for p in context.processes)
            if interrupts and running < nprocs:  # after a Ctrl-C, a rank whose peers have ended waits for nothing
                first_end = first_end or now
            # The caller sees what the killed ranks left (no summary: stopped at once).
            if len(interrupts) >= 2 and now - interrupts[1] > KILL_GRACE_S:
                kill_ranks(context.processes, KILL_GRACE_S, "after the second Ctrl-C")
                return
            if first_end and now - first_end > PEER_GRACE_S:
                kill_ranks(context.processes, PEER_GRACE_S, "after another rank stopped (waiting for it)")
                return
    finally:
        signal.signal(signal.SIGINT, old)


def kill_ranks(processes: list, grace: float, when: str) -> None:
    """Kill the ranks still running and say so (they outlived ``when`` by ``grace`` seconds)."""
    alive = [p for p in processes if p.is_alive()]
    if alive:
        print(f"killing {len(alive)} rank(s) still running {grace:g} s {when} "
              f"(pid {', '.join(str(p.pid) for p in alive)})", flush=True)
    for p in alive:
        p.kill()
    for p in alive:
        p.join()


def launch_cpu_ranks(target: Callable[..., Any], cfg: Config, overrides: dict[str, Any], run_dir: Path | None,
                     plan=None) -> None:
    """Run ``target`` (the single-run trainer) in ``cfg.cpu_procs`` processes and wait.

    Ctrl-C reaches the ranks, which save and stop. ``target`` is passed in, not imported, so this
    low-level launcher does not depend on the training package above it.
    """
    check_cpu_ranks(cfg)
    launch_ranks(functools.partial(target, plan=plan, run_dir=run_dir), cfg.cpu_procs, (cfg, overrides))
