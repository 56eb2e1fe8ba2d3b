"""Every shipped recipe loads, builds its model and, for the salt recipes, trains and scores on real TGS images."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_dataset
from seglab.cli.main import main
from seglab.config import build_config, list_recipes
from seglab.data.formats import write_list_file
from seglab.data.plan import plan_data
from seglab.engine.components import model_kwargs
from seglab.inference.predictor import load_predictor
from seglab.models import create_model


def test_the_study_recipes_are_shipped():
    assert {"tgs-salt", "tgs-salt-resnext50", "tgs-salt-cpu", "farmland", "tourmaline-bisenet",
            "voc-unet", "scenes-cpu"} <= set(list_recipes())


@pytest.mark.parametrize("recipe", list_recipes())
def test_recipe_builds_its_model(recipe):
    cfg = build_config({"recipe": recipe, "data": "unused"})
    num_classes = 1 if cfg.metric == "tgs" else 3
    model = create_model(cfg.model, **model_kwargs(cfg, 3, num_classes)).eval()
    side = cfg.pad_to or 64
    with torch.inference_mode():
        logits = model(torch.randn(1, 3, side, side))
    assert logits.shape == (1, num_classes, side, side)


@pytest.mark.parametrize("recipe", [r for r in list_recipes() if r.startswith("tgs-salt")])
def test_salt_recipe_trains_and_scores_on_tgs(recipe, tmp_path, capsys):
    root = shared_dataset("tgs-salt")
    plan = plan_data(build_config({"data": str(root)}))
    write_list_file(tmp_path / "train.txt", plan.splits["train"][:8])
    write_list_file(tmp_path / "val.txt", plan.splits["val"][:4])
    assert main(["train", f"recipe={recipe}", f"data={root}", f"train_list={tmp_path / 'train.txt'}",
                 f"val_list={tmp_path / 'val.txt'}", "epochs=1", "batch=4", "workers=0", "warmup_epochs=0",
                 f"project={tmp_path}", "name=run", "report=false"]) == 0
    with (tmp_path / "run" / "metrics.csv").open() as f:
        row = list(csv.DictReader(f))[-1]
    # the recipe's metric is the competition's, and the run trained on the 101x101 images padded to 128
    assert 0.0 <= float(row["val_tgs"]) <= 1.0 and float(row["train_loss"]) > 0
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    # the recipes evaluate with left-right flip TTA (the views their training had), but the per-epoch monitor does
    # not, and the log says so
    out = capsys.readouterr().out
    assert "per-epoch validation scores without TTA; tta=hflip" in out
    assert "never applies" not in out
    # asking for the up-down view too gets a note: the recipe's training never showed the model one
    load_predictor(str(tmp_path / "run" / "checkpoints" / "last.pt"), device="cpu", precision="fp32", tta="flip")
    assert "tta=flip adds vflip views" in capsys.readouterr().out
    if recipe == "tgs-salt-cpu":  # its eval and predict default to hflip+shift: 18 views of each padded image
        weights = tmp_path / "run" / "checkpoints" / "last.pt"
        assert main(["eval", f"weights={weights}", "eval_split=val", "report=false"]) == 0
        metrics = json.loads((tmp_path / "run" / "eval_val" / "metrics.json").read_text())
        assert metrics["tta"] == "hflip+shift" and metrics["images"] == 4 and 0.0 <= metrics["tgs"] <= 1.0
        source = plan.splits["val"][0].image
        assert main(["predict", f"weights={weights}", f"source={source}", f"project={tmp_path}", "name=pred"]) == 0
        mask = np.asarray(Image.open(tmp_path / "pred" / f"{source.stem}_mask.png"))
        assert mask.shape == (101, 101) and set(np.unique(mask)) <= {0, 1}


def test_scenes_recipe_trains_on_camvid_and_ignores_unlabelled(tmp_path):
    """recipe=scenes-cpu trains a short epoch on real CamVid frames; class 11 (Unlabelled) stays out of loss and
    metrics: its pixels get no gradient, and the run's classes are the 11 others."""
    from seglab.losses import build_loss
    from seglab.metrics import ConfusionMatrix

    root = shared_dataset("camvid")
    rows = [ln.split() for ln in (root / "train.txt").read_text().splitlines() if ln.strip()]
    for name, part in (("train", rows[::60][:6]), ("val", rows[30::120][:2])):
        (tmp_path / f"{name}.txt").write_text("".join(f"{root / i}\t{root / m}\n" for i, m in part))
    (tmp_path / "classes.csv").write_text((root / "classes.csv").read_text())
    assert main(["train", "recipe=scenes-cpu", f"data={tmp_path}", "ignore_index=11", "epochs=1", "batch=2",
                 "workers=0", "samples_per_epoch=4", f"project={tmp_path}", "name=run", "report=false"]) == 0
    run = tmp_path / "run"
    with (run / "metrics.csv").open() as f:
        row = list(csv.DictReader(f))[-1]
    assert 0.0 <= float(row["val_miou"]) <= 1.0 and float(row["train_loss"]) > 0
    assert json.loads((run / "data.json").read_text())["class_names"][-1] == "Bicyclist"
    summary = json.loads((run / "summary.json").read_text())  # the backbone built, though the recipe names none
    assert (summary["model"], summary["encoder"]) == ("bisenet_resnet18", "resnet18")
    # the recipe's loss on a real annotation: pixels labelled 11 get no gradient, the others do
    mask = torch.from_numpy(np.asarray(Image.open(root / rows[0][1])).astype(np.int64))[None]
    assert (mask == 11).any() and (mask < 11).any()
    logits = torch.randn(1, 11, *mask.shape[1:], requires_grad=True)
    build_loss(build_config({"recipe": "scenes-cpu"}).loss, num_classes=11, ignore_index=11)(logits, mask).backward()
    grad = logits.grad.abs().sum(1)[0]
    assert grad[mask[0] == 11].max() == 0 and grad[mask[0] < 11].min() > 0
    # and in the metrics: whatever is predicted on those pixels, a prediction equal elsewhere scores 1
    cm = ConfusionMatrix(11, 11, torch.device("cpu"))
    cm.update(torch.where(mask == 11, torch.zeros_like(mask), mask), mask)
    assert cm.compute()["pixel_acc"] == 1.0
