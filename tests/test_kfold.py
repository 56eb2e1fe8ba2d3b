"""`seglab train folds=k`: every fold trained on its own split, out-of-fold tuning stored with the models and reused."""
from __future__ import annotations

import json

import pytest

from seglab.cli.main import main
from seglab.runtime.checkpoint import load_checkpoint
from seglab.engine.kfold import MIN_AREAS, THRESHOLDS

TINY = ["model=unet_small", "batch=4", "lr=0.003", "workers=0", "augment=flips", "epochs=2", "report=false"]


@pytest.fixture(scope="module")
def kfold_run(grains_dir, tmp_path_factory):
    project = tmp_path_factory.mktemp("kfold")
    assert main(["train", f"data={grains_dir}", "folds=3", f"project={project}", "name=cv", *TINY]) == 0
    return project / "cv"


def test_every_fold_trains_on_the_rest_and_validates_on_its_own_share(kfold_run):
    result = json.loads((kfold_run / "folds.json").read_text())
    assert result["folds"] == 3 and result["trained"] == [0, 1, 2] and len(result["fold_scores"]) == 3
    splits = [json.loads((kfold_run / f"fold{k}" / "data.json").read_text())["splits"] for k in range(3)]
    pool = splits[0]["train"] + splits[0]["val"]
    assert sum(s["val"] for s in splits) == pool  # the three validation shares cover the pool exactly once
    assert all(s["train"] + s["val"] == pool and abs(s["val"] - pool / 3) <= 1 for s in splits)


def test_out_of_fold_tuning_is_no_worse_than_the_defaults_and_is_stored_in_every_fold(kfold_run):
    oof = json.loads((kfold_run / "folds.json").read_text())["oof"]
    assert oof["threshold"] in THRESHOLDS and oof["min_area"] in MIN_AREAS
    assert 0.0 <= oof["tgs_default"] <= oof["tgs"] <= 1.0  # the defaults (0.5, 0) are on the searched grid
    for k in range(3):
        meta = load_checkpoint(kfold_run / f"fold{k}" / "checkpoints" / "best.pt")["meta"]
        assert meta["tuned"] == {"threshold": oof["threshold"], "min_area": oof["min_area"]}


def test_eval_and_predict_use_the_fold_ensemble_and_its_tuned_threshold(kfold_run, grains_dir, tmp_path):
    oof = json.loads((kfold_run / "folds.json").read_text())["oof"]
    assert main(["eval", f"weights={kfold_run}", "eval_split=test", "report=false"]) == 0
    metrics = json.loads((kfold_run / "eval" / "metrics.json").read_text())
    assert metrics["threshold"] == oof["threshold"] and metrics["images"] >= 1
    assert 0.0 <= metrics["fg_iou"] <= 1.0
    image = sorted((grains_dir / "images").iterdir())[0]
    assert main(["predict", f"weights={kfold_run}", f"source={image}", f"project={tmp_path}", "name=pred"]) == 0
    assert any((tmp_path / "pred").rglob(f"{image.stem}*.png"))


def test_a_single_fold_can_be_trained_on_its_own(grains_dir, tmp_path):
    assert main(["train", f"data={grains_dir}", "folds=3", "fold=1", f"project={tmp_path}", "name=one", *TINY]) == 0
    result = json.loads((tmp_path / "one" / "folds.json").read_text())
    assert result["trained"] == [1] and "oof" not in result  # no out-of-fold score from one fold
    assert (tmp_path / "one" / "fold1" / "checkpoints" / "best.pt").exists()
    assert not (tmp_path / "one" / "fold0").exists()
