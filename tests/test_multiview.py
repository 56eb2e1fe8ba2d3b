"""Several views per sample (issue #28): list files and view folders build N-view samples stacked as channels.

The key test trains on a generated two-view set where classes 1 and 2 look the same in the first view
(one texture) and differ only in the second (class 2 bright): a two-view model separates them, a one-view
model cannot. Images are 32 px and models train a few seconds, so the file runs in well under a minute.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.cli.main import main
from seglab.config import build_config
from seglab.data.check import check_data
from seglab.data.dataset import SegmentationDataset, load_sample_image
from seglab.data.formats import discover, file_stem, pair_key, read_list_file, write_list_file
from seglab.data.plan import plan_data
from seglab.data.sources import read_source
from seglab.errors import ConfigError, DataError

tifffile = pytest.importorskip("tifffile")

SIZE = 32
TRAIN = ["model=unet_small", "epochs=8", "batch=4", "lr=0.003", "workers=0", "augment=flips", "val_every=100"]


def write_section(folder: Path, name: str, rng: np.random.Generator, size: int = SIZE,
                  mask_name: str | None = None, views: tuple[str, str] = ("ppl", "xpl")) -> None:
    """One generated 'thin section': an RGB view where classes 1 and 2 share a texture, a gray view where only 2 is
    bright, and its index mask as OME-TIFF (whose double suffix must pair with ``name.png``)."""
    mask = np.zeros((size, size), np.uint8)
    for _ in range(4):
        h, w = rng.integers(size // 4, size // 2, 2)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        mask[y:y + h, x:x + w] = rng.integers(1, 3)
    texture = 170 + 30 * np.sin(np.arange(size) / 2)[None, :, None]
    first = np.where((mask > 0)[..., None], texture, 60) + rng.normal(0, 12, (size, size, 3))
    second = np.where(mask == 2, 210, 50) + rng.normal(0, 12, (size, size))
    for view, pixels in zip(views, (first, second)):
        (folder / view).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / view / f"{name}.png")
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "masks" / (mask_name or f"{name}.ome.tiff"), mask, ome=True)


def make_sections(folder: Path, n: int, seed: int) -> Path:
    """``n`` generated sections in ``folder``/ppl, /xpl and /masks."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_section(folder, f"s{seed}_{i:02d}", rng)
    return folder


def list_lines(folder: Path, views: tuple[str, ...] = ("ppl", "xpl"), masks: bool = True) -> str:
    """List-file text for the sections of ``folder``: the views, then the mask."""
    rows = []
    for p in sorted((folder / "masks").glob("*.ome.tiff")):
        key = file_stem(p)
        rows.append(" ".join([str(folder / v / f"{key}.png") for v in views] + ([str(p)] if masks else [])))
    return "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny 32 px models train fastest on one thread; on a shared 2-core host two threads spin-wait on each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def sections(tmp_path_factory) -> Path:
    """train/ and val/ split folders of two-view sections, and a held-out test/ folder beside them."""
    root = tmp_path_factory.mktemp("sections")
    make_sections(root / "data" / "train", 16, seed=1)
    make_sections(root / "data" / "val", 4, seed=2)
    make_sections(root / "test", 6, seed=3)
    return root


@pytest.fixture(scope="module")
def runs(sections, tmp_path_factory, one_thread) -> dict[int, Path]:
    """The same data trained with both views (through ``seglab train``) and with the first view only."""
    project = tmp_path_factory.mktemp("runs")
    data = sections / "data"
    assert main(["train", f"data={data}", "image_dirs=ppl,xpl", f"project={project}", "name=two", *TRAIN]) == 0
    assert main(["train", f"data={data}", "image_dirs=ppl", f"project={project}", "name=one", *TRAIN]) == 0
    return {2: project / "two", 1: project / "one"}


def class_iou(pred_dir: Path, masks: Path, cls: int) -> float:
    """IoU of class ``cls`` between predicted ``{id}_mask.png`` files and the OME-TIFF masks."""
    inter = union = 0
    for mask_path in sorted(masks.glob("*.ome.tiff")):
        truth = tifffile.imread(mask_path) == cls
        pred = np.array(Image.open(pred_dir / f"{file_stem(mask_path)}_mask.png")) == cls
        inter, union = inter + int((truth & pred).sum()), union + int((truth | pred).sum())
    return inter / max(union, 1)


# ---- reading: list files, view folders, pairing rules -----------------------------------------------------------

