"""Reports: plots, galleries, HTML report, run comparison, loggers — built from small real run folders.

The run folders are made by ``build_run_folder`` below, which follows the run-folder contract of
``seglab train`` / ``seglab eval`` with a threshold "model" on real membrane crops (synthetic images
when ../shared/data is absent). The lead will swap it for a tiny real ``seglab train`` + ``seglab eval``
run once the trainer lands; every test below only reads the run folder, so none of them changes then.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from rich.console import Console

from seglab.data import colors as colors_module
from seglab.report.cli import compare_main, report_main
from seglab.data.colors import colorize, overlay, palette
from seglab.report.compare import compare_runs, rich_table, to_markdown, write_csv
from seglab.report.galleries import best_worst_galleries, class_iou, image_scores, plot_gallery, select_best_worst
from seglab.report.html import write_report
from seglab.data.colors import to_display_rgb
from seglab.report.images import default_load_mask, resize_mask
from seglab.engine.loggers import CsvLogger, TensorBoardLogger, build_loggers
from seglab.report.plots import (
    class_pixel_counts,
    metric_families,
    normalize_confusion,
    plot_class_histogram,
    plot_confusion_matrix,
    plot_per_class_iou,
    plot_per_image_iou,
    plot_sample_grid,
    plot_training_curves,
)
from seglab.report.run_folder import load_eval, load_metrics
from seglab.report.samples import load_sample

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MEMBRANE = DATA / "membrane" / "train"
SVG_NS = "{http://www.w3.org/2000/svg}"
CROP = 128
BINARY_CLASSES = ["membrane", "cell"]
MULTI_CLASSES = ["background", "cell", "nucleus"]
MULTI_COLORS = [[0, 0, 0], [0, 200, 0], [220, 0, 0]]


# ----------------------------------------------------------------------------------------------
# Run-folder fixture (replace with a real `seglab train` + `seglab eval` run when available)
# ----------------------------------------------------------------------------------------------

def confusion_of(label: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Raw (C, C) counts, rows = true class; labels outside 0..C-1 are ignored."""
    valid = (label >= 0) & (label < num_classes)
    index = label[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def metrics_of(confusion: np.ndarray, names: list[str]) -> dict:
    """The metrics.json of the contract, computed from a confusion matrix."""
    tp = np.diag(confusion).astype(float)
    true, predicted = confusion.sum(1).astype(float), confusion.sum(0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (true + predicted - tp)
        recall = tp / true
        precision = tp / predicted
        f1 = 2 * precision * recall / (precision + recall)
    freq = true / true.sum()
    out = {
        "pixel_acc": float(tp.sum() / confusion.sum()),
        "miou": float(np.nanmean(iou)),
        "mpa": float(np.nanmean(recall)),
        "precision": float(np.nanmean(precision)),
        "recall": float(np.nanmean(recall)),
        "f1": float(np.nanmean(f1)),
        "fwiou": float(np.nansum(freq * iou)),
        "images_per_s": 123.4,
        "per_class": [
            {"class": n, "iou": float(iou[i]), "acc": float(recall[i]), "precision": float(precision[i]),
             "recall": float(recall[i]), "f1": float(f1[i]), "pixels": int(true[i])}
            for i, n in enumerate(names)
        ],
    }
    if len(names) == 2:
        out["fg_iou"] = float(iou[1])
    return out


def image_iou(label: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Per-image IoU of the contract: foreground IoU (binary) or mean over classes present (multi-class)."""
    classes = [1] if num_classes == 2 else range(num_classes)
    values = []
    for c in classes:
        union = np.count_nonzero((label == c) | (pred == c))
        if union:
            values.append(np.count_nonzero((label == c) & (pred == c)) / union)
    return float(np.mean(values)) if values else float("nan")


def _binary_pairs(data_dir: Path, count: int) -> list[tuple[Path, Path]]:
    """Membrane crops (real data) or synthetic blob images, as (image, 0/255 mask) files."""
    rng = np.random.default_rng(0)
    (data_dir / "image").mkdir(parents=True)
    (data_dir / "label").mkdir(parents=True)
    pairs = []
    for i in range(count):
        if MEMBRANE.is_dir():
            y, x = (i % 3) * 150, (i // 3) * 120
            image = np.array(Image.open(MEMBRANE / "image" / f"{i}.png"))[y:y + CROP, x:x + CROP]
            label = np.array(Image.open(MEMBRANE / "label" / f"{i}.png"))[y:y + CROP, x:x + CROP]
        else:
            yy, xx = np.mgrid[:CROP, :CROP]
            cells = np.sin(xx / (6 + i)) * np.cos(yy / (7 + i)) > -0.3
            label = np.where(cells, 255, 0).astype(np.uint8)
            image = np.clip(cells * 120 + 60 + rng.normal(0, 35 + 5 * i, cells.shape), 0, 255).astype(np.uint8)
        pairs.append((data_dir / "image" / f"{i}.png", data_dir / "label" / f"{i}.png"))
        Image.fromarray(image).save(pairs[-1][0])
        Image.fromarray(label).save(pairs[-1][1])
    return pairs


def _multiclass_pairs(data_dir: Path, count: int) -> list[tuple[Path, Path]]:
    """Synthetic RGB images with cell (1) and nucleus (2) disks; masks as RGB colour masks (needs a decoder)."""
    rng = np.random.default_rng(1)
    (data_dir / "image").mkdir(parents=True)
    (data_dir / "label").mkdir(parents=True)
    yy, xx = np.mgrid[:96, :96]
    pairs = []
    for i in range(count):
        cy, cx = rng.integers(30, 66, size=2)
        distance = np.hypot(yy - cy, xx - cx)
        label = np.where(distance < 24, 1, 0)
        if i != count - 1:  # the last image has no nucleus at all
            label[distance < 8 + i] = 2
        image = np.stack([label * 70 + 40, label * 50 + 60, 100 - label * 20], -1) + rng.normal(0, 18 + 4 * i, (96, 96, 3))
        pairs.append((data_dir / "image" / f"img{i}.png", data_dir / "label" / f"img{i}.png"))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(pairs[-1][0])
        Image.fromarray(np.array(MULTI_COLORS, dtype=np.uint8)[label]).save(pairs[-1][1])
    return pairs


def decode_multiclass(path: Path) -> np.ndarray:
    """The dataset's colour decoder for the multi-class fixture (what the lead's dataset code will pass)."""
    rgb = np.array(Image.open(path).convert("RGB"))
    out = np.zeros(rgb.shape[:2], dtype=np.int64)
    for index, color in enumerate(MULTI_COLORS):
        out[np.all(rgb == color, axis=-1)] = index
    return out


def _predict(image: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """Threshold "model": class = number of thresholds the (grey) intensity exceeds."""
    grey = image.mean(-1) if image.ndim == 3 else image.astype(float)
    return np.digitize(grey, thresholds).astype(np.uint8)


def build_run_folder(root: Path, kind: str = "binary", epochs: int = 5) -> Path:
    """A run folder following the train/eval contract, from a threshold model on real (or synthetic) images."""
    root.mkdir(parents=True, exist_ok=True)
    binary = kind == "binary"
    names = BINARY_CLASSES if binary else MULTI_CLASSES
    pairs = _binary_pairs(root / "data", 8) if binary else _multiclass_pairs(root / "data", 6)
    images = [np.array(Image.open(p)) for p, _ in pairs]
    labels = [default_load_mask(m) if binary else decode_multiclass(m) for _, m in pairs]
    grey = np.concatenate([(im.mean(-1) if im.ndim == 3 else im).ravel() for im in images])
    final = [float(np.median(grey))] if binary else [float(np.percentile(grey, 60)), float(np.percentile(grey, 88))]

    run = root / f"run_{kind}"
    run.mkdir()
    config = {"model": "unet" if binary else "deeplabv3plus", "encoder": "resnet18" if binary else "resnet34",
              "num_classes": 1 if binary else 3, "classes": names, "data": str(root / "data"),
              "epochs": epochs, "batch": 4, "lr": 0.01}
    if not binary:
        config["colors"] = MULTI_COLORS
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    # "Training": thresholds move towards the final ones, validation metrics are really computed.
    with (run / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "lr", "train_loss", "val_loss", "val_pixel_acc", "val_miou", "val_mpa", "val_fg_iou",
                         "epoch_time"])
        for epoch in range(epochs):
            shift = 40.0 * (epochs - 1 - epoch) / max(1, epochs - 1)
            thresholds = [t + shift for t in final]
            confusion = sum(confusion_of(lab, _predict(im, thresholds), len(names)) for im, lab in zip(images, labels))
            m = metrics_of(confusion, names)
            lr = 0.01 * 0.5 * (1 + np.cos(np.pi * epoch / epochs))
            writer.writerow([epoch + 1, lr, 1.2 - 0.15 * epoch, 1.0 - m["pixel_acc"] + 0.1, m["pixel_acc"], m["miou"], m["mpa"],
                             m.get("fg_iou", ""), 2.5 + 0.1 * epoch])
    (run / "summary.json").write_text(json.dumps({
        "model": config["model"], "encoder": config["encoder"], "params": 14_328_754 if binary else 22_437_266,
        "gflops": 21.3 if binary else 37.9, "train_time_s": 812.5 if binary else 3725.0,
        "train_images_per_s": 41.2 if binary else 18.7, "best_epoch": epochs, "best_metric": "val_miou",
        "best_value": m["miou"],
    }))

    eval_dir = run / "eval"
    (eval_dir / "pred").mkdir(parents=True)
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    per_image = []
    for (image_path, mask_path), image, label in zip(pairs, images, labels):
        pred = _predict(image, final)
        Image.fromarray(pred).save(eval_dir / "pred" / image_path.name)
        confusion += confusion_of(label, pred, len(names))
        per_image.append({"image": str(image_path), "mask": str(mask_path), "pred": f"pred/{image_path.name}",
                          "iou": image_iou(label, pred, len(names)), "pixel_acc": float((label == pred).mean())})
    metrics = metrics_of(confusion, names)
    (eval_dir / "metrics.json").write_text(json.dumps(metrics))
    np.save(eval_dir / "confusion.npy", confusion)
    with (eval_dir / "per_class.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["class", "iou", "acc", "precision", "recall", "f1", "pixels"])
        writer.writeheader()
        writer.writerows(metrics["per_class"])
    with (eval_dir / "per_image.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "mask", "pred", "iou", "pixel_acc"])
        writer.writeheader()
        writer.writerows(per_image)
    return run


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run_folder(tmp_path_factory.mktemp("binary"), "binary")


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run_folder(tmp_path_factory.mktemp("multi"), "multiclass", epochs=4)


@pytest.fixture(scope="module")
def binary_report(binary_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Full report of the binary run with default settings (6 best / 6 worst)."""
    return write_report(binary_run, tmp_path_factory.mktemp("binary_report") / "report.html")


@pytest.fixture(scope="module")
def nucleus_report(multi_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Report of the multi-class run with the dataset's colour decoder, galleries ranked by nucleus IoU."""
    out = tmp_path_factory.mktemp("nucleus_report") / "report.html"
    return write_report(multi_run, out, gallery_class="nucleus", load_mask=decode_multiclass)


# ----------------------------------------------------------------------------------------------
# Helpers that check written files
# ----------------------------------------------------------------------------------------------

def check_png(path: Path, min_side: int = 200, max_side: int = 6000) -> tuple[int, int]:
    """A real, non-trivial PNG of sane size; returns (width, height)."""
    assert path.suffix == ".png" and path.stat().st_size > 2000
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        width, height = img.size
        pixels = np.array(img.convert("L"))
    assert min_side <= width <= max_side and min_side <= height <= max_side
    assert pixels.std() > 5, "figure is blank"
    return width, height


def svg_root(path: Path) -> ET.Element:
    """Parsed SVG (raises on malformed XML)."""
    assert path.suffix == ".svg" and path.stat().st_size > 1000
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG_NS}svg"
    return root


def svg_texts(path: Path) -> str:
    """All text of an SVG, joined (text is kept as text, not paths)."""
    return " ".join("".join(t.itertext()) for t in svg_root(path).iter(f"{SVG_NS}text"))


def svg_image_count(path: Path) -> int:
    """Number of raster images embedded in an SVG."""
    return sum(1 for _ in svg_root(path).iter(f"{SVG_NS}image"))


def check_figure(paths: list[Path]) -> tuple[int, int]:
    """PNG + SVG pair written side by side."""
    assert [p.suffix for p in paths] == [".png", ".svg"] and paths[0].stem == paths[1].stem
    svg_root(paths[1])
    return check_png(paths[0])


# ----------------------------------------------------------------------------------------------
# Colours, images, masks
# ----------------------------------------------------------------------------------------------

def test_palette_binary_voc_and_config_colours() -> None:
    assert palette(2).tolist() == [[0, 0, 0], [240, 240, 240]]
    voc = palette(21)
    # Reference values of the PASCAL VOC colour map: aeroplane, bicycle, bird, person.
    assert voc[0].tolist() == [0, 0, 0] and voc[1].tolist() == [128, 0, 0]
    assert voc[2].tolist() == [0, 128, 0] and voc[3].tolist() == [128, 128, 0] and voc[15].tolist() == [192, 128, 128]
    assert len({tuple(c) for c in voc}) == 21
    assert palette(3, ["#ff0000", [0, 10, 20], "white"]).tolist() == [[255, 0, 0], [0, 10, 20], [255, 255, 255]]
    with pytest.raises(ValueError, match="2 colors for 3 classes"):
        palette(3, ["red", "blue"])
    with pytest.raises(ValueError, match=r"colors\[0\]"):
        palette(1, ["not-a-colour"])


def test_colorize_and_overlay_values() -> None:
    colors = np.array([[0, 0, 0], [200, 100, 50]], dtype=np.uint8)
    mask = np.array([[0, 1], [1, 255]])
    rgb = colorize(mask, colors)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 1].tolist() == [200, 100, 50]
    assert rgb[1, 1].tolist() == colors_module.IGNORED_COLOR.tolist()
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    blended = overlay(image, rgb, 0.5)
    assert blended[0, 0].tolist() == [50, 50, 50] and blended[0, 1].tolist() == [150, 100, 75]
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, rgb[:1])


