"""seglab on one GPU, side by side in one run (issue 32): the model-only ceiling, `seglab train` and a plain smp loop.

One command, about 6 minutes on one GPU, prints a markdown table:

1. model-only ceiling: synthetic tensors already on the GPU, bf16 autocast + channels_last, fused AdamW, at two
   batch sizes (``--batches``, default 32 and 256), for seglab's tgs-salt model (unet_resnet34 with scSE,
   hypercolumn and deep supervision; its bce+lovasz loss) and smp's Unet("resnet34") (BCE); the smp row is skipped
   with a note when segmentation_models_pytorch is not installed;
2. ``seglab train recipe=tgs-salt time_limit=1.5`` as shipped (batch 32), and with ``batch=auto``;
3. a plain smp training loop (bf16 + channels_last, fused AdamW, batch 32, DataLoader workers, flips and random
   reflect-padding as the recipe), for the same 1.5 minutes, scored once at the end on seglab's validation split.

Each row: images/s, peak GPU memory (torch.cuda.max_memory_allocated of its own process), epochs and the validation
TGS score (seglab: the best epoch's; smp: its last). Every measurement runs in its own child process, which prints
one ``RESULT {json}`` line (benchmarks/child_runs.py).

Data: on the GPU machine only the checkout travels, so the TGS training images go there packed:

    python benchmarks/bench_gpu.py --pack ../shared/data/tgs-salt     # -> gpu_pack/tgs-salt.npz.xz (git-ignored)
    python benchmarks/bench_gpu.py --data gpu_pack/tgs-salt.npz.xz     # on the GPU: unpacks, then measures

``--data`` also takes a folder in the TGS layout. Without CUDA the script says so and exits with code 0 having
measured nothing; ``--cpu-smoke`` (alias ``--dry-run``) runs the whole path on the CPU in seconds on a tiny subset
(small models and budgets: its numbers mean nothing, it checks the script).
"""
from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from child_runs import child_result, print_result, start_child  # noqa: E402

PACK = ROOT / "gpu_pack" / "tgs-salt.npz.xz"
SHARED_TGS = ROOT.parent / "shared" / "data" / "tgs-salt"
NO_CUDA_EXIT = 0  # documented: without CUDA nothing is measured and the script exits 0 after saying so
SIDE = 128  # TGS 101 x 101 reflect-padded to 128, as the recipe trains


# ---- data: pack, unpack ------------------------------------------------------------------------------------------

def pack_tgs(source: Path, dest: Path = PACK, limit: int = 0) -> Path:
    """The TGS training images (gray) and masks (0/1) of ``source`` as uint8 arrays in one xz-compressed .npz."""
    from PIL import Image

    ids = sorted(p.stem for p in (source / "train" / "images").glob("*.png"))[: limit or None]
    if not ids:
        sys.exit(f"--pack: no TGS images in {source / 'train' / 'images'}")
    images = np.stack([np.asarray(Image.open(source / "train" / "images" / f"{i}.png").convert("L")) for i in ids])
    masks = np.stack([np.asarray(Image.open(source / "train" / "masks" / f"{i}.png").convert("L")) > 0
                      for i in ids]).astype(np.uint8)
    depths = (source / "depths.csv").read_bytes() if (source / "depths.csv").exists() else b"id,z\n"
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(ids), images=images, masks=masks, depths=np.frombuffer(depths, np.uint8))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(lzma.compress(buffer.getvalue(), preset=6))
    return dest


def unpack_tgs(pack: Path, folder: Path | None = None) -> Path:
    """The pack as the TGS layout seglab reads (train/images/ID.png, train/masks/ID.png 0/255, depths.csv), in
    ``folder`` (default: beside the pack, named after it); a folder already holding every image is reused."""
    from PIL import Image

    with np.load(io.BytesIO(lzma.decompress(pack.read_bytes()))) as data:
        ids, images, masks, depths = data["ids"], data["images"], data["masks"], data["depths"]
    folder = folder or pack.parent / pack.name.split(".")[0]
    img_dir, mask_dir = folder / "train" / "images", folder / "train" / "masks"
    if img_dir.is_dir() and len(list(img_dir.glob("*.png"))) == len(ids):
        return folder
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    for i, image, mask in zip(ids, images, masks):
        Image.fromarray(image).save(img_dir / f"{i}.png")
        Image.fromarray(mask * 255).save(mask_dir / f"{i}.png")
    (folder / "depths.csv").write_bytes(depths.tobytes())
    return folder


