"""predict, measure, explain and export never lose earlier outputs, survive bad files, and say what they wrote.

- a second run writes a new numbered folder (``predict2``), also when ``name=``/``out=`` names a full one, unless
  ``exist_ok=true``; export refuses to replace an ``.onnx`` without it;
- a folder holding a corrupt PNG and a ``.heic`` is predicted (measured, explained) but for those two, which are
  listed at the end with different reasons; ``on_error=raise`` stops at the first with a clear error;
- each command's last line is ``Results saved to FOLDER: ...`` naming the backend and precision;
- they run clean under ``-W error::UserWarning`` (no "NumPy array is not writable" from gray images).

The model is an untrained ``unet_small`` for one-channel images saved as a checkpoint directly (no training), so
every test is fast.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.cli.main import main
from seglab.data.io import read_image, read_mask_raw
from seglab.errors import DataError
from seglab.runtime.run_dir import output_dir, refuse_existing, saved_line, unique_dir

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder holding checkpoints/best.pt of an untrained one-channel binary unet_small."""
    from seglab.export.bench import random_meta
    from seglab.models import create_model
    from seglab.runtime.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("unet_small", num_classes=1, in_channels=1)
    meta = {**random_meta(1), "class_names": ["background", "grain"], "views": 1, "view_channels": [1]}
    folder = tmp_path_factory.mktemp("outputs_safe") / "run"
    save_checkpoint({"model": model.state_dict(), "model_spec": model.seglab_spec, "meta": meta},
                    folder / "checkpoints" / "best.pt")
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three 8-bit gray PNGs (read-only arrays when decoded by PIL), a truncated PNG and a .heic photograph."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(3):
        image = np.zeros((40, 48), np.uint8)
        image[8 + i:24 + i, 10:30] = 200  # a bright block: a grain for measure
        Image.fromarray(np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)).save(
            folder / f"img_{i}.png")
    whole = (folder / "img_0.png").read_bytes()
    (folder / "broken.png").write_bytes(whole[: len(whole) // 2])
    (folder / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    (folder / "notes.md").write_text("not an image, not a photograph: ignored")
    return folder


def good(images: Path) -> list[Path]:
    return sorted(images.glob("img_*.png"))


def last_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    return lines[-1]


# ---- never overwrite --------------------------------------------------------------------------------------------

def test_two_predicts_give_two_folders_and_exist_ok_reuses_one(run, images, tmp_path, capsys):
    source = good(images)[0]
    for _ in range(2):
        assert main(["predict", f"weights={run}", f"source={source}", f"project={tmp_path}"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predict", "predict2"]
    first = (tmp_path / "predict" / "img_0_mask.png").stat().st_mtime_ns
    # name= of a folder holding files: a numbered one beside it; exist_ok=true writes into it
    assert main(["predict", f"weights={run}", f"source={source}", f"project={tmp_path}", "name=predict"]) == 0
    assert (tmp_path / "predict3" / "img_0_mask.png").is_file()
    assert (tmp_path / "predict" / "img_0_mask.png").stat().st_mtime_ns == first
    capsys.readouterr()
    assert main(["predict", f"weights={run}", f"source={source}", f"project={tmp_path}", "name=predict",
                 "exist_ok=true"]) == 0
    assert last_line(capsys).startswith(f"Results saved to {tmp_path / 'predict'}: 1 mask, 1 colour mask, 1 overlay")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predict", "predict2", "predict3"]


def test_measure_and_explain_number_their_folders_too(run, images, tmp_path, capsys):
    image = good(images)[1]
    for _ in range(2):
        assert main(["measure", f"weights={run}", f"image={image}", f"out={tmp_path / 'm'}"]) == 0
    assert (tmp_path / "m" / "grains.csv").is_file() and (tmp_path / "m2" / "grains.csv").is_file()
    assert main(["measure", f"weights={run}", f"image={image}", f"out={tmp_path / 'm'}", "exist_ok=true"]) == 0
    assert not (tmp_path / "m3").exists()
    mask = tmp_path / "m" / "img_1_mask.png"
    assert main(["measure", f"mask={mask}", f"out={tmp_path / 'm'}"]) == 0
    assert (tmp_path / "m3" / "grains.csv").is_file()
    assert last_line(capsys).endswith("(measured the given mask; no model ran)")
    for _ in range(2):
        assert main(["explain", f"weights={run}", f"source={image}", f"out={tmp_path / 'cam'}"]) == 0
    assert any((tmp_path / "cam").glob("img_1_cam_*_heatmap.png"))
    assert any((tmp_path / "cam2").glob("img_1_cam_*_heatmap.png"))


def test_a_failed_start_leaves_no_empty_folder(run, images, tmp_path, capsys):
    assert main(["predict", f"weights={run}", f"source={images / 'broken.png'}", f"project={tmp_path}"]) == 2
    assert main(["predict", f"weights={run}", f"source={images / 'nope.png'}", f"project={tmp_path}"]) == 2
    assert main(["measure", f"mask={images / 'broken.png'}", f"out={tmp_path / 'm'}"]) == 2
    assert main(["explain", f"weights={run}", f"source={images / 'photo.heic'}", f"out={tmp_path / 'cam'}"]) == 2
    assert list(tmp_path.iterdir()) == []


def test_unique_dir_output_dir_and_refuse_existing(tmp_path):
    assert unique_dir(tmp_path / "a") == tmp_path / "a"  # made, empty
    assert unique_dir(tmp_path / "a") == tmp_path / "a"  # an empty folder is taken as it is
    (tmp_path / "a" / "x").write_text("x")
    assert unique_dir(tmp_path / "a") == tmp_path / "a2"
    assert unique_dir(tmp_path / "a", exist_ok=True) == tmp_path / "a"
    (tmp_path / "f").write_text("a file of that name")
    assert unique_dir(tmp_path / "f") == tmp_path / "f2"
    with pytest.raises(RuntimeError):
        with output_dir(tmp_path / "b") as out:
            assert out.is_dir()
            raise RuntimeError("failed before writing")
    assert not (tmp_path / "b").exists()
    with pytest.raises(RuntimeError), output_dir(tmp_path / "a", exist_ok=True):
        raise RuntimeError("a folder that was there is never removed")
    assert (tmp_path / "a" / "x").exists()
    refuse_existing([tmp_path / "new.onnx"])
    refuse_existing([tmp_path / "a" / "x"], exist_ok=True)
    with pytest.raises(Exception, match=r"x exists already and would be replaced; pass exist_ok=true .* or out="):
        refuse_existing([tmp_path / "a" / "x"], fix="out=OTHER.onnx")
    assert saved_line("runs/p", {"mask": 1, "overlay": 2}, "backend torch", ["1 file skipped"]) == \
        "Results saved to runs/p: 1 mask, 2 overlays, 1 file skipped (backend torch)"


def test_export_refuses_to_replace_an_onnx_without_exist_ok(run, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    assert main(["export", f"weights={run}", "imgsz=32"]) == 0
    onnx_path = run / "checkpoints" / "best.onnx"
    assert onnx_path.is_file()
    assert last_line(capsys) == (f"Results saved to {onnx_path.parent}: ONNX model best.onnx (backend onnx, "
                                 "precision fp32, exported from the torch fp32 model)")
    before = onnx_path.read_bytes()
    assert main(["export", f"weights={run}", "imgsz=32"]) == 2
    err = capsys.readouterr().err
    assert f"{onnx_path} exists already" in err and "exist_ok=true" in err and "out=" in err
    assert onnx_path.read_bytes() == before
    # int8: the fp32 file is free (out=), but best.int8.onnx beside it is checked before any work
    (tmp_path / "m.int8.onnx").write_text("keep me")
    assert main(["export", f"weights={run}", f"out={tmp_path / 'm.onnx'}", "quantize=int8",
                 f"calib={run}"]) == 2
    assert "m.int8.onnx exists already" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists() and (tmp_path / "m.int8.onnx").read_text() == "keep me"
    assert main(["export", f"weights={run}", "imgsz=32", "exist_ok=true"]) == 0
    assert onnx_path.read_bytes() != before or onnx_path.stat().st_size == len(before)
    # predict backend=onnx still finds best.onnx beside the weights, and says which backend ran
    capsys.readouterr()
    image = tmp_path / "one.png"
    Image.fromarray(np.full((20, 24), 90, np.uint8)).save(image)
    assert main(["predict", f"weights={run}", "backend=onnx", f"source={image}", f"project={tmp_path}",
                 "save=index"]) == 0
    assert last_line(capsys) == (f"Results saved to {tmp_path / 'predict'}: 1 mask "
                                 "(backend onnx, precision fp32, device cpu)")


# ---- folders survive bad files ----------------------------------------------------------------------------------

def test_predict_folder_skips_corrupt_and_heic_files_with_their_reasons(run, images, tmp_path, capsys):
    assert main(["predict", f"weights={run}", f"source={images}", f"project={tmp_path}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sorted(p.name for p in (tmp_path / "predict").glob("*_mask.png")) == \
        ["img_0_mask.png", "img_1_mask.png", "img_2_mask.png"]
    listed = out[out.index(next(line for line in out if line.startswith("skipped 2 file(s)"))):]
    broken = next(line for line in listed if "broken.png" in line)
    heic = next(line for line in listed if "photo.heic" in line)
    assert "corrupt or truncated image" in broken
    assert "unsupported format (.heic)" in heic and "no such" not in heic
    assert not any("notes.md" in line for line in out)  # other files are not images: not reported
    assert out[-1].startswith(f"Results saved to {tmp_path / 'predict'}: 3 masks, 3 colour masks, 3 overlays, "
                              "1 legend, 2 files skipped as listed above (backend torch, precision ")


def test_on_error_raise_stops_with_a_clear_error(run, images, tmp_path, capsys):
    assert main(["predict", f"weights={run}", f"source={images}", f"project={tmp_path}", "on_error=raise"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "broken.png: corrupt or truncated image" in err
    # single files: an error, and the reasons differ
    assert main(["predict", f"weights={run}", f"source={images / 'photo.heic'}", f"project={tmp_path}"]) == 2
    assert "photo.heic: unsupported format (.heic)" in capsys.readouterr().err
    assert main(["predict", f"weights={run}", f"source={images / 'gone.png'}", f"project={tmp_path}"]) == 2
    assert "gone.png: no such file or folder" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"photo\.heic: unsupported format \(\.heic\)"):
        read_image(images / "photo.heic")
    with pytest.raises(DataError, match=r"gone\.png: no such file"):
        read_image(images / "gone.png")


def test_a_list_with_a_missing_file_predicts_the_rest(run, images, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{good(images)[0]}\nmissing.png\n{good(images)[2]}\n")
    assert main(["predict", f"weights={run}", f"source={listing}", f"project={tmp_path}", "save=index"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any("missing.png: no such file" in line for line in out)
    assert out[-1].startswith(f"Results saved to {tmp_path / 'predict'}: 2 masks, 1 file skipped as listed above")


def test_measure_and_explain_skip_bad_files_of_a_folder(run, images, tmp_path, capsys):
    assert main(["measure", f"weights={run}", f"image={images}", f"out={tmp_path / 'm'}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert all((tmp_path / "m" / f"img_{i}" / "grains.csv").is_file() for i in range(3))
    assert any("unsupported format (.heic)" in line for line in out)
    assert any("broken.png: corrupt or truncated image" in line for line in out)
    assert out[-1].startswith(f"Results saved to {tmp_path / 'm'}: 3 predicted masks, 3 grain tables")
    assert "2 files skipped as listed above (backend torch, precision" in out[-1]
    assert main(["explain", f"weights={run}", f"source={images}", f"out={tmp_path / 'cam'}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any("unsupported format (.heic)" in line for line in out)
    assert out[-1].startswith(f"Results saved to {tmp_path / 'cam'}: 3 heatmaps, 3 overlays, 3 panels, 2 files "
                              "skipped as listed above (backend torch, precision fp32, device ")
    assert main(["explain", f"weights={run}", f"source={images}", f"out={tmp_path / 'cam'}", "on_error=raise"]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert not (tmp_path / "cam2").exists()


# ---- no warnings: writable arrays from the readers --------------------------------------------------------------

def test_readers_return_writable_arrays(images):
    assert read_image(good(images)[0]).flags.writeable
    assert read_mask_raw(good(images)[0])[0].flags.writeable


RUN_ALL = """
import sys
from seglab.cli.main import main
for command in COMMANDS:
    print("$ seglab", command[0], flush=True)
    code = main(command)
    print(f"exit {code}", flush=True)
"""


def test_commands_run_clean_under_warnings_as_errors(run, images, tmp_path):
    """One fresh interpreter under ``-W error::UserWarning`` runs each command (PyTorch warns about a non-writable
    array once per process, so only a fresh one shows it; one process for all keeps the test fast)."""
    source = ",".join(str(p) for p in good(images)[:2])
    commands = [["predict", f"weights={run}", f"source={source}", f"project={tmp_path}"],
                ["measure", f"weights={run}", f"image={good(images)[0]}", f"out={tmp_path / 'm'}"],
                ["explain", f"weights={run}", f"source={good(images)[0]}", f"out={tmp_path / 'cam'}"]]
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        commands.append(["export", f"weights={run}", f"out={tmp_path / 'w.onnx'}", "imgsz=32",
                         f"check={good(images)[0]}"])
        commands.append(["predict", f"weights={tmp_path / 'w.onnx'}", "backend=onnx", f"source={good(images)[0]}",
                         f"project={tmp_path}", "name=onnx"])
    except ImportError:
        pass
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "SEGLAB_HEARTBEAT": "0"}
    script = f"COMMANDS = {commands!r}\n{RUN_ALL}"
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr[-3000:]
    outputs = done.stdout.split("$ seglab ")[1:]
    assert len(outputs) == len(commands)
    for command, output in zip(commands, outputs):
        lines = output.strip().splitlines()
        assert lines[-1] == "exit 0", (command, output)
        last = lines[-2]  # each command's last line says what it wrote, where, and what computed it
        assert last.startswith("Results saved to ") and " (backend " in last, (command, last)
        assert ("(backend onnx" in last) == (command[0] == "export" or "backend=onnx" in command), last


def test_binary_predictions_are_painted_in_a_colour_that_shows_on_grey_images():
    import numpy as np

    from seglab.data.colors import FOREGROUND, chroma, overlay_classes
    from seglab.inference.predict import run_colors

    old_checkpoint = {"codec": {"mode": "binary"}}  # no class_colors: the built-in black/white of binary masks
    colors = run_colors(old_checkpoint, 2)
    assert tuple(colors[1]) == FOREGROUND and chroma(colors[1]) >= 80
    grey = np.full((8, 8, 3), 150, np.uint8)
    pred = np.zeros((8, 8), np.uint8)
    pred[2:5, 2:5] = 1
    blend = overlay_classes(grey, pred, colors, {0}, 0.7)
    assert (blend[pred == 0] == 150).all()  # the background is left as it is
    assert np.abs(blend[pred == 1].astype(int) - 150).max() > 60  # the object stands out from grey
    # a run's own saturated colour is kept
    assert run_colors({"codec": {"mode": "binary"}, "class_colors": [[0, 0, 0], [0, 200, 0]]}, 2)[1].tolist() == \
        [0, 200, 0]
