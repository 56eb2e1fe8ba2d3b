"""CamVid from scratch in a CPU budget (issue 31): seglab's scenes recipe, the study models and a plain smp loop.

Data (written once into the workdir as seglab list files, CamVid's classes.csv beside them, 11 = Unlabelled ignored):

* train: CamVid train less the sequence held out below (305 frames: sequences 0006R0 and 0016E5);
* val: CamVid train sequence 0001TP (62 frames), held out by sequence: what seglab validates on during training and
  chooses its checkpoint (best.pt) and the recipe's settings by; never scored;
* test: CamVid val (101 frames), scored once at the end at 480x360, with and without horizontal-flip TTA.

Variants (each a child process; one after the other on all cores, or with --one-core-each as many at once as there are
cores, each pinned to one core with one thread; budgets in minutes of training wall time):

* ``recipe`` (45): ``seglab train recipe=scenes-cpu``;
* ``smp`` (45): segmentation_models_pytorch ``Unet("resnet34", encoder_weights=None)`` in a plain loop
  (benchmarks/smp_loop.py: random 256 crops + hflips, AdamW 1e-3, cosine, CE with ignore 11, end-of-budget weights);
* ``bisenet`` (20): ``model=bisenet_resnet18`` (the mineral-micrograph study's model), seglab's defaults;
* ``unet`` (20) and ``unet_encoder`` (20): the improved-U-Net study's comparison, the classic U-Net (``model=unet``)
  against the encoder U-Net (``model=unet_encoder encoder=resnet34``), seglab's defaults otherwise.

Every variant becomes a run folder under ``WORKDIR/runs`` with an ``eval_test`` folder (metrics.json, per_class.csv)
that ``seglab compare WORKDIR/runs/*`` tabulates; smp's folder is written by this script in the same layout.
``--probe NAME='{key: value}'`` adds seglab variants with those overrides on top of the recipe (15 min each by
default, ``--probe-minutes``), for choosing the recipe; probes are scored like the rest.

    python benchmarks/bench_camvid.py --workdir DIR                                  # all five, ~2.5 h + scoring
    python benchmarks/bench_camvid.py --variants recipe,smp --workdir DIR
    python benchmarks/bench_camvid.py --variants none --probe crop384='{"crop": 384}' --workdir DIR
    python benchmarks/bench_camvid.py --one-core-each --workdir DIR     # two at a time, one core each: ~1.5 h
    python benchmarks/bench_camvid.py --minutes-scale 0.01 --max-test 3 --workdir /tmp/camvid_smoke  # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_few_large import (CAMVID_CLASSES, SHARED, Spec, _camvid_pairs, _write_list, metrics_from_confusion,  # noqa: E402
                             read_image, read_list, read_mask)
from child_runs import print_result, result_or_failure, start_child  # noqa: E402

SPEC = Spec("camvid", 45.0, 11, 11, "miou", {"ignore_index": 11}, CAMVID_CLASSES)
HELD_OUT_SEQUENCE = "0001TP"
VARIANTS = {  # name -> (minutes, seglab overrides; None = the smp loop)
    "recipe": (45.0, {"recipe": "scenes-cpu"}),
    "smp": (45.0, None),
    "bisenet": (20.0, {"model": "bisenet_resnet18"}),
    "unet": (20.0, {"model": "unet"}),
    "unet_encoder": (20.0, {"model": "unet_encoder", "encoder": "resnet34"}),
}
SMP_CROP, SMP_BATCH = 256, 8  # as the recipe's crop and batch (checked against the recipe when both run)


def prepare(out: Path) -> Path:
    """Write train/val/test list files (train less one sequence / that sequence / CamVid val) and classes.csv."""
    out.mkdir(parents=True, exist_ok=True)
    train = _camvid_pairs("train")
    _write_list(out / "train.txt", [p for p in train if not Path(p[0]).name.startswith(HELD_OUT_SEQUENCE)])
    _write_list(out / "val.txt", [p for p in train if Path(p[0]).name.startswith(HELD_OUT_SEQUENCE)])
    _write_list(out / "test.txt", _camvid_pairs("val"))
    shutil.copy(SHARED / "camvid" / "classes.csv", out / "classes.csv")
    return out


def score_both(predict_views, pairs: list[tuple[Path, Path]]) -> dict:
    """Scores of ``predict_views(image) -> (plain, hflip-TTA) probabilities-free label maps`` over the test pairs."""
    import numpy as np

    k = SPEC.num_classes
    totals = {"plain": np.zeros((k, k), np.int64), "tta": np.zeros((k, k), np.int64)}
    t0 = time.perf_counter()
    for image_path, mask_path in pairs:
        gt = read_mask(mask_path, SPEC)
        valid = (gt != SPEC.ignore_index) & (gt < k)
        for name, pred in zip(("plain", "tta"), predict_views(read_image(image_path))):
            pred = np.asarray(pred).astype(np.int64)
            if pred.shape != gt.shape:
                raise RuntimeError(f"{image_path}: prediction {pred.shape} vs mask {gt.shape}")
            totals[name] += np.bincount(k * gt[valid] + pred[valid], minlength=k * k).reshape(k, k)
    seconds = time.perf_counter() - t0
    plain, tta = (metrics_from_confusion(totals[n], SPEC.class_names) for n in ("plain", "tta"))
    return {**plain, "miou_tta": tta["miou"], "pixel_acc_tta": tta["pixel_acc"],
            "per_class_iou_tta": tta["per_class_iou"], "images": len(pairs),
            "images_per_s": round(2 * len(pairs) / seconds, 2), "confusion": totals["plain"].tolist()}


def write_eval(run: Path, scores: dict) -> None:
    """``eval_test/metrics.json`` and ``per_class.csv`` in the run folder, the layout ``seglab compare`` reads."""
    import numpy as np

    out = run / "eval_test"
    out.mkdir(parents=True, exist_ok=True)
    conf = np.asarray(scores["confusion"], dtype=np.float64)
    recall = np.diag(conf) / np.maximum(conf.sum(1), 1)
    metrics = {"miou": scores["miou"], "mpa": float(recall[conf.sum(1) > 0].mean()), "pixel_acc": scores["pixel_acc"],
               "miou_hflip_tta": scores["miou_tta"], "pixel_acc_hflip_tta": scores["pixel_acc_tta"],
               "images": scores["images"], "images_per_s": scores["images_per_s"]}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    rows = ["class,iou,iou_hflip_tta"] + [f"{c},{scores['per_class_iou'][c]},{scores['per_class_iou_tta'][c]}"
                                          for c in SPEC.class_names]
    (out / "per_class.csv").write_text("\n".join(rows) + "\n")


def run_seglab(name: str, overrides: dict, ddir: Path, minutes: float, runs: Path, max_test: int) -> dict:
    """Train with seglab for the budget (best.pt chosen on the held-out sequence), then score it with and without TTA."""
    from seglab.config import build_config
    from seglab.engine.dispatch import train
    from seglab.inference.predict import predict_image
    from seglab.inference.predictor import load_predictor

    keys = {"data": str(ddir), "ignore_index": SPEC.ignore_index, **overrides, "time_limit": minutes,
            "project": str(runs), "name": name, "exist_ok": True}
    print("command: seglab train " + " ".join(f"{k}={v}" for k, v in keys.items()), flush=True)
    shutil.rmtree(runs / name, ignore_errors=True)  # a fresh run folder: no best.pt left from an earlier run
    run = train(build_config(keys), keys)
    summary = json.loads((run / "summary.json").read_text())
    ckpt = run / "checkpoints" / "best.pt"
    plain, flipped = (load_predictor(str(ckpt), "cpu", "auto", tta) for tta in ("none", "hflip"))
    threshold = plain.meta.get("threshold", 0.5)

    def views(img):
        return predict_image(plain, img, threshold)[0], predict_image(flipped, img, threshold)[0]

    pairs = read_list(ddir / "test.txt")
    scores = score_both(views, pairs[:max_test] if max_test else pairs)
    write_eval(run, scores)
    return {**scores, "epochs": summary["epochs_done"], "train_ips": summary["train_images_per_s"],
            "train_min": summary["train_time_s"] / 60, "params": summary.get("params"),
            "best_epoch": summary.get("best_epoch"), "precision": summary.get("precision"), "run": str(run),
            "overrides": keys}


def run_smp(ddir: Path, minutes: float, runs: Path, max_test: int) -> dict:
    """The smp plain loop on the same training frames, written as a run folder ``seglab compare`` reads."""
    from smp_loop import train_smp_unet

    pairs = read_list(ddir / "train.txt")
    images, masks = [read_image(i) for i, _ in pairs], [read_mask(m, SPEC) for _, m in pairs]
    result = train_smp_unet(images, masks, SPEC.num_classes, SPEC.ignore_index, minutes, SMP_CROP, SMP_BATCH)
    run = runs / "smp"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    summary = {"model": "smp Unet", "encoder": "resnet34", "params": result.params, "train_time_s": result.train_s,
               "train_images_per_s": result.seen / result.train_s, "epochs_done": result.epochs,
               "precision": result.precision}
    (run / "summary.json").write_text(json.dumps(summary, indent=1))
    test = read_list(ddir / "test.txt")

    def views(img):
        return result.predict(img), result.predict(img[:, ::-1].copy())[:, ::-1]  # hflip TTA: labels of the flip
    scores = score_both(views, test[:max_test] if max_test else test)
    write_eval(run, scores)
    return {**scores, "epochs": result.epochs, "train_ips": result.seen / result.train_s,
            "train_min": result.train_s / 60, "params": result.params, "precision": result.precision,
            "run": str(run)}


def child(args) -> None:
    """Run one variant or probe and print its RESULT line."""
    name, minutes = args.child, args.minutes
    ddir, runs = Path(args.workdir) / "data", Path(args.workdir) / "runs"
    overrides = json.loads(args.overrides)
    t0 = time.time()
    result = run_smp(ddir, minutes, runs, args.max_test) if overrides is None else \
        run_seglab(name, overrides, ddir, minutes, runs, args.max_test)
    print_result({"variant": name, "status": "ok", "minutes": minutes, "child_min": (time.time() - t0) / 60, **result})


def collect(name: str, proc, log: Path) -> dict:
    """A child's RESULT, or a failure record (the other variants go on)."""
    result = result_or_failure(name, proc, log)
    return result if result.get("status") == "ok" else {"variant": name, **result}