def test_list_file_lines_name_several_views_then_the_mask(sections, tmp_path):
    test = sections / "test"
    lst = tmp_path / "two.txt"
    lst.write_text(list_lines(test))
    samples = read_list_file(lst)
    assert len(samples) == 6 and all(len(s.views) == 2 and s.mask.name.endswith(".ome.tiff") for s in samples)
    assert samples[0].views[1].parent.name == "xpl" and samples[0].id == file_stem(samples[0].image)
    image = load_sample_image(samples[0], [3, 1])
    assert image.shape == (SIZE, SIZE, 4) and image.dtype == np.uint8
    # one-view lines read as before: 'image mask'
    one = tmp_path / "one.txt"
    one.write_text(list_lines(test, views=("ppl",)))
    assert [len(s.views) for s in read_list_file(one)] == [1] * 6
    # written back (seglab data split) with every view, and read again the same
    out = tmp_path / "written.txt"
    write_list_file(out, samples)
    again = read_list_file(out)
    assert [tuple(p.resolve() for p in (*s.views, s.mask)) for s in again] == \
        [tuple(p.resolve() for p in (*s.views, s.mask)) for s in samples]
    # a model's view count makes unlabelled two-view lines unambiguous
    unlabelled = tmp_path / "unlabelled.txt"
    unlabelled.write_text(list_lines(test, masks=False))
    assert all(s.mask is None and len(s.views) == 2 for s in read_list_file(unlabelled, views=2))


def test_list_file_with_mixed_field_counts_names_the_line(sections, tmp_path):
    lines = list_lines(sections / "test").splitlines()
    first_view, _, mask = lines[1].split()
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join([lines[0], f"{first_view} {mask}"] + lines[2:]) + "\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: 2 field\(s\), but other lines name 2 views and a mask"):
        read_list_file(bad)


def test_view_folders_build_n_channel_samples_with_ome_tiff_masks(sections):
    plan = plan_data(build_config({"data": str(sections / "data"), "image_dirs": "ppl,xpl"}))
    assert plan.view_channels == [3, 1] and plan.in_channels == 4
    assert len(plan.splits["train"]) == 16 and len(plan.splits["val"]) == 4
    assert plan.codec.num_classes == 3 and any("2 views per sample" in n for n in plan.notes)
    sample = plan.splits["train"][0]
    assert sample.mask.name == f"{sample.id}.ome.tiff" and [v.parent.name for v in sample.views] == ["ppl", "xpl"]
    item = SegmentationDataset(plan.splits["train"], plan.codec, plan.in_channels,
                               view_channels=plan.view_channels)[0]
    assert item["image"].shape == (4, SIZE, SIZE) and set(item["mask"].unique().tolist()) <= {0, 1, 2}
    assert plan.views_meta() == {"views": 2, "view_channels": [3, 1], "view_dirs": ["ppl", "xpl"], "pair_by": "stem"}


