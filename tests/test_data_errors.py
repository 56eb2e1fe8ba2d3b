"""Bad input ends in a clear error naming the file (or a documented skip), never a deep trace or a wrong dataset."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_dataset, write_png
from seglab.cli.main import main
from seglab.config import build_config
from seglab.data.dataset import SegmentationDataset
from seglab.data.plan import plan_data
from seglab.errors import DataError

rng = np.random.default_rng(0)


def _dataset(root, n=6, size=(16, 16), mask_value=1):
    for i in range(n):
        write_png(root / "images" / f"{i}.png", rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        m = np.zeros(size, np.uint8)
        m[4:9, 4:9] = mask_value
        write_png(root / "masks" / f"{i}.png", m)
    return root


def _load_all(root, **over):
    plan = plan_data(build_config({"data": str(root), **over}))
    ds = SegmentationDataset(plan.splits["train"] + plan.splits["val"] + plan.splits["test"], plan.codec,
                             plan.in_channels, cache=True, on_error=over.get("on_error", "raise"))
    return ds


def test_truncated_image_names_the_file(tmp_path):
    root = _dataset(tmp_path)
    data = (root / "images" / "3.png").read_bytes()
    (root / "images" / "3.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"3\.png.*(corrupt|truncated)"):
        _load_all(root)


def test_zero_byte_and_non_image_files(tmp_path):
    root = _dataset(tmp_path)
    (root / "images" / "2.png").write_bytes(b"")
    (root / "masks" / "4.png").write_text("this is not a png")
    with pytest.raises(DataError) as err:
        _load_all(root)
    assert "2.png" in str(err.value) and "4.png" in str(err.value)


def test_on_error_skip_drops_bad_pairs_with_a_warning(tmp_path):
    root = _dataset(tmp_path)
    (root / "images" / "2.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="2.png"):
        ds = _load_all(root, on_error="skip")
    assert len(ds) == 5


def test_size_mismatch_names_both_sizes(tmp_path):
    root = _dataset(tmp_path)
    write_png(root / "masks" / "1.png", np.zeros((15, 16), np.uint8))
    with pytest.raises(DataError, match=r"1\.png: mask is 16x15 but its image 1\.png is 16x16"):
        _load_all(root)


def test_unknown_colour_is_reported_with_its_value(tmp_path):
    for i in range(6):
        write_png(tmp_path / "images" / f"{i}.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        m = np.zeros((16, 16, 3), np.uint8)
        m[...] = (255, 0, 0)
        m[:5] = (0, 255, 0)
        write_png(tmp_path / "masks" / f"{i}.png", m)
    bad = np.zeros((16, 16, 3), np.uint8)
    bad[...] = (255, 0, 0)
    bad[0, 0] = (12, 34, 56)
    write_png(tmp_path / "masks" / "5.png", bad)
    with pytest.raises(DataError, match=r"5\.png: unknown mask colour.*\[12, 34, 56\]"):
        _load_all(tmp_path, colors=[[255, 0, 0], [0, 255, 0]])


def test_class_index_out_of_range(tmp_path):
    root = _dataset(tmp_path, mask_value=2)
    write_png(root / "masks" / "0.png", np.full((16, 16), 7, np.uint8))
    with pytest.raises(DataError, match=r"0\.png: class index \[7\] out of range for num_classes=3"):
        _load_all(root, num_classes=3)


def test_empty_folder_and_missing_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no image files"):
        plan_data(build_config({"data": str(tmp_path)}))
    with pytest.raises(DataError, match="no such file or folder"):
        plan_data(build_config({"data": str(tmp_path / "nope")}))
    with pytest.raises(DataError, match="cannot find images and masks"):
        plan_data(build_config({"data": str(tmp_path / "images")}))


def test_missing_masks_are_named_not_silently_dropped(tmp_path):
    root = _dataset(tmp_path)
    (root / "masks" / "4.png").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) have no mask: .*4\.png.*`seglab data check .*` lists every"):
        plan_data(build_config({"data": str(root)}))
    with pytest.warns(UserWarning, match="4.png"):
        plan = plan_data(build_config({"data": str(root), "on_error": "skip"}))
    assert sum(len(v) for v in plan.splits.values()) == 5


def test_duplicate_stems_are_refused(tmp_path):
    root = _dataset(tmp_path)
    write_png(root / "images" / "1.jpg", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="share the stem '1'"):
        plan_data(build_config({"data": str(root)}))


def test_data_check_cli_reports_problems_and_exit_code(tmp_path, capsys):
    root = _dataset(tmp_path)
    assert main(["data", "check", f"data={root}"]) == 0
    write_png(root / "masks" / "1.png", np.zeros((15, 16), np.uint8))
    (root / "images" / "2.png").write_bytes(b"\x89PNG\r\n")
    assert main(["data", "check", f"data={root}"]) == 1
    out = capsys.readouterr().out
    assert "1.png: mask is 16x15" in out and "2.png" in out and "2 problem(s)" in out


def test_data_check_suggests_colour_table(grains_dir, capsys):
    assert main(["data", "check", f"data={grains_dir}"]) == 0
    assert "colors: [[255, 0, 0], [0, 255, 0]]" in capsys.readouterr().out


def test_cli_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert main(["train", f"data={tmp_path}/missing", "epochs=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and "missing" in err
    assert main(["train", "epoch=3"]) == 2
    assert "Did you mean: epochs" in capsys.readouterr().err
    assert main(["trian"]) == 2
    assert "Did you mean 'train'" in capsys.readouterr().err


@pytest.mark.parametrize("name,extra", [("membrane", []), ("tgs-salt", []), ("camvid", ["ignore_index=11"])])
def test_data_check_passes_on_real_datasets(name, extra, capsys):
    root = shared_dataset(name)
    assert main(["data", "check", f"data={root}", *extra]) == 0, capsys.readouterr().out
