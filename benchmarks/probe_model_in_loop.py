"""Control probe: seglab's U-Net and smp's Unet trained in the same plain loop on the same windows in the same order.

bench_few_large.py and bench_camvid.py found smp's plain loop ahead of seglab's engine at ~250 steps. This probe
separates the model from the loop: every variant is trained by ``smp_loop.train_smp_unet`` for the same number of
steps, seed and windows, so the training losses are comparable step by step (far less noisy than a held-out mIoU
after 15 minutes), and optionally scored on the held-out list. Variants change one model choice at a time:

  smp               segmentation_models_pytorch Unet("resnet34", encoder_weights=None)
  seglab            seglab unet_encoder resnet34 as shipped (bilinear decoder, He-initialised as smp's)
  seglab_torchinit  ... with PyTorch's default init of the decoder and head (seglab before f565a90)
  seglab_nearest    ... with upsample=nearest (smp's decoder up-sampling)
  seglab_nozero     ... with the encoder blocks' last BatchNorm at 1 (torchvision's ResNet) instead of timm's 0
(The LOG's run of 2026-12-05 predates f565a90: its "seglab" is today's seglab_torchinit, and its "seglab_smpinit",
smp's decoder init applied by hand, is today's seglab.)

Run (data as written by bench_few_large.py --datasets camvid):
  python benchmarks/probe_model_in_loop.py --data WORKDIR/data/camvid --steps 80 --score
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

VARIANTS = ("smp", "seglab", "seglab_torchinit", "seglab_nearest", "seglab_nozero")


def torch_default_init(model) -> None:
    """Put the decoder and heads back to PyTorch's default initialisation (each layer's own reset_parameters)."""
    for part in (model.decoder, model.head):
        for m in part.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


def model_factory(variant: str):
    """``make_model(in_channels, num_classes)`` for a variant (None = smp's Unet, the loop's own)."""
    if variant == "smp":
        return None

    def make(in_ch: int, num_classes: int):
        from seglab.models.registry import create_model

        options = {"encoder": "resnet34"}
        if variant == "seglab_nearest":
            options["upsample"] = "nearest"
        if variant == "seglab_nozero":
            options["encoder_args"] = {"zero_init_last": False}
        model = create_model("unet_encoder", num_classes=num_classes, in_channels=in_ch, **options)
        if variant == "seglab_torchinit":
            torch_default_init(model)
        return model

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with train.txt / test.txt written by bench_few_large")
    parser.add_argument("--variants", default="smp,seglab", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score", action="store_true", help="also score each variant on test.txt")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args = parser.parse_args()

    import numpy as np

    from bench_few_large import SPECS, read_image, read_list, read_mask, score
    from seglab.runtime.precision import describe_cpu
    from smp_loop import train_smp_unet

    spec, ddir = SPECS["camvid"], Path(args.data)
    pairs = read_list(ddir / "train.txt")
    images = [read_image(i) for i, _ in pairs]
    masks = [read_mask(m, spec) for _, m in pairs]
    results, cpu = {}, describe_cpu()
    print(f"CPU: {cpu}", flush=True)
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            sys.exit(f"error: unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        t0 = time.perf_counter()
        run = train_smp_unet(images, masks, spec.num_classes, spec.ignore_index, 1e9, 256, 8, seed=args.seed,
                             make_model=model_factory(variant), max_steps=args.steps)
        tail = run.losses[-max(1, len(run.losses) // 4):]
        row = {"steps": run.steps, "s_per_step": round(run.train_s / run.steps, 2), "params": run.params,
               "loss_last_quarter": round(float(np.mean(tail)), 4), "losses": run.losses}
        if args.score:
            s = score(lambda p: run.predict(read_image(p)), read_list(ddir / "test.txt"), spec)
            row.update(miou=round(s["miou"], 4), pixel_acc=round(s["pixel_acc"], 4), per_class_iou=s["per_class_iou"])
        results[variant] = row
        print(f"{variant:16s} loss(last quarter) {row['loss_last_quarter']:.4f}  {row['s_per_step']} s/step"
              + (f"  mIoU {row['miou']:.3f}  acc {row['pixel_acc']:.3f}" if args.score else "")
              + f"  ({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "cpu": cpu, "results": results}, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
