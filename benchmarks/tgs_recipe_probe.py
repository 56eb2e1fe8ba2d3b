"""Short recipe probes for TGS salt, scored on a validation split carved from the bench's TRAINING images.

bench_tgs.py holds out 20% of the labelled images as its test set. Choosing a recipe by scoring candidates on that
set would select on the test images, so this script splits bench_tgs's 80% again (coverage-stratified, 1/8 = 320
images by default) and trains each candidate on the rest for a short budget, two at a time, each pinned to one core
with one thread (identical conditions). Every candidate is the shipped recipe plus a JSON override; the last
checkpoint is scored with the recipe's TTA and gate, as bench_tgs does.

    python benchmarks/tgs_recipe_probe.py --minutes 20 base='{}' b16='{"batch": 16}'
    python benchmarks/tgs_recipe_probe.py --minutes 0.3 --limit 48 a='{}' b='{"lr": 0.003}'   # quick check
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tgs import SHARED, write_split  # the same 80/20 split as the benchmark
from child_runs import child_result, print_result, start_child


def write_probe_split(data: Path, workdir: Path, val_folds: int = 8, limit: int = 0) -> tuple[Path, Path]:
    """Split bench_tgs's training list again: fold 0 of ``val_folds`` (coverage-stratified) becomes validation."""
    import numpy as np
    from PIL import Image

    from seglab.data.split import coverage_bins, kfold_indices

    train_list, _ = write_split(data, workdir)
    lines = train_list.read_text().splitlines()
    coverage = [float((np.asarray(Image.open(line.split("\t")[1])) > 0).mean()) for line in lines]
    held = set(kfold_indices(len(lines), val_folds, 1, coverage_bins(coverage))[0].tolist())
    fit = [line for i, line in enumerate(lines) if i not in held]
    val = [line for i, line in enumerate(lines) if i in held]
    fit_list, val_list = workdir / "probe_train.txt", workdir / "probe_val.txt"
    fit_list.write_text("\n".join(fit[:limit] if limit else fit) + "\n")
    val_list.write_text("\n".join(val[:limit] if limit else val) + "\n")
    return fit_list, val_list


def run_probe(name: str, overrides: dict, data: Path, minutes: float, workdir: Path, recipe: str) -> dict:
    """Train one candidate for ``minutes`` on the probe split and score its last checkpoint on probe_val."""
    from seglab.config import build_config
    from seglab.evaluation.evaluator import run_eval
    from seglab.engine.dispatch import train

    settings = {"recipe": recipe, "data": str(data), "train_list": str(workdir / "probe_train.txt"),
                "val_list": str(workdir / "probe_val.txt"), "epochs": 1000, "time_limit": minutes, "val_every": 4,
                "workers": 0, "project": str(workdir / "runs"), "name": name, "exist_ok": True, "report": False}
    settings.update(overrides)
    run = train(build_config(settings), settings)
    metrics = run_eval(build_config({"weights": str(run / "checkpoints" / "last.pt"), "eval_split": "val",
                                     "report": False}), {})
    summary = json.loads((run / "summary.json").read_text())
    return {"name": name, "overrides": overrides, "epochs": summary["epochs_done"],
            "train_ips": summary["train_images_per_s"], "tgs": metrics["tgs"], "fg_iou": metrics["fg_iou"]}


def parse_candidate(text: str) -> tuple[str, dict]:
    """``name={"key": value}`` -> (name, overrides)."""
    name, sep, overrides = text.partition("=")
    if not sep or not name:
        sys.exit(f"error: write each candidate as name='{{json overrides}}', got {text!r}")
    try:
        return name, json.loads(overrides)
    except json.JSONDecodeError as err:
        sys.exit(f"error: candidate {name!r}: overrides are not JSON ({err})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="*", help="name='{json overrides}' (run two at a time)")
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--workdir", default="runs/tgs_probe")
    parser.add_argument("--recipe", default="tgs-salt-cpu")
    parser.add_argument("--limit", type=int, default=0, help="use only N train and N validation images")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data, workdir = Path(args.data), Path(args.workdir)
    if args.child:
        name, overrides = parse_candidate(args.child)
        print_result(run_probe(name, overrides, data, args.minutes, workdir, args.recipe))
        return
    if not data.is_dir():
        sys.exit(f"error: TGS salt data not found at {data}")
    candidates = [parse_candidate(c) for c in args.candidates] or [("base", {})]
    workdir.mkdir(parents=True, exist_ok=True)
    write_probe_split(data, workdir, limit=args.limit)
    cores = sorted(os.sched_getaffinity(0))
    results = []
    for start in range(0, len(candidates), len(cores)):  # one candidate per core, a batch at a time
        procs = []
        for core, (name, overrides) in zip(cores, candidates[start:start + len(cores)]):
            cmd = [sys.executable, __file__, "--child", f"{name}={json.dumps(overrides)}", "--data", str(data),
                   "--minutes", str(args.minutes), "--workdir", str(workdir), "--recipe", args.recipe]
            procs.append((name, start_child(cmd, workdir / f"{name}.log", core=core), workdir / f"{name}.log"))
        results += [child_result(name, proc, log) for name, proc, log in procs]
    print(f"\nTGS recipe probes ({args.recipe}), {args.minutes:g} min each, one core each, scored on "
          f"{workdir / 'probe_val.txt'} (carved from the training images)\n")
    print("| candidate | overrides | epochs | train img/s | TGS metric | salt IoU |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | `{json.dumps(r['overrides'])}` | {r['epochs']} | {r['train_ips']:.1f} "
              f"| {r['tgs']:.4f} | {r['fg_iou']:.4f} |")


if __name__ == "__main__":
    main()
