"""Does torch.compile pay off for seglab's training step within a short budget? (issue 32)

Eager vs ``torch.compile(model)`` in mode ``default`` (Inductor kernels) and ``reduce-overhead`` (Inductor plus CUDA
graphs: one launch per graph instead of one per kernel, the cure for launch-bound small batches), on the tgs-salt
model (unet_resnet34 + scSE + hypercolumn + deep supervision, its bce+lovasz loss), synthetic batches on the GPU,
bf16 + channels_last, fused AdamW (the optimiser step stays eager). Each mode runs in its own process (no shared
compile caches or graphs) and reports:

- warm-up: seconds of the first ``WARM_STEPS`` steps (compilation, graph capture, cuDNN's search): what a run pays
  once;
- steady img/s over ``--seconds`` of steps after that;
- images in the budget: (budget - warm-up) x steady rate (eager pays its own, short warm-up too); compile "wins"
  when that beats eager.

    python benchmarks/probe_compile.py                 # on a GPU: batch 32, 1.5-min budget, about 3 minutes
    python benchmarks/probe_compile.py --cpu-smoke     # the script's path on the CPU: a tiny model, seconds

Without CUDA (and without --cpu-smoke) it says so and exits with code 0.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child_runs import print_result  # noqa: E402

MODES = ("eager", "default", "reduce-overhead")
WARM_STEPS = 3
NO_CUDA_EXIT = 0


def build(device, tiny: bool):
    """The model, its loss and input channels: the tgs-salt recipe's, or a two-layer stand-in for the smoke run."""
    import torch

    if tiny:
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))
        bce = torch.nn.BCEWithLogitsLoss()
        return model.to(device), (lambda out, y: bce(out[:, 0].float(), y.float())), 1
    from seglab.config import build_config
    from seglab.losses import build_loss
    from seglab.models import create_model

    cfg = build_config({"recipe": "tgs-salt"})
    model = create_model(cfg.model, num_classes=1, in_channels=1, **cfg.model_args).to(device)
    loss = build_loss(cfg.loss, num_classes=1, ignore_index=255, aux_weight=cfg.aux_weight, cls_weight=cfg.cls_weight)
    return model, loss, 1


def measure(mode: str, batch: int, side: int, seconds: float, device_name: str, tiny: bool) -> dict:
    """Warm-up seconds and steady images/s of one mode's training step."""
    import torch

    device = torch.device(device_name)
    cuda = device.type == "cuda"
    model, loss_fn, channels = build(device, tiny)
    model.train()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    step_model = model if mode == "eager" else torch.compile(model, mode=mode)
    x = torch.randn(batch, channels, side, side, device=device)
    x = x.contiguous(memory_format=torch.channels_last) if cuda else x
    y = (torch.rand(batch, side, side, device=device) > 0.6).long()

    def step() -> None:
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the graphs' outputs of the last step may be overwritten
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = step_model(x)
        loss_fn(out, y).backward()
        opt.step()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    start = time.perf_counter()
    try:
        for _ in range(WARM_STEPS):
            step()
        sync()
    except Exception as e:  # noqa: BLE001 - a mode that does not compile here is a result, not a crash
        return {"mode": mode, "failed": f"{type(e).__name__}: {str(e).splitlines()[0][:150]}"}
    warm = time.perf_counter() - start
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 2:
        step()
        steps += 1
        if steps % 10 == 0:
            sync()
    sync()
    return {"mode": mode, "warm_s": warm, "images_per_s": steps * batch / (time.perf_counter() - start)}


def budget_table(results: list[dict], budget_s: float, batch: int) -> str:
    """The markdown table: warm-up, steady img/s, speed-up, images within the budget, and whether compile wins."""
    eager = next((r for r in results if r["mode"] == "eager" and "failed" not in r), None)
    base = eager and max(0.0, budget_s - eager["warm_s"]) * eager["images_per_s"]
    lines = [f"| mode (batch {batch}) | warm-up s | steady img/s | vs eager | images in {budget_s / 60:g} min | "
             "wins in the budget |", "|---|---|---|---|---|---|"]
    for r in results:
        if "failed" in r or "skipped" in r:
            lines.append(f"| {r['mode']} | - | - | - | - | {r.get('failed') or r.get('skipped')} |")
            continue
        images = max(0.0, budget_s - r["warm_s"]) * r["images_per_s"]
        speed = f"{r['images_per_s'] / eager['images_per_s']:.2f}x" if eager else "-"
        wins = "-" if r["mode"] == "eager" or not base else ("yes" if images > base else "no")
        if wins != "-" and r["warm_s"] >= budget_s:
            wins = "no (warm-up exceeds the budget)"
        lines.append(f"| {r['mode']} | {r['warm_s']:.1f} | {r['images_per_s']:.0f} | {speed} | {images:.0f} | {wins} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=10.0, help="steady-state timing per mode")
    parser.add_argument("--budget", type=float, default=1.5, help="the training budget in minutes")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds a mode may take before it counts "
                                                                      "as failed")
    parser.add_argument("--modes", default=",".join(MODES), help="modes to measure, comma-separated")
    parser.add_argument("--cpu-smoke", "--dry-run", action="store_true", dest="cpu_smoke")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print_result(measure(args.mode, args.batch, args.side, args.seconds, args.device, args.tiny))
        return 0
    import torch

    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        parser.error(f"--modes: unknown {sorted(unknown)}; choose from {', '.join(MODES)}")
    if args.cpu_smoke:
        args.batch, args.side, args.seconds, args.device = 2, 32, 0.2, "cpu"
    elif not torch.cuda.is_available():
        print(f"probe_compile: no CUDA GPU on this machine (torch {torch.__version__}): nothing measured; "
              "--cpu-smoke checks the script on the CPU.")
        return NO_CUDA_EXIT
    else:
        args.device = "cuda"
    import json

    results = []
    for mode in modes:
        if mode == "reduce-overhead" and args.device == "cpu":
            results.append({"mode": mode, "skipped": "CUDA graphs: GPU only"})
            continue
        cmd = [sys.executable, __file__, "--mode", mode, "--batch", str(args.batch), "--side", str(args.side),
               "--seconds", str(args.seconds), "--device", args.device] + (["--tiny"] if args.cpu_smoke else [])
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            results.append({"mode": mode, "failed": f"did not finish in {args.timeout:g} s"})
            continue
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        results.append(json.loads(line[0][7:]) if line else
                       {"mode": mode, "failed": f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}"})
        print(f"{mode}: {results[-1]}", flush=True)
    print("\n" + budget_table(results, args.budget * 60, args.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
