"""Inference latency and throughput of U-Net-ResNet34 per backend: PyTorch fp32, PyTorch bf16 + channels_last,
onnxruntime (CPU), at 128 and 512 px. Random weights: speed does not depend on what the model learned.

Prints a table and writes it as Markdown. Usage:

    python benchmarks/bench_inference.py [--batch 1,8] [--iters 20] [--warmup 5] [--threads 0] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from seglab.export.bench import bench_model, print_results, random_meta, to_markdown
from seglab.models import create_model

MODEL, ENCODER, SIZES = "unet_encoder", "resnet34", (128, 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0 = PyTorch's default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "inference.md"))
    args = parser.parse_args()

    model = create_model(MODEL, encoder=ENCODER)
    threads = args.threads or torch.get_num_threads()
    header = (f"## Inference speed: {MODEL} ({ENCODER}), random weights\n\n"
              f"{platform.processor() or platform.machine()}, {threads} thread(s), device {args.device}, "
              f"torch {torch.__version__}; median of {args.iters} timed calls after {args.warmup} warm-up calls "
              "of `probs` on a raw uint8 batch (normalisation, forward, sigmoid).\n\n")
    sections = []
    for batch in (int(b) for b in args.batch.split(",")):
        results = bench_model(model, random_meta(), SIZES, batch=batch, warmup=args.warmup, iters=args.iters,
                              device=args.device, threads=args.threads)
        title = f"batch {batch}"
        print_results(results, title)
        sections.append(to_markdown(results, title))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + "\n".join(sections), encoding="utf-8")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
