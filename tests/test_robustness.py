"""A corpus of broken datasets: each ends in a DataError naming the file, a documented skip, or works as it should.

Every case builds a small valid dataset in tmp_path, breaks it one way, and is loaded twice: with
on_error=raise (a DataError whose message names the offending file) and with on_error=skip (a warning
naming the file and the sample left out; problems that are not one sample's, such as duplicate stems,
still raise). Cases that must simply work (unicode paths, symlink loops, content-sniffed extensions)
are checked for the right number of samples. ``pytest -s`` prints how many inputs were tried.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import write_png
from PIL import Image

from seglab.cli.main import main
from seglab.config import build_config
from seglab.data.dataset import SegmentationDataset
from seglab.data.plan import plan_data
from seglab.errors import DataError

SIZE = 32  # the smallest side unet_small trains on (see test_tiny_images_train)
NAMES = [f"s{i}" for i in range(6)]
TRIED: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def report_inputs_tried():
    """Print how many broken inputs this module fed through the loaders (visible with -s)."""
    yield
    print(f"\n[robustness corpus] {sum(TRIED.values())} inputs tried: " +
          ", ".join(f"{k}={v}" for k, v in sorted(TRIED.items())) +
          "; every one ended in a DataError naming the file, a documented skip, or a correct load")


def _image(seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    """A seeded random RGB image."""
    return np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)


def _mask(size: tuple[int, int] = (SIZE, SIZE), value: int = 255) -> np.ndarray:
    """A square of ``value`` on background 0."""
    m = np.zeros(size, np.uint8)
    m[4:12, 4:12] = value
    return m


def make_pairs(root: Path, names: list[str] = NAMES, mask_value: int = 255) -> Path:
    """A valid folders-layout dataset: images/NAME.png (RGB) and masks/NAME.png (0/mask_value)."""
    for i, name in enumerate(names):
        write_png(root / "images" / f"{name}.png", _image(i))
        write_png(root / "masks" / f"{name}.png", _mask(value=mask_value))
    return root


def _bytes(array: np.ndarray, fmt: str) -> bytes:
    """``array`` encoded as a file of format ``fmt`` (TIFF through tifffile, the rest through PIL)."""
    buf = io.BytesIO()
    if fmt == "TIFF":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tifffile warns about the deliberately nonconformant 0-pixel TIFF
            tifffile.imwrite(buf, array)
    else:
        Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zero_width_png() -> bytes:
    """A PNG whose header says 0 x 5 pixels (PIL cannot write one, so the bytes are assembled here)."""
    header = struct.pack(">IIBBBBB", 0, 5, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b""))
            + _png_chunk(b"IEND", b""))


def replace(root: Path, rel: str, data: bytes) -> None:
    """Swap one file of the dataset for ``data`` (the old file, whatever its extension, is removed)."""
    target = root / rel
    for old in target.parent.glob(f"{target.stem}.*"):
        old.unlink()
    target.write_bytes(data)


def truncated(array: np.ndarray, fmt: str) -> bytes:
    """The first half of ``array`` encoded as ``fmt``."""
    data = _bytes(array, fmt)
    return data[: len(data) // 2]


@dataclass
class Case:
    """One broken dataset: how to build it, the file an error must name, and what on_error=skip leaves."""

    name: str
    build: Callable[[Path], dict]  # breaks a fresh dataset in the folder; returns config overrides
    offender: str | None  # file name the error/warning must contain; None = the dataset must load
    skip_left: int | None = None  # samples left with on_error=skip; None = still an error (not per-sample)
    works: int = len(NAMES)  # samples when it must load
    xfail: str = ""  # a known defect outside the data readers, with the fix it needs

    def param(self):
        """This case as a pytest parameter (strict xfail while its defect stands)."""
        marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=self.xfail)] if self.xfail else []
        return pytest.param(self, id=self.name, marks=marks)


def _with(edit: Callable[[Path], object]) -> Callable[[Path], dict]:
    """A case builder: the valid dataset, then ``edit`` applied to it."""
    def build(root: Path) -> dict:
        make_pairs(root)
        edit(root)
        return {}
    return build


def _rgb_masks(root: Path, colors: list) -> None:
    """Rewrite every mask as an RGB mask of two colours."""
    for i, name in enumerate(NAMES):
        m = np.zeros((SIZE, SIZE, 3), np.uint8)
        m[...] = colors[0]
        m[:10] = colors[1]
        write_png(root / "masks" / f"{name}.png", m)


def _unknown_colour(root: Path) -> dict:
    make_pairs(root)
    _rgb_masks(root, [(255, 0, 0), (0, 255, 0)])
    bad = np.array(Image.open(root / "masks" / "s4.png"))
    bad[3, 3] = (12, 34, 56)
    write_png(root / "masks" / "s4.png", bad)
    return {"colors": [[255, 0, 0], [0, 255, 0]]}


def _index_out_of_range(root: Path) -> dict:
    make_pairs(root, mask_value=2)
    write_png(root / "masks" / "s3.png", _mask(value=7))
    return {"num_classes": 3}


def _palette_out_of_range(root: Path) -> dict:
    make_pairs(root)
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0] + [9, 9, 9] * 253
    for i, name in enumerate(NAMES):
        write_png(root / "masks" / f"{name}.png", _mask(value=5 if name == "s2" else 1), mode="L", palette=palette)
    return {"num_classes": 2, "mask_mode": "palette"}


def _unicode(root: Path) -> dict:
    names = ["a b", "é ü", "日本 語", "x  y", "naïve-1", "Ωmega"]
    make_pairs(root / "données ü 数据", names)
    return {"data": str(root / "données ü 数据")}


def _folder_symlink_loop(root: Path) -> None:
    os.symlink(root / "images", root / "images" / "loop")  # images/loop -> images
    os.symlink(root / "masks", root / "masks" / "loop.png")  # a folder link that even looks like a mask
    os.symlink(root, root / "images" / "up")


def _file_symlink_loop(root: Path) -> None:
    os.symlink("s9.png", root / "images" / "s9.png")  # a link to itself


def _dangling_symlink(root: Path) -> None:
    (root / "images" / "s1.png").unlink()
    os.symlink(root / "nowhere" / "s1.png", root / "images" / "s1.png")


def _duplicate_mask_stem(root: Path) -> None:
    write_png(root / "masks" / "s4.tif", _mask())  # beside masks/s4.png: which one is the mask?


def _one_by_one_pair(root: Path) -> None:
    write_png(root / "images" / "s0.png", _image(0, (1, 1)))
    write_png(root / "masks" / "s0.png", _mask((1, 1)))


def _list_file_not_utf8(root: Path) -> dict:
    make_pairs(root)
    (root / "train.txt").write_bytes(b"images/\xff\xfe.png\n")
    return {"data": str(root / "train.txt")}


def _list_layout(edit: Callable[[list[str]], list[str]]) -> Callable[[Path], dict]:
    """A case builder: the valid dataset listed in train.txt, whose lines ``edit`` changes."""
    def build(root: Path) -> dict:
        make_pairs(root)
        lines = [f"images/{n}.png\tmasks/{n}.png" for n in NAMES]
        (root / "train.txt").write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")
        return {"data": str(root / "train.txt")}
    return build


CASES = [
    Case("truncated_png_image", _with(lambda r: replace(r, "images/s2.png", truncated(_image(2), "PNG"))), "s2.png", 5),
    Case("truncated_jpeg_image", _with(lambda r: replace(r, "images/s3.jpg", truncated(_image(3), "JPEG"))), "s3.jpg", 5),
    Case("truncated_tiff_image", _with(lambda r: replace(r, "images/s4.tif", truncated(_image(4), "TIFF"))), "s4.tif", 5),
    Case("truncated_png_mask", _with(lambda r: replace(r, "masks/s1.png", truncated(_mask(), "PNG"))), "s1.png", 5),
    Case("png_header_only", _with(lambda r: replace(r, "images/s5.png", _bytes(_image(5), "PNG")[:33])), "s5.png", 5),
    Case("zero_byte_image", _with(lambda r: replace(r, "images/s2.png", b"")), "s2.png", 5),
    Case("zero_byte_mask", _with(lambda r: replace(r, "masks/s3.png", b"")), "s3.png", 5),
    Case("zero_byte_tiff", _with(lambda r: replace(r, "images/s1.tiff", b"")), "s1.tiff", 5),
    Case("png_named_tif", _with(lambda r: replace(r, "images/s2.tif", _bytes(_image(2), "PNG"))), "s2.tif", 5),
    Case("text_named_png", _with(lambda r: replace(r, "images/s4.png", b"just some notes\n")), "s4.png", 5),
    Case("pdf_named_jpg", _with(lambda r: replace(r, "masks/s0.jpg", b"%PDF-1.4\n%\xe2\xe3\n1 0 obj\n")), "s0.jpg", 5),
    Case("zero_width_png", _with(lambda r: replace(r, "images/s3.png", zero_width_png())), "s3.png", 5),
    Case("zero_height_tiff", _with(lambda r: replace(r, "images/s3.tif", _bytes(np.zeros((0, 7), np.uint8), "TIFF"))),
         "s3.tif", 5),
    Case("mask_size_mismatch", _with(lambda r: write_png(r / "masks" / "s1.png", _mask((SIZE - 1, SIZE)))), "s1.png", 5),
    Case("one_pixel_mask_for_full_image", _with(lambda r: write_png(r / "masks" / "s5.png", _mask((1, 1)))),
         "s5.png", 5),
    Case("unknown_mask_colour", _unknown_colour, "s4.png", 5),
    Case("class_index_beyond_num_classes", _index_out_of_range, "s3.png", 5),
    Case("palette_index_beyond_num_classes", _palette_out_of_range, "s2.png", 5),
    Case("mask_tiff_stack", _with(lambda r: replace(r, "masks/s2.tif", _bytes(np.zeros((3, 2, SIZE, SIZE), np.uint8),
                                                                              "TIFF"))), "s2.tif", 5),
    Case("mask_non_integer_float", _with(lambda r: replace(r, "masks/s4.tif", _bytes(
        np.full((SIZE, SIZE), 0.5, np.float32), "TIFF"))), "s4.tif", 5),
    Case("image_complex_tiff", _with(lambda r: replace(r, "images/s0.tif", _bytes(
        np.ones((SIZE, SIZE), np.complex64), "TIFF"))), "s0.tif", 5),
    Case("image_with_other_channel_count", _with(lambda r: replace(r, "images/s1.tif", _bytes(
        np.zeros((SIZE, SIZE, 2), np.uint8), "TIFF"))), "s1.tif", 5),
    Case("image_without_mask", _with(lambda r: (r / "masks" / "s2.png").unlink()), "s2.png", 5),
    Case("dangling_symlink", _with(_dangling_symlink), "s1.png", 5),
    Case("file_symlink_loop", _with(_file_symlink_loop), "s9.png", 6),
    Case("duplicate_image_stems", _with(lambda r: write_png(r / "images" / "s1.jpg", _image(9))), "s1.jpg"),
    Case("duplicate_mask_stems", _with(_duplicate_mask_stem), "s4.tif"),
    Case("list_file_missing_entry", _list_layout(lambda ls: ls + ["images/gone.png\tmasks/gone.png"]), "gone.png"),
    Case("list_file_three_fields", _list_layout(lambda ls: ls[:2] + ["images/s2.png masks/s2.png extra"]), "train.txt"),
    Case("list_file_not_utf8", _list_file_not_utf8, "train.txt"),
    # Inputs that look odd but are valid: they must load, whole and right.
    Case("unicode_and_spaces_in_paths", _unicode, None),
    Case("folder_symlink_loops", _with(_folder_symlink_loop), None),
    Case("jpeg_bytes_named_png", _with(lambda r: replace(r, "images/s2.png", _bytes(_image(2), "JPEG"))), None),
    Case("folder_named_like_an_image", _with(lambda r: (r / "images" / "s7.png").mkdir()), None),
    Case("one_by_one_pair", _with(_one_by_one_pair), None),
    Case("gray_image_among_rgb", _with(lambda r: write_png(r / "images" / "s3.png", _image(3)[..., 0])), None),
]


def load_dataset(data: Path, **overrides) -> SegmentationDataset:
    """Plan and decode every split, as training would (cache=True decodes everything up front)."""
    plan = plan_data(build_config({"data": str(data), **overrides}))
    samples = plan.splits["train"] + plan.splits["val"] + plan.splits["test"]
    return SegmentationDataset(samples, plan.codec, plan.in_channels, cache=True,
                               on_error=overrides.get("on_error", "raise"), workers=2)


def _build(case: Case, tmp_path: Path) -> tuple[Path, dict]:
    """Build ``case`` in tmp_path; returns the data path and the config overrides it needs."""
    overrides = case.build(tmp_path) or {}
    data = Path(overrides.pop("data", tmp_path))
    return data, overrides


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_on_error_raise_names_the_file_or_loads(case, tmp_path):
    data, overrides = _build(case, tmp_path)
    TRIED[case.name] += 1
    if case.offender is None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a valid dataset loads without any "skipped" warning
            ds = load_dataset(data, **overrides)
        assert len(ds) == case.works
        for image, mask in ds.cached_arrays():
            assert image.shape[:2] == mask.shape and set(np.unique(mask)) <= {0, 1}
        return
    with pytest.raises(DataError) as err:
        load_dataset(data, **overrides)
    assert case.offender in str(err.value), str(err.value)
    assert "Traceback" not in str(err.value)


@pytest.mark.parametrize("case", [c.param() for c in CASES if c.offender])
def test_on_error_skip_warns_and_drops_exactly_the_bad_sample(case, tmp_path):
    data, overrides = _build(case, tmp_path)
    TRIED[case.name + "+skip"] += 1
    if case.skip_left is None:  # a problem of the dataset's layout, not of one sample: skipping cannot fix it
        with pytest.raises(DataError, match=case.offender.replace(".", r"\.")):
            load_dataset(data, on_error="skip", **overrides)
        return
    with pytest.warns(UserWarning) as record:
        ds = load_dataset(data, on_error="skip", **overrides)
    assert len(ds) == case.skip_left
    assert all(case.offender not in str(s.image) + str(s.mask) for s in ds.samples), "the bad sample was kept"
    assert any(case.offender in str(w.message) for w in record), [str(w.message) for w in record]


def test_unicode_dataset_keeps_its_names(tmp_path):
    data, _ = _build(CASES[[c.name for c in CASES].index("unicode_and_spaces_in_paths")], tmp_path)
    ids = sorted(s.id for s in plan_data(build_config({"data": str(data), "split": "1:0:0"})).splits["train"])
    assert ids == sorted(["a b", "é ü", "日本 語", "x  y", "naïve-1", "Ωmega"])


# ---- the commands on broken data: an error naming the file on stderr, no traceback ------------------------------------------

TRAIN = ["epochs=1", "batch=4", "workers=0", "model=unet_small", "precision=fp32", "augment=none"]


def test_data_check_lists_every_broken_file(tmp_path, capsys):
    make_pairs(tmp_path)
    replace(tmp_path, "images/s1.png", truncated(_image(1), "PNG"))
    replace(tmp_path, "masks/s2.png", b"")
    replace(tmp_path, "images/s4.tif", _bytes(_image(4), "PNG"))
    TRIED["cli data check"] += 1
    assert main(["data", "check", f"data={tmp_path}"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "3 problem(s)" in out and all(name in out for name in ("s1.png", "s2.png", "s4.tif"))


@pytest.mark.parametrize("case_name", ["zero_byte_image", "duplicate_image_stems", "class_index_beyond_num_classes",
                                       "list_file_not_utf8"])
def test_train_on_broken_data_exits_2_naming_the_file(case_name, tmp_path, capsys):
    case = CASES[[c.name for c in CASES].index(case_name)]
    data, overrides = _build(case, tmp_path)
    TRIED["cli train " + case_name] += 1
    args = [f"{k}={v}" for k, v in overrides.items()]
    # split=1:0:0 puts every sample in training (with 8:1:1 the bad one may sit in the test split, unread by train)
    assert main(["train", f"data={data}", f"project={tmp_path / 'runs'}", "split=1:0:0", *TRAIN, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and case.offender in err and "Traceback" not in err


def _split_folders(root: Path, broken: str) -> Path:
    """train/ and val/ folders (so the order of training samples is known) with one zero-byte training image."""
    for split, names in {"train": ["a0", "a1", "a2", "a3", "a4"], "val": ["v0", "v1"]}.items():
        make_pairs(root / split, names)
    replace(root, f"train/images/{broken}.png", b"")
    return root


def test_train_with_on_error_skip_on_a_unicode_path_trains_without_the_bad_file(tmp_path, capsys):
    data = _split_folders(tmp_path / "jeu de données ü", broken="a2")
    TRIED["cli train skip"] += 1
    with pytest.warns(UserWarning, match="a2.png"):
        code = main(["train", f"data={data}", f"project={tmp_path / 'runs'}", "name=skip", "on_error=skip", *TRAIN])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "runs" / "skip" / "checkpoints" / "last.pt").exists()
    assert "4 train / 2 val images" in capsys.readouterr().out


def test_train_with_on_error_skip_when_the_first_image_is_broken(tmp_path, capsys):
    data = _split_folders(tmp_path, broken="a0")
    TRIED["cli train skip first"] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["train", f"data={data}", f"project={tmp_path / 'runs'}", "on_error=skip", *TRAIN])
    assert code == 0, capsys.readouterr().err


def test_tiny_images_train(tmp_path, capsys):
    make_pairs(tmp_path)
    write_png(tmp_path / "images" / "s0.png", _image(0, (1, 1)))
    write_png(tmp_path / "masks" / "s0.png", _mask((1, 1)))
    for name in NAMES[1:]:
        write_png(tmp_path / "images" / f"{name}.png", _image(1, (16, 16)))
        write_png(tmp_path / "masks" / f"{name}.png", _mask((16, 16)))
    TRIED["cli train tiny"] += 1
    code = main(["train", f"data={tmp_path}", f"project={tmp_path / 'runs'}", *TRAIN])
    assert code == 0, capsys.readouterr().err


def test_mixed_bit_depths_are_refused(tmp_path):
    make_pairs(tmp_path)
    for i, name in enumerate(NAMES):
        gray = _image(i)[..., 0]
        write_png(tmp_path / "images" / f"{name}.png", gray.astype(np.uint16) * 257 if name == "s3" else gray)
    TRIED["mixed bit depths"] += 1
    with pytest.raises(DataError, match=r"s3\.png"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("content", [b"id,rle_mask\n\xff\xfe,1 2\n", b'id,rle_mask\na,"' + b"1 " * 70000 + b"\n"],
                         ids=["not_utf8", "field_too_large"])
def test_broken_rle_csv_is_a_data_error(content, tmp_path):
    from seglab.data.rle import read_rle_csv

    (tmp_path / "train.csv").write_bytes(content)
    TRIED["rle csv"] += 1
    with pytest.raises(DataError, match="train.csv"):
        read_rle_csv(tmp_path / "train.csv")
