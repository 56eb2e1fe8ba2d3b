"""Training and inference throughput: seglab vs a plain segmentation_models_pytorch loop, same data and model.

U-Net-ResNet34 at 128x128 on the real TGS salt images (101x101 padded to 128; seglab's decoder with smp's nearest
up-sampling, so both sides train the same architecture and parameter count), the same augmentation
(flips + random-position reflect padding), batch size and optimizer. Each variant runs in its own
process so peak memory (max RSS) is its own. Usage:

    python benchmarks/bench_train_speed.py --data ../shared/data/tgs-salt --images 1024 --batch 32

Variants: smp_fp32 (plain loop, fp32), smp_bf16 (plain loop with bf16 autocast + channels_last, the
reference's best settings on a CPU with native bf16 such as Intel AMX), smp_fp32_cl (fp32 + channels_last, its best
settings on a CPU without native bf16, e.g. AVX2-only AMD EPYC, where bf16 is emulated and slow), seglab (the
`seglab train` engine, precision=auto, one process), seglab_procs2 (the same with cpu_procs=2: two data-parallel
processes sharing the cores, global batch unchanged) and seglab_onnx_int8 (the same training; inference with the
trained model exported to ONNX and quantised to int8 by `seglab export quantize=int8`, the fastest CPU inference
path where there is no native bf16).
Peak RSS is that of the largest process (for seglab_procs2: one rank, of two).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


VARIANTS = ("smp_fp32", "smp_bf16", "smp_fp32_cl", "seglab", "seglab_procs2", "seglab_onnx_int8")


def plain_smp(data: Path, images: int, batch: int, bf16: bool, infer_batches: int, channels_last: bool) -> dict:
    """A plain training loop as a user would write it around smp.Unet('resnet34')."""
    import albumentations as A
    import cv2
    import numpy as np
    import segmentation_models_pytorch as smp
    import torch
    from torch.utils.data import DataLoader, Dataset

    ids = sorted(p.stem for p in (data / "train" / "images").glob("*.png"))[:images]
    aug = A.Compose([A.HorizontalFlip(), A.VerticalFlip(),
                     A.PadIfNeeded(128, 128, position="random", border_mode=cv2.BORDER_REFLECT_101)])

    class TGS(Dataset):
        def __len__(self):
            return len(ids)

        def __getitem__(self, i):
            img = cv2.imread(str(data / "train" / "images" / f"{ids[i]}.png"))[..., ::-1]
            mask = (cv2.imread(str(data / "train" / "masks" / f"{ids[i]}.png"), cv2.IMREAD_UNCHANGED) > 0)
            out = aug(image=np.ascontiguousarray(img), mask=mask.astype(np.uint8))
            x = torch.from_numpy(out["image"].transpose(2, 0, 1).astype(np.float32) / 255.0)
            return (x - 0.5) / 0.25, torch.from_numpy(out["mask"]).float()[None]

    loader = DataLoader(TGS(), batch_size=batch, shuffle=True, num_workers=2, drop_last=True)
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=1)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    seen, start = 0, None
    for step, (x, y) in enumerate(loader):
        if step == 1:  # exclude the first step (one-time kernel set-up), as for seglab
            start, seen = time.perf_counter(), 0
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += x.shape[0]
    train_ips = seen / (time.perf_counter() - start)
    model.eval()
    x = torch.randn(batch, 3, 128, 128)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x)
        t = time.perf_counter()
        for _ in range(infer_batches):
            model(x)
    infer_ips = infer_batches * batch / (time.perf_counter() - t)
    return {"train_images_per_s": train_ips, "infer_images_per_s": infer_ips}


def seglab_engine(data: Path, images: int, batch: int, infer_batches: int, workdir: Path, procs: int = 1,
                  backend: str = "torch") -> dict:
    """The same work through `seglab train` (one epoch over the same images) and the seglab Predictor.

    ``backend="onnx_int8"`` predicts with the trained model exported to ONNX and quantised to int8 (calibrated on
    the training images), as ``seglab export quantize=int8`` + ``seglab predict backend=onnx`` do.
    """
    import torch

    from seglab.config import build_config
    from seglab.data.formats import write_list_file
    from seglab.data.plan import plan_data
    from seglab.engine.dispatch import train
    from seglab.inference.predictor import load_predictor

    plan = plan_data(build_config({"data": str(data)}))
    pool = sorted(plan.splits["train"] + plan.splits["val"] + plan.splits["test"], key=lambda s: s.id)[:images]
    write_list_file(workdir / "train.txt", pool)
    write_list_file(workdir / "val.txt", pool[:batch])
    cfg = {"data": str(data), "train_list": str(workdir / "train.txt"), "val_list": str(workdir / "val.txt"),
           "model": "unet_resnet34", "model_args": {"upsample": "nearest"}, "pad_to": 128, "augment": "hflip,vflip,random_pad", "batch": batch,
           "epochs": 2, "optimizer": "adamw", "lr": 1e-3, "loss": "bce", "project": str(workdir), "name": "run",
           "exist_ok": True, "report": False, "cpu_procs": procs}
    run = train(build_config(cfg), cfg)
    rows = (run / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")  # epoch 2: warm kernels, like step>=1 above
    train_ips = float(last[header.index("train_images_per_s")])
    predictor = load_predictor(str(run / "checkpoints" / "last.pt"))
    if backend == "onnx_int8":
        from seglab.export.onnx_export import export_onnx
        from seglab.inference.onnx_predictor import OnnxPredictor
        from seglab.export.quantize import quantize_int8

        onnx_path = export_onnx(run / "checkpoints" / "last.pt", workdir / "model.onnx")
        predictor = OnnxPredictor(quantize_int8(onnx_path, [s.image for s in pool]))
    x = torch.randint(0, 255, (batch, 1, 128, 128), dtype=torch.uint8)
    predictor.probs(x)
    t = time.perf_counter()
    for _ in range(infer_batches):
        predictor.probs(x)
    infer_ips = infer_batches * batch / (time.perf_counter() - t)
    return {"train_images_per_s": train_ips, "infer_images_per_s": infer_ips}


def run_variant(args) -> None:
    """Child process: run one variant and print its JSON line."""
    data = Path(args.data)
    if args.variant == "seglab":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            result = seglab_engine(data, args.images, args.batch, args.infer_batches, Path(tmp))
    elif args.variant == "seglab_procs2":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            result = seglab_engine(data, args.images, args.batch, args.infer_batches, Path(tmp), procs=2)
    elif args.variant == "seglab_onnx_int8":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            result = seglab_engine(data, args.images, args.batch, args.infer_batches, Path(tmp), backend="onnx_int8")
    else:
        result = plain_smp(data, args.images, args.batch, args.variant == "smp_bf16", args.infer_batches,
                           channels_last=args.variant in ("smp_bf16", "smp_fp32_cl"))
    # The largest process: the variant itself, or its biggest child (DataLoader worker or cpu_procs rank).
    result["peak_rss_mb"] = max(resource.getrusage(who).ru_maxrss for who in
                                (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "tgs-salt"))
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--infer-batches", type=int, default=10)
    parser.add_argument("--variant", choices=VARIANTS)
    parser.add_argument("--variants", default="smp_fp32,smp_bf16,smp_fp32_cl,seglab")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every variant this many times, interleaved, and keep each one's best round "
                             "(the least disturbed on a shared or virtual machine)")
    args = parser.parse_args()
    if args.variant:
        return run_variant(args)
    variants = [v for v in args.variants.split(",") if v]
    if "smp_fp32" not in variants:
        sys.exit("--variants must include the reference smp_fp32 (and smp_bf16 and/or smp_fp32_cl)")
    if "smp_bf16" not in variants and "smp_fp32_cl" not in variants:
        sys.exit("--variants must include smp_bf16 and/or smp_fp32_cl (the reference's best settings)")
    results: dict[str, dict] = {}
    for r in range(args.rounds):
        for variant in variants:
            cmd = [sys.executable, __file__, "--variant", variant, "--data", args.data, "--images", str(args.images),
                   "--batch", str(args.batch), "--infer-batches", str(args.infer_batches)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if not line:
                sys.exit(f"{variant} failed:\n{out.stderr[-3000:]}")
            got = json.loads(line[0][7:])
            print(f"round {r + 1} {variant} {got}", flush=True)
            prev = results.get(variant)
            results[variant] = got if prev is None else {
                "train_images_per_s": max(prev["train_images_per_s"], got["train_images_per_s"]),
                "infer_images_per_s": max(prev["infer_images_per_s"], got["infer_images_per_s"]),
                "peak_rss_mb": max(prev["peak_rss_mb"], got["peak_rss_mb"])}
    base, bf16 = results["smp_fp32"], results.get("smp_bf16")
    refs = [v for v in ("smp_bf16", "smp_fp32_cl") if v in results]
    best = max(refs, key=lambda v: results[v]["train_images_per_s"])  # the reference's fastest settings here
    print(f"\nU-Net-ResNet34, 128x128 TGS, batch {args.batch}, {args.images} images/epoch, "
          f"best of {args.rounds} interleaved round(s); fastest smp settings on this CPU: {best}\n")
    print("| variant | train img/s | vs smp fp32 | vs smp bf16+CL | vs smp fastest | infer img/s | vs smp fp32 "
          "| vs smp fastest | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        tr, inf = r["train_images_per_s"], r["infer_images_per_s"]
        vs_bf16 = f"{tr / bf16['train_images_per_s']:.2f}x" if bf16 else "-"  # smp_bf16 left out (emulated bf16)
        print(f"| {name} | {tr:.1f} | {tr / base['train_images_per_s']:.2f}x | {vs_bf16} "
              f"| {tr / results[best]['train_images_per_s']:.2f}x | {inf:.1f} | {inf / base['infer_images_per_s']:.2f}x "
              f"| {inf / results[best]['infer_images_per_s']:.2f}x | {r['peak_rss_mb']:.0f} |")
    from seglab.runtime.precision import describe_cpu
    print(f"\ncpu: {describe_cpu()}")


if __name__ == "__main__":
    main()