def test_default_mask_reader_and_display(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).save(tmp_path / "m.png")
    assert default_load_mask(tmp_path / "m.png").tolist() == [[0, 1], [1, 0]]
    Image.fromarray(np.array([[0, 2], [1, 0]], dtype=np.uint8)).save(tmp_path / "idx.png")
    assert default_load_mask(tmp_path / "idx.png").tolist() == [[0, 2], [1, 0]]
    Image.fromarray(np.array([[[255, 0, 0], [0, 255, 0]]], dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="load_mask"):
        default_load_mask(tmp_path / "rgb.png")
    sixteen = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000
    shown = to_display_rgb(sixteen)
    assert shown.shape == (4, 4, 3) and shown.dtype == np.uint8 and shown[0, 0, 0] == 0 and shown[-1, -1, 0] == 255
    assert resize_mask(np.array([[0, 1], [2, 3]]), (4, 4)).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


def test_class_iou_and_best_worst_selection() -> None:
    label = np.array([[1, 1, 0], [0, 2, 2], [9, 9, 9]])
    pred = np.array([[1, 0, 0], [1, 2, 2], [1, 1, 1]])
    # class 1: intersection 1, union {(0,0),(0,1),(1,0)} = 3 (row 2 is ignore label 9)
    assert class_iou(label, pred, 1, num_classes=3) == pytest.approx(1 / 3)
    assert class_iou(label, pred, 2, num_classes=3) == 1.0
    assert np.isnan(class_iou(label, pred, 5, num_classes=3))
    best, worst = select_best_worst([0.5, float("nan"), 0.9, 0.1, 0.9], k=2)
    assert best == [2, 4] and worst == [3, 0]
    with pytest.raises(ValueError, match="k must be"):
        select_best_worst([0.5], k=0)


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------

def test_metric_families_groups_splits() -> None:
    columns = ["epoch", "lr", "train_loss", "val_loss", "val_dice", "val_pixel_acc", "val_miou", "epoch_time"]
    assert metric_families(columns) == {
        "loss": ["train_loss", "val_loss"], "pixel_acc": ["val_pixel_acc"], "miou": ["val_miou"],
        "dice": ["val_dice"], "lr": ["lr"], "epoch_time": ["epoch_time"],
    }


def test_training_curves(tmp_path: Path) -> None:
    rows = [{"epoch": e + 1, "lr": 0.1 * 0.5**e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1),
             "val_miou": 0.1 * e} for e in range(6)]
    rows[2]["val_miou"] = None  # an epoch without validation leaves an empty cell
    paths = plot_training_curves(rows, tmp_path / "curves", best_epoch=6, best_metric="miou")
    width, height = check_figure(paths)
    assert width > 2 * height  # 3 families side by side
    texts = svg_texts(paths[1])
    assert all(t in texts for t in ("Loss", "mIoU", "Learning rate", "train", "val", "best (epoch 6)"))
    with pytest.raises(ValueError, match="no rows"):
        plot_training_curves([], tmp_path / "empty")


