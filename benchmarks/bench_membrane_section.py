"""The membrane section's command (BENCHMARKS.md, issue 2) on this checkout and on seglab before issue 28.

Issue 28 changed how every run trains (window epochs, validation by time, the training plan) and asks that membrane
does not regress from its 0.92 pixel accuracy. That figure is this command's: ``unet_small`` with its own settings,
10 minutes, scored by ``seglab eval eval_split=test`` on the 3 test images of the seeded 8:1:1 split. This script
runs the same command with this checkout's seglab and with the code of main before issue 28 (e221bd1, extracted by
``git archive`` into the workdir), seed by seed, and scores both with their own ``seglab eval``.

``--parallel``: the two variants side by side on one core each (``taskset``; a fair pair on a 2-core machine);
without it, one after the other on all cores. The seed sets the split, so each seed is scored on other test images.

    python benchmarks/bench_membrane_section.py --seeds 0 1 2 --parallel --workdir DIR   # ~40 min on 2 cores
    python benchmarks/bench_membrane_section.py --seeds 0 --workdir DIR                   # all cores, ~25 min
    python benchmarks/bench_membrane_section.py --minutes 0.3 --parallel --workdir /tmp/ms  # smoke run, ~2 min
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_few_large import OLD_COMMIT, SHARED, extract_old_src

REPO = Path(__file__).resolve().parents[1]
# BENCHMARKS.md's membrane section, as written there but time_limit (--minutes) and report off (the eval scores it)
COMMAND = ("model=unet_small crop=256 batch=4 epochs=200 augment=light loss=bce+dice lr=0.003 "
           "warmup_epochs=1 report=false").split()


def source_of(variant: str, workdir: Path) -> Path:
    """The ``src`` folder the variant imports seglab from."""
    return REPO / "src" if variant == "today" else extract_old_src(workdir)


def start(variant: str, args: list[str], workdir: Path, core: int | None, log: Path) -> subprocess.Popen:
    """``python -m seglab ARGS`` with the variant's seglab, pinned to ``core`` (one thread) when given."""
    env = {**os.environ, "PYTHONPATH": str(source_of(variant, workdir))}
    cmd = [sys.executable, "-m", "seglab", *args]
    if core is not None:
        env["OMP_NUM_THREADS"] = "1"
        cmd = ["taskset", "-c", str(core), *cmd]
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def run_all(procs: list[tuple[str, subprocess.Popen, Path]]) -> None:
    """Wait for every process; stop with its log's tail when one failed."""
    for name, proc, log in procs:
        if proc.wait():
            sys.exit(f"error: {name} failed (exit {proc.returncode}); see {log}:\n{log.read_text()[-2000:]}")


def result(run: Path) -> dict:
    """What the run and its evaluation wrote: test scores, epochs, validations, training time."""
    scores = json.loads((run / "eval" / "metrics.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    validations = sum(1 for r in rows[1:] if r.split(",")[header.index("val_pixel_acc")] not in ("", "nan"))
    # membrane's masks are 0 = membrane, 255 = cell: seglab names them background / object
    membrane = next((c["iou"] for c in scores["per_class"] if c["class"] == "background"), None)
    return {"pixel_acc": scores["pixel_acc"], "miou": scores["miou"], "cell_iou": scores.get("fg_iou"),
            "membrane_iou": membrane,
            "test_images": scores.get("images"), "epochs": summary["epochs_done"], "validations": validations,
            "train_time_s": summary["train_time_s"], "best_epoch": summary.get("best_epoch"), "run": str(run)}


def main() -> None:
    from seglab.runtime.precision import describe_cpu

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--parallel", action="store_true", help="the two variants side by side, one core each")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=SHARED / "membrane")
    ap.add_argument("--minutes", type=float, default=10.0, help="time_limit (the section's 10; less for a smoke run)")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"error: no membrane data at {args.data} (ISBI 2012: train/image, train/label)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    variants = ("today", OLD_COMMIT)
    results: dict = {}
    t0 = time.time()
    for seed in args.seeds:
        for stage in ("train", "eval"):
            procs = []
            for i, variant in enumerate(variants):
                name = f"{variant}_s{seed}"
                run = args.workdir / "runs" / name
                if stage == "train":
                    shutil.rmtree(run, ignore_errors=True)  # a fresh run folder each time
                    cmd = ["train", f"data={args.data}", *COMMAND, f"time_limit={args.minutes:g}", f"seed={seed}",
                           f"project={run.parent}", f"name={name}"]
                else:
                    cmd = ["eval", f"weights={run}", "eval_split=test"]
                log = args.workdir / f"{name}_{stage}.log"
                procs.append((name, start(variant, cmd, args.workdir, i if args.parallel else None, log), log))
                if not args.parallel:
                    run_all(procs[-1:])
            run_all(procs)
        for variant in variants:
            results.setdefault(variant, {})[seed] = result(args.workdir / "runs" / f"{variant}_s{seed}")
        print(f"seed {seed}: " + ", ".join(f"{v} {results[v][seed]['pixel_acc']:.4f}" for v in variants)
              + f" pixel accuracy ({(time.time() - t0) / 60:.0f} min so far)", flush=True)
    command = "seglab train data=membrane " + " ".join(COMMAND) + f" time_limit={args.minutes:g}"
    out = {"command": command, "minutes": args.minutes, "parallel": args.parallel, "cpu": describe_cpu(),
           "commit": git_head(), "results": results}
    path = args.workdir / "results.json"
    path.write_text(json.dumps(out, indent=2))
    lines = ["| seglab | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |",
             "|---" * (len(args.seeds) + 2) + "|"]
    for v in variants:
        accs = [results[v][s]["pixel_acc"] for s in args.seeds]
        lines.append(f"| {v} | " + " | ".join(f"{a:.4f}" for a in accs) + f" | {sum(accs) / len(accs):.4f} |")
    print("\n".join(lines))
    print(f"results: {path}; runs and logs: {args.workdir}")


def git_head() -> str:
    """This checkout's commit."""
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip()


if __name__ == "__main__":
    main()
