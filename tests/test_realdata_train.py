"""`seglab train` runs on each real dataset in ../shared/data (a few images, one epoch: a smoke test of the real formats)."""
from __future__ import annotations

import csv

import pytest

from conftest import shared_dataset
from seglab.cli.main import main
from seglab.config import build_config, parse_overrides
from seglab.data.formats import write_list_file
from seglab.data.plan import plan_data


@pytest.mark.parametrize("name,extra", [
    ("membrane", ["crop=128"]),
    ("tgs-salt", ["pad_to=128", "augment=hflip,random_pad"]),
    ("camvid", ["ignore_index=11", "crop=128"]),
])
def test_train_runs_on_real_dataset(name, extra, tmp_path):
    root = shared_dataset(name)
    plan = plan_data(build_config({"data": str(root), **parse_overrides(extra)}))
    write_list_file(tmp_path / "train.txt", plan.splits["train"][:8])
    write_list_file(tmp_path / "val.txt", plan.splits["val"][:4])
    assert main(["train", f"data={root}", f"train_list={tmp_path / 'train.txt'}", f"val_list={tmp_path / 'val.txt'}",
                 "model=unet_small", "epochs=1", "batch=4", "workers=0", f"project={tmp_path}", "name=run",
                 *extra]) == 0
    with (tmp_path / "run" / "metrics.csv").open() as f:
        row = list(csv.DictReader(f))[-1]
    assert 0.0 <= float(row["val_miou"]) <= 1.0 and float(row["train_loss"]) > 0
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()
