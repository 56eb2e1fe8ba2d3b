"""ema=: an exponential moving average of the weights is what is validated, saved, evaluated and resumed."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from seglab.cli.main import main

TINY = ["model=unet_small", "batch=4", "lr=0.003", "workers=0", "augment=flips", "precision=fp32",
        "deterministic=true", "seed=5", "report=false"]


def _last_row(run) -> dict:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))[-1]


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_ema_weights_are_validated_saved_and_evaluated(grains_dir, tmp_path):
    assert main(["train", f"data={grains_dir}", "epochs=2", "ema=0.9", f"project={tmp_path}", "name=ema", *TINY]) == 0
    run = tmp_path / "ema"
    state = _state(run / "checkpoints" / "last.pt")
    averaged, trained = state["model"], state["train_model"]
    assert averaged.keys() == trained.keys()
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged if averaged[k].is_floating_point())
    # `seglab eval` of last.pt scores the averaged weights: the same figure as the run's own last validation
    assert main(["eval", f"weights={run / 'checkpoints' / 'last.pt'}", "eval_split=val", "precision=fp32",
                 "report=false"]) == 0
    scored = json.loads((run / "eval_val" / "metrics.json").read_text())
    assert scored["fg_iou"] == pytest.approx(float(_last_row(run)["val_fg_iou"]), abs=1e-6)


def test_ema_run_resumes_to_the_same_weights(grains_dir, tmp_path):
    """1 epoch, then resumed to 3 == 3 epochs at once: both weight sets and the EMA warm-up step carry over."""
    flat = ["ema=0.9", "scheduler=none", f"project={tmp_path}", *TINY]  # no schedule fitted to the first run's length
    assert main(["train", f"data={grains_dir}", "epochs=3", "name=ref", *flat]) == 0
    assert main(["train", f"data={grains_dir}", "epochs=1", "name=cut", *flat]) == 0
    assert main(["train", f"resume={tmp_path / 'cut'}", "epochs=3"]) == 0
    ref, got = _state(tmp_path / "ref" / "checkpoints" / "last.pt"), _state(tmp_path / "cut" / "checkpoints" / "last.pt")
    for part in ("model", "train_model"):
        for key, value in ref[part].items():
            assert torch.allclose(got[part][key].float(), value.float(), atol=1e-6), (part, key)