def test_report_curves_show_every_logged_metric(binary_report: Path) -> None:
    paths = [binary_report.parent / "report_files" / f"curves.{ext}" for ext in ("png", "svg")]
    width, height = check_figure(paths)
    assert width > height  # 3 columns x 3 rows for 7 families
    texts = svg_texts(paths[1])
    for title in ("Loss", "Pixel accuracy", "mIoU", "mPA", "Foreground IoU", "Learning rate", "Epoch time (s)"):
        assert title in texts


def test_per_image_iou_curve_shows_mean(binary_run: Path, tmp_path: Path) -> None:
    rows = load_eval(binary_run / "eval").per_image
    ious = [r["iou"] for r in rows]
    paths = plot_per_image_iou([Path(r["image"]).name for r in rows], ious, tmp_path / "per_image")
    check_figure(paths)
    assert f"mean = {np.mean(ious):.4f}" in svg_texts(paths[1])


def test_confusion_matrices_name_classes(multi_run: Path, tmp_path: Path) -> None:
    confusion = load_eval(multi_run / "eval").confusion
    assert confusion.shape == (3, 3) and confusion.dtype == np.int64
    raw = plot_confusion_matrix(confusion, MULTI_CLASSES, tmp_path / "raw")
    normalized = plot_confusion_matrix(confusion, MULTI_CLASSES, tmp_path / "norm", normalize=True)
    for paths in (raw, normalized):
        check_figure(paths)
        texts = svg_texts(paths[1])
        assert all(name in texts for name in MULTI_CLASSES)
    rows = normalize_confusion(confusion)
    assert np.allclose(rows.sum(1), 1.0)
    assert f"{rows[1, 1]:.2f}" in svg_texts(normalized[1])
    assert normalize_confusion(np.array([[2, 2], [0, 0]])).tolist() == [[0.5, 0.5], [0.0, 0.0]]
    with pytest.raises(ValueError, match="2 class names"):
        plot_confusion_matrix(confusion, ["a", "b"], tmp_path / "bad")


