"""The training loop's counters in one place, and their round trip through a checkpoint."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .collapse import CollapseWatch

# The counters a checkpoint stores, in the order checkpoints have always held them.
CHECKPOINTED = ("epoch", "best", "best_epoch", "stale", "train_time", "images", "wall_time", "total_epochs",
                "last_epoch_steps")


@dataclass
class TrainState:
    """Where a run stands: the last complete epoch, the best score, time spent, the length it is fitted to.

    ``epoch`` is the last *complete* epoch (-1 before the first one); a checkpoint holds it under the same name.
    The fields after ``total_epochs`` belong to this process only and are not checkpointed.
    """

    epoch: int = -1
    best: float = -math.inf
    best_epoch: int = -1
    stale: int = 0  # validations in a row without a new best (patience)
    train_time: float = 0.0  # seconds spent training, summed over resumes
    images: int = 0  # training images seen, summed over resumes
    wall_time: float = 0.0  # training plus validation: what the time budget is spent on
    total_epochs: int = 0  # the run's length: ``epochs``, or fewer when fitted to ``time_limit``
    last_epoch_steps: int = 0  # a time budget's last epoch shortened to this many steps to fill it (0: full)
    start_epoch: int = 0  # the first epoch this process trains
    resumed_wall: float = 0.0  # wall_time already spent before this process (the budget refit's origin)
    val_time: float = 0.0  # seconds after training in this process (validation and the rest): the refit counts them
    validating_time: float = 0.0  # of val_time, the seconds of validations (the refit caps their rate at val_share)
    partial_epoch: bool = False  # a stop signal cut the current epoch short (its steps are not saved)
    stopped: int = 0  # the signal (SIGINT 2, SIGTERM 15) that stopped the run early; 0: it was not stopped
    budget_told: bool = False  # the log has said how time_limit set the number of epochs
    cut_told: bool = False  # the log has said time_limit ended the last epoch early (no second "reached" line)
    collapse: CollapseWatch = field(default_factory=CollapseWatch)  # validations predicting one class
    warnings: list[str] = field(default_factory=list)  # warnings for summary.json

    @property
    def validated(self) -> bool:
        """True once a validation has scored the run (``best`` is a real score, ``best_epoch`` an epoch)."""
        return self.best_epoch >= 0 and math.isfinite(self.best)

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpointed counters, under the keys and in the order ``last.pt``/``best.pt`` have always used."""
        return {key: getattr(self, key) for key in CHECKPOINTED}

    @classmethod
    def from_checkpoint(cls, state_dict: dict[str, Any], epochs: int = 0) -> "TrainState":
        """The counters of a saved run, ready to train its next epoch.

        ``epochs`` stands in for ``total_epochs`` in checkpoints written before it was stored; ``wall_time``
        likewise falls back to ``train_time``, while the refit's origin falls back to 0 (as it always has).
        """
        train_time = state_dict["train_time"]
        return cls(epoch=state_dict["epoch"], best=state_dict["best"], best_epoch=state_dict["best_epoch"],
                   stale=state_dict["stale"], train_time=train_time, images=state_dict["images"],
                   wall_time=state_dict.get("wall_time", train_time),
                   total_epochs=state_dict.get("total_epochs", epochs),
                   last_epoch_steps=state_dict.get("last_epoch_steps", 0), start_epoch=state_dict["epoch"] + 1,
                   resumed_wall=state_dict.get("wall_time", 0.0))
