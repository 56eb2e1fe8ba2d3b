"""The training plan from the dataset's fingerprint, config precedence and sources, val_every, mask_mode vs colors."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml

from conftest import shared_dataset, write_png
from seglab.config import (build_config, config_sources, load_yaml, parse_overrides, parse_val_every,
                           save_config)
from seglab.data.dataset import SegmentationDataset
from seglab.data.fingerprint import Fingerprint, fingerprint_arrays, fingerprint_dataset
from seglab.data.plan import plan_data
from seglab.engine.training_plan import (ORIENTED, PLANNED, ValidationSchedule, plan_run, plan_training,
                                         validation_dataset, window_training)
from seglab.errors import ConfigError, DataError


def stand_in(images: int, h: int, w: int, channels: int = 1, shares: list[float] | None = None,
             views: int = 1) -> Fingerprint:
    """A fingerprint of ``images`` images of one size, as fingerprint_arrays would give."""
    shares = shares or [0.75, 0.25]
    return Fingerprint(images, h, w, h, w, h, w, images * h * w, channels, len(shares), shares, views=views)


THIN_SECTIONS = stand_in(14, 1200, 1600, channels=6, shares=[0.5, 0.2, 0.16, 0.1, 0.04], views=2)
TGS = stand_in(2560, 101, 101, shares=[0.76, 0.24])  # 3200 images, 8:1:1 -> 2560 train
MEMBRANE = stand_in(24, 512, 512, shares=[0.22, 0.78])  # 30 images, 8:1:1 -> 24 train


def test_thin_sections_train_on_windows_and_validate_by_tiles():
    plan = plan_training(THIN_SECTIONS, build_config({"time_limit": 12}))
    assert plan.describe() == (
        "plan: 14 images 1600x1200, 6 channels (2 views), 5 classes (rarest 4%): crop 512, batch 8, 256 windows "
        "(32 steps) per epoch, 1/3 centred on rare classes, validation by 512-px tiles every 2 min")
    assert plan.windows and plan.samples_per_epoch == 256 and plan.steps_per_epoch == 32
    assert plan.val_every == "2m" and plan.val_tile == 512
    assert set(plan.sources.values()) == {"plan"} and "7.3 windows" in plan.reasons["crop"]
    # without a time budget it validates every epoch (an epoch is now 32 steps, not 1)
    assert plan_training(THIN_SECTIONS, build_config({})).val_every == 1


def test_the_rules_give_todays_settings_on_tgs_and_membrane():
    tgs = plan_training(TGS, build_config({}))
    assert (tgs.crop, tgs.pad_to, tgs.batch, tgs.windows, tgs.samples_per_epoch) == (0, 128, 32, False, 0)
    assert (tgs.val_tile, tgs.val_every, tgs.steps_per_epoch) == (0, 1, 80)
    membrane = plan_training(MEMBRANE, build_config({}))
    assert (membrane.crop, membrane.pad_to, membrane.batch, membrane.windows) == (0, 0, 8, False)
    assert (membrane.val_tile, membrane.val_every, membrane.steps_per_epoch) == (0, 1, 3)
    assert "whole images, batch 8, one sample per image (3 steps)" in membrane.describe()
    # the salt recipes keep their own crop/pad_to/batch and still get no windows, also with a time budget
    for recipe, crop in (("tgs-salt", 0), ("tgs-salt-cpu", 96)):
        plan = plan_training(TGS, build_config({"recipe": recipe, "time_limit": 60}))
        assert (plan.crop, plan.pad_to, plan.batch, plan.windows, plan.val_every) == (crop, 128, 32, False, 1)
        assert plan.sources["pad_to"] == "recipe" and plan.sources["samples_per_epoch"] == "plan"


@pytest.mark.parametrize("name, expected", [("tgs-salt", (0, 128, 32, False)), ("membrane", (0, 0, 8, False))])
def test_real_fingerprints_give_todays_settings(name, expected):
    root = shared_dataset(name)
    cfg = build_config({"data": str(root)})
    data = plan_data(cfg)
    ds = SegmentationDataset(data.splits["train"], data.codec, data.in_channels)
    fp = fingerprint_dataset(ds)
    side = 101 if name == "tgs-salt" else 512
    assert (fp.median_h, fp.median_w, fp.channels, fp.num_classes) == (side, side, 1, 2)
    assert 0 < fp.rarest_share < 0.5 and len(fp.mean) == 1 and 0 < fp.mean[0] < 1
    plan = plan_training(fp, cfg)
    assert (plan.crop, plan.pad_to, plan.batch, plan.windows) == expected
    assert (plan.val_tile, plan.val_every) == (0, 1)
    assert plan.augment == "flips" and fp.up_down < 0.1 and fp.left_right < 0.1  # no up and down in EM or seismic
    assert plan.scale == 1.0
    if name == "membrane":  # 1-3 px cell walls: 3.5% of the pixels change class at half resolution
        assert 0.95 < fp.half_agreement < 0.98
        budget = plan_training(fp, build_config({"data": str(root), "crop": 256, "time_limit": 10}))
        kept = budget.fit_scale_to_time(3.0)  # 10 min hold 180 steps: the walls are worth more than 4x the steps
        assert budget.windows and kept.scale == 1.0 and kept.reasons["scale"].startswith("full resolution")
        half = budget.fit_scale_to_time(10.0)  # 54 steps (one AVX2 core): starved, so 4x the steps win
        assert half.scale == 0.5 and "enough below 150 steps" in half.reasons["scale"]


def test_every_planned_key_yields_to_the_command_line_and_the_recipe_beats_the_plan():
    given = {"crop": 256, "pad_to": 64, "batch": 4, "samples_per_epoch": 100, "val_tile": 300, "val_every": "90s"}
    for key, value in given.items():
        plan = plan_training(THIN_SECTIONS, build_config({key: value, "time_limit": 12}))
        assert getattr(plan, key) == value and plan.sources[key] == "command line"
        assert f"command line: {key}" in plan.describe()
    plan = plan_training(THIN_SECTIONS, build_config(parse_overrides(
        ["recipe=tourmaline-bisenet", "crop=384", "time_limit=12"])))
    assert (plan.crop, plan.batch) == (384, 8)  # the command line beats the recipe, the recipe beats the plan
    assert plan.sources["crop"] == "command line" and plan.sources["batch"] == "recipe"
    assert plan.samples_per_epoch == 256 and plan.val_tile == 512  # later rules follow the given crop
    # an explicit 0 keeps one random crop per image per epoch, as before windows
    plan = plan_training(THIN_SECTIONS, build_config({"samples_per_epoch": 0}))
    assert not plan.windows and plan.samples_per_epoch == 0
    assert (plan.batch, plan.steps_per_epoch) == (4, 3)  # batch cut so that 14 images make more than one step
    # "auto" given on the command line still lets the plan decide
    assert plan_training(THIN_SECTIONS, build_config({"samples_per_epoch": "auto"})).sources["samples_per_epoch"] \
        == "plan"


def test_the_cfg_file_beats_the_recipe_and_sources_are_recorded(tmp_path):
    (tmp_path / "my.yaml").write_text("crop: 256\nlr: 0.01\n")
    cfg = build_config({"recipe": "tourmaline-bisenet", "cfg": str(tmp_path / "my.yaml"), "lr": 0.02})
    sources = config_sources(cfg)
    assert (cfg.crop, cfg.lr) == (256, 0.02)
    assert (sources["crop"], sources["lr"], sources["batch"], sources["seed"]) == \
        ("cfg file", "command line", "recipe", "default")
    # the record survives dataclasses.replace (k-fold copies configs) and stays out of config.yaml
    assert config_sources(dataclasses.replace(cfg, name="fold0"))["crop"] == "cfg file"
    save_config(cfg, tmp_path / "config.yaml")
    assert "_sources" not in load_yaml(tmp_path / "config.yaml")


def test_apply_fills_the_planned_keys_and_replanning_is_stable():
    cfg = build_config({"recipe": "tourmaline-bisenet", "time_limit": 12})
    plan = plan_training(THIN_SECTIONS, cfg)
    planned = plan.apply(cfg)
    assert (planned.crop, planned.batch, planned.samples_per_epoch, planned.val_every, planned.val_tile) == \
        (512, 8, 256, "2m", 512)
    assert config_sources(planned)["samples_per_epoch"] == "plan" and config_sources(planned)["crop"] == "recipe"
    again = plan_training(THIN_SECTIONS, planned)
    assert again.values() == plan.values() and again.sources == plan.sources
    assert json.loads(json.dumps(plan.to_dict()))["line"] == plan.describe()
    assert set(PLANNED) <= set(plan.to_dict())


def test_fit_to_time_shortens_window_epochs_to_the_budget():
    plan = plan_training(THIN_SECTIONS, build_config({"time_limit": 12}))
    fitted = plan.fit_to_time(step_seconds=5.0)  # 12 min x 0.9 / (10 epochs x 5 s) = 12 steps
    assert (fitted.steps_per_epoch, fitted.samples_per_epoch) == (12, 96) and "s/step" in fitted.reasons[
        "samples_per_epoch"]
    assert plan.fit_to_time(0.1) is plan  # fast steps: 32 steps fit easily
    floored = plan.fit_to_time(100.0)
    assert floored.steps_per_epoch == 8  # never below 8 steps, and the reason says what the budget holds instead
    assert "so 10 epochs fit" not in floored.reasons["samples_per_epoch"]
    assert "cut to 8 steps, the fewest an epoch takes: 12 min hold about 6 steps at 1e+02 s/step, less than one " \
           "epoch" in floored.reasons["samples_per_epoch"]
    assert "hold about 32 steps at 20 s/step, about 4 epochs" in plan.fit_to_time(20.0).reasons["samples_per_epoch"]
    given = plan_training(THIN_SECTIONS, build_config({"time_limit": 12, "samples_per_epoch": 512}))
    assert given.fit_to_time(5.0) is given  # a number the user gave is kept


def test_fit_crop_to_time_shrinks_planned_windows_until_the_budget_holds_enough_steps():
    plan = plan_training(THIN_SECTIONS, build_config({"time_limit": 12}))
    # 12 min x 0.9 = 648 s at 16 s per step of 512-px windows: 40 steps; 150 need windows of 512 x sqrt(40/150)
    fitted = plan.fit_crop_to_time(step_seconds=16.0)
    assert fitted.crop == 256 and fitted.batch == plan.batch and fitted.sources["crop"] == "plan"
    assert fitted.reasons["batch"].endswith("(the 512-px windows'; kept at 256 px)")
    assert ("cut to 256 px: time_limit=12 min held 40 of the 150 steps it needs at 16 s per step of 512-px windows"
            in fitted.reasons["crop"])
    # the epoch covers the images once with the smaller windows: 14 x 1600 x 1200 / 256^2 = 411 windows
    assert (fitted.samples_per_epoch, fitted.steps_per_epoch) == (416, 52)
    assert "crop 256, batch 8, 416 windows (52 steps) per epoch" in fitted.describe()
    assert plan.fit_crop_to_time(step_seconds=6.0).crop == 416  # 108 steps held: 512 x 0.85 = 434, down to 32s
    assert plan.fit_crop_to_time(step_seconds=4.0) is plan  # 162 steps fit: nothing changes
    assert plan.fit_crop_to_time(step_seconds=1000.0).crop == 256  # never below 256 px
    for given in ({"crop": 512}, {}):  # a crop the user gave is kept; without a budget there is nothing to fit
        other = plan_training(THIN_SECTIONS, build_config({**given, "time_limit": 12 if given else 0}))
        assert other.fit_crop_to_time(16.0) is other
    assert plan_training(MEMBRANE, build_config({"time_limit": 10})).fit_crop_to_time(60.0).crop == 0  # whole images
    assert plan.budget_note(16.0) == ""  # the plan's own windows are cut instead
    recipe = plan_training(THIN_SECTIONS, build_config({"recipe": "tourmaline-bisenet", "time_limit": 12}))
    assert recipe.crop == 512 and recipe.fit_crop_to_time(16.0) is recipe  # a recipe's crop is kept, with a hint:
    assert recipe.budget_note(16.0) == (
        "note: time_limit=12 min holds about 40 optimiser steps of 512-px windows at 16 s per step, few to learn "
        "from; crop=256 would give about 150 (the plan shrinks only windows it chose; crop was set by recipe)")
    assert recipe.budget_note(4.0) == ""
    # even 256-px windows of a heavy model (recipe=farmland's classic U-Net: 20 s a step on a busy CPU) hold too few
    few = plan.fit_crop_to_time(60.0).few_steps_note(20.0, "unet")
    assert few.startswith("note: time_limit=12 min holds about 32 optimiser steps of model=unet at 20 s per step")
    assert "model=unet_small" in few and plan.few_steps_note(4.0, "unet") == ""


def test_fit_scale_to_time_halves_the_resolution_when_the_budget_holds_too_few_steps_and_the_labels_survive():
    sections = dataclasses.replace(THIN_SECTIONS, half_agreement=0.99, half_class_iou=0.8)
    plan = plan_training(sections, build_config({"time_limit": 12})).fit_crop_to_time(16.0)  # 256-px windows
    assert plan.crop == 256 and plan.scale == 1.0 and plan.sources["scale"] == "plan"
    half = plan.fit_scale_to_time(step_seconds=4.0)  # 12 min x 0.9 = 648 s: 162 steps of the 500
    assert (half.scale, half.crop, half.batch, half.samples_per_epoch) == (0.5, 256, 8, plan.samples_per_epoch)
    assert half.reasons["scale"] == (
        "half resolution: time_limit=12 min holds 162 steps of 256-px windows at 4 s per step, fewer than the 500 "
        "that learn more than the largest classes; at half a step costs about a quarter, and 99.0% of the labelled "
        "pixels keep their class, the worst class 0.80 IoU")
    assert "crop 256 at half resolution, batch 8, 416 windows" in half.describe()
    applied = half.apply(build_config({"time_limit": 12}))
    assert applied.scale == 0.5 and config_sources(applied)["scale"] == "plan"
    assert plan.fit_scale_to_time(1.0) is plan  # 648 steps: full resolution, nothing to weigh
    # labels that do not survive halving keep full resolution, and the reason says so: thin walls, a thin class
    for agreement, worst in ((0.965, 0.85), (0.99, 0.3)):
        thin = dataclasses.replace(plan, fingerprint=dataclasses.replace(sections, half_agreement=agreement,
                                                                        half_class_iou=worst))
        kept = thin.fit_scale_to_time(4.0)
        assert kept.scale == 1.0 and kept.reasons["scale"].startswith("full resolution: time_limit=12 min holds 162")
        assert "(fine detail; scale=0.5 forces it)" in kept.reasons["scale"]
    # a starved budget (fewer than 150 steps) takes 95% kept pixels: membrane's walls halve, a 1-px class still not
    starved = dataclasses.replace(plan, fingerprint=dataclasses.replace(sections, half_agreement=0.965))
    assert starved.fit_scale_to_time(5.0).scale == 0.5  # 130 steps
    for agreement, worst in ((0.94, 0.85), (0.99, 0.3)):
        thin = dataclasses.replace(plan, fingerprint=dataclasses.replace(sections, half_agreement=agreement,
                                                                        half_class_iou=worst))
        assert thin.fit_scale_to_time(5.0).scale == 1.0
    # a scale given is kept either way; no budget, or whole images, leave full resolution alone
    for given in ({"scale": 1}, {"scale": 0.5}):
        other = plan_training(sections, build_config({**given, "time_limit": 12}))
        assert other.fit_scale_to_time(4.0) is other and other.sources["scale"] == "command line"
        assert ("at half resolution" in other.describe()) == (given["scale"] == 0.5)
    assert plan_training(sections, build_config({})).fit_scale_to_time(4.0).scale == 1.0
    whole = plan_training(dataclasses.replace(MEMBRANE, half_agreement=1.0), build_config({"time_limit": 10}))
    assert not whole.windows and whole.fit_scale_to_time(40.0) is whole
    with pytest.raises(ConfigError, match="scale=0.3: .* must be one of 1, 0.5, 0.25"):
        build_config({"scale": 0.3})


def test_the_labels_detail_at_half_resolution():
    from seglab.data.fingerprint import half_resolution_detail

    blocks = np.kron(np.arange(16).reshape(4, 4) % 3, np.ones((8, 8), np.int64)).astype(np.uint8)
    assert half_resolution_detail([blocks], 3, 255) == (1.0, 1.0)  # regions aligned to 2x2 blocks lose nothing
    lines = np.zeros((32, 32), np.uint8)
    lines[:, 5::8] = 1  # 1-px walls on odd columns vanish at half resolution
    agreement, worst = half_resolution_detail([lines], 2, 255)
    assert agreement == pytest.approx(28 / 32) and worst == 0.0
    lines[:, 6::8] = 1  # 2-px walls straddling the blocks move one pixel: 2 of every 8 columns change class
    agreement, worst = half_resolution_detail([lines], 2, 255)
    assert agreement == pytest.approx(24 / 32) and worst == pytest.approx(1 / 3, abs=1e-4)
    ignored = lines.copy()
    ignored[:, 5:8] = 255  # ignore_index pixels count for nothing: the first wall's 2 changes and 3 pixels go
    assert half_resolution_detail([ignored], 2, 255)[0] == pytest.approx(23 / 29, abs=1e-4)
    assert half_resolution_detail([None], 2, 255) == (1.0, 1.0)


def test_windows_to_time_turns_whole_images_into_windows_when_the_budget_holds_too_few_steps():
    frames = stand_in(300, 360, 480, channels=3, shares=[0.3, 0.3, 0.2, 0.1, 0.1])  # CamVid-like
    plan = plan_training(frames, build_config({"time_limit": 15}))
    assert not plan.windows and plan.crop == 0 and plan.can_window()
    # 15 min x 0.9 = 810 s at 20 s per step of whole frames: 40 steps of the 150 -> windows of 256 px
    fitted = plan.windows_to_time(20.0)
    assert fitted.windows and fitted.crop == 256 and fitted.batch == plan.batch and fitted.val_every == "150s"
    assert "whole 480x360 images: time_limit=15 min held 40 of the 150 steps" in fitted.reasons["crop"]
    assert (fitted.samples_per_epoch, fitted.steps_per_epoch) == (792, 99)  # 300 x 480 x 360 / 256^2 = 791 windows
    assert plan.windows_to_time(8.0).crop == 288  # 101 steps held: 320 px would do, but at most half an image
    assert plan.windows_to_time(4.0) is plan  # 202 steps fit: whole images as planned
    for given in ({"crop": 0}, {"samples_per_epoch": 0}, {"pad_to": 512}):  # the user's choice is kept
        assert not plan_training(frames, build_config({**given, "time_limit": 15})).can_window()
    assert not plan_training(TGS, build_config({"time_limit": 60})).can_window()  # too small for 256-px windows
    assert not plan_training(frames, build_config({})).can_window()  # no budget
    membrane = plan_training(MEMBRANE, build_config({"time_limit": 10})).windows_to_time(40.0)
    assert membrane.windows and membrane.crop == 256 and membrane.val_tile == 0  # validated on whole images


def test_mixed_sizes_and_narrow_strips():
    fp = fingerprint_arrays([(300, 2000)] * 5 + [(320, 1800)], [], [], num_classes=3, ignore_index=255,
                            channels=3)
    plan = plan_training(fp, build_config({}))
    assert plan.crop == 288 and plan.windows  # the strip's height, down to a multiple of 32
    small = plan_training(stand_in(300, 360, 480, channels=3), build_config({}))  # CamVid-like
    assert (small.crop, small.pad_to, small.batch, small.windows) == (0, 0, 8, False)
    tiny = plan_training(stand_in(6, 64, 64), build_config({}))
    assert tiny.batch == 2 and tiny.steps_per_epoch == 3  # at least two steps per epoch


def test_fingerprint_of_arrays_and_of_a_dataset(tmp_path):
    masks = [np.array([[0, 0, 1, 255]], np.uint8), np.array([[0, 2, 2, 2]], np.uint8)]
    images = [np.full((1, 4, 3), 255, np.uint8), np.zeros((1, 4, 3), np.uint8)]
    fp = fingerprint_arrays([(1, 4), (3, 8), (5, 6)], masks, images, num_classes=3, ignore_index=255, channels=3)
    assert (fp.images, fp.median_h, fp.median_w, fp.total_area) == (3, 3, 6, 4 + 24 + 30)
    assert fp.class_shares == pytest.approx([3 / 7, 1 / 7, 3 / 7]) and fp.rarest_share == pytest.approx(1 / 7)
    assert fp.mean == pytest.approx([0.5] * 3) and fp.std == pytest.approx([0.5] * 3)
    samples = []
    from seglab.data.formats import Sample

    for k in range(3):
        samples.append(Sample(write_png(tmp_path / "i" / f"{k}.png", np.full((20 + k, 30, 3), 9, np.uint8)),
                              write_png(tmp_path / "m" / f"{k}.png", np.eye(20 + k, 30, dtype=np.uint8)), str(k)))
    from seglab.data.masks import MaskCodec

    for cache in (True, False):
        ds = SegmentationDataset(samples, MaskCodec("index", 2, 255), 3, cache=cache)
        fp = fingerprint_dataset(ds)
        assert (fp.images, fp.median_h, fp.median_w, fp.channels) == (3, 21, 30, 3)
        assert fp.class_shares[1] == pytest.approx(63 / (3 * 30 * 21), abs=1e-6)


def test_plan_run_and_window_training_from_a_dataset(tmp_path):
    from seglab.data.formats import Sample
    from seglab.data.masks import MaskCodec
    from seglab.data.transforms import build_train_transform

    samples = []
    for k in range(2):
        mask = np.zeros((700, 1100), np.uint8)
        mask[100:200, 300:500] = 1
        samples.append(Sample(write_png(tmp_path / "i" / f"{k}.png", np.zeros((700, 1100, 3), np.uint8)),
                              write_png(tmp_path / "m" / f"{k}.png", mask), str(k)))
    ds = SegmentationDataset(samples, MaskCodec("index", 2, 255), 3, cache=True)
    cfg, plan = plan_run(build_config({"batch": 2}), ds)
    assert plan.windows and cfg.crop == 512 and cfg.samples_per_epoch == 64  # 32 steps of 2
    transform = build_train_transform(cfg.augment, cfg.crop, ignore_index=255, seed=0)
    windows, sampler = window_training(plan, ds, transform, seed=0, rank=1, world=2)
    sampler.set_epoch(3)
    assert len(sampler) == 32 and all(w.h == 512 for w in sampler)
    assert windows[next(iter(sampler))]["image"].shape == (3, 512, 512)
    assert len(validation_dataset(plan, ds)) == 2 * 2 * 3  # 700x1100 by 512-px tiles: 2 rows x 3 columns
    assert validation_dataset(plan_training(MEMBRANE, build_config({})), ds) is ds


@pytest.mark.parametrize("value, parsed", [(1, ("epochs", 1)), (3, ("epochs", 3)), ("4", ("epochs", 4)),
                                           (2.0, ("epochs", 2)), ("2m", ("seconds", 120)),
                                           ("90s", ("seconds", 90)), ("1.5min", ("seconds", 90)),
                                           ("1h", ("seconds", 3600)), (" 2 m ", ("seconds", 120))])
def test_val_every_takes_epochs_or_a_time(value, parsed):
    assert parse_val_every(value) == parsed
    cfg = build_config({"val_every": value})
    assert parse_val_every(cfg.val_every) == parsed
    assert isinstance(cfg.val_every, int) == (parsed[0] == "epochs")


def test_time_limit_takes_minutes_or_a_time_as_val_every_does():
    for value, minutes in (("12", 12.0), (12, 12.0), ("3min", 3.0), ("90s", 1.5), ("1.5h", 90.0), (" 2 m ", 2.0)):
        assert build_config(parse_overrides([f"time_limit={value}"])).time_limit == minutes, value
    with pytest.raises(ConfigError, match="time_limit"):
        build_config({"time_limit": "soon"})


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "2x", "m", "fast", [2], "0s"])
def test_bad_val_every_is_a_config_error(value):
    with pytest.raises(ConfigError, match="val_every"):
        build_config({"val_every": value})


def test_val_every_from_the_command_line_and_back_from_config_yaml(tmp_path):
    cfg = build_config(parse_overrides(["val_every=2m", "samples_per_epoch=256"]))
    assert (cfg.val_every, cfg.samples_per_epoch) == ("2m", 256)
    save_config(cfg, tmp_path / "config.yaml")
    assert build_config(load_yaml(tmp_path / "config.yaml")) == cfg


@pytest.mark.parametrize("overrides, key", [({"samples_per_epoch": -1}, "samples_per_epoch"),
                                            ({"samples_per_epoch": "lots"}, "samples_per_epoch"),
                                            ({"cat_max_ratio": 0}, "cat_max_ratio"),
                                            ({"cat_max_ratio": 1.5}, "cat_max_ratio"),
                                            ({"rare_windows": -0.1}, "rare_windows"),
                                            ({"val_share": 0}, "val_share"), ({"val_tile": -1}, "val_tile")])
def test_window_key_ranges_are_config_errors(overrides, key):
    with pytest.raises(ConfigError, match=key):
        build_config(overrides)


def test_validation_schedule_by_epochs_time_and_share():
    every2 = ValidationSchedule(2)
    assert [every2.due(e, 10.0 * e) for e in range(4)] == [False, True, False, True]
    assert every2.due(0, 0.0, last=True)
    timed = ValidationSchedule("2m")
    assert not timed.due(0, 60) and timed.due(1, 125)
    timed.record(125, 5)
    assert not timed.due(2, 200) and timed.due(3, 255)
    # with a time budget at most val_share of the elapsed time goes to validation; the last epoch always validates
    bounded = ValidationSchedule(1, val_share=0.1, time_limit=12)
    assert bounded.due(0, 30)
    bounded.record(30, 10)  # 10 s of 40: a second one now would be 20 of 50
    assert not bounded.due(1, 60) and bounded.due(2, 190) and bounded.due(1, 60, last=True)
    restored = ValidationSchedule(1, val_share=0.1, time_limit=12)
    restored.load_state_dict(bounded.state_dict())
    assert restored.state_dict() == bounded.state_dict()
    assert ValidationSchedule(1, val_share=0.1).due(5, 1.0)  # no time budget: no bound


def test_the_first_validation_of_large_images_is_estimated_and_held_to_its_share():
    """One 2560x1920 micrograph took 33 s of a 3-minute budget at 7 s per training step: estimated from the timed
    steps, the first validation now waits for its share like the later ones (the last epoch still validates)."""
    import types

    from seglab.engine.build import VAL_COST, validation_estimate

    val = types.SimpleNamespace(samples=[object()], cached_arrays=lambda: [(np.zeros((1920, 2560, 1)), None)])
    run = types.SimpleNamespace(val_ds=val, cfg=build_config({"crop": 256, "batch": 8, "val_tile": 512}))
    seconds = validation_estimate(run, 7.0)
    assert seconds == pytest.approx(VAL_COST * 7.0 * 2560 * 1920 / 0.75**2 / (8 * 256**2))  # ~60 s
    schedule = ValidationSchedule("30s", val_share=0.1, time_limit=3)
    assert schedule.due(0, 35)  # unknown cost: validates, as before
    schedule.estimate = seconds
    assert schedule.expected() == seconds and not schedule.due(0, 35) and schedule.held_back == 1
    assert schedule.due(0, 35, last=True)
    assert validation_estimate(types.SimpleNamespace(val_ds=None, cfg=run.cfg), 7.0) == 0.0


def test_mask_mode_index_on_the_command_line_overrides_a_recipes_colors(tmp_path):
    cfg = build_config(parse_overrides(["recipe=tourmaline-bisenet", "mask_mode=index"]))
    assert cfg.colors == [] and cfg.mask_mode == "index" and config_sources(cfg)["colors"] == "command line"
    assert build_config({"recipe": "tourmaline-bisenet", "colors": []}).colors == []  # as before
    assert build_config({"recipe": "tourmaline-bisenet"}).colors == [[255, 0, 0], [0, 255, 0]]
    assert build_config({"recipe": "tourmaline-bisenet", "mask_mode": "auto"}).colors  # auto is no statement
    (tmp_path / "index.yaml").write_text("mask_mode: index\n")
    cfg = build_config({"recipe": "tourmaline-bisenet", "cfg": str(tmp_path / "index.yaml")})
    assert cfg.colors == [] and config_sources(cfg)["colors"] == "cfg file"
    # colours given above a lower source's mask_mode=index win, and the masks are read through them
    cfg = build_config({"cfg": str(tmp_path / "index.yaml"), "colors": [[0, 0, 0], [9, 9, 9]]})
    assert cfg.mask_mode == "rgb" and cfg.colors == [[0, 0, 0], [9, 9, 9]]
    with pytest.raises(ConfigError, match="mask_mode=index"):  # one source saying both is a contradiction
        build_config({"mask_mode": "index", "colors": [[0, 0, 0], [9, 9, 9]]})


def test_an_encoder_stays_with_the_model_named_beside_it(tmp_path):
    """model= of another name above a recipe or cfg file drops the encoder given there for its own model
    (scenes-cpu's ``encoder: resnet34`` built a ResNet-34 bisenet_resnet18)."""
    from seglab.engine.build import encoder_phrase
    from seglab.engine.components import model_kwargs
    from seglab.models import create_model

    (tmp_path / "unet.yaml").write_text("model: unet_encoder\nencoder: resnet34\n")
    unet = str(tmp_path / "unet.yaml")
    cfg = build_config({"cfg": unet, "model": "bisenet_resnet18"})
    assert cfg.encoder == "" and config_sources(cfg)["encoder"] == "command line"
    with torch.device("meta"):
        model = create_model(cfg.model, **model_kwargs(cfg, 3, 11))
    assert encoder_phrase(model) == "encoder resnet18, "
    assert build_config({"cfg": unet}).encoder == "resnet34"  # the file's own model keeps it
    assert build_config({"cfg": unet, "model": "unet_encoder"}).encoder == "resnet34"  # the same model named again
    assert build_config({"cfg": unet, "model": "bisenet", "encoder": "resnet50"}).encoder == "resnet50"
    (tmp_path / "enc.yaml").write_text("encoder: resnet50\n")  # an encoder given without a model is kept
    assert build_config({"cfg": str(tmp_path / "enc.yaml"), "model": "bisenet"}).encoder == "resnet50"


@pytest.fixture()
def index_masks(tmp_path):
    """Five-class index masks (values 0..4) in images/ + masks/, with classes.txt beside list files elsewhere."""
    rng = np.random.default_rng(0)
    for k in range(6):
        write_png(tmp_path / "data" / "images" / f"{k}.png", rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
        write_png(tmp_path / "data" / "masks" / f"{k}.png", (np.arange(48)[None, :] // 10 % 5).repeat(32, 0)
                  .astype(np.uint8))
    return tmp_path / "data"


def test_index_masks_with_a_recipes_colors_say_mask_mode_index(index_masks):
    with pytest.raises(DataError, match="small integers.*mask_mode=index"):
        plan_data(build_config({"recipe": "tourmaline-bisenet", "data": str(index_masks)}))
    data = plan_data(build_config({"recipe": "tourmaline-bisenet", "data": str(index_masks), "mask_mode": "index"}))
    assert data.codec.mode == "index" and data.codec.num_classes == 5


def test_decoding_index_masks_through_colours_names_the_fix(index_masks):
    from seglab.data.masks import MaskCodec

    codec = MaskCodec("rgb", 2, 255, colors=[[255, 0, 0], [0, 255, 0]])
    with pytest.raises(DataError, match="mask_mode=index"):
        codec.decode(np.array([[0, 1], [2, 3]], np.uint8), "m.png")
    with pytest.raises(DataError, match="unknown mask colour"):  # real colours still get the colour table message
        codec.decode(np.array([[[0, 0, 255]]], np.uint8), "m.png")


def test_class_names_from_a_classes_file_beside_the_list_files(index_masks, tmp_path):
    from seglab.data.formats import write_list_file

    data = plan_data(build_config({"data": str(index_masks)}))
    lists = tmp_path / "lists"
    write_list_file(lists / "train.txt", data.splits["train"])
    write_list_file(lists / "val.txt", data.splits["val"])
    (lists / "classes.txt").write_text("matrix\nquartz\ntourmaline\nmica\npore\n")
    cfg = {"data": str(index_masks), "train_list": str(lists / "train.txt"), "val_list": str(lists / "val.txt")}
    assert plan_data(build_config(cfg)).class_names == ["matrix", "quartz", "tourmaline", "mica", "pore"]
    assert plan_data(build_config({"data": str(lists / "train.txt")})).class_names[2] == "tourmaline"
    assert plan_data(build_config({**cfg, "classes": list("abcde")})).class_names == list("abcde")  # classes= wins
    (lists / "classes.csv").write_text("index,name,r,g,b\n" + "".join(f"{i},c{i},0,0,{i}\n" for i in range(5)))
    assert plan_data(build_config(cfg)).class_names == [f"c{i}" for i in range(5)]  # csv before txt, as formats


def test_defaults_yaml_documents_the_new_keys():
    from importlib import resources

    text = (resources.files("seglab") / "defaults.yaml").read_text()
    defaults = yaml.safe_load(text)
    for key in ("samples_per_epoch", "cat_max_ratio", "rare_windows", "val_every", "val_share", "val_tile"):
        assert key in defaults and getattr(build_config({}), key) == defaults[key]


def test_voc_recipe_keeps_one_crop_per_image():
    voc = stand_in(1464, 375, 500, channels=3, shares=[0.7] + [0.015] * 20)
    assert plan_training(voc, build_config({})).windows is False  # whole images: 187k px is under 2 x 512^2
    plan = plan_training(voc, build_config({"recipe": "voc-unet"}))
    assert (plan.crop, plan.batch, plan.windows, plan.samples_per_epoch) == (256, 8, False, 0)
    assert plan_training(voc, build_config({"recipe": "voc-unet", "samples_per_epoch": "auto"})).windows


def test_a_window_epoch_trains_and_validates_through_the_loops(tmp_path):
    """The wiring the trainer will use: plan -> window dataset + sampler -> train_one_epoch; tiles -> evaluate."""
    import functools

    import torch

    from seglab.data.dataset import pad_collate
    from seglab.data.formats import Sample
    from seglab.data.masks import MaskCodec
    from seglab.data.transforms import build_train_transform
    from seglab.engine.loop import evaluate, train_one_epoch
    from seglab.engine.optim import build_optimizer, build_scheduler
    from seglab.losses import build_loss
    from seglab.models import create_model
    from seglab.runtime.normalize import Normalizer
    from seglab.runtime.precision import resolve_precision

    rng = np.random.default_rng(0)
    samples = []
    for k in range(3):
        mask = np.zeros((150, 200), np.uint8)
        mask[40:90, 60:140] = 1 + k % 2
        image = (rng.integers(0, 40, (150, 200, 3)) + mask[..., None] * 100).astype(np.uint8)
        samples.append(Sample(write_png(tmp_path / "i" / f"{k}.png", image),
                              write_png(tmp_path / "m" / f"{k}.png", mask), str(k)))
    codec = MaskCodec("index", 3, 255)
    train_ds = SegmentationDataset(samples[:2], codec, 3, cache=True)
    val_ds = SegmentationDataset(samples[2:], codec, 3, cache=True)
    cfg, plan = plan_run(build_config(parse_overrides(["crop=64", "batch=4", "samples_per_epoch=8", "val_tile=64",
                                                        "model=unet_small", "epochs=1"])), train_ds)
    assert plan.windows and plan.steps_per_epoch == 2
    transform = build_train_transform(cfg.augment, cfg.crop, ignore_index=255, seed=0)
    windows, sampler = window_training(plan, train_ds, transform, seed=cfg.seed)
    sampler.set_epoch(0)
    collate = functools.partial(pad_collate, ignore_index=255)
    loader = torch.utils.data.DataLoader(windows, batch_size=cfg.batch, sampler=sampler, collate_fn=collate,
                                         drop_last=True)
    model = create_model("unet_small", num_classes=3, in_channels=3)
    precision = resolve_precision("fp32", "cpu")
    normalize = Normalizer([0.2] * 3, [0.2] * 3, 255.0)
    loss_fn = build_loss("ce", num_classes=3, ignore_index=255)
    optimizer = build_optimizer(model, cfg)
    out = train_one_epoch(model, loader, loss_fn, optimizer, build_scheduler(optimizer, cfg, len(loader)), precision,
                          normalize, epoch=0)
    assert out["images"] == 8 and np.isfinite(out["loss"])
    tiles = validation_dataset(plan, val_ds)
    assert len(tiles) == 3 * 4  # 150x200 by 64-px tiles
    val_loader = torch.utils.data.DataLoader(tiles, batch_size=8, collate_fn=collate)
    model.eval()
    metrics = evaluate(lambda b: torch.softmax(model(normalize(b["image"])), 1), val_loader, 3, 255,
                       torch.device("cpu"))
    assert 0.0 <= metrics["miou"] <= 1.0


def _street(rng: np.random.Generator, h: int = 48, w: int = 64) -> np.ndarray:
    """A street-like label map: sky (0) above a wavy horizon, road (1) below, a few cars (2) on the road."""
    horizon = (h * rng.uniform(0.35, 0.6) + 4 * np.sin(np.arange(w) / rng.uniform(4, 9))).astype(int)
    mask = np.where(np.arange(h)[:, None] < horizon[None, :], 0, 1).astype(np.uint8)
    for _ in range(2):
        y, x = rng.integers(h * 2 // 3, h - 6), rng.integers(0, w - 10)
        mask[y:y + 5, x:x + 10] = 2
    return mask


def _grains(rng: np.random.Generator, h: int = 48, w: int = 64) -> np.ndarray:
    """A micrograph-like label map: discs of two minerals anywhere on a matrix (0)."""
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), np.uint8)
    for k in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, 10)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1 + k % 2
    return mask


def _fingerprint(masks: list[np.ndarray]) -> Fingerprint:
    images = [np.zeros((*m.shape, 3), np.uint8) for m in masks]
    return fingerprint_arrays([m.shape for m in masks], masks, images, 3, 255, 3)


def test_labels_with_an_up_and_a_down_drop_vertical_flips():
    rng = np.random.default_rng(0)
    street = _fingerprint([_street(rng) for _ in range(12)])
    assert street.up_down > 0.5 and street.left_right < 0.1
    plan = plan_training(street, build_config({}))
    assert plan.augment == "hflip" and plan.sources["augment"] == "plan"
    assert "up/down" in plan.reasons["augment"]
    assert "augment hflip (the labels have an up and a down)" in plan.describe()
    assert plan.apply(build_config({})).augment == "hflip"
    # the same street scenes on their side lose horizontal flips instead; upside down they are just as oriented
    side = _fingerprint([np.rot90(_street(rng)).copy() for _ in range(12)])
    assert side.left_right > 0.5 and plan_training(side, build_config({})).augment == "vflip"
    # large images made of street scenes (2x2 mosaics): training windows still have an up and a down
    mosaics = _fingerprint([np.block([[_street(rng), _street(rng)], [_street(rng), _street(rng)]]) for _ in range(6)])
    assert mosaics.up_down > 0.5 and plan_training(mosaics, build_config({})).augment == "hflip"
    flipped = _fingerprint([_street(rng)[::-1].copy() for _ in range(12)])
    assert plan_training(flipped, build_config({})).augment == "hflip"
    # micrographs keep both flips; so do three street scenes (too few to tell) and any augment a user chose
    grains = _fingerprint([_grains(rng) for _ in range(12)])
    assert grains.up_down < ORIENTED and plan_training(grains, build_config({})).augment == "flips"
    assert plan_training(_fingerprint([_street(rng) for _ in range(3)]), build_config({})).augment == "flips"
    for given in ("flips", "light"):
        cfg = build_config(parse_overrides([f"augment={given}"]))
        assert plan_training(street, cfg).augment == given


def test_images_leaning_different_ways_are_not_oriented():
    rng = np.random.default_rng(1)
    half = [_street(rng) for _ in range(6)] + [_street(rng)[::-1].copy() for _ in range(6)]
    assert _fingerprint(half).up_down == 0.0


def test_camvid_street_scenes_train_without_vertical_flips():
    root = shared_dataset("camvid")
    rows = [ln.split() for ln in (root / "train.txt").read_text().splitlines()[::15]]
    from PIL import Image

    masks = [np.array(Image.open(root / m)) for _, m in rows]
    images = [np.zeros((*m.shape, 3), np.uint8) for m in masks]
    fp = fingerprint_arrays([m.shape for m in masks], masks, images, 11, 11, 3)
    assert fp.up_down > 0.5 and fp.left_right < ORIENTED
    assert plan_training(fp, build_config({"ignore_index": 11})).augment == "hflip"
    # street scenes survive halving (98.7% of pixels, poles the worst class at ~0.72 IoU): a short CPU budget of
    # 256-px windows trains at half resolution
    assert fp.half_agreement > 0.98 and 0.6 < fp.half_class_iou < 0.85
    windows = plan_training(fp, build_config({"ignore_index": 11, "crop": 256, "time_limit": 15}))
    assert windows.windows and windows.fit_scale_to_time(6.0).scale == 0.5