def test_per_class_iou_and_class_histogram(multi_run: Path, tmp_path: Path) -> None:
    per_class = load_eval(multi_run / "eval").per_class
    paths = plot_per_class_iou([r["class"] for r in per_class], [r["iou"] for r in per_class], tmp_path / "bars")
    check_figure(paths)
    texts = svg_texts(paths[1])
    assert all(f"{r['iou']:.3f}" in texts and r["class"] in texts for r in per_class)

    masks = [np.array([[0, 1, 2], [2, 2, 255]]), np.array([[1, 1], [0, 11]])]
    counts = class_pixel_counts(masks, 3)
    assert counts.tolist() == [2, 3, 3]  # 255 and 11 are ignore labels
    paths = plot_class_histogram(counts, MULTI_CLASSES, tmp_path / "hist")
    check_figure(paths)
    assert "37.5%" in svg_texts(paths[1]) and "25.0%" in svg_texts(paths[1])


def test_sample_grid_has_one_tile_per_sample(binary_run: Path, binary_report: Path, tmp_path: Path) -> None:
    result = load_eval(binary_run / "eval")
    sample = load_sample(result.per_image[0], [result.directory])
    assert sample.image.shape == (CROP, CROP, 3) and sample.label.shape == (CROP, CROP) and sample.pred.shape == (CROP, CROP)
    assert set(np.unique(sample.label)) <= {0, 1} and sample.score == result.per_image[0]["iou"]
    small = load_sample(result.per_image[0], [result.directory], max_side=64)  # label and prediction follow the image
    assert small.image.shape == (64, 64, 3) and small.label.shape == small.pred.shape == (64, 64)
    stem = binary_report.parent / "report_files" / "eval_samples"
    check_figure([stem.with_suffix(".png"), stem.with_suffix(".svg")])
    assert svg_image_count(stem.with_suffix(".svg")) == len(result.per_image)  # 8 images, max_samples=8
    with pytest.raises(ValueError, match="no samples"):
        plot_sample_grid([], palette(2), tmp_path / "none")