def synthetic_tgs(folder: Path, n: int = 48, seed: int = 0) -> Path:
    """A TGS-like folder (101 x 101 gray images, salt blobs, some empty masks) for the smoke run without real data."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "train" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "train" / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:101, :101]
    for k in range(n):
        cy, cx, r = rng.integers(10, 90, 2).tolist() + [int(rng.integers(0, 40))]
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8) if k % 3 else np.zeros((101, 101), np.uint8)
        image = np.clip(rng.normal(120, 30, (101, 101)) + 60 * mask, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / "train" / "images" / f"s{k:04d}.png")
        Image.fromarray(mask * 255).save(folder / "train" / "masks" / f"s{k:04d}.png")
    (folder / "depths.csv").write_text("id,z\n" + "".join(f"s{k:04d},0\n" for k in range(n)))
    return folder


def resolve_data(data: str, workdir: Path) -> Path:
    """A folder in the TGS layout: ``data`` itself, or a pack unpacked."""
    path = Path(data)
    if path.is_file():
        return unpack_tgs(path)
    if (path / "train" / "images").is_dir():
        return path
    sys.exit(f"--data {data}: neither a pack (--pack writes one) nor a folder with train/images")


# ---- children ----------------------------------------------------------------------------------------------------

def peak_gb(device) -> float:
    """Peak GPU memory allocated by this process (0 on a CPU)."""
    import torch

    return torch.cuda.max_memory_allocated(device) / 1024**3 if device.type == "cuda" else 0.0


def ceiling(which: str, batches: list[int], steps: int, side: int, device_name: str) -> dict:
    """Images/s of forward + backward + fused AdamW on synthetic tensors already on the device, per batch size."""
    import torch

    device = torch.device(device_name)
    if which == "smp":
        try:
            import segmentation_models_pytorch as smp
        except ImportError:
            return {"skipped": "segmentation_models_pytorch is not installed"}
        model, channels = smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=1), 3
        bce = torch.nn.BCEWithLogitsLoss()
        loss_fn = lambda out, y: bce(out.float()[:, 0], y.float())  # noqa: E731
    else:
        from seglab.config import build_config
        from seglab.losses import build_loss
        from seglab.models import create_model

        cfg = build_config({"recipe": "tgs-salt"})
        model, channels = create_model(cfg.model, num_classes=1, in_channels=1, **cfg.model_args), 1
        loss_fn = build_loss(cfg.loss, num_classes=1, ignore_index=255, aux_weight=cfg.aux_weight,
                             cls_weight=cfg.cls_weight)
    cuda = device.type == "cuda"
    model = model.to(device).train()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    rows = []
    for batch in batches:
        x = torch.randn(batch, channels, side, side, device=device)
        x = x.contiguous(memory_format=torch.channels_last) if cuda else x
        y = (torch.rand(batch, side, side, device=device) > 0.6).long()

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                out = model(x)
            loss_fn(out, y).backward()
            opt.step()

        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(max(1, steps // 4)):  # warm-up: cuDNN's algorithm search, the allocator
            step()
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
        rows.append({"batch": batch, "images_per_s": steps * batch / (time.perf_counter() - start),
                     "peak_gb": peak_gb(device)})
    return {"rows": rows}


def seglab_train(data: Path, extra: list[str], workdir: Path) -> dict:
    """`seglab train recipe=tgs-salt data=DATA ...` in this process; its summary, batch, lr and batch=auto line."""
    import contextlib

    import torch
    import yaml

    from seglab.cli.main import main

    log = io.StringIO()
    args = ["train", "recipe=tgs-salt", f"data={data}", f"project={workdir}", "name=run", "exist_ok=true",
            "report=false", *extra]
    with contextlib.redirect_stdout(log):
        code = main(args)
    sys.stdout.write(log.getvalue())
    if code:
        raise SystemExit(f"seglab train exited {code}")
    run = workdir / "run"
    summary = json.loads((run / "summary.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    auto = [line for line in log.getvalue().splitlines() if line.startswith("batch=auto:")]
    device = torch.device(summary["device"])
    return {"images_per_s": summary["train_images_per_s"], "peak_gb": peak_gb(device),
            "epochs": summary["epochs_done"], "val": summary["best_value"], "metric": summary["best_metric"],
            "batch": cfg["batch"], "lr": cfg["lr"], "note": auto[0] if auto else ""}


def smp_loop(data: Path, seconds: float, batch: int, device_name: str, workers: int) -> dict:
    """A plain smp training loop for ``seconds`` (whole epochs and the one the budget ends), then the TGS score of
    the last weights on seglab's validation split."""
    import albumentations as A
    import cv2
    import torch
    from torch.utils.data import DataLoader, Dataset

    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        return {"skipped": "segmentation_models_pytorch is not installed"}
    from seglab.config import build_config
    from seglab.data.plan import plan_data
    from seglab.metrics.tgs import tgs_scores_torch

    device = torch.device(device_name)
    cuda = device.type == "cuda"
    splits = plan_data(build_config({"data": str(data)})).splits

    def load(samples) -> tuple[np.ndarray, np.ndarray]:
        images = np.stack([cv2.imread(str(s.image))[..., ::-1] for s in samples])
        masks = np.stack([cv2.imread(str(s.mask), cv2.IMREAD_GRAYSCALE) > 0 for s in samples]).astype(np.uint8)
        return images, masks

    train_x, train_y = load(splits["train"])
    val_x, val_y = load(splits["val"])
    aug = A.Compose([A.HorizontalFlip(), A.PadIfNeeded(SIDE, SIDE, position="random",
                                                       border_mode=cv2.BORDER_REFLECT_101)])

    class TGS(Dataset):
        def __len__(self):
            return len(train_x)

        def __getitem__(self, i):
            out = aug(image=train_x[i], mask=train_y[i])
            x = torch.from_numpy(out["image"].transpose(2, 0, 1).astype(np.float32) / 255.0)
            return (x - 0.5) / 0.25, torch.from_numpy(out["mask"]).float()

    loader = DataLoader(TGS(), batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=cuda, persistent_workers=workers > 0)
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=1).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    bce = torch.nn.BCEWithLogitsLoss()
    model.train()
    seen, start, done = 0, time.perf_counter(), False
    while not done:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                out = model(x)
            loss = bce(out.float()[:, 0], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += x.shape[0]
            if time.perf_counter() - start >= seconds:
                done = True
                break
    if cuda:
        torch.cuda.synchronize(device)
    train_time = time.perf_counter() - start
    model.eval()
    pad = (SIDE - val_x.shape[1]) // 2, SIDE - val_x.shape[1] - (SIDE - val_x.shape[1]) // 2
    scores = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        for i in range(0, len(val_x), 64):
            x = torch.from_numpy(val_x[i:i + 64].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
            x = torch.nn.functional.pad((x - 0.5) / 0.25, (pad[0], pad[1], pad[0], pad[1]), mode="reflect")
            logits = model(x.to(device))[:, 0, pad[0]:SIDE - pad[1], pad[0]:SIDE - pad[1]].float()
            scores.append(tgs_scores_torch((logits > 0).cpu(), torch.from_numpy(val_y[i:i + 64]).bool()))
    return {"images_per_s": seen / train_time, "peak_gb": peak_gb(device), "epochs": round(seen / len(train_x), 2),
            "val": float(torch.cat(scores).mean()), "metric": "tgs", "batch": batch, "lr": 1e-3,
            "note": f"last weights after {seconds:g} s"}


def run_child(args) -> None:
    """Child process: one measurement, one RESULT line."""
    if args.variant in ("ceiling_seglab", "ceiling_smp"):
        result = ceiling(args.variant.split("_")[1], [int(b) for b in args.batches.split(",")], args.steps,
                         args.side, args.device)
    elif args.variant == "smp_loop":
        result = smp_loop(Path(args.data), args.minutes * 60, args.smp_batch, args.device, args.workers)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = seglab_train(Path(args.data), args.extra.split(), Path(tmp))
    print_result(result)


# ---- the parent: plan, run, table ---------------------------------------------------------------------------------

def plan_children(args, data: Path) -> list[tuple[str, list[str]]]:
    """(variant, extra command-line arguments) of every child, in the order they run."""
    common = ["--data", str(data), "--device", args.device, "--minutes", f"{args.minutes:g}",
              "--workers", str(args.workers)]
    ceil = ["--batches", args.batches, "--steps", str(args.steps), "--side", str(args.side)]
    train = [f"time_limit={args.minutes:g}"]
    if args.cpu_smoke:  # seconds, not minutes: a small model, one short epoch, no budget
        train = ["model=unet_small", "model_args={}", "epochs=1", "time_limit=0", "workers=0", "augment=hflip"]
    return [("ceiling_seglab", common + ceil), ("ceiling_smp", common + ceil),
            ("seglab_shipped", common + ["--extra", " ".join(train)]),
            ("seglab_auto", common + ["--extra", " ".join(train + ["batch=auto"])]),
            ("smp_loop", common + ["--smp-batch", str(args.smp_batch)])]


def table(results: dict[str, dict], args) -> str:
    """The markdown table of every child's result."""
    lines = ["| run | batch | img/s | peak GPU mem (GB) | epochs | val TGS | note |", "|---|---|---|---|---|---|---|"]
    train = f"seglab train recipe=tgs-salt time_limit={args.minutes:g}"
    names = {"ceiling_seglab": "model-only ceiling: seglab tgs-salt model",
             "ceiling_smp": "model-only ceiling: smp Unet(resnet34)", "seglab_shipped": f"{train} (as shipped)",
             "seglab_auto": f"{train} batch=auto", "smp_loop": f"smp plain loop, {args.minutes:g} min"}
    for key, name in names.items():
        got = results.get(key, {"skipped": "not run"})
        if "skipped" in got or "failed" in got:
            lines.append(f"| {name} | - | - | - | - | - | {got.get('skipped') or got.get('failed')} |")
        elif "rows" in got:
            for row in got["rows"]:
                lines.append(f"| {name} | {row['batch']} | {row['images_per_s']:.0f} | {row['peak_gb']:.1f} | - | - | "
                             "synthetic tensors on the device, bf16 + channels_last, fused AdamW |")
        else:
            val = f"{got['val']:.4f}" if got.get("val") is not None else "-"
            lines.append(f"| {name} | {got['batch']} | {got['images_per_s']:.0f} | {got['peak_gb']:.1f} | "
                         f"{got['epochs']} | {val} | {got.get('note', '')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", nargs="?", const=str(SHARED_TGS), metavar="DIR",
                        help="write gpu_pack/tgs-salt.npz.xz from the TGS folder DIR and stop")
    parser.add_argument("--data", default="", help="a pack (.npz.xz) or a TGS folder (default: the pack, else "
                                                    "../shared/data/tgs-salt)")
    parser.add_argument("--cpu-smoke", "--dry-run", action="store_true", dest="cpu_smoke",
                        help="the whole path on the CPU on a tiny subset, in seconds")
    parser.add_argument("--batches", default="32,256", help="batch sizes of the model-only ceiling")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per ceiling batch size")
    parser.add_argument("--side", type=int, default=SIDE)
    parser.add_argument("--minutes", type=float, default=1.5, help="time_limit of the training rows")
    parser.add_argument("--smp-batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="", help="also write the table to this file")
    parser.add_argument("--only", default="", help="run only these rows (comma-separated: ceiling_seglab, "
                                                   "ceiling_smp, seglab_shipped, seglab_auto, smp_loop)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--extra", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        run_child(args)
        return 0
    if args.pack:
        dest = pack_tgs(Path(args.pack))
        print(f"packed {Path(args.pack)} into {dest} ({dest.stat().st_size / 2**20:.1f} MB)")
        return 0
    import torch

    if args.cpu_smoke:
        args.device, args.batches, args.steps, args.side, args.minutes = "cpu", "2,4", 1, 32, 0.05
        args.smp_batch, args.workers = 4, 0
    elif not torch.cuda.is_available():
        print(f"bench_gpu: no CUDA GPU on this machine (torch {torch.__version__}): nothing measured. Run it on a "
              "GPU, or with --cpu-smoke to check the script on the CPU.")
        return NO_CUDA_EXIT
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.cpu_smoke:  # a tiny pack, written and read back as on the GPU machine
            source = SHARED_TGS if (SHARED_TGS / "train" / "images").is_dir() else synthetic_tgs(workdir / "synth")
            data = unpack_tgs(pack_tgs(source, workdir / "tiny.npz.xz", limit=30))
        else:
            data = resolve_data(args.data or str(PACK if PACK.exists() else SHARED_TGS), workdir)
        device = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu (smoke run: numbers mean nothing)"
        print(f"data: {data}; device: {device}", flush=True)
        results: dict[str, dict] = {}
        for variant, extra in plan_children(args, data):
            if args.only and variant not in args.only.split(","):
                continue
            log_path = workdir / f"{variant}.log"
            t0 = time.perf_counter()
            proc = start_child([sys.executable, __file__, "--variant", variant, *extra], log_path)
            proc.wait()
            try:
                results[variant] = child_result(variant, proc, log_path)
            except SystemExit as e:  # one failed row does not lose the others; its log's tail says why
                tail = log_path.read_text().splitlines()[-15:]
                print(f"{e}\n" + "\n".join(tail), flush=True)
                results[variant] = {"failed": f"failed (exit {proc.returncode})"}
            print(f"{variant}: {time.perf_counter() - t0:.0f} s {json.dumps(results[variant])}", flush=True)
    text = table(results, args) + f"\n\ndevice: {device}; total {time.perf_counter() - start:.0f} s"
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 1 if any("failed" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