def report(results: dict, start: float, one_core_each: bool = False) -> str:
    """Markdown: the headline table, per-class IoU, and the gap of seglab's recipe over smp."""
    from seglab.runtime.precision import describe_cpu

    how = ("variants side by side in the order given, each pinned to one core with one thread" if one_core_each
           else "variants one after the other, all cores each")
    out = ["# CamVid from scratch (issue 31)", "",
           f"cpu: {describe_cpu()}; {how}; train = CamVid train less sequence "
           f"{HELD_OUT_SEQUENCE} (the validation seglab chooses by), scored on CamVid val at 480x360; total wall "
           f"{(time.time() - start) / 60:.0f} min", "",
           "| variant | minutes | mIoU | mIoU hflip TTA | pixel acc | epochs | train img/s | params (M) | precision |",
           "|---|---|---|---|---|---|---|---|---|"]
    ok = {n: r for n, r in results.items() if r.get("status") == "ok"}
    for name, r in results.items():
        if name not in ok:
            out.append(f"| {name} | failed: {r.get('error', '')[:150]} |" + " |" * 7)
            continue
        params = f"{r['params'] / 1e6:.1f}" if r.get("params") else "-"
        out.append(f"| {name} | {r['minutes']:g} | {r['miou']:.4f} | {r['miou_tta']:.4f} | {r['pixel_acc']:.4f} | "
                   f"{r['epochs']} | {r['train_ips']:.1f} | {params} | {r.get('precision', '')} |")
    if "recipe" in ok and "smp" in ok:
        gap = ok["recipe"]["miou"] - ok["smp"]["miou"]
        out.append(f"\nrecipe - smp mIoU: **{gap:+.4f}** (target >= +0.05: {'met' if gap >= 0.05 else 'NOT met'})")
    if ok:
        out += ["", "Per-class IoU (no TTA):", "", "| variant | " + " | ".join(SPEC.class_names) + " |",
                "|---|" + "---|" * len(SPEC.class_names)]
        for name, r in ok.items():
            ious = [r["per_class_iou"].get(c) for c in SPEC.class_names]
            out.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in ious) + " |")
    return "\n".join(out)