# ----------------------------------------------------------------------------------------------
# Galleries
# ----------------------------------------------------------------------------------------------

def test_best_worst_gallery_rows_follow_per_image_iou(binary_run: Path, binary_report: Path) -> None:
    by_iou = sorted(load_eval(binary_run / "eval").per_image, key=lambda r: r["iou"])
    files = binary_report.parent / "report_files"
    best, worst = files / "eval_gallery_best.svg", files / "eval_gallery_worst.svg"
    for svg in (best, worst):  # the report's galleries use the default k=6: 6 rows of 5 tiles
        assert svg_image_count(svg) == 6 * 5
        check_png(svg.with_suffix(".png"))
        assert all(column in svg_texts(svg) for column in ("image", "label", "prediction", "overlay", "errors"))
        assert "6 of 8 images" in svg_texts(svg)
    best_texts, worst_texts = svg_texts(best), svg_texts(worst)
    for row in by_iou[-6:]:
        assert f"IoU {row['iou']:.3f}" in best_texts
    for row in by_iou[:6]:
        assert f"IoU {row['iou']:.3f}" in worst_texts
    assert f"IoU {by_iou[0]['iou']:.3f}" not in best_texts and f"IoU {by_iou[-1]['iou']:.3f}" not in worst_texts
    # Rows are ordered: best first in one, worst first in the other.
    assert best_texts.index(f"IoU {by_iou[-1]['iou']:.3f}") < best_texts.index(f"IoU {by_iou[-6]['iou']:.3f}")
    assert worst_texts.index(f"IoU {by_iou[0]['iou']:.3f}") < worst_texts.index(f"IoU {by_iou[5]['iou']:.3f}")


def test_gallery_height_grows_with_rows(binary_run: Path, tmp_path: Path) -> None:
    result = load_eval(binary_run / "eval")
    samples = [load_sample(r, [result.directory], max_side=32) for r in result.per_image[:2]]
    one = plot_gallery(samples[:1], palette(2), tmp_path / "one")
    two = plot_gallery(samples, palette(2), tmp_path / "two", title="two rows")
    assert svg_image_count(one[1]) == 5 and svg_image_count(two[1]) == 10
    assert check_png(two[0])[1] > 1.6 * check_png(one[0], min_side=100)[1]


