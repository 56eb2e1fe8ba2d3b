"""Short real-data training of every model family: params, GFLOPs, train/infer images/s and the metric reached.

U-Nets train on TGS salt (binary, 101 -> 128), BiSeNet / FCN / DeepLabV3+ on CamVid (11 classes, ignore 11,
256x256 crops, evaluated at full 480x360 on the first `--val-images` validation images). Each model gets the
same wall-clock budget. Usage:

    python benchmarks/bench_models.py --minutes 3 [--models unet_resnet34,bisenet_resnet18]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TGS_MODELS = ["unet", "unet_small", "unet_resnet34", "unet_resnext50", "unet_vgg16", "unet_resnet50"]
CAMVID_MODELS = ["bisenet_resnet18", "fcn8s", "deeplabv3plus"]


def run_one(model: str, minutes: float, val_images: int, workdir: Path, train_images: int = 0) -> dict:
    """Train ``model`` for ``minutes`` and evaluate it; returns one table row."""
    from seglab.config import build_config
    from seglab.data.formats import write_list_file
    from seglab.data.plan import plan_data
    from seglab.evaluation.evaluator import run_eval
    from seglab.engine.dispatch import train

    if model in CAMVID_MODELS:
        data = SHARED / "camvid"
        base = {"data": str(data), "ignore_index": 11, "crop": 256, "batch": 8, "augment": "hflip"}
        plan = plan_data(build_config(base))
        write_list_file(workdir / f"{model}_val.txt", plan.splits["val"][:val_images])
        base["val_list"] = str(workdir / f"{model}_val.txt")
        base["train_list"] = str(data / "train.txt")
        metric = "miou"
    else:
        data = SHARED / "tgs-salt"
        base = {"data": str(data), "pad_to": 128, "batch": 32, "augment": "hflip,random_pad"}
        plan = plan_data(build_config(base))  # the data's seeded 8:1:1 split; test stays unseen
        train_samples = plan.splits["train"][:train_images] if train_images else plan.splits["train"]
        write_list_file(workdir / f"{model}_train.txt", train_samples)
        write_list_file(workdir / f"{model}_val.txt", plan.splits["val"])
        write_list_file(workdir / f"{model}_test.txt", plan.splits["test"])
        base.update(train_list=str(workdir / f"{model}_train.txt"), val_list=str(workdir / f"{model}_val.txt"),
                    test_list=str(workdir / f"{model}_test.txt"))
        metric = "tgs"
    cfg = {**base, "model": model, "epochs": 1000, "time_limit": minutes, "lr": 1e-3, "optimizer": "adamw",
           "warmup_epochs": 0.3, "project": str(workdir), "name": model, "exist_ok": True, "metric": metric,
           "report": False}
    run = train(build_config(cfg), cfg)
    eval_split = "val" if model in CAMVID_MODELS else "test"
    metrics = run_eval(build_config({"weights": str(run), "eval_split": eval_split, "report": False,
                                     **({"val_list": cfg["val_list"]} if "val_list" in cfg else {})}), {})
    summary = json.loads((run / "summary.json").read_text())
    return {"model": model, "data": data.name, "params_m": summary["params"] / 1e6, "gflops": summary["gflops"],
            "train_ips": summary["train_images_per_s"], "infer_ips": metrics["images_per_s"],
            "epochs": summary["epochs_done"], "metric": metric, "value": metrics.get(metric, metrics["miou"]),
            "miou": metrics["miou"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--val-images", type=int, default=30)
    parser.add_argument("--train-images", type=int, default=640,
                        help="TGS images per epoch, so that even big encoders finish epochs within short budgets")
    parser.add_argument("--models", default=",".join(TGS_MODELS + CAMVID_MODELS))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            rows.append(run_one(model, args.minutes, args.val_images, Path(tmp), args.train_images))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n| model | data | params (M) | GFLOPs | train img/s | infer img/s | epochs in {args.minutes:g} min | metric |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        gf = f"{r['gflops']:.1f}" if r["gflops"] else "-"
        print(f"| {r['model']} | {r['data']} | {r['params_m']:.1f} | {gf} | {r['train_ips']:.1f} | {r['infer_ips']:.1f} "
              f"| {r['epochs']} | {r['metric']} {r['value']:.3f} (mIoU {r['miou']:.3f}) |")


if __name__ == "__main__":
    main()