def test_two_rgb_views_stack_as_six_channels(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        for view in ("ppl", "xpl"):
            (tmp_path / view).mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(tmp_path / view / f"{i}a.jpg")
        (tmp_path / "masks").mkdir(exist_ok=True)
        tifffile.imwrite(tmp_path / "masks" / f"{i}a.ome.tiff", (rng.random((16, 20)) > 0.5).astype(np.uint8),
                         ome=True)
    plan = plan_data(build_config({"data": str(tmp_path), "image_dirs": ["ppl", "xpl"]}))
    assert plan.view_channels == [3, 3] and plan.in_channels == 6
    assert load_sample_image(plan.splits["train"][0], plan.view_channels).shape == (16, 20, 6)
    # in_channels given: split evenly over the views; one that cannot be split is refused
    assert plan_data(build_config({"data": str(tmp_path), "image_dirs": "ppl,xpl", "in_channels": 2})).view_channels \
        == [1, 1]
    with pytest.raises(ConfigError, match="in_channels=5 cannot be divided evenly over 2 views"):
        plan_data(build_config({"data": str(tmp_path), "image_dirs": "ppl,xpl", "in_channels": 5}))


def test_pair_by_prefix_and_regex_pair_names_that_differ(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        write_section(tmp_path / "prefix", f"{i}a", rng, mask_name=f"{i}a_labels_v2.ome.tiff")
        for view in ("ppl", "xpl"):  # 0a.png -> 0a_ppl.png: names carry the view after the key
            src = tmp_path / "prefix" / view / f"{i}a.png"
            src.rename(src.with_name(f"{i}a_{view}.png"))
    assert pair_key(Path("2a_ppl.jpg"), "prefix_") == "2a" and pair_key(Path("2a.ome.tiff"), "stem") == "2a"
    assert pair_key(Path("ppl-2a.jpg"), r"regex:(\d+[a-z])") == "2a"
    with pytest.raises(DataError, match="no image/mask pairs"):  # by stem nothing pairs
        discover(tmp_path / "prefix", image_dirs=["ppl", "xpl"])
    src = discover(tmp_path / "prefix", image_dirs=["ppl", "xpl"], pair_by="prefix_")
    assert sorted(s.id for s in src.splits["all"]) == ["0a", "1a", "2a"] and not src.incomplete
    src = discover(tmp_path / "prefix", image_dirs=["ppl", "xpl"], pair_by=r"regex:^(\d+)")
    assert sorted(s.id for s in src.splits["all"]) == ["0", "1", "2"]
    with pytest.raises(ConfigError, match="pair_by='suffix'"):
        discover(tmp_path / "prefix", image_dirs=["ppl", "xpl"], pair_by="suffix")


def test_one_view_folders_pair_ome_tiff_masks_by_their_double_suffix(sections):
    source = discover(sections / "test", image_dir="ppl", mask_dir="masks")
    assert len(source.splits["all"]) == 6 and not source.unpaired_images and not source.unpaired_masks
    assert all(s.mask.name == f"{s.id}.ome.tiff" and not s.extra_views for s in source.splits["all"])


# ---- bad pairings fail clearly, naming the files ----------------------------------------------------------------

def test_missing_view_is_a_data_error_naming_the_file_and_the_fix(tmp_path):
    rng = np.random.default_rng(5)
    for i in range(4):
        write_section(tmp_path, f"k{i}", rng)
    (tmp_path / "xpl" / "k2.png").unlink()
    cfg = {"data": str(tmp_path), "image_dirs": "ppl,xpl", "split": "2:1"}
    with pytest.raises(DataError) as err:
        plan_data(build_config(cfg))
    text = str(err.value)
    assert "1 sample(s) miss a view" in text and str(tmp_path / "ppl" / "k2.png") in text
    assert str(tmp_path / "xpl") in text and "add the missing view" in text and "on_error=skip" in text
    with pytest.warns(UserWarning, match="miss a view"):
        plan = plan_data(build_config({**cfg, "on_error": "skip"}))
    assert sorted(s.id for s in plan.splits["train"] + plan.splits["val"] + plan.splits["test"]) == ["k0", "k1", "k3"]
    # predict-side sources refuse it too, by name
    with pytest.raises(DataError, match=r"k2\.png: no matching view in .*xpl"):
        read_source(tmp_path, views=2, view_dirs=["ppl", "xpl"])


def test_views_of_different_sizes_are_a_data_error_naming_both(tmp_path):
    rng = np.random.default_rng(6)
    for i in range(3):
        write_section(tmp_path, f"m{i}", rng)
    small = tmp_path / "xpl" / "m1.png"
    Image.open(small).crop((0, 0, SIZE, SIZE - 2)).save(small)
    plan = plan_data(build_config({"data": str(tmp_path), "image_dirs": "ppl,xpl", "split": "2:1"}))
    sample = next(s for split in plan.splits.values() for s in split if s.id == "m1")
    with pytest.raises(DataError) as err:
        SegmentationDataset([sample], plan.codec, plan.in_channels, view_channels=plan.view_channels)[0]
    text = str(err.value)
    assert "differ in size" in text and f"{tmp_path / 'ppl' / 'm1.png'} is 32x32" in text
    assert f"{small} is 32x30" in text and "resize or crop them alike" in text
    report = check_data(build_config({"data": str(tmp_path), "image_dirs": "ppl,xpl", "split": "2:1"}))
    assert report.counts["views"] == 2 and report.counts["in_channels"] == 4
    assert any("differ in size" in p and "m1.png" in p for p in report.problems)


def test_sources_with_the_wrong_number_of_views_say_what_to_pass(sections):
    image = sections / "test" / "ppl" / "s3_00.png"
    with pytest.raises(DataError, match="one image, but the model takes 2 views per sample"):
        read_source(image, views=2)
    with pytest.raises(DataError, match="the model takes 2 view"):
        read_source(sections / "test" / "ppl", views=2)
    pair = read_source(f"{image},{sections / 'test' / 'xpl' / 's3_00.png'}", views=2)
    assert len(pair) == 1 and len(pair[0].views) == 2
    folders = read_source(f"{sections / 'test' / 'ppl'},{sections / 'test' / 'xpl'}", views=2)
    assert len(folders) == 6 and all(len(s.views) == 2 for s in folders)


# ---- training: two views separate what one view cannot ---------------------------------------------------------

def test_two_view_model_separates_classes_the_one_view_model_cannot(runs, sections, tmp_path):
    meta = torch.load(runs[2] / "checkpoints" / "best.pt", weights_only=True)["meta"]
    assert meta["in_channels"] == 4 and meta["views"] == 2 and meta["view_channels"] == [3, 1]
    assert meta["view_dirs"] == ["ppl", "xpl"] and meta["pair_by"] == "stem" and len(meta["mean"]) == 4
    assert torch.load(runs[1] / "checkpoints" / "best.pt", weights_only=True)["meta"]["views"] == 1
    test = sections / "test"
    # a folder holding the training's view folders: paired as in training
    assert main(["predict", f"weights={runs[2]}", f"source={test}", f"project={tmp_path}", "name=two",
                 "save=index,overlay"]) == 0
    assert main(["predict", f"weights={runs[1]}", f"source={test / 'ppl'}", f"project={tmp_path}", "name=one",
                 "save=index"]) == 0
    overlay = np.array(Image.open(tmp_path / "two" / "s3_00_overlay.png"))
    assert overlay.shape == (SIZE, SIZE, 3)  # drawn over the first (RGB) view
    two, one = class_iou(tmp_path / "two", test / "masks", 2), class_iou(tmp_path / "one", test / "masks", 2)
    assert two > 0.7 and two > one + 0.4, (two, one)  # seen: 0.90 and 0.06
    # class 1 + 2 together (the shared texture) is easy for both: the second view is what tells them apart
    assert class_iou(tmp_path / "two", test / "masks", 0) > 0.9 and class_iou(tmp_path / "one", test / "masks", 0) > 0.9


# ---- predict, measure, explain and export read the same multi-view sources --------------------------------------

def test_predict_reads_a_multi_view_list_and_refuses_a_single_image(runs, sections, tmp_path, capsys):
    lst = tmp_path / "test.txt"
    lst.write_text(list_lines(sections / "test"))
    assert main(["predict", f"weights={runs[2]}", f"source={lst}", f"project={tmp_path}", "name=list",
                 "save=index"]) == 0
    assert len(list((tmp_path / "list").glob("*_mask.png"))) == 6
    assert main(["predict", f"weights={runs[2]}", f"source={sections / 'test' / 'ppl' / 's3_01.png'}",
                 f"project={tmp_path}"]) == 2
    assert "the model takes 2 views per sample" in capsys.readouterr().err


def test_measure_and_explain_read_multi_view_sources(runs, sections, tmp_path, capsys):
    lst = tmp_path / "two.txt"
    lst.write_text("".join(list_lines(sections / "test").splitlines(keepends=True)[:2]))
    assert main(["measure", f"weights={runs[2]}", f"image={lst}", f"out={tmp_path / 'measure'}"]) == 0
    ids = [file_stem(Path(line.split()[0])) for line in lst.read_text().splitlines()]
    assert all((tmp_path / "measure" / i / "grains.csv").exists() for i in ids)
    views = f"{sections / 'test' / 'ppl' / 's3_02.png'},{sections / 'test' / 'xpl' / 's3_02.png'}"
    assert main(["explain", f"weights={runs[2]}", f"source={views}", "class=2", f"out={tmp_path / 'cam'}"]) == 0
    assert main(["explain", f"weights={runs[2]}", f"source={lst}", "class=2", f"out={tmp_path / 'cam'}",
                 "exist_ok=true"]) == 0  # into the same folder (without exist_ok: cam2)
    assert "s3_02: class 2" in capsys.readouterr().out
    assert {p.name.split("_cam_")[0] for p in (tmp_path / "cam").glob("*.png")} == {"s3_02", *ids}
    panel = next(p for p in (tmp_path / "cam").glob("s3_02_cam_*.png") if not p.stem.endswith(("heatmap", "overlay")))
    assert Image.open(panel).width >= 1600  # view 1 | view 2 | Grad-CAM | overlay on each view (one view: 1000 px)


def test_export_checks_and_calibrates_on_a_multi_view_list(runs, sections, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    lst = tmp_path / "two.txt"
    lst.write_text(list_lines(sections / "test"))
    out = tmp_path / "two.onnx"
    assert main(["export", f"weights={runs[2]}", f"out={out}", "imgsz=32", f"check={lst}", "quantize=int8",
                 f"calib={lst}"]) == 0
    text = capsys.readouterr().out
    assert "parity of two.onnx on 6 image(s)" in text and "parity of two.int8.onnx on 6 image(s)" in text
    import onnx

    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["views"] == "2" and json.loads(props["seglab_meta"])["view_channels"] == [3, 1]