def test_gallery_for_a_chosen_class_recomputes_its_iou(multi_run: Path, nucleus_report: Path, tmp_path: Path) -> None:
    result = load_eval(multi_run / "eval")
    bases = [result.directory]
    scores = image_scores(result.per_image, bases, class_index=2, num_classes=3, load_mask=decode_multiclass)
    for row, score in zip(result.per_image, scores):
        label = decode_multiclass(Path(row["mask"]))
        pred = np.array(Image.open(result.directory / row["pred"]))
        truth, guess = label == 2, pred == 2
        union = np.count_nonzero(truth | guess)
        expected = np.count_nonzero(truth & guess) / union if union else np.nan
        assert score == pytest.approx(expected, nan_ok=True)
    best_svg = nucleus_report.parent / "report_files" / "eval_gallery_best.svg"
    ranked = sorted((s, Path(r["image"]).name) for s, r in zip(scores, result.per_image) if not np.isnan(s))
    assert svg_image_count(best_svg) == min(6, len(ranked)) * 5
    texts = svg_texts(best_svg)
    assert "nucleus IoU" in texts and f"IoU {ranked[-1][0]:.3f}" in texts

    # An image with the class in neither label nor prediction is not ranked at all.
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "empty.png")
    empty_png = str(tmp_path / "empty.png")
    empty = [{"image": result.per_image[0]["image"], "mask": empty_png, "pred": empty_png, "iou": 1.0}]
    assert np.isnan(image_scores(empty, bases, class_index=2, num_classes=3)[0])
    with pytest.raises(ValueError, match="no image contains class 'nucleus'"):
        best_worst_galleries(empty, bases, palette(3), tmp_path / "none", class_index=2, class_name="nucleus")


def test_plot_gallery_rejects_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        plot_gallery([], palette(2), tmp_path / "empty")


# ----------------------------------------------------------------------------------------------
# HTML report
# ----------------------------------------------------------------------------------------------

class _PageParser(HTMLParser):
    """Collects img sources, per-class table rows and every URL-bearing attribute."""

    def __init__(self, table_id: str = "per-class") -> None:
        super().__init__()
        self.table_id, self.images, self.urls, self.rows = table_id, [], [], []
        self._in_table = self._in_body = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        self.urls += [v for k, v in attrs.items() if k in ("src", "href", "action", "poster") and v]
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "table" and attrs.get("id") == self.table_id:
            self._in_table = True
        if self._in_table and tag == "tbody":
            self._in_body = True
        if self._in_body and tag == "tr":
            self.rows.append([])
        if self._in_body and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        if tag == "table":
            self._in_table = self._in_body = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse_report(path: Path, table_id: str = "per-class") -> tuple[str, _PageParser]:
    text = path.read_text(encoding="utf-8")
    parser = _PageParser(table_id)
    parser.feed(text)
    return text, parser


def test_report_is_self_contained_and_complete(binary_run: Path, binary_report: Path) -> None:
    text, page = parse_report(binary_report)
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text.replace("http://www.w3.org", "")), "external URL"
    assert "<link" not in text and "<script" not in text
    assert all(u.startswith("data:image/png;base64,") for u in page.urls)
    # curves, per-class IoU, 2 confusion matrices, class pixels, per-image IoU, samples, best, worst
    assert len(page.images) == 9
    for src in page.images:
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as img:
            assert img.format == "PNG" and min(img.size) > 100
    assert [r[0] for r in page.rows] == BINARY_CLASSES
    per_class = load_eval(binary_run / "eval").per_class
    assert page.rows[1][1] == f"{per_class[1]['iou']:.4f}"
    assert "resnet18" in text and "epochs: 5" in text and "Best and worst 6" in text
    assert (binary_report.parent / "report_files" / "eval_confusion_normalized.svg").is_file()


def test_report_with_the_dataset_decoder_and_a_chosen_class(nucleus_report: Path, multi_run: Path) -> None:
    text, page = parse_report(nucleus_report)
    assert "Could not draw" not in text and "for class &#x27;nucleus&#x27;" in text and len(page.images) == 9
    assert [r[0] for r in page.rows] == MULTI_CLASSES
    with pytest.raises(ValueError, match="not one of the run's classes"):
        write_report(multi_run, gallery_class="mitochondria")


def test_report_explains_missing_parts(multi_run: Path, tmp_path: Path) -> None:
    # An eval folder alone (no metrics.csv, no confusion) with RGB colour masks and no decoder.
    run = tmp_path / "partial"
    shutil.copytree(multi_run / "eval", run / "eval", ignore=shutil.ignore_patterns("confusion.npy", "per_class.csv"))
    text, page = parse_report(write_report(run))
    assert "No metrics.csv" in text and "confusion.npy is missing" in text and "No summary.json" in text
    assert "RGB colour mask" in text and "Could not draw predictions" in text
    assert len(page.images) == 2  # per-class IoU (from metrics.json's per_class) and per-image IoU
    assert [r[0] for r in page.rows] == MULTI_CLASSES