def parse_probes(items: list[str]) -> dict[str, dict]:
    """``NAME={json overrides}`` pairs -> {NAME: overrides on top of the recipe}."""
    probes = {}
    for item in items:
        name, _, text = item.partition("=")
        try:
            keys = json.loads(text)
        except json.JSONDecodeError as e:
            sys.exit(f"error: --probe {item!r}: the overrides are not JSON ({e}); e.g. crop384='{{\"crop\": 384}}'")
        if not name or not isinstance(keys, dict) or name in VARIANTS:
            sys.exit(f"error: --probe {item!r}: give NAME='{{\"key\": value}}' with a NAME not in {list(VARIANTS)}")
        probes[name] = {**VARIANTS["recipe"][1], **keys}
    return probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)}, or none (probes only)")
    parser.add_argument("--probe", action="append", default=[], help="NAME='{json overrides}' on top of the recipe")
    parser.add_argument("--probe-minutes", type=float, default=15.0)
    parser.add_argument("--minutes-scale", type=float, default=1.0, help="multiply every budget (smoke runs)")
    parser.add_argument("--max-test", type=int, default=0, help="score only the first N test frames (quick checks)")
    parser.add_argument("--workdir", default="runs/bench_camvid")
    parser.add_argument("--one-core-each", action="store_true",
                        help="run as many variants at once as there are cores, each pinned to one core with one "
                             "thread, in the order given (pair variants of equal budget: recipe,smp)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--minutes", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    names = [v for v in args.variants.split(",") if v and v != "none"]
    if bad := set(names) - set(VARIANTS):
        sys.exit(f"error: unknown variants {sorted(bad)}; choose from {', '.join(VARIANTS)} (or none)")
    jobs = {n: (VARIANTS[n][0] * args.minutes_scale, VARIANTS[n][1]) for n in names}
    jobs.update({n: (args.probe_minutes * args.minutes_scale, o) for n, o in parse_probes(args.probe).items()})
    if not jobs:
        sys.exit("error: nothing to run: --variants none and no --probe")
    if not (SHARED / "camvid").is_dir():
        sys.exit(f"error: CamVid not found at {SHARED / 'camvid'} (see ../shared/data/README.md)")
    workdir = Path(args.workdir).resolve()
    ddir = prepare(workdir / "data")
    print(f"camvid: {len(read_list(ddir / 'train.txt'))} train / {len(read_list(ddir / 'val.txt'))} val (sequence "
          f"{HELD_OUT_SEQUENCE}) / {len(read_list(ddir / 'test.txt'))} test frames in {ddir}", flush=True)
    start, results = time.time(), {}
    cores = sorted(os.sched_getaffinity(0)) if args.one_core_each else [None]
    names = list(jobs)
    for first in range(0, len(names), len(cores)):  # all cores for one variant, or one core each for several
        running = []
        for core, name in zip(cores, names[first:first + len(cores)]):
            minutes, overrides = jobs[name]
            cmd = [sys.executable, __file__, "--child", name, "--workdir", str(workdir), "--minutes", str(minutes),
                   "--overrides", json.dumps(overrides), "--max-test", str(args.max_test)]
            log = workdir / f"{name}.log"
            where = "all cores" if core is None else f"core {core}, one thread"
            print(f"{name}: {minutes:g} min on {where}, log {log}", flush=True)
            running.append((name, start_child(cmd, log, core=core), log))
        for name, proc, log in running:
            results[name] = collect(name, proc, log)
            (workdir / "results.json").write_text(json.dumps(results, indent=1))  # partial results survive
    text = report(results, start, args.one_core_each)
    (workdir / "results.md").write_text(text + "\n")
    print("\n" + text)
    print(f"\nresults: {workdir / 'results.json'}, {workdir / 'results.md'}; run folders: {workdir / 'runs'} "
          f"(seglab compare {workdir / 'runs'}/*); logs: {workdir}/*.log")


if __name__ == "__main__":
    main()
