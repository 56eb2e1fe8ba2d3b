"""``seglab demo``: the whole workflow on a built-in synthetic dataset, in about three minutes on a laptop CPU."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .config import build_config
from .data.synthetic import make_grains_dataset

DEMO_SETTINGS = {
    "model": "unet_small", "epochs": 6, "batch": 8, "lr": 0.003, "optimizer": "adamw", "scheduler": "cosine",
    "warmup_epochs": 0.5, "augment": "light", "loss": "bce+dice", "split": "8:1:1", "seed": 0, "exist_ok": True,
}


def run_demo(out: str = "runs/demo", images: int = 128, epochs: int | None = None, **overrides) -> dict:
    """Generate the grains dataset, train, evaluate on the held-out test split, predict and measure."""
    from .evaluation.evaluator import run_eval
    from .engine.dispatch import train
    from .inference.predict import run_predict

    t0 = time.perf_counter()
    out = Path(out)
    data = out / "grains"
    if not (data / "images").is_dir():
        print(f"generating {images} synthetic grain micrographs in {data} ...")
        make_grains_dataset(data, n=images, seed=0)
    settings = {**DEMO_SETTINGS, "data": str(data), "project": str(out), "name": "train", **overrides}
    if epochs is not None:
        settings["epochs"] = epochs
    run = train(build_config(settings), settings)
    eval_args = {"weights": str(run), "eval_split": "test"}
    metrics = run_eval(build_config(eval_args), eval_args)
    from .data.plan import plan_data

    test_list = out / "test_images.txt"  # the held-out images, as a list file predict accepts
    test_list.write_text("".join(f"{s.image.resolve()}\n" for s in plan_data(build_config(settings)).splits["test"]))
    pred_out = run_predict(build_config({"weights": str(run), "source": str(test_list), "project": str(out),
                                         "name": "predict", "save": "index,color,overlay"}))
    from .measure import run_measure
    from .runtime.run_dir import unique_dir

    first = sorted(pred_out.glob("*_mask.png"))[0]
    measure_out = unique_dir(out / "measure")  # a second demo in the same folder keeps the first one's files
    run_measure(first, image_path=data / "images" / first.name.replace("_mask", ""),
                           out_dir=measure_out, pixel_size="0.65um", class_names=["background", "grain"])
    elapsed = time.perf_counter() - t0
    result = {"fg_iou": metrics.get("fg_iou"), "miou": metrics["miou"], "pixel_acc": metrics["pixel_acc"],
              "seconds": round(elapsed, 1), "run": str(run), "predictions": str(pred_out), "measure": str(measure_out)}
    (out / "demo_result.json").write_text(json.dumps(result, indent=2))
    print(f"\ndemo finished in {elapsed:.0f} s: held-out foreground IoU {result['fg_iou']:.3f}, "
          f"mIoU {result['miou']:.3f}\n  run: {run}\n  predictions: {pred_out}\n  grain measurements: {measure_out}")
    return result
