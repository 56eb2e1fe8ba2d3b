"""The training run in plain parts (issue #27): short functions, counters that round-trip through a checkpoint."""
from __future__ import annotations

import inspect
import math
import types

import pytest

from seglab.engine import build, dispatch, state, trainer
from seglab.engine.state import TrainState

PARTS = (trainer, build, state, dispatch)  # what train_single became

# A checkpoint as the trainer saved it before the split (its counters): these must resume unchanged.
SAVED = {"epoch": 4, "best": 0.8125, "best_epoch": 3, "stale": 1, "train_time": 12.5, "images": 100,
         "wall_time": 15.0, "total_epochs": 7, "last_epoch_steps": 3}


def _functions():
    for module in PARTS:
        for name, obj in vars(module).items():
            if inspect.isfunction(obj) and obj.__module__ == module.__name__:
                yield f"{module.__name__}.{name}", obj
            elif inspect.isclass(obj) and obj.__module__ == module.__name__:  # methods; not dataclass-made ones
                for attr, member in vars(obj).items():
                    func = getattr(member, "__func__", member)
                    if inspect.isfunction(func) and func.__code__.co_filename == inspect.getfile(module):
                        yield f"{module.__name__}.{name}.{attr}", func


@pytest.mark.parametrize("name, func", list(_functions()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_part_of_the_training_run_is_under_80_lines(name, func):
    assert len(inspect.getsource(func).splitlines()) < 80, name


def test_the_epoch_loop_reads_on_one_screen():
    assert len(inspect.getsource(trainer.fit).splitlines()) < 50


def test_the_trainer_does_not_know_about_folds():
    source = inspect.getsource(trainer)
    assert "kfold" not in source and "train_folds" not in source


def test_counters_round_trip_through_a_checkpoint_in_the_saved_order():
    restored = TrainState.from_checkpoint(SAVED)
    assert restored.to_checkpoint() == SAVED and list(restored.to_checkpoint()) == list(SAVED)
    assert restored.start_epoch == 5 and restored.resumed_wall == 15.0 and restored.val_time == 0.0


def test_checkpoints_from_before_wall_time_and_total_epochs_still_resume():
    old = {k: v for k, v in SAVED.items() if k not in ("wall_time", "total_epochs", "last_epoch_steps")}
    restored = TrainState.from_checkpoint(old, epochs=30)
    assert restored.wall_time == 12.5 and restored.total_epochs == 30 and restored.last_epoch_steps == 0
    assert restored.resumed_wall == 0.0  # the budget refit then times from zero, as it always did


def test_a_fresh_state_has_nothing_done():
    fresh = TrainState(total_epochs=3)
    assert fresh.to_checkpoint() == {"epoch": -1, "best": -math.inf, "best_epoch": -1, "stale": 0, "train_time": 0.0,
                                     "images": 0, "wall_time": 0.0, "total_epochs": 3, "last_epoch_steps": 0}


def test_the_budget_refit_fills_the_budget_with_a_shortened_last_epoch():
    cfg = types.SimpleNamespace(time_limit=1, epochs=50)
    scheduler = types.SimpleNamespace(lr_lambdas=[types.SimpleNamespace(steps_per_epoch=5, total_steps=250)])
    # 3 epochs timed here after 15 s spent before: 45 s of 60 s gone at 10 s an epoch -> one more epoch fits, and
    # the 5 s left hold half an epoch: a last epoch of 2 of its 5 steps
    fitted = trainer.fit_epochs_to_budget(cfg, 3, 45.0, 50, scheduler, resumed_wall=15.0, epoch=2, steps_per_epoch=5)
    assert fitted == (5, 2) and scheduler.lr_lambdas[0].total_steps == 4 * 5 + 2  # the schedule now ends there
    # a remainder under two steps is left unused; so is any beyond ``epochs``
    assert trainer.fit_epochs_to_budget(cfg, 3, 48.0, 50, scheduler, 15.0, 2, 5) == (4, 0)
    assert scheduler.lr_lambdas[0].total_steps == 4 * 5
    short = types.SimpleNamespace(time_limit=1, epochs=4)
    assert trainer.fit_epochs_to_budget(short, 3, 45.0, 50, scheduler, 15.0, 2, 5) == (4, 0)


@pytest.mark.parametrize("metric, fmt, shows_tgs", [("fg_iou", "folders", False), ("tgs", "folders", True),
                                                    ("fg_iou", "tgs", True)])
def test_the_epoch_line_shows_the_tgs_score_on_tgs_runs_only(capsys, metric, fmt, shows_tgs):
    run = types.SimpleNamespace(metric=metric, cfg=types.SimpleNamespace(format="auto"),
                                plan=types.SimpleNamespace(source=types.SimpleNamespace(format=fmt)),
                                loggers=types.SimpleNamespace(log=lambda *a: None))
    row = {"train_loss": 0.5, "train_images_per_s": 3.0, "val_fg_iou": 0.7, "val_tgs": 0.6}
    trainer.log_epoch(run, types.SimpleNamespace(epoch=0, total_epochs=2), row, 1.0)
    line = capsys.readouterr().out
    assert "val_fg_iou=0.7000" in line and ("val_tgs" in line) == shows_tgs


def test_budget_pace_caps_validation_at_its_share_and_keeps_one_for_the_end():
    # a 23-s first validation of whole large images after a 17-s epoch, refitted after the second epoch's training
    per_epoch, reserve = trainer.budget_pace(spent=57.0, after_training=23.0, validating=23.0, epochs_timed=2,
                                             val_share=0.1, validation_seconds=23.0)
    assert per_epoch == pytest.approx(17.0 / 0.9) and reserve == 23.0  # validations held to a tenth from here on
    # in a 4-minute budget a tenth (24 s) holds no second 23-s validation: the epochs left pay for training only
    per_epoch, reserve = trainer.budget_pace(57.0, 23.0, 23.0, 2, 0.1, 23.0, left=240 - 57.0, budget=240.0,
                                             validated_total=23.0)
    assert per_epoch == pytest.approx((240 - 57 - 23) / ((240 - 57 - 23 - 1) / 17.0))
    cfg = types.SimpleNamespace(time_limit=4, epochs=30)
    scheduler = types.SimpleNamespace(lr_lambdas=[types.SimpleNamespace(steps_per_epoch=8, total_steps=240)])
    fitted = trainer.fit_epochs_to_budget(cfg, 2, 57.0, 30, scheduler, 0.0, 1, 8, per_epoch=per_epoch,
                                          reserve=reserve)
    assert fitted == (12, 2)  # 9.35 epochs of 17 s after the first 2, the last one 2 of 8 steps, then 23 s validating
    # the refit before budget_pace: the mean epoch so far, plus one more validation as long as the first
    assert trainer.fit_epochs_to_budget(cfg, 2, 57.0 + 23.0, 30, scheduler, 0.0, 1, 8)[0] == 6
    # without a share (val_share=1) every epoch pays what the first validation cost
    assert trainer.budget_pace(57.0, 23.0, 23.0, 2, 1.0, 23.0)[0] == pytest.approx(40.0)
    # time after training that is not validation (a slow disk saving best.pt) counts in full
    assert trainer.budget_pace(64.0, 30.0, 23.0, 2, 0.1, 23.0)[0] == pytest.approx(17.0 / 0.9 + 7.0)
    assert trainer.budget_pace(17.0, 0.0, 0.0, 1, 0.1, 0.0) == (17.0, 0.0)  # after one epoch nothing is known yet
