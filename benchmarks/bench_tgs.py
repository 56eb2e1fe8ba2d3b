"""TGS salt, fixed time budget, no pretrained weights: a seglab recipe's model vs smp's Unet("resnet34").

Both models are trained by the same recipe (default ``tgs-salt-cpu``: bce+lovasz, AdamW + cosine fitted to the time
budget, 101 -> 128 reflect padding, left-right flips and translations, left-right flip TTA) in the same engine, on the
same coverage-stratified 80/20 split of the 3200 labelled images, for the same wall-clock budget (training and
per-epoch validation both count). The only difference is the model: the recipe's (``tgs-salt-cpu``: U-Net on a
ResNet18 with a light decoder, deep supervision, hypercolumn and the empty gate; ``tgs-salt``: the study's U-Net-ResNet34;
``--seglab-model``/``--seglab-model-args`` to change) vs segmentation_models_pytorch's plain ``Unet("resnet34")``. The
last checkpoint (end of the annealed schedule, not a best-on-test pick) is scored on the held-out 20%.

    python benchmarks/bench_tgs.py --minutes 60                      # both variants at once, one core each
    python benchmarks/bench_tgs.py --minutes 60 --sequential         # one after the other, all cores each
    python benchmarks/bench_tgs.py --minutes 60 --recipe tgs-salt --seglab-model-args \
        '{"deep_supervision": true, "empty_gate": true, "dropout": 0.1, "upsample": "nearest"}'  # the AMD run
    python benchmarks/bench_tgs.py --minutes 60 --sequential --overrides '{"val_every": 4}'   # the fourth to sixth runs
    python benchmarks/bench_tgs.py --minutes 0.5 --limit 64 --workdir /tmp/tgs   # quick check of the script
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child_runs import child_result, print_result, start_child

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "tgs-salt"
VARIANTS = ("seglab", "smp")


def register_smp_unet() -> None:
    """Make smp's Unet("resnet34") a seglab model, so both sides run through the identical recipe and engine."""
    from seglab.models import register_model

    def smp_unet_resnet34(num_classes: int = 1, in_channels: int = 3):
        import segmentation_models_pytorch as smp

        return smp.Unet("resnet34", encoder_weights=None, in_channels=in_channels, classes=num_classes)

    register_model(smp_unet_resnet34)


def write_split(data: Path, workdir: Path, seed: int = 0, limit: int = 0) -> tuple[Path, Path]:
    """Coverage-stratified 80/20 split (fold 0 of 5 held out), as list files; ``limit`` keeps the first N of each."""
    import numpy as np
    from PIL import Image

    from seglab.config import build_config
    from seglab.data.formats import write_list_file
    from seglab.data.plan import plan_data
    from seglab.data.split import coverage_bins, kfold_indices

    plan = plan_data(build_config({"data": str(data), "split": "1:0:0"}))
    samples = sorted(plan.splits["train"] + plan.splits["val"] + plan.splits["test"], key=lambda s: s.id)
    coverage = [float((np.asarray(Image.open(s.mask)) > 0).mean()) for s in samples]
    held = set(kfold_indices(len(samples), 5, seed, coverage_bins(coverage))[0].tolist())
    train_list, test_list = workdir / "train.txt", workdir / "test.txt"
    train = [s for i, s in enumerate(samples) if i not in held]
    test = [s for i, s in enumerate(samples) if i in held]
    write_list_file(train_list, train[:limit] if limit else train)
    write_list_file(test_list, test[:limit] if limit else test)
    return train_list, test_list


