"""The command line keeps people informed and never loses their work: one bare PATH where one path is the obvious
argument, each command's own --help, config mistakes caught before any data is read, no run folder from a failed
start, and a last line that says what a command wrote or found."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seglab.cli.main import command_overrides, main
from seglab.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}


def seglab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m seglab ARGS`` in ``cwd``, as a user types it."""
    return subprocess.run([sys.executable, "-m", "seglab", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=600)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder holding a tiny grains dataset (``data/``) and one trained run (``runs/tiny``)."""
    from seglab.data.synthetic import make_grains_dataset

    root = tmp_path_factory.mktemp("cli_paths")
    make_grains_dataset(root / "data", n=12, size=48, seed=1)
    return root


@pytest.fixture(scope="module")
def trained(work) -> tuple[Path, subprocess.CompletedProcess]:
    result = seglab("train", "data=data", "epochs=1", "batch=4", "workers=0", "name=tiny", cwd=work)
    assert result.returncode == 0, result.stderr
    return work / "runs" / "tiny", result


# ---- positional paths -----------------------------------------------------------------------------------------

def test_a_bare_path_is_the_commands_path_key():
    assert command_overrides("eval", ["runs/x", "tta=flip"]) == {"weights": "runs/x", "tta": "flip"}
    assert command_overrides("val", ["runs/x"]) == {"weights": "runs/x"}
    assert command_overrides("predict", ["--tta", "flip", "images/"]) == {"tta": "flip", "source": "images/"}
    assert command_overrides("data check", ["data/grains"]) == {"data": "data/grains"}
    assert command_overrides("data split", ["data/grains", "out=lists"]) == {"data": "data/grains", "out": "lists"}
    # taken as typed (not read as YAML), and a path holding "=" is still a path
    assert command_overrides("predict", ["2021"]) == {"source": "2021"}
    assert command_overrides("eval", ["runs/lr=0.1"]) == {"weights": "runs/lr=0.1"}
    assert command_overrides("eval", ["--report", "false", "runs/x"]) == {"report": False, "weights": "runs/x"}


@pytest.mark.parametrize("args, key", [
    (["eval", "runs/a", "weights=runs/b"], "weights"),
    (["predict", "images/", "source=other/", "weights=runs/a"], "source"),
    (["data", "check", "data/a", "data=data/b"], "data"),
    (["data", "split", "data=data/b", "data/a"], "data"),
])
def test_a_path_given_bare_and_as_its_key_is_one_clear_error(args, key, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{key} given twice" in err and f"or {key}=PATH" in err, err
    assert len(err.strip().splitlines()) == 1


def test_two_bare_paths_are_refused_with_the_way_to_give_many(capsys):
    assert main(["eval", "runs/a", "runs/b"]) == 2
    assert "takes one path" in capsys.readouterr().err
    assert main(["predict", "a.png", "b.png", "weights=runs/a"]) == 2
    assert "a folder or a list file" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="did you mean data="):
        command_overrides("train", [str(SRC)])  # train takes key=value only; an existing path gets the hint
    for args, says in ((["eval"], "seglab eval PATH (or weights=PATH)"),
                       (["predict", "weights=runs/a"], "seglab predict PATH (or source=PATH)"),
                       (["data", "check"], "seglab data check PATH (or data=PATH)")):
        assert main(args) == 2
        assert says in capsys.readouterr().err, args


def test_data_check_eval_predict_and_report_take_their_path_bare(trained, monkeypatch, capsys):
    run, _ = trained
    monkeypatch.chdir(run.parent.parent)
    assert main(["data", "check", "data"]) == 0
    line = last_line(capsys.readouterr().out)
    assert line.startswith("data check of data: 12 image(s)") and line.endswith("no problems found"), line

    assert main(["eval", "runs/tiny", "report=false"]) == 0
    assert (run / "eval" / "metrics.json").exists()
    assert str(Path("runs/tiny/eval")) in last_line(capsys.readouterr().out)

    assert main(["predict", "data/images", "weights=runs/tiny", "name=pred"]) == 0
    assert len(list(Path("runs/pred").glob("*_mask.png"))) == 12
    assert str(Path("runs/pred")) in last_line(capsys.readouterr().out)

    assert main(["report", "runs/tiny"]) == 0
    assert last_line(capsys.readouterr().out) == f"report written to {Path('runs/tiny/report.html')}"


def test_a_large_tiff_gets_its_label_tiff_colour_mask_and_overlay(trained, monkeypatch, capsys):
    """Past 2048 px a TIFF is predicted window by window into a label TIFF; its colour mask and overlay are still
    written (a 2560x1920 SEM micrograph used to get the label TIFF alone, without a word)."""
    import tifffile
    from PIL import Image

    run, _ = trained
    monkeypatch.chdir(run.parent.parent)
    tile = np.asarray(Image.open(sorted(Path("data/images").iterdir())[0]).convert("RGB"))
    Path("big").mkdir(exist_ok=True)
    tifffile.imwrite("big/wide.tif", np.tile(tile, (2, 2100 // tile.shape[1] + 1, 1))[:, :2100])
    assert main(["predict", "big", "weights=runs/tiny", "name=big_pred"]) == 0
    out = Path("runs/big_pred")
    assert "1 label TIFF, 1 colour mask, 1 overlay" in last_line(capsys.readouterr().out)
    labels = tifffile.imread(out / "wide_mask.tif")
    color = np.asarray(Image.open(out / "wide_color.png"))
    assert labels.shape == (2 * tile.shape[0], 2100) and color.shape == labels.shape + (3,)
    classes = np.unique(labels)
    shades = [np.unique(color[labels == k], axis=0) for k in classes]  # one colour per class, none shared
    assert all(len(c) == 1 for c in shades) and len(np.unique(np.concatenate(shades), axis=0)) == len(classes)
    shown = np.asarray(Image.open(out / "wide_overlay.png"))
    image = tifffile.imread("big/wide.tif")
    assert shown.shape == image.shape and not np.array_equal(shown[labels == 1], image[labels == 1])  # grains painted


def test_train_ends_by_saying_where_its_weights_are(trained):
    run, result = trained
    line = last_line(result.stdout)
    assert line.startswith("done: ") and str(Path("runs/tiny/checkpoints")) in line, result.stdout
    assert (run / "checkpoints" / "best.pt").exists()


def test_classify_train_ends_with_where_its_results_went(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["classify", "train", "data=digits", "epochs=1", "fraction=0.1", "plots=false"]
    assert main(args) == 0
    line = last_line(capsys.readouterr().out)
    assert line.startswith(f"Results saved to {Path('runs/classify/train')}: test accuracy "), line
    assert "best.pt" in line and "results.json" in line


# ---- help -----------------------------------------------------------------------------------------------------

def test_predict_help_lists_predict_keys_with_their_defaults_and_comments(capsys):
    assert main(["predict", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: seglab predict SOURCE weights=RUN")
    for line in ("source: \"\"", "weights: \"\"", "save: index,color,overlay", "backend: torch", "min_area: 0"):
        assert line in out, line
    assert "# predict: an image file, a folder" in out  # the comment beside the key in defaults.yaml
    assert "epochs:" not in out and "optimizer:" not in out and "# seglab defaults" not in out


def test_each_command_help_is_its_own(capsys):
    assert main(["eval", "-h"]) == 0
    out = capsys.readouterr().out
    assert "eval_split: test" in out and "source:" not in out and "save:" not in out
    assert main(["data", "check", "--help"]) == 0
    out = capsys.readouterr().out
    assert "seglab data check FOLDER" in out and "mask_mode: auto" in out and "epochs:" not in out
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 30" in out and "model: unet_small" in out and "eval_split:" not in out
    assert main(["help", "predict"]) == 0
    assert "save: index,color,overlay" in capsys.readouterr().out
    assert main(["measure", "--help"]) == 0
    assert "pixel_size=" in capsys.readouterr().out
    assert main(["help"]) == 0  # the whole commented defaults file
    out = capsys.readouterr().out
    assert "# seglab defaults" in out and "seglab predict FOLDER weights=runs/NAME" in out


def test_classify_train_help_is_classify_help(capsys):
    assert main(["classify", "train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: seglab classify MODE" in out and "model=fast_allconv" in out and "cpu_procs=1" in out
    assert "# seglab defaults" not in out and "eval_split" not in out


# ---- validate early; no run folder from a failed start ------------------------------------------------------

def test_a_wrong_model_name_fails_before_any_data_is_read_and_makes_no_folder(tmp_path, monkeypatch, capsys):
    import seglab.engine.build as build
    import seglab.engine.kfold as kfold

    def no_data_yet(cfg):
        raise AssertionError("data was read before the model name was checked")

    monkeypatch.setattr(build, "plan_data", no_data_yet)
    monkeypatch.setattr(kfold, "plan_data", no_data_yet)
    project = tmp_path / "runs"
    for extra in ([], ["folds=3"]):
        assert main(["train", f"data={tmp_path / 'no_such_data'}", "model=unet_smal", f"project={project}",
                     *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: unknown model 'unet_smal'. Did you mean unet_small"), err
    assert main(["train", f"data={tmp_path / 'no_such_data'}", "model=unet_encoder", "encoder=resnet3",
                 f"project={project}"]) == 2
    assert "unknown timm encoder 'resnet3'. Did you mean resnet34" in capsys.readouterr().err
    for bad, says in (("loss=bce+dise", "unknown loss 'dise'"), ("augment=flips,blur", "augment: unknown"),
                      ("logger=csv,tb2", "unknown logger tb2"), ("model_args={foo: 1}", "does not take")):
        assert main(["train", "data=anything", bad, f"project={project}"]) == 2
        assert says in capsys.readouterr().err, bad
    assert not project.exists()


def test_a_data_error_leaves_no_run_folder(work, tmp_path, capsys):
    project = tmp_path / "runs"
    assert main(["train", f"data={tmp_path / 'missing'}", "epochs=1", f"project={project}"]) == 2
    assert "missing" in capsys.readouterr().err
    broken = tmp_path / "broken"
    for sub in ("images", "masks"):
        (broken / sub).mkdir(parents=True)
        for src in sorted((work / "data" / sub).iterdir()):
            (broken / sub / src.name).write_bytes(src.read_bytes())
    (broken / "images" / "grain_000.png").write_bytes(b"not a png")  # found by the plan, unreadable when loaded
    assert main(["train", f"data={broken}", "epochs=1", "workers=0", f"project={project}"]) == 2
    assert "grain_000.png" in capsys.readouterr().err
    assert not project.exists()
