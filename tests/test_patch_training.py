"""Few large images (issue #28): the trainer plans, trains on windows, validates by time and by sliding windows.

The data are five generated 192x256 images with three classes of blobs, trained with 32-px windows so the plan sees
images of 48 windows each (as 14 thin sections of 1600x1200 hold 7 windows of 512 px): fast, but the same rules.
"""
from __future__ import annotations

import csv
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import write_png
from seglab.cli.main import main

TINY = ["model=unet_small", "workers=0", "precision=fp32", "report=false", "split=3:1:1"]
WINDOWS = ["crop=32", "batch=4"]  # the plan decides windows per epoch, validation and its interval


def make_blobs(folder: Path, n: int = 5, h: int = 192, w: int = 256, classes: int = 3, seed: int = 0) -> Path:
    """``n`` images of smooth class regions (class 0 most frequent, the last one rare) with index masks."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    tones = np.array([[170, 160, 140], [60, 120, 60], [40, 40, 130]])[:classes]
    for i in range(n):
        field = ndimage.gaussian_filter(rng.standard_normal((classes, h // 8, w // 8)), (0, 2, 2))
        field /= field.std()
        field[0] += 0.5
        field[-1] -= 0.4
        label = np.kron(field.argmax(0), np.ones((8, 8), np.int64)).astype(np.uint8)
        image = np.clip(tones[label] + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        write_png(folder / "images" / f"s{i}.png", image)
        write_png(folder / "masks" / f"s{i}.png", label)
    return folder


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    return make_blobs(tmp_path_factory.mktemp("blobs"))


def _rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _steps(out: str) -> int:
    """The ``N steps/epoch`` the run logged."""
    return int(out.split(" steps/epoch")[0].rsplit(" ", 1)[1])


def test_few_large_images_train_on_windows_write_the_plan_and_evaluate_by_tiles(blobs, tmp_path, capsys):
    args = ["train", f"data={blobs}", f"project={tmp_path}", *TINY, *WINDOWS]
    assert main([*args, "epochs=2", "name=win", "val_tile=64"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "win"
    plan = json.loads((run / "plan.json").read_text())
    # 3 training images of 48 windows: 144 windows cover them once, 36 steps of 4 (at least the 32 of the plan)
    assert plan["windows"] and plan["samples_per_epoch"] == 144 and plan["steps_per_epoch"] == 36
    assert _steps(out) == 36 >= 32
    assert plan["line"] in out and "set by command line: crop, batch, val_tile" in out
    assert "plan: why: samples_per_epoch: 144 windows cover the 3 images once" in out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["crop"], saved["samples_per_epoch"], saved["val_tile"], saved["val_every"]) == (32, 144, 64, 1)
    assert [int(r["epoch"]) for r in _rows(run)] == [1, 2] and all(r["val_miou"] for r in _rows(run))
    # before the plan (one random crop per image per epoch) the same images made one step per epoch
    assert main([*args, "epochs=1", "name=crops", "samples_per_epoch=0"]) == 0
    assert _steps(capsys.readouterr().out) == 1
    # eval scores the 192x256 images by the run's 64-px validation tiles at full resolution, as validation did
    assert main(["eval", f"weights={run / 'checkpoints' / 'last.pt'}", "eval_split=val", "report=false"]) == 0
    out = capsys.readouterr().out
    assert "scored by sliding 64-px windows at full resolution" in out
    scored = json.loads((run / "eval_val" / "metrics.json").read_text())
    assert scored["miou"] == pytest.approx(float(_rows(run)[-1]["val_miou"]), abs=1e-4)
    from PIL import Image

    assert all(Image.open(p).size == (256, 192) for p in (run / "eval_val" / "pred").glob("*.png"))
    # predict, too, takes the run's validation tile unless tile= is given: its maps are the ones eval scored
    weights = f"weights={run / 'checkpoints' / 'last.pt'}"
    source = f"source={blobs / 'images'}"
    for name, extra in (("by_run", []), ("tile64", ["tile=64"]), ("whole", ["tile=0"])):
        assert main(["predict", weights, source, f"project={tmp_path}", f"name={name}", "save=index", *extra]) == 0
        out = capsys.readouterr().out
        assert ("predicted by sliding 64-px windows, as the run validated" in out) == (name == "by_run")
    maps = {name: [np.asarray(Image.open(tmp_path / name / f"s{i}_mask.png")) for i in range(5)]
            for name in ("by_run", "tile64", "whole")}
    assert all(np.array_equal(a, b) for a, b in zip(maps["by_run"], maps["tile64"]))


def test_a_short_budget_trains_on_smaller_windows_than_planned_and_at_half_resolution(tmp_path, capsys):
    """Planned 512-px windows that a budget holds too few steps of are cut (to 256 px here), the model then works at
    half resolution (the budget still holds far fewer than 500 steps; the 8-px label blocks survive halving), and
    the run says so; eval, predict and export answer at full resolution from the checkpoint alone."""
    big = make_blobs(tmp_path / "big", n=5, h=640, w=1024)
    args = ["train", f"data={big}", f"project={tmp_path}", *TINY, "batch=2", "time_limit=0.15"]
    assert main([*args, "name=fit"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "fit"
    plan, saved = json.loads((run / "plan.json").read_text()), yaml.safe_load((run / "config.yaml").read_text())
    assert plan["crop"] == saved["crop"] == 256 and plan["sources"]["crop"] == "plan"
    assert "crop 256 at half resolution, batch 2" in plan["line"] and plan["line"] in out and plan["val_tile"] == 512
    assert "cut to 256 px: time_limit=0.15 min held" in plan["reasons"]["crop"] and "cut to 256 px" in out
    assert plan["scale"] == saved["scale"] == 0.5 and plan["sources"]["scale"] == "plan"
    assert plan["reasons"]["scale"].startswith("half resolution: time_limit=0.15 min holds") and \
        "100.0% of the labelled pixels keep their class" in plan["reasons"]["scale"]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["model_spec"]["scale"] == 0.5
    weights = f"weights={run / 'checkpoints' / 'last.pt'}"
    assert main(["predict", weights, f"source={big / 'images' / 's0.png'}", f"project={tmp_path}", "name=pred",
                 "save=index"]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "pred" / "s0_mask.png").size == (1024, 640)
    assert main(["export", weights]) == 0  # the ONNX parity check passes with the down/up-sampling inside
    assert (run / "checkpoints" / "last.onnx").is_file()
    capsys.readouterr()
    assert main([*args, "name=given", "crop=512", "scale=1"]) == 0  # a crop and scale the user gave are kept
    given = json.loads((tmp_path / "given" / "plan.json").read_text())
    assert (given["crop"], given["scale"], given["sources"]["scale"]) == (512, 1.0, "command line")
    assert "model_spec" in (state := torch.load(tmp_path / "given" / "checkpoints" / "last.pt", weights_only=True))
    assert "scale" not in state["model_spec"]


def test_a_short_budget_trains_whole_images_as_windows(tmp_path, capsys):
    """Whole 480x320 images that a budget holds too few steps of are trained as 256-px windows, validated whole."""
    frames = make_blobs(tmp_path / "frames", n=5, h=320, w=480)
    args = ["train", f"data={frames}", f"project={tmp_path}", *TINY, "batch=2", "time_limit=0.1"]
    assert main([*args, "name=fit"]) == 0
    out = capsys.readouterr().out
    plan = json.loads((tmp_path / "fit" / "plan.json").read_text())
    saved = yaml.safe_load((tmp_path / "fit" / "config.yaml").read_text())
    assert plan["windows"] and plan["crop"] == saved["crop"] == 256 and plan["val_tile"] == 0
    assert saved["samples_per_epoch"] == plan["samples_per_epoch"] > 0 and saved["val_every"] == plan["val_every"]
    assert "whole 480x320 images: time_limit=0.1 min held" in plan["reasons"]["crop"] and plan["line"] in out
    assert main([*args, "name=whole", "samples_per_epoch=0"]) == 0  # one sample per image, as the user asked
    assert not json.loads((tmp_path / "whole" / "plan.json").read_text())["windows"]


def test_time_limit_cuts_an_epoch_longer_than_the_whole_budget(blobs, tmp_path, capsys):
    """An epoch that alone would outlast time_limit (given samples_per_epoch: no plan refit) ends at the budget."""
    import time

    args = ["train", f"data={blobs}", f"project={tmp_path}", *TINY, *WINDOWS, "samples_per_epoch=40000",
            "time_limit=0.05", "name=cut"]
    t0 = time.perf_counter()
    assert main(args) == 0
    seconds = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert "10000 steps/epoch" in out and "reached during epoch 1, after" in out
    assert "reached after epoch" not in out  # one line says the budget ended the run
    images = int(out.split("reached during epoch 1, after ")[1].split(" images")[0])
    assert 0 < images < 40000
    rows = _rows(tmp_path / "cut")
    assert len(rows) == 1 and rows[0]["val_miou"]  # the cut epoch is validated and saved like any last epoch
    assert (tmp_path / "cut" / "checkpoints" / "last.pt").is_file()
    assert seconds < 60  # 3 s of budget; the whole epoch would take minutes


def test_every_planned_key_yields_to_the_command_line_and_the_log_names_the_source(blobs, tmp_path, capsys):
    (tmp_path / "mine.yaml").write_text("val_tile: 96\n")
    given = ["crop=64", "batch=2", "samples_per_epoch=6", "val_every=2", "pad_to=0", "scale=0.5",
             f"cfg={tmp_path / 'mine.yaml'}"]
    assert main(["train", f"data={blobs}", f"project={tmp_path}", "name=given", "epochs=2", *TINY, *given]) == 0
    out = capsys.readouterr().out
    assert "set by command line: crop, pad_to, batch, samples_per_epoch, val_every, scale; cfg file: val_tile" in out
    assert "crop 64 at half resolution, batch 2, 6 windows (3 steps) per epoch" in out and _steps(out) == 3
    plan = json.loads((tmp_path / "given" / "plan.json").read_text())
    assert plan["sources"] == {"crop": "command line", "pad_to": "command line", "batch": "command line",
                               "samples_per_epoch": "command line", "val_tile": "cfg file",
                               "val_every": "command line", "augment": "plan", "scale": "command line"}
    state = torch.load(tmp_path / "given" / "checkpoints" / "last.pt", weights_only=True)
    assert state["model_spec"]["scale"] == 0.5  # a scale given trains (and is restored) at that scale
    saved = yaml.safe_load((tmp_path / "given" / "config.yaml").read_text())
    assert (saved["crop"], saved["batch"], saved["samples_per_epoch"], saved["val_every"], saved["val_tile"]) == \
        (64, 2, 6, 2, 96)
    rows = _rows(tmp_path / "given")
    assert not rows[0]["val_miou"] and rows[1]["val_miou"]  # val_every=2: the second epoch validates


def test_small_images_keep_one_sample_per_image_and_validate_every_epoch(grains_dir, tmp_path, capsys):
    assert main(["train", f"data={grains_dir}", f"project={tmp_path}", "name=small", "epochs=2", "model=unet_small",
                 "workers=0", "batch=4", "report=false"]) == 0
    out = capsys.readouterr().out
    plan = json.loads((tmp_path / "small" / "plan.json").read_text())
    assert not plan["windows"] and plan["val_tile"] == 0 and plan["val_every"] == 1
    assert "whole images, batch 4, one sample per image (5 steps) per epoch" in out and _steps(out) == 5
    assert all(r["val_fg_iou"] for r in _rows(tmp_path / "small"))


class FakeClock:
    """Training epochs take ``epoch`` seconds and validations ``val`` seconds, whatever the machine does."""

    def __init__(self, trainer, monkeypatch, epoch: float, val: float):
        self.now, self.validations = 0.0, []
        real_epoch, real_validate = trainer.train_epoch, trainer.validate

        def train_epoch(*args, **kwargs):
            result = real_epoch(*args, **kwargs)
            self.now += epoch
            return result

        def validate(run):
            self.validations.append(self.now)
            self.now += val
            return real_validate(run)

        monkeypatch.setattr(trainer, "train_epoch", train_epoch)
        monkeypatch.setattr(trainer, "validate", validate)
        monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: self.now))
        from seglab.engine import build

        monkeypatch.setattr(build, "time", types.SimpleNamespace(perf_counter=lambda: 0.0))  # setup: no time


@pytest.mark.parametrize("val_seconds, validated", [(10, [2, 5, 8, 11]), (30, [2, 10])])  # epochs, 0-based
def test_validation_by_time_follows_val_every_and_stays_within_val_share(blobs, tmp_path, capsys, monkeypatch,
                                                                        val_seconds, validated):
    """time_limit=12 on windows plans validation every 2 min; 50-s epochs validate every third epoch unless
    validating would take more than val_share (10%) of the time spent; the last epoch always validates."""
    from seglab.engine import trainer

    clock = FakeClock(trainer, monkeypatch, epoch=50.0, val=val_seconds)
    assert main(["train", f"data={blobs}", f"project={tmp_path}", "name=timed", "epochs=100", "time_limit=12",
                 "samples_per_epoch=8", *TINY, *WINDOWS]) == 0
    out = capsys.readouterr().out
    assert "validation every 2 min" in out and "val_share=0.1" in out
    rows = _rows(tmp_path / "timed")
    done = [int(r["epoch"]) - 1 for r in rows if r["val_miou"]]  # metrics.csv numbers from 1
    assert done == [*validated, len(rows) - 1]  # the last epoch validates whatever the schedule says
    assert clock.now > 12 * 60 - 60  # the budget was spent, up to less than one more epoch
    # validation time counts in the budget and keeps within its share: all but the forced last validation took at
    # most 10% of the run, and each after the first fitted 10% of the time spent until it ended
    assert val_seconds * (len(clock.validations) - 1) <= 0.1 * clock.now
    for k, at in enumerate(clock.validations[1:-1], start=1):
        assert (k + 1) * val_seconds <= 0.1 * (at + val_seconds) + 1e-9
    assert (np.diff(clock.validations[:-1]) >= 120).all()  # never more often than val_every
    assert ("validations wait while they would take more than val_share" in out) == (val_seconds == 30)


@pytest.mark.parametrize("task", ["3 classes, softmax", "binary, sigmoid"])
def test_sliding_window_validation_equals_whole_image_validation(blobs, grains_dir, task):
    """A pointwise model gives the same probabilities tile by tile as on the whole image: same metrics and loss
    (the loss of tiles is taken from their blended probabilities: log-probabilities, or log-odds for one channel)."""
    from seglab.config import build_config
    from seglab.data.dataset import SegmentationDataset
    from seglab.data.formats import Sample
    from seglab.data.masks import MaskCodec
    from seglab.data.plan import plan_data
    from seglab.engine import trainer
    from seglab.losses import build_loss
    from seglab.runtime.normalize import Normalizer
    from seglab.runtime.precision import resolve_precision

    if task.startswith("binary"):  # 64x64 grains by 32-px tiles overlapping by 8 px: 3 x 3 tiles
        data = plan_data(build_config({"data": str(grains_dir)}))
        ds = SegmentationDataset(data.splits["train"][:4], data.codec, 3, cache=True)
        channels, loss, tile = 1, "bce", 32  # (Dice would differ: it pools a batch, and tiles go one image a time)
    else:  # 192x256 by 64-px tiles overlapping by 16 px: 4 x 5 tiles
        samples = [Sample(blobs / "images" / f"s{i}.png", blobs / "masks" / f"s{i}.png", str(i)) for i in range(2)]
        ds = SegmentationDataset(samples, MaskCodec("index", 3, 255), 3, cache=True)
        channels, loss, tile = 3, "ce", 64
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, channels, 1)

    def validate(tile: int) -> dict:
        run = types.SimpleNamespace(eval_model=model, precision=resolve_precision("fp32", "cpu"), val_ds=ds,
                                    normalize=Normalizer([0.5] * 3, [0.25] * 3, 255.0), train_ds=ds, world=1,
                                    cfg=build_config({"val_tile": tile, "batch": 4}),
                                    loss_fn=build_loss(loss, num_classes=channels, ignore_index=255))
        return trainer.validate(run)

    whole, tiled = validate(0), validate(tile)
    assert 0.05 < whole["miou"] < 0.95  # a model that gets some pixels wrong, so the comparison means something
    for key in ("loss", "pixel_acc", "miou", "mpa", "fwiou"):
        assert tiled[key] == pytest.approx(whole[key], abs=1e-4), key
    assert torch.equal(tiled["confusion"], whole["confusion"])


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)


def test_a_resumed_window_run_draws_the_same_windows(blobs, tmp_path):
    """2 epochs, then resumed to 3 == 3 epochs at once: window draws, augmentations and weights carry over."""
    flat = ["scheduler=none", "deterministic=true", "seed=3", "samples_per_epoch=16", f"project={tmp_path}", *TINY,
            *WINDOWS]
    assert main(["train", f"data={blobs}", "epochs=3", "name=ref", *flat]) == 0
    assert main(["train", f"data={blobs}", "epochs=2", "name=cut", *flat]) == 0
    assert main(["train", f"resume={tmp_path / 'cut'}", "epochs=3"]) == 0
    ref, got = _weights(tmp_path / "ref"), _weights(tmp_path / "cut")
    for key, value in ref["model"].items():
        assert torch.allclose(got["model"][key].float(), value.float(), atol=1e-6), key
    assert got["val_schedule"]["runs"] == 3 and got["config"]["samples_per_epoch"] == 16
    assert [float(r["train_loss"]) for r in _rows(tmp_path / "cut")] == pytest.approx(
        [float(r["train_loss"]) for r in _rows(tmp_path / "ref")], rel=1e-5)


def test_slow_steps_cut_planned_window_epochs_to_the_budget_and_resume_keeps_the_cut(blobs, tmp_path, capsys,
                                                                                     monkeypatch):
    from seglab.engine import build

    monkeypatch.setattr(build, "time_steps", lambda run, **_: 5.0)  # 12 min x 0.9 / (10 epochs x 5 s): 12.96 -> 12
    assert main(["train", f"data={blobs}", f"project={tmp_path}", "name=cut", "epochs=1", "time_limit=12", *TINY,
                 *WINDOWS]) == 0
    out = capsys.readouterr().out
    assert "48 windows (12 steps) per epoch" in out and _steps(out) == 12
    assert "cut to 12 steps, so 10 epochs fit 12 min at 5 s/step" in out
    plan = json.loads((tmp_path / "cut" / "plan.json").read_text())
    assert (plan["samples_per_epoch"], plan["steps_per_epoch"]) == (48, 12) and "s/step" in \
        plan["reasons"]["samples_per_epoch"]
    assert yaml.safe_load((tmp_path / "cut" / "config.yaml").read_text())["samples_per_epoch"] == 48
    monkeypatch.setattr(build, "time_steps", lambda run, **_: pytest.fail("a resumed run does not re-plan"))
    assert main(["train", f"resume={tmp_path / 'cut'}", "epochs=2"]) == 0
    out = capsys.readouterr().out
    assert _steps(out) == 12 and "(plan.json of the run)" in out


def test_two_cpu_ranks_train_on_disjoint_windows(blobs, tmp_path):
    assert main(["train", f"data={blobs}", f"project={tmp_path}", "name=ddp", "epochs=1", "cpu_procs=2",
                 "samples_per_epoch=16", *TINY, *WINDOWS]) == 0
    shards = [(tmp_path / "ddp" / "ranks" / f"rank{r}.txt").read_text().splitlines() for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 8  # 16 windows, 8 a rank, one window a line: id top left h w
    assert all(len(line.split()) == 5 for line in shards[0] + shards[1])
    assert not set(shards[0]) & set(shards[1])  # rank r takes windows r, r+2, ... of one draw


def test_a_time_budget_ends_with_a_shortened_epoch_that_fills_it(blobs, tmp_path, capsys, monkeypatch):
    """5-step epochs of 11 s in a 60-s budget: 5 whole epochs and a last one of the 2 steps the 5 s left hold,
    on a schedule that anneals to its end there (before, the last 5 s went unused)."""
    from seglab.engine import build, trainer

    now = [0.0]
    real_epoch = trainer.train_epoch

    def train_epoch(run, loader, epoch, stop, total, max_steps=0, time_left=None):
        # time_left is on this simulated clock, which the real steps do not read: the epoch runs whole
        result = real_epoch(run, loader, epoch, stop, total, max_steps)
        now[0] += 2.2 * (max_steps or run.steps_per_epoch)
        return result

    monkeypatch.setattr(trainer, "train_epoch", train_epoch)
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(build, "time", types.SimpleNamespace(perf_counter=lambda: 0.0))  # setup: no simulated time
    assert main(["train", f"data={blobs}", f"project={tmp_path}", "name=fill", "epochs=100", "time_limit=1",
                 "samples_per_epoch=20", "val_every=100", "lr=0.001", *TINY, *WINDOWS]) == 0
    out = capsys.readouterr().out
    assert "fits 6 of the 100 epochs, the last one 2 of 5 steps, (schedule refitted)" in out
    rows = _rows(tmp_path / "fill")
    assert len(rows) == 6 and float(rows[-1]["train_images_per_s"]) > 0
    assert now[0] == pytest.approx(5 * 11 + 2 * 2.2) and now[0] <= 60
    assert float(rows[-1]["lr"]) == pytest.approx(0.01 * 0.001, rel=1e-3)  # the cosine ended at its floor
    last = torch.load(tmp_path / "fill" / "checkpoints" / "last.pt", weights_only=True)
    assert (last["epoch"], last["total_epochs"], last["last_epoch_steps"]) == (5, 6, 2)