def run_variant(variant: str, data: Path, minutes: float, workdir: Path, recipe: str, model: str = "",
                model_args: dict | None = None, common: dict | None = None) -> dict:
    """Train one variant for ``minutes`` and score its last checkpoint on the held-out images."""
    from seglab.config import build_config
    from seglab.evaluation.evaluator import run_eval
    from seglab.engine.dispatch import train

    train_list, test_list = workdir / "train.txt", workdir / "test.txt"
    overrides = {"recipe": recipe, "data": str(data), "train_list": str(train_list), "val_list": str(test_list),
                 "epochs": 1000, "time_limit": minutes, "val_every": 2, "workers": 0, "project": str(workdir),
                 "name": variant, "exist_ok": True, "report": False}
    overrides.update(common or {})
    if variant == "seglab":  # the recipe's model unless told otherwise
        if model:
            overrides["model"] = model
        if model_args is not None:
            overrides["model_args"] = model_args
    if variant == "smp":
        register_smp_unet()
        overrides.update({"model": "smp_unet_resnet34", "model_args": {}})
    run = train(build_config(overrides), overrides)
    metrics = run_eval(build_config({"weights": str(run / "checkpoints" / "last.pt"), "eval_split": "val",
                                     "report": False}), {})
    summary = json.loads((run / "summary.json").read_text())
    result = {"variant": variant, "model": summary["model"], "params_m": summary["params"] / 1e6,
              "epochs": summary["epochs_done"], "train_min": summary["train_time_s"] / 60,
              "train_ips": summary["train_images_per_s"], "tgs": metrics["tgs"], "fg_iou": metrics["fg_iou"],
              "miou": metrics["miou"], "images": metrics["images"], "run": str(run)}
    if run_cfg_model_args(run).get("empty_gate"):  # ablation: the same weights without the gate
        import torch

        state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
        state["model_spec"]["empty_gate"] = False
        torch.save(state, run / "checkpoints" / "last_ungated.pt")
        # its own folder, so eval_val/ keeps the gated predictions the headline figure comes from
        ungated = run_eval(build_config({"weights": str(run / "checkpoints" / "last_ungated.pt"),
                                         "eval_split": "val", "report": False}), {},
                           out_dir=run / "eval_val_ungated")
        result["tgs_ungated"] = ungated["tgs"]
    return result


def run_cfg_model_args(run: Path) -> dict:
    """The model options a finished run was trained with (recipe and overrides resolved)."""
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text()).get("model_args") or {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--workdir", default="runs/bench_tgs")
    parser.add_argument("--limit", type=int, default=0, help="use only N train and N test images (quick checks)")
    parser.add_argument("--sequential", action="store_true", help="run variants one after the other on all cores")
    parser.add_argument("--recipe", default="tgs-salt-cpu", help="the shipped recipe both variants train with")
    parser.add_argument("--seglab-model", default="", help="seglab's model (default: the recipe's)")
    parser.add_argument("--seglab-model-args", default="", help="JSON model options of seglab's model")
    parser.add_argument("--overrides", default="{}",
                        help='JSON training settings for both variants, e.g. \'{"optimizer": "sgd", "lr": 0.01}\'')
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of seglab,smp")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    data, workdir = Path(args.data), Path(args.workdir)
    if not data.is_dir():
        sys.exit(f"error: TGS salt data not found at {data}")
    if args.variant:
        model_args = json.loads(args.seglab_model_args) if args.seglab_model_args else None
        result = run_variant(args.variant, data, args.minutes, workdir, args.recipe, args.seglab_model, model_args,
                             json.loads(args.overrides))
        print_result(result)
        return
    workdir.mkdir(parents=True, exist_ok=True)
    write_split(data, workdir, limit=args.limit)
    start, results = time.time(), {}
    cores = sorted(os.sched_getaffinity(0))
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        sys.exit(f"error: unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    procs = []
    for i, variant in enumerate(variants):
        cmd = [sys.executable, __file__, "--variant", variant, "--data", str(data), "--minutes", str(args.minutes),
               "--workdir", str(workdir), "--recipe", args.recipe, "--seglab-model", args.seglab_model,
               "--seglab-model-args", args.seglab_model_args, "--overrides", args.overrides]
        log = workdir / f"{variant}.log"
        if args.sequential:  # all cores for each, one after the other
            results[variant] = child_result(variant, start_child(cmd, log), log)
        else:  # in parallel, each variant gets one core to itself, so neither slows the other
            procs.append((variant, start_child(cmd, log, core=cores[i % len(cores)]), log))
    for variant, proc, log in procs:
        results[variant] = child_result(variant, proc, log)
    from seglab.runtime.precision import describe_cpu

    mode = "one after the other, all cores each" if args.sequential else "in parallel, one core each"
    held_out = next(iter(results.values()))["images"]
    print(f"\nTGS salt, recipe {args.recipe}, {args.minutes:g} min per model ({mode}); held-out 20% = {held_out} "
          f"images; total wall {(time.time() - start) / 60:.0f} min; cpu: {describe_cpu()}\n")
    print("| variant | model | params (M) | epochs | train img/s | TGS metric | salt IoU | mIoU | TGS without gate |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results.values():
        ungated = f"{r['tgs_ungated']:.4f}" if "tgs_ungated" in r else "-"
        print(f"| {r['variant']} | {r['model']} | {r['params_m']:.1f} | {r['epochs']} | {r['train_ips']:.1f} "
              f"| {r['tgs']:.4f} | {r['fg_iou']:.4f} | {r['miou']:.4f} | {ungated} |")


if __name__ == "__main__":
    main()
