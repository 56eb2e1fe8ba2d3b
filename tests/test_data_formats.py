"""Every dataset layout and mask/image encoding users bring, on small fixtures made here."""
from __future__ import annotations

import numpy as np
import tifffile
from PIL import Image

from conftest import shared_dataset, write_png
from seglab.config import build_config
from seglab.data.dataset import SegmentationDataset
from seglab.data.plan import plan_data
from seglab.data.rle import rle_encode

rng = np.random.default_rng(0)


def write_tiff(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)


def _img(h=20, w=24, c=3):
    return rng.integers(0, 255, (h, w, c), dtype=np.uint8)


def _binary_mask(h=20, w=24):
    m = np.zeros((h, w), np.uint8)
    m[5:12, 6:15] = 1
    return m


def _decoded(cfg_overrides: dict):
    """Plan the data and decode every training pair, returning the plan and the masks."""
    cfg = build_config({"split": "1:1:1", **cfg_overrides})
    plan = plan_data(cfg)
    ds = SegmentationDataset(plan.splits["train"], plan.codec, plan.in_channels, rle=plan.rle)
    return plan, [ds.load_pair(s) for s in ds.samples]


def test_folders_with_mask_suffix_and_0_255_masks(tmp_path):
    for i in range(6):
        write_png(tmp_path / "images" / f"field {i}.jpg", _img())  # a space in the name on purpose
        write_png(tmp_path / "masks" / f"field {i}_mask.png", _binary_mask() * 255)
    plan, pairs = _decoded({"data": str(tmp_path)})
    assert plan.codec.mode == "binary" and plan.codec.num_classes == 2
    assert any("0/255" in n for n in plan.notes)
    for image, mask in pairs:
        assert image.shape == (20, 24, 3)
        assert set(np.unique(mask)) == {0, 1}
        assert mask.sum() == _binary_mask().sum()


def test_camvid_style_list_files_with_ignore_index(tmp_path):
    lines = []
    for i in range(4):
        m = rng.integers(0, 12, (16, 16), dtype=np.uint8)  # 0..10 classes, 11 = unlabelled
        write_png(tmp_path / "train" / f"{i}.png", _img(16, 16))
        write_png(tmp_path / "trainannot" / f"{i}.png", m)
        lines.append(f"train/{i}.png trainannot/{i}.png")
    (tmp_path / "train.txt").write_text("\n".join(lines[:3]) + "\n")
    (tmp_path / "val.txt").write_text(lines[3] + "\n")
    plan, pairs = _decoded({"data": str(tmp_path), "ignore_index": 11})
    assert plan.source.format == "list"
    assert len(plan.splits["train"]) == 3 and len(plan.splits["val"]) == 1
    assert plan.codec.mode == "index" and plan.codec.num_classes == 11
    assert all(m.max() <= 11 for _, m in pairs)


def test_voc_layout_palette_masks_keep_255_as_ignore(tmp_path):
    from seglab.data.colors import voc_palette

    palette = voc_palette(256).ravel().tolist()
    ids = [f"2007_00000{i}" for i in range(5)]
    for i, name in enumerate(ids):
        m = np.zeros((18, 22), np.uint8)
        m[3:9, 3:9] = 15 if i % 2 else 1  # person / aeroplane
        m[2, :] = 255  # VOC object borders
        write_png(tmp_path / "JPEGImages" / f"{name}.jpg", _img(18, 22))
        write_png(tmp_path / "SegmentationClass" / f"{name}.png", m, mode="L", palette=palette)
    sets = tmp_path / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(ids[:3]))
    (sets / "val.txt").write_text("\n".join(ids[3:]))
    assert Image.open(tmp_path / "SegmentationClass" / f"{ids[0]}.png").mode == "P"
    plan, pairs = _decoded({"data": str(tmp_path)})
    assert plan.source.format == "voc" and plan.codec.mode == "palette"
    assert plan.codec.num_classes == 16 and plan.codec.ignore_index == 255
    assert set(np.unique(pairs[1][1])) == {0, 15, 255}


def test_rgb_colour_masks_red_background_green_object(grains_dir):
    plan, pairs = _decoded({"data": str(grains_dir)})
    assert plan.codec.mode == "rgb"
    assert plan.codec.colors[0] == [255, 0, 0] and plan.codec.colors[1] == [0, 255, 0]
    raw = np.array(Image.open(sorted((grains_dir / "masks").iterdir())[0]))
    _, mask = SegmentationDataset([], plan.codec, 3).load_pair(plan.splits["train"][0])
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    green = (raw == [0, 255, 0]).all(-1)
    assert green.sum() > 0


def test_explicit_colour_table_fixes_class_order(grains_dir):
    plan, pairs = _decoded({"data": str(grains_dir), "colors": [[0, 255, 0], [255, 0, 0]]})
    _, auto_pairs = _decoded({"data": str(grains_dir)})
    assert plan.codec.colors == [[0, 255, 0], [255, 0, 0]]
    for (_, m), (_, auto) in zip(pairs, auto_pairs):  # grains are now class 0: every label flips
        np.testing.assert_array_equal(m, 1 - auto)


