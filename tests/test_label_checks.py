"""Label maps told as they are: interpolated and JPEG masks named (data check) and refused (train) with the fix;
every data problem in one pass; capped histograms; class tables with colours and void classes; palette=."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_png
from seglab.cli.main import main
from seglab.config import build_config
from seglab.data.check import check_data, histogram_rows
from seglab.data.labels import inspect_mask, read_class_table, resolve_class_colors, void_class
from seglab.data.plan import plan_data
from seglab.errors import DataError

TINY = ["model=unet_small", "batch=2", "workers=0", "epochs=1", "augment=none", "device=cpu"]


def _disc(size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cy, cx, r = rng.integers(10, size - 10, 2).tolist() + [int(rng.integers(5, 9))]
    yy, xx = np.mgrid[:size, :size]
    return (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).astype(np.uint8) * 255


def _binary_dataset(root: Path, n: int = 10, size: int = 32) -> Path:
    """images/ + masks/ with clean 0/255 masks."""
    for i in range(n):
        write_png(root / "images" / f"{i}.png", np.random.default_rng(i).integers(0, 255, (size, size, 3), np.uint8))
        write_png(root / "masks" / f"{i}.png", _disc(size, i))
    return root


def _anti_aliased(size: int = 32, seed: int = 3) -> np.ndarray:
    """The same kind of 0/255 disc, drawn at 4x and resized down with smoothing: grey ramps along the edge."""
    big = np.kron(_disc(size, seed), np.ones((4, 4), np.uint8))
    return np.asarray(Image.fromarray(big).resize((size, size), Image.BILINEAR))


@pytest.fixture
def aa_dataset(tmp_path) -> Path:
    root = _binary_dataset(tmp_path / "aa")
    write_png(root / "masks" / "3.png", _anti_aliased())
    return root


@pytest.fixture
def jpeg_dataset(tmp_path) -> Path:
    root = _binary_dataset(tmp_path / "jpeg")
    (root / "masks" / "5.png").unlink()
    Image.fromarray(_disc(32, 5)).save(root / "masks" / "5.jpg", quality=85)
    return root


def test_anti_aliased_mask_is_found_and_named_with_the_fix():
    n, findings = inspect_mask(Path("m.png"), _anti_aliased())
    assert n > 2 and [f.kind for f in findings] == ["interpolated"] and findings[0].error
    assert "nearest-neighbour" in findings[0].fix and "mask_mode=binary" in findings[0].fix
    assert inspect_mask(Path("m.png"), _disc())[1] == []  # a clean binary mask
    declared = inspect_mask(Path("m.png"), _anti_aliased(), declared=True)[1]
    assert declared and not declared[0].error  # mask_mode=/colors=/num_classes= given: a warning


def test_data_check_names_an_anti_aliased_mask_instead_of_inventing_255_classes(aa_dataset, capsys):
    report = check_data(build_config({"data": str(aa_dataset)}))
    assert not report.ok and report.counts["classes"] == 2
    bad = [p for p in report.problems if "3.png" in p]
    assert len(bad) == 1 and "interpolated" in bad[0] and "nearest-neighbour" in bad[0]
    assert "ignored (255)" not in report.class_pixels
    assert main(["data", "check", f"data={aa_dataset}"]) == 1
    out = capsys.readouterr().out
    assert "3.png" in out and "no problems found" not in out


def test_train_refuses_an_anti_aliased_mask_with_the_same_message(aa_dataset, tmp_path, capsys):
    with pytest.raises(DataError, match=r"(?s)masks[/\\]3\.png.*nearest-neighbour"):
        plan_data(build_config({"data": str(aa_dataset)}))
    assert main(["train", f"data={aa_dataset}", f"project={tmp_path / 'runs'}", *TINY]) == 2
    err = capsys.readouterr().err
    assert "3.png" in err and "mask_mode=binary" in err
    # the user says how to read them: a warning, and the masks are thresholded
    plan = plan_data(build_config({"data": str(aa_dataset), "mask_mode": "binary"}))
    assert plan.codec.mode == "binary" and any("3.png" in n and "warning" in n for n in plan.notes)


def test_jpeg_mask_is_named_by_check_and_refused_by_train(jpeg_dataset):
    report = check_data(build_config({"data": str(jpeg_dataset)}))
    bad = [p for p in report.problems if "5.jpg" in p]
    assert bad and any("JPEG" in p for p in bad) and all("PNG" in p for p in bad)
    assert len(bad) == 1, bad  # one problem for the file (JPEG is why it looks interpolated), not two
    with pytest.raises(DataError, match=r"5\.jpg"):
        plan_data(build_config({"data": str(jpeg_dataset)}))


def test_hundreds_of_values_never_become_hundreds_of_classes_silently(tmp_path):
    root = tmp_path / "instances"
    for i in range(4):  # 200 labels in 4x4 blocks (instance-like): as class indices, 200 classes
        blocks = np.random.default_rng(i).permutation(200).astype(np.uint8).reshape(10, 20)
        write_png(root / "images" / f"{i}.png", np.full((40, 80, 3), 10 * i, np.uint8))
        write_png(root / "masks" / f"{i}.png", np.kron(blocks, np.ones((4, 4), np.uint8)))
    with pytest.raises(DataError, match="num_classes"):
        plan_data(build_config({"data": str(root)}))
    assert plan_data(build_config({"data": str(root), "num_classes": 200})).codec.num_classes == 200


def test_data_check_lists_missing_masks_corrupt_files_and_size_mismatches_in_one_pass(tmp_path):
    root = _binary_dataset(tmp_path / "many", n=8)
    (root / "masks" / "1.png").unlink()  # missing mask
    (root / "images" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # corrupt image
    (root / "masks" / "4.png").write_bytes(b"not an image at all")  # corrupt mask
    write_png(root / "masks" / "6.png", np.zeros((20, 24), np.uint8))  # wrong size
    write_png(root / "masks" / "7.png", _anti_aliased())  # interpolated
    report = check_data(build_config({"data": str(root), "split": "6:1:1"}))
    text = "\n".join(report.problems)
    for name in ("1.png", "2.png", "4.png", "6.png", "7.png"):
        assert name in text, (name, text)
    assert "no mask" in text and "24x20" in text
    assert main(["data", "check", f"data={root}", "split=6:1:1"]) == 1


def test_histogram_is_capped_with_a_note(tmp_path, capsys):
    root = tmp_path / "many_classes"
    for i in range(3):
        write_png(root / "images" / f"{i}.png", np.full((25, 30, 3), 100 + i, np.uint8))
        blocks = np.arange(30, dtype=np.uint8).reshape(5, 6)  # 30 classes in 5x5-pixel blocks
        write_png(root / "masks" / f"{i}.png", np.kron(blocks, np.ones((5, 5), np.uint8)))
    report = check_data(build_config({"data": str(root), "split": "1:1:1"}))
    assert report.ok and report.counts["classes"] == 30
    rows, note = histogram_rows(report.class_pixels)
    assert len(rows) == 20 and "10 more classes" in note
    assert main(["data", "check", f"data={root}", "split=1:1:1"]) == 0
    out = capsys.readouterr().out
    assert "10 more classes" in out


CLASSES_CSV = "index,name,r,g,b\n0,Sky,128,128,128\n1,Road,128,64,128\n2,Car,64,0,128\n3,Unlabelled,0,0,0\n"
CSV_COLORS = [[128, 128, 128], [128, 64, 128], [64, 0, 128]]


def _camvid_like(root: Path, colour_masks: bool = False, n: int = 6) -> Path:
    """train/ + trainannot/ (and val/), index (or colour) masks 0..2 with 3 = Unlabelled, classes.csv name,r,g,b."""
    table = np.array(CSV_COLORS + [[0, 0, 0]], np.uint8)
    for split, count in (("train", n), ("val", 2)):
        for i in range(count):
            rng = np.random.default_rng(i + 10 * (split == "val"))
            mask = np.zeros((32, 32), np.uint8)
            mask[16:] = 1
            mask[8:14, 4 + i:14 + i] = 2
            mask[:2] = 3
            image = (table[mask] * 0.8 + rng.integers(0, 40, (32, 32, 3))).astype(np.uint8)
            write_png(root / split / f"f{i}.png", image)
            write_png(root / f"{split}annot" / f"f{i}.png", table[mask] if colour_masks else mask)
    (root / "classes.csv").write_text(CLASSES_CSV)
    return root


@pytest.mark.parametrize("colour_masks", [False, True], ids=["index-masks", "colour-masks"])
def test_camvid_like_folder_trains_with_unlabelled_ignored_and_the_csv_colours(tmp_path, capsys, colour_masks):
    root = _camvid_like(tmp_path / "camvid", colour_masks)
    plan = plan_data(build_config({"data": str(root)}))
    assert plan.codec.ignore_index == 3 and plan.codec.num_classes == 3
    assert plan.class_names == ["Sky", "Road", "Car"] and plan.class_colors == CSV_COLORS
    assert plan.codec.mode == ("rgb" if colour_masks else "index")
    project = tmp_path / "runs"
    assert main(["train", f"data={root}", f"project={project}", "name=cv", *TINY]) == 0
    out = capsys.readouterr().out
    assert "'Unlabelled' is a void label" in out and "ignore_index=3" in out
    meta = json.loads((project / "cv" / "data.json").read_text())
    assert meta["class_colors"] == CSV_COLORS and meta["codec"]["ignore_index"] == 3
    assert meta["class_names"] == ["Sky", "Road", "Car"]
    # predict paints in the csv's colours and writes the key to them
    assert main(["predict", str(root / "val"), f"weights={project / 'cv'}", f"project={project}"]) == 0
    out_dir = project / "predict"
    colours = {tuple(c) for m in out_dir.glob("*_color.png") for c in np.array(Image.open(m)).reshape(-1, 3)}
    assert colours and colours <= {tuple(c) for c in CSV_COLORS}
    assert (out_dir / "legend.png").exists() and "1 legend" in capsys.readouterr().out.strip().splitlines()[-1]
    # `seglab report` after `seglab eval` decodes the labels as the run did: the galleries stay (colour masks too)
    assert main(["eval", str(project / "cv"), "report=false"]) == 0
    assert main(["report", str(project / "cv")]) == 0
    page = (project / "cv" / "report.html").read_text()
    assert "Could not draw" not in page and "Best and worst" in page


def test_explicit_ignore_index_keeps_the_void_class_and_palette_overrides_colours(tmp_path):
    root = _camvid_like(tmp_path / "camvid")
    plan = plan_data(build_config({"data": str(root), "ignore_index": 255}))
    assert plan.codec.ignore_index == 255 and plan.codec.num_classes == 4 and plan.class_names[3] == "Unlabelled"
    palette = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    plan = plan_data(build_config({"data": str(root), "palette": palette}))
    assert plan.class_colors == palette
    plan = plan_data(build_config({"data": str(root), "classes": ["a", "b", "c", "void"]}))
    assert plan.codec.ignore_index == 3 and plan.class_names == ["a", "b", "c"]


def test_palette_override_reaches_the_run_metadata(tmp_path):
    root = _binary_dataset(tmp_path / "bin", n=6)
    project = tmp_path / "runs"
    assert main(["train", f"data={root}", f"project={project}", "name=p", "palette=[[0,0,0],[255,0,255]]",
                 *TINY]) == 0
    assert json.loads((project / "p" / "data.json").read_text())["class_colors"] == [[0, 0, 0], [255, 0, 255]]


def test_voc_palette_pngs_give_their_colours(tmp_path):
    from seglab.data.colors import voc_palette

    root = tmp_path / "voc"
    flat = voc_palette(256).ravel().tolist()
    for i in range(4):
        write_png(root / "images" / f"{i}.png", np.full((16, 16, 3), 50 * i, np.uint8))
        mask = np.zeros((16, 16), np.uint8)
        mask[4:, :] = 1 + i % 3
        mask[0, :] = 255
        write_png(root / "masks" / f"{i}.png", mask, mode="L", palette=flat)
    plan = plan_data(build_config({"data": str(root), "split": "2:1:1"}))
    assert plan.codec.mode == "palette" and plan.codec.num_classes == 4
    assert plan.class_colors == voc_palette(4).tolist()


def test_classes_must_name_every_class_of_colour_and_binary_masks(tmp_path):
    """classes=[matrix,pore] on three-colour masks used to call the third class 'class2'; a name too many vanished."""
    from seglab.data.synthetic import make_grains_dataset

    root = _camvid_like(tmp_path / "camvid", colour_masks=True)
    for names in (["a", "b"], ["a", "b", "c", "d", "e"]):
        with pytest.raises(DataError, match=rf"classes= names {len(names)} class\(es\).*the masks hold 4: 4 colours"):
            plan_data(build_config({"data": str(root), "classes": names}))
    problems: list[str] = []
    plan_data(build_config({"data": str(root), "classes": ["a", "b"]}), problems=problems)
    assert any("classes= names 2 class(es)" in p for p in problems)  # data check lists it with the rest
    grains = tmp_path / "grains"
    make_grains_dataset(grains, n=4, size=32, seed=0)
    with pytest.raises(DataError, match=r"names 3 class\(es\).*the masks hold 2"):
        plan_data(build_config({"data": str(grains), "classes": ["matrix", "pore", "crack"]}))
    assert plan_data(build_config({"data": str(grains), "classes": ["matrix", "pore"]})).class_names == \
        ["matrix", "pore"]


def test_class_tables_with_and_without_header(tmp_path):
    (tmp_path / "classes.csv").write_text("Sky,128,128,128\nRoad,128,64,128\nvoid,0,0,0\n")
    names, colors = read_class_table(tmp_path)
    assert names == ["Sky", "Road", "void"] and colors[1] == [128, 64, 128] and void_class(names) == 2
    (tmp_path / "classes.csv").write_text("name,r,g,b\nbg,0,0,0\nfg,255,255,255\n")
    assert read_class_table(tmp_path) == (["bg", "fg"], [[0, 0, 0], [255, 255, 255]])
    (tmp_path / "classes.csv").write_text("id,name\n1,b\n0,a\n")
    assert read_class_table(tmp_path) == (["a", "b"], [])
    assert void_class(["Background-Ignore"]) == 0 and void_class(["UNLABELED"]) == 0 and void_class(["bg"]) is None


def test_built_in_palette_is_distinct_per_class():
    for n in (2, 3, 12, 21, 150, 256):
        colors, origin = resolve_class_colors(n)
        assert origin == "built-in" and len({tuple(c) for c in colors}) == n


def test_a_named_class_0_gets_a_colour_of_its_own_and_is_painted():
    """Thin sections labelled quartz(0)/feldspar/...: quartz is a mineral, not a black background left unpainted."""
    from seglab.data.labels import transparent_classes

    minerals = ["quartz", "feldspar", "biotite", "opaque", "pore"]
    colors, origin = resolve_class_colors(5, names=minerals)
    assert origin == "built-in" and any(colors[0]) and len({tuple(c) for c in colors}) == 5
    assert colors[1:] == resolve_class_colors(5)[0][1:]  # the other classes keep their usual colours
    assert transparent_classes(minerals, np.array(colors, np.uint8)) == set()
    for names in (["background", "grain", "pore"], ["class0", "class1", "class2"], ["a", "b"]):
        colors, _ = resolve_class_colors(len(names), names=names)
        assert colors[0] == [0, 0, 0] and transparent_classes(names, np.array(colors, np.uint8)) == {0}
    assert resolve_class_colors(3, table=[[9, 9, 9], [1, 2, 3], [4, 5, 6]], names=["quartz", "b", "c"])[0][0] == \
        [9, 9, 9]  # a class table's colours are the user's


def test_thin_objects_with_void_outlines_in_palette_pngs_are_not_taken_for_interpolation():
    """VOC-style palette masks: thin objects of several classes, 255 outlines between them and the background."""
    mask = np.zeros((60, 60), np.uint8)
    for k, cls in enumerate((5, 9, 15, 20)):
        mask[5 + 12 * k: 8 + 12 * k, 10:50] = cls  # 3-pixel-thick objects
    outline = (np.abs(np.diff(mask.astype(int), axis=0, prepend=0)) > 0)
    mask[outline] = 255
    assert inspect_mask(Path("voc.png"), mask, palette=True)[1] == []


def test_values_outside_the_declared_classes_are_named(tmp_path):
    root = tmp_path / "declared"
    for i in range(4):
        write_png(root / "images" / f"{i}.png", np.full((16, 16, 3), 40 * i, np.uint8))
        mask = np.zeros((16, 16), np.uint8)
        mask[8:] = 1
        mask[:4, :4] = 4 if i == 2 else 2  # 2.png holds a value the class table does not list
        write_png(root / "masks" / f"{i}.png", mask)
    (root / "classes.csv").write_text("name\nbg\nroad\ncar\n")
    with pytest.raises(DataError, match=r"(?s)declares 3 classes.*2\.png: values \[4\]"):
        plan_data(build_config({"data": str(root), "split": "2:1:1"}))
    report = check_data(build_config({"data": str(root), "split": "2:1:1"}))
    assert [p for p in report.problems if "2.png" in p and "out of range" in p]
    assert not [p for p in report.problems if "1.png" in p]


def test_the_refusal_shows_every_kind_of_label_problem_with_counts():
    """Twelve interpolated masks do not hide the one JPEG mask: each kind has its own fix, so each is shown."""
    from seglab.data.labels import LabelFinding, format_findings

    findings = [LabelFinding(Path(f"masks/{i}.png"), "interpolated", "ramp values", "resize with nearest")
                for i in range(12)] + [LabelFinding(Path("masks/z.jpg"), "jpeg", "JPEG-compressed", "save as PNG")]
    text = format_findings(findings, 40, limit=10)
    assert "13 mask file(s) of the 40 inspected" in text and "(12 interpolated, 1 jpeg)" in text
    assert "masks/z.jpg: JPEG-compressed; fix: save as PNG" in text and "... and 3 more" in text
    assert text.count("fix: resize with nearest") == 9
