"""CIFAR-10 benchmark of the all-convolutional study: the study's CNN and all-conv nets, and the fast default net.

Reads the class-per-folder JPEG copy in ../shared/data/cifar10, trains each model with ``seglab classify``'s
engine and prints a Markdown table (parameters, epochs, time, test accuracy).  The fast net trains with
``time_limit=--minutes``: after each epoch the engine re-estimates how many epochs fit and refits the learning-rate
schedule to end there (or use a fixed ``--epochs``).

    python benchmarks/bench_classify_cifar10.py                       # full run (study nets + 30-minute fast net)
    python benchmarks/bench_classify_cifar10.py --fraction 0.02 --study-epochs 1 --epochs 1   # quick check
    python benchmarks/bench_classify_cifar10.py threads=1     # when other jobs share the 2 cores
    python benchmarks/bench_classify_cifar10.py --fast cpu_procs=2   # the fast net as two data-parallel processes
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from seglab.classify import report, runner
from seglab.classify.config import parse_args
from seglab.classify.data import (
    load_image_folder,
    subset,
)
from seglab.runtime.precision import describe_cpu

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"
STUDY_ACCURACY = {"study_cnn_cifar10": 0.751, "study_allconv_cifar10": 0.763}
COLUMNS = ["model", "params", "epochs", "time_per_epoch", "train_time", "images_per_second", "test_acc",
           "study_acc"]


def main(argv: list[str]) -> int:
    """Run the benchmark and print its Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA), help="class-per-folder CIFAR-10 (train/ and test/)")
    parser.add_argument("--study-epochs", type=int, default=20, help="epochs for the two study networks")
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget of the fast net")
    parser.add_argument("--epochs", type=int, default=None, help="fixed epochs for the fast net (overrides --minutes)")
    parser.add_argument("--max-epochs", type=int, default=50, help="upper bound on the fast net's epochs in --minutes")
    parser.add_argument("--fraction", type=float, default=1.0, help="train on this fraction (quick checks)")
    parser.add_argument("--test-fraction", type=float, default=1.0, help="evaluate on this fraction (quick checks)")
    parser.add_argument("--models", default="study_cnn_cifar10,study_allconv_cifar10,fast_allconv")
    parser.add_argument("--out", default="runs/bench_classify_cifar10")
    parser.add_argument("--fast", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings for the non-study models only (e.g. --fast width=48 tta=true)")
    parser.add_argument("settings", nargs="*", help="extra key=value settings for every model (e.g. precision=fp32)")
    args = parser.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"error: CIFAR-10 folders not found at {args.data}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    data = load_image_folder(args.data)
    data = dataclasses.replace(data, train=subset(data.train, args.fraction), test=subset(data.test, args.test_fraction))
    print(f"decoded {len(data.train)} train / {len(data.test)} test images in {time.perf_counter() - start:.0f}s")

    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        extra = args.settings if name.startswith("study_") else [*args.settings, *args.fast]
        cfg = parse_args([f"model={name}", f"data={args.data}", f"out={args.out}/{name}", *extra])
        if name.startswith("study_"):
            cfg = dataclasses.replace(cfg, epochs=args.study_epochs)
        elif args.epochs is not None:
            cfg = dataclasses.replace(cfg, epochs=args.epochs)
        else:
            cfg = dataclasses.replace(cfg, epochs=args.max_epochs, time_limit=args.minutes)
        summary = runner.train(cfg, data)
        rows.append({**summary, "study_acc": STUDY_ACCURACY.get(name, "")})
        report.write_table(rows, COLUMNS, Path(args.out) / "benchmark")
    print()
    print(report.markdown_table(rows, COLUMNS))
    print(f"command: python benchmarks/bench_classify_cifar10.py {' '.join(argv)}")
    print(f"torch {torch.__version__}; cpu: {describe_cpu()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