def test_tgs_layout_16bit_masks_and_gray_as_rgb_images(tmp_path):
    for i in range(6):
        gray = _img(101, 101, 1)
        write_png(tmp_path / "train" / "images" / f"{i:04x}.png", np.repeat(gray, 3, axis=2))
        m = (_binary_mask(101, 101).astype(np.uint16) * 65535) if i % 3 else np.zeros((101, 101), np.uint16)
        write_png(tmp_path / "train" / "masks" / f"{i:04x}.png", m)
    (tmp_path / "depths.csv").write_text("id,z\n")
    plan, pairs = _decoded({"data": str(tmp_path)})
    assert plan.source.format == "tgs"
    assert plan.in_channels == 1  # gray stored as RGB
    assert plan.codec.mode == "binary" and plan.codec.fg_value == 65535
    assert all(img.shape == (101, 101, 1) for img, _ in pairs)
    assert {int(m.max()) for _, m in pairs} <= {0, 1}


def test_tgs_run_length_csv_without_mask_files(tmp_path):
    rows = ["id,rle_mask"]
    masks = {}
    for i in range(6):
        write_png(tmp_path / "train" / "images" / f"id{i}.png", _img(30, 30, 1)[..., 0])
        masks[f"id{i}"] = _binary_mask(30, 30) if i % 2 else np.zeros((30, 30), np.uint8)
        rows.append(f"id{i},{rle_encode(masks[f'id{i}'])}")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    plan, pairs = _decoded({"data": str(tmp_path)})
    assert plan.rle is not None and plan.codec.binary
    ds = SegmentationDataset(plan.splits["train"], plan.codec, plan.in_channels, rle=plan.rle)
    for s in ds.samples:
        np.testing.assert_array_equal(ds.load_pair(s)[1], masks[s.id])


def test_tiff_masks_16bit_and_multichannel_tiff_images(tmp_path):
    for i in range(6):
        stack = rng.integers(0, 65535, (20, 24, 6), dtype=np.uint16)  # e.g. PPL + XPL micrograph stack
        write_tiff(tmp_path / "images" / f"s{i}.tif", stack)
        write_tiff(tmp_path / "masks" / f"s{i}.tif", rng.integers(0, 3, (20, 24)).astype(np.uint8))
    plan, pairs = _decoded({"data": str(tmp_path)})
    assert plan.in_channels == 6
    assert plan.codec.mode == "index" and plan.codec.num_classes == 3
    img, _ = pairs[0]
    assert img.dtype == np.uint16 and img.shape == (20, 24, 6)


def test_rgba_and_16bit_gray_png_images(tmp_path):
    for i in range(6):
        rgba = np.dstack([_img(), np.full((20, 24), 255, np.uint8)])
        write_png(tmp_path / "images" / f"a{i}.png", rgba)
        write_png(tmp_path / "masks" / f"a{i}.png", _binary_mask())
    plan, pairs = _decoded({"data": str(tmp_path)})
    assert plan.in_channels == 3 and pairs[0][0].shape == (20, 24, 3)
    gray16 = tmp_path / "g16"
    for i in range(6):
        write_png(gray16 / "images" / f"g{i}.png", rng.integers(0, 65535, (20, 24), dtype=np.uint16))
        write_png(gray16 / "masks" / f"g{i}.png", _binary_mask())
    plan, pairs = _decoded({"data": str(gray16)})
    assert plan.in_channels == 1 and pairs[0][0].dtype == np.uint16


def test_images_and_masks_side_by_side_with_suffix(tmp_path):
    for i in range(6):
        write_png(tmp_path / f"plot{i}.png", _img())
        write_png(tmp_path / f"plot{i}_mask.png", _binary_mask() * 255)
    plan, pairs = _decoded({"data": str(tmp_path)})
    assert plan.source.format == "suffix"
    assert sum(len(v) for v in plan.splits.values()) == 6


def test_seeded_split_is_reproducible_and_disjoint(grains_dir):
    a = plan_data(build_config({"data": str(grains_dir), "seed": 3})).splits
    b = plan_data(build_config({"data": str(grains_dir), "seed": 3})).splits
    c = plan_data(build_config({"data": str(grains_dir), "seed": 4})).splits
    assert a == b and a != c
    ids = [s.id for k in ("train", "val", "test") for s in a[k]]
    assert len(ids) == len(set(ids)) == 24
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (20, 2, 2)  # 8:1:1 of 24


def test_real_camvid_layout_is_detected():
    root = shared_dataset("camvid")
    plan = plan_data(build_config({"data": str(root), "ignore_index": 11}))
    assert plan.source.format == "list"
    assert len(plan.splits["train"]) == 367 and len(plan.splits["val"]) == 101
    assert plan.codec.num_classes == 11 and plan.class_names[0] == "Sky"


def test_real_tgs_and_membrane_layouts_are_detected():
    tgs = plan_data(build_config({"data": str(shared_dataset("tgs-salt"))}))
    assert tgs.codec.binary and tgs.in_channels == 1
    assert sum(len(v) for v in tgs.splits.values()) == 3200
    membrane = plan_data(build_config({"data": str(shared_dataset("membrane"))}))
    assert membrane.codec.binary and membrane.codec.fg_value == 255
    assert sum(len(v) for v in membrane.splits.values()) == 30