def test_report_rejects_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        write_report(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a run folder"):
        write_report(tmp_path)


# ----------------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------------

def test_compare_rows_tables_and_curves(binary_run: Path, multi_run: Path, tmp_path: Path) -> None:
    rows = compare_runs([binary_run, multi_run])
    binary_metrics = json.loads((binary_run / "eval" / "metrics.json").read_text())
    first, second = rows
    assert first["run"] == "run_binary" and first["model"] == "unet" and first["encoder"] == "resnet18"
    assert first["params"] == 14_328_754 and first["gflops"] == 21.3 and first["images_per_s"] == 123.4
    assert first["miou"] == binary_metrics["miou"] and first["fg_iou"] == binary_metrics["fg_iou"]
    assert second["fg_iou"] is None  # multi-class run has no foreground IoU
    assert list(first)[:9] == ["run", "model", "encoder", "params", "gflops", "train_time_s",
                               "train_images_per_s", "images_per_s", "miou"]

    markdown = to_markdown(rows).splitlines()
    assert len(markdown) == 4 and markdown[0].startswith("| Run | Model")
    assert "mIoU (%)" in markdown[0] and "14.33M" in markdown[2] and "1h 02m 05s" in markdown[3]
    best_row = 2 if first["miou"] >= second["miou"] else 3
    assert f"**{100 * max(first['miou'], second['miou']):.2f}**" in markdown[best_row]

    with write_csv(rows, tmp_path / "c.csv").open(newline="") as f:
        back = list(csv.DictReader(f))
    assert float(back[0]["miou"]) == pytest.approx(first["miou"]) and back[1]["fg_iou"] == ""

    console = Console(record=True, width=250)
    console.print(rich_table(rows))
    terminal = console.export_text()
    assert "run_binary" in terminal and "deeplabv3plus" in terminal and "GFLOPs" in terminal


def test_compare_picks_the_requested_split(binary_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run_splits"
    shutil.copytree(binary_run, run, ignore=shutil.ignore_patterns("pred"))
    test_dir = run / "eval_test"
    shutil.copytree(run / "eval", test_dir)
    metrics = json.loads((test_dir / "metrics.json").read_text())
    (test_dir / "metrics.json").write_text(json.dumps(metrics | {"miou": 0.99}))
    assert compare_runs([run])[0]["miou"] == metrics["miou"]  # eval/ first
    assert compare_runs([run], split="test")[0]["miou"] == 0.99
    assert "miou" not in compare_runs([run], split="val")[0]  # no eval_val/: only the run's own columns


def test_compare_titles_metrics_scored_another_way() -> None:
    from seglab.report.compare import column_label

    assert column_label("miou_hflip_tta") == "mIoU hflip TTA"
    assert column_label("pixel_acc_hflip_tta") == "PA hflip TTA"  # the longest known key, not a shorter prefix
    assert (column_label("miou"), column_label("something_else")) == ("mIoU", "something_else")


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def test_cli_report_of_a_run_not_evaluated_yet(binary_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(binary_run / "config.yaml", run)
    with (binary_run / "metrics.csv").open(newline="") as src, (run / "metrics.csv").open("w", newline="") as dst:
        writer = csv.writer(dst)
        for row in csv.reader(src):
            writer.writerow(row[:3])  # epoch, lr, train_loss: two panels keep the test fast
    assert report_main([str(run), f"out={tmp_path / 'r.html'}", "k=2"]) == 0
    assert "report written" in capsys.readouterr().out
    text, page = parse_report(tmp_path / "r.html")
    assert len(page.images) == 1 and page.rows == [] and "No evaluation yet" in text
    assert report_main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert report_main([str(run), "k=zero"]) == 2
    assert report_main(["--help"]) == 0


def test_cli_compare(binary_run: Path, multi_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cmp"
    assert compare_main([str(binary_run), str(multi_run), f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "run_binary" in printed and "run_multiclass" in printed
    expected = {"comparison.md", "comparison.csv", "comparison_curves.png", "comparison_curves.svg"}
    assert {p.name for p in out.iterdir()} == expected
    check_figure([out / "comparison_curves.png", out / "comparison_curves.svg"])
    texts = svg_texts(out / "comparison_curves.svg")
    assert "run_binary" in texts and "run_multiclass" in texts and "mIoU (validation)" in texts
    assert (out / "comparison.md").read_text() == to_markdown(compare_runs([binary_run, multi_run]))
    assert compare_main([]) == 2
    assert compare_main([str(binary_run), "split=test"]) == 0  # no eval_test/: metrics columns simply empty
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("compared 1 runs")  # the closing line


def test_compare_keeps_counts_as_counts_and_run_names_whole(tmp_path: Path) -> None:
    from rich.console import Console

    from seglab.report.compare import _cell, _header, rich_table

    rows = [{"run": "unet_small-tiles-20261206-061944", "model": "unet_small", "encoder": None, "params": 1,
             "gflops": 1.0, "train_time_s": 1.0, "train_images_per_s": 1.0, "images_per_s": 1.0, "miou": 0.5,
             "images_with_object": 1, "empty_images": 0},
            {"run": "unet-tiles-20261206-063157", "model": "unet", "encoder": None, "params": 2, "gflops": 2.0,
             "train_time_s": 2.0, "train_images_per_s": 2.0, "images_per_s": 2.0, "miou": 0.25,
             "images_with_object": 1, "empty_images": 0}]
    assert _header(rows, "miou").endswith("(%)") and _cell(rows, rows[0], "miou") == "50.00"
    assert not _header(rows, "images_with_object").endswith("(%)") and _cell(rows, rows[0], "empty_images") == "0"
    console = Console(width=100, record=True)
    console.print(rich_table(rows))
    assert "unet_small-tiles-20261206-061944" in console.export_text()  # whole, in a narrow window


# ----------------------------------------------------------------------------------------------
# Loggers
# ----------------------------------------------------------------------------------------------

def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_csv_logger_appends_flushes_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    logger = CsvLogger(path)
    for epoch in range(4):
        logger.log(epoch, {"lr": 0.1 / (epoch + 1), "train_loss": 1.0 - 0.1 * epoch})
        assert len(read_csv(path)) == epoch + 1  # visible on disk before close
    logger.log(4, {"lr": 0.02, "train_loss": 0.6, "val_miou": np.float32(0.5)})  # new column widens the header
    rows = read_csv(path)
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "val_miou"]
    assert rows[0]["val_miou"] == "" and float(rows[4]["val_miou"]) == 0.5
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]  # numbered from 1, as the log lines

    resumed = CsvLogger(path, start_epoch=2)  # crashed after epoch index 4, resuming from the checkpoint of index 1
    assert [r["epoch"] for r in read_csv(path)] == ["1", "2"]
    resumed.log(2, {"lr": 0.05, "train_loss": 0.7})
    assert [r["epoch"] for r in read_csv(path)] == ["1", "2", "3"]
    assert load_metrics(tmp_path)[2] == {"epoch": 3, "lr": 0.05, "train_loss": 0.7, "val_miou": None}

    CsvLogger(path, start_epoch=0)
    assert path.read_text() == "epoch,lr,train_loss,val_miou\n"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="'epoch' column"):
        CsvLogger(path, start_epoch=1)

    path.write_text("epoch,lr\n0,0.1\n1,0.05\n2,0.02\n")  # a run from before the 1-based numbering
    assert [r["epoch"] for r in load_metrics(tmp_path)] == [1, 2, 3]
    CsvLogger(path, start_epoch=2).log(2, {"lr": 0.01})
    assert [r["epoch"] for r in read_csv(path)] == ["1", "2", "3"] and read_csv(path)[-1]["lr"] == "0.01"


def test_build_loggers_names(tmp_path: Path) -> None:
    assert len(build_loggers(tmp_path, [])) == 1 and (tmp_path / "metrics.csv").exists()
    assert len(build_loggers(tmp_path, "csv")) == 1
    with pytest.raises(ValueError, match="unknown logger wandb"):
        build_loggers(tmp_path, ["wandb"])


def test_tensorboard_logger_writes_scalars_and_purges_on_resume(tmp_path: Path) -> None:
    pytest.importorskip("torch.utils.tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    loggers = build_loggers(tmp_path, ["csv", "tensorboard"])
    assert isinstance(loggers.loggers[1], TensorBoardLogger)
    with loggers:
        for epoch in range(3):
            loggers.log(epoch, {"train_loss": 1.0 / (epoch + 1), "val_miou": 0.2 * epoch, "note": "text is skipped"})
    with TensorBoardLogger(tmp_path / "tensorboard", start_epoch=1) as resumed:
        resumed.log(1, {"train_loss": 0.25})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["loss/train_loss", "miou/val_miou"]
    losses = {e.step: e.value for e in events.Scalars("loss/train_loss")}  # steps are epochs numbered from 1
    assert losses[1] == pytest.approx(1.0) and losses[2] == pytest.approx(0.25) and 3 not in losses
    assert len(read_csv(tmp_path / "metrics.csv")) == 3
