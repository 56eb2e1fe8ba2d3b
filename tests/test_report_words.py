"""The report says the truth about the data and draws it so people read it right (issue 29).

TGS words only on TGS runs, plain words on other binary tasks; one epoch numbering (from 1) in metrics.csv, the
plots and summary.json; y-axes from a sensible floor; per-image IoU sorted; galleries with error maps, the promised
number of rows and legends; binary overlays that show on grey images. Built on ``test_report``'s small run folders.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.figure import Figure

from seglab.engine.loggers import CsvLogger
from seglab.evaluation.evaluator import emptiness_line, print_coverage_table
from seglab.metrics.tgs import BY_COVERAGE_NOTE, emptiness_counts, tgs_by_coverage
from seglab.report.galleries import best_worst_galleries, gallery_title
from seglab.report.html import write_report
from seglab.report.overlays import distance_from_grey, error_map, overlay_classes, report_colors
from seglab.report.plots import per_image_order, plot_per_image_iou, plot_sample_grid, set_y_floor
from seglab.report.run_folder import is_tgs_run, load_eval, load_metrics, metric_series
from seglab.report.samples import load_sample
from test_report import BINARY_CLASSES, build_run_folder, svg_image_count, svg_texts

TGS_WORDS = ("salt", "TGS", "tgs-by-coverage", "Emptiness wrong")


def page_text(report: Path) -> str:
    """The report's HTML without its embedded images (base64 holds any word by chance)."""
    return re.sub(r"data:image/png;base64,[^\"]+", "", report.read_text())


def _with_tgs_results(run: Path) -> None:
    """What an eval of a binary task wrote before issue 29: a tgs score, its coverage table, a val_tgs column."""
    metrics_path = run / "eval" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    rows = load_eval(run / "eval").per_image
    coverage = [0.0, 0.0] + [0.3] * (len(rows) - 2)
    predicted = [0.1, 0.0, 0.0] + [0.3] * (len(rows) - 3)
    scores = [0.0, 1.0, 0.0] + [0.8] * (len(rows) - 3)
    metrics.update(tgs=float(np.mean(scores)), tgs_by_coverage=tgs_by_coverage(scores, coverage, predicted))
    metrics_path.write_text(json.dumps(metrics))
    lines = (run / "metrics.csv").read_text().splitlines()
    lines = [lines[0] + ",val_tgs"] + [f"{line},{0.5 + 0.05 * i:.3f}" for i, line in enumerate(lines[1:])]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A membrane-like binary run and the same run marked as TGS (metric=tgs), both with old-style TGS results."""
    root = tmp_path_factory.mktemp("words")
    membrane = build_run_folder(root / "membrane", "binary", epochs=4)
    _with_tgs_results(membrane)
    tgs = root / "tgs_run"
    shutil.copytree(membrane, tgs)
    config = yaml.safe_load((tgs / "config.yaml").read_text())
    (tgs / "config.yaml").write_text(yaml.safe_dump({**config, "metric": "tgs"}))
    return {"membrane": membrane, "tgs": tgs}


@pytest.fixture(scope="module")
def reports(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("words_reports")
    return {name: write_report(run, out / name / "report.html") for name, run in runs.items()}


def test_tgs_words_and_panel_only_on_a_tgs_run(runs: dict[str, Path], reports: dict[str, Path]) -> None:
    membrane = page_text(reports["membrane"])
    for word in TGS_WORDS:
        assert word not in membrane, word
    assert "empty image predicted with an object" in membrane and "object missed" in membrane
    assert "<td>tgs</td>" not in membrane and "<td>tgs</td>" in page_text(reports["tgs"])  # the metrics table
    assert 'id="emptiness-eval"' in membrane and "1 of 2" in membrane  # one of the two empty images got an object
    curves = svg_texts(reports["membrane"].parent / "report_files" / "curves.svg")
    assert "TGS" not in curves and "tgs" not in curves

    tgs = page_text(reports["tgs"])
    assert 'id="tgs-by-coverage-eval"' in tgs and "Emptiness wrong" in tgs and "salt" not in tgs
    assert "TGS metric" in svg_texts(reports["tgs"].parent / "report_files" / "curves.svg")
    assert is_tgs_run({"metric": "tgs"}) and is_tgs_run({}, {"format": "tgs"}) and not is_tgs_run({"metric": "auto"})


def test_no_report_line_is_logged_twice(runs: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        write_report(runs["tgs"], tmp_path / "r.html")
    assert not [r for r in caplog.records if "Emptiness" in r.getMessage()]  # the coverage note is text, not a warning


def test_eval_words_say_what_happened_once(capsys: pytest.CaptureFixture) -> None:
    counts = emptiness_counts([0.0, 0.0, 0.2, 0.4], [0.1, 0.0, 0.0, 0.3])
    assert counts == {"empty_images": 2, "empty_predicted_with_object": 1, "images_with_object": 2, "object_missed": 1}
    line = emptiness_line(counts)
    assert "empty images predicted with an object: 1 of 2" in line and "object missed" in line and "salt" not in line
    print_coverage_table(tgs_by_coverage([0.0, 1.0, 0.0, 0.9], [0.0, 0.0, 0.2, 0.4], [0.1, 0.0, 0.0, 0.3]))
    out = capsys.readouterr().out
    assert "salt" not in BY_COVERAGE_NOTE and out.count("Emptiness wrong") == 1
    lines = [line.strip() for line in out.splitlines() if line.strip() and set(line.strip()) - set("─━┃│┏┓┗┛┡┩└┘╇")]
    assert not [line for line, n in Counter(lines).items() if n > 1]


def test_epochs_numbered_from_one_everywhere(runs: dict[str, Path], tmp_path: Path) -> None:
    logger = CsvLogger(tmp_path / "metrics.csv")
    for index in range(3):  # the trainer's 0-based epoch index; its log line says "epoch {index + 1}/3"
        logger.log(index, {"train_loss": 1.0 - 0.1 * index, "val_miou": 0.5 + 0.1 * index})
    rows = load_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert metric_series(rows, "val_miou")[0].tolist() == [1.0, 2.0, 3.0]
    # summary.json's best_epoch (from 1) lands on the best point: the star sits on the run's best val_miou
    summary = json.loads((runs["membrane"] / "summary.json").read_text())
    epochs, values = metric_series(load_metrics(runs["membrane"]), "val_miou")
    assert epochs[0] == 1 and epochs[int(np.argmax(values))] == summary["best_epoch"]


def test_report_curves_mark_the_best_epoch_where_it_is(reports: dict[str, Path], runs: dict[str, Path]) -> None:
    summary = json.loads((runs["membrane"] / "summary.json").read_text())
    texts = svg_texts(reports["membrane"].parent / "report_files" / "curves.svg")
    assert f"best (epoch {summary['best_epoch']})" in texts
    assert "numbered from 1" in reports["membrane"].read_text()


def test_score_axes_start_at_zero_and_never_zoom_into_noise() -> None:
    fig = Figure()
    ax = fig.subplots()
    set_y_floor(ax, "miou", np.array([0.7674, 0.7686]))
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 0.8
    set_y_floor(ax, "loss", np.array([0.31, 0.30]))
    assert ax.get_ylim()[0] == 0
    set_y_floor(ax, "score", np.array([-1.0001, -1.0]))
    low, high = ax.get_ylim()
    assert high - low >= 0.1  # a 0.0001 change is not blown up to the full height


def test_per_image_iou_is_drawn_sorted(tmp_path: Path) -> None:
    names, values = per_image_order(["a", "b", "c", "d"], [0.9, 0.2, float("nan"), 0.5])
    assert names == ["b", "d", "a"] and values.tolist() == [0.2, 0.5, 0.9]
    paths = plot_per_image_iou(["img_a", "img_b", "img_c", "img_d"], [0.9, 0.2, float("nan"), 0.5], tmp_path / "iou")
    texts = svg_texts(paths[1])
    assert texts.index("img_b") < texts.index("img_d") < texts.index("img_a") and "img_c" not in texts
    assert "sorted" in texts and "mean = 0.5333" in texts


def test_galleries_hold_error_maps_the_promised_rows_and_legends(runs: dict[str, Path], reports: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    files = reports["membrane"].parent / "report_files"
    for kind in ("best", "worst"):
        texts = svg_texts(files / f"eval_gallery_{kind}.svg")
        assert "errors" in texts and "false positive" in texts and "false negative" in texts
        assert all(name in texts for name in BINARY_CLASSES)  # the class colour legend
        assert f"{kind.capitalize()} 6 of 8 images" in texts and svg_image_count(files / f"eval_gallery_{kind}.svg") == 30
    assert "cell" in svg_texts(files / "eval_samples.svg")  # the sample grid's legend
    page = page_text(reports["membrane"])
    assert 'id="class-colors-eval"' in page and 'id="error-colors-eval"' in page
    # more rows asked for than images exist: all are shown and the title says so
    result = load_eval(runs["membrane"] / "eval")
    colors = report_colors(2)
    paths = best_worst_galleries(result.per_image, [result.directory], colors, tmp_path / "g", k=10,
                                 class_names=BINARY_CLASSES)
    assert svg_image_count(paths["best"][1]) == 8 * 5 and "only 8 images scored" in svg_texts(paths["best"][1])
    assert gallery_title("worst", 6, 6, 40) == "Worst 6 of 40 images"


def test_error_map_paints_false_positives_and_negatives_apart() -> None:
    image = np.full((2, 3, 3), 128, dtype=np.uint8)
    label = np.array([[0, 1, 1], [0, 0, 255]])
    pred = np.array([[1, 0, 1], [0, 0, 1]])
    painted, counts = error_map(image, label, pred, 2)
    assert counts == {"false positive": 1, "false negative": 1, "wrong class": 0}
    fp, fn, right = painted[0, 0], painted[0, 1], painted[0, 2]
    assert fp.tolist() != fn.tolist() and fp[0] > fp[2] and fn[2] > fn[0]  # red, blue
    assert right[0] == right[1] == right[2]  # correct pixels stay grey


def test_binary_overlay_contrasts_with_a_grey_image(runs: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(60, 200, (32, 32, 1), dtype=np.uint8), 3, axis=-1)  # an electron micrograph
    mask = np.zeros((32, 32), dtype=np.int64)
    mask[8:24, 8:24] = 1
    old = overlay_classes(grey, mask, np.array([[0, 0, 0], [240, 240, 240]], dtype=np.uint8), {0})
    assert distance_from_grey(old, mask == 1) < 1  # white on grey: indistinguishable from the image's own pixels
    for colors in (None, [[0, 0, 0], [240, 240, 240]], [[0, 0, 0], [255, 255, 255]]):
        painted = overlay_classes(grey, mask, report_colors(2, colors), {0})
        assert distance_from_grey(painted, mask == 1) > 60
        assert np.array_equal(painted[mask == 0], grey[mask == 0])  # the background is left as the image is
    assert report_colors(2, [[0, 0, 0], [0, 200, 0]]).tolist() == [[0, 0, 0], [0, 200, 0]]  # a saturated colour stays
    # the report's sample grid uses them
    result = load_eval(runs["membrane"] / "eval")
    sample = load_sample(result.per_image[0], [result.directory], max_side=64)
    plot_sample_grid([sample], report_colors(2), tmp_path / "grid", class_names=BINARY_CLASSES)


def test_class_colors_of_the_run_are_used(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "colored"
    shutil.copytree(runs["membrane"], run)
    (run / "data.json").write_text(json.dumps({"class_names": BINARY_CLASSES, "class_colors": [[0, 0, 0], [0, 90, 255]],
                                               "format": "folders"}))
    page = write_report(run, tmp_path / "c.html").read_text()
    assert "rgb(0, 90, 255)" in page  # the legend shows data.json's colour
