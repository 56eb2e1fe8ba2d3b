"""`seglab data split`: reproducible list files, and k folds stratified by foreground coverage."""
from __future__ import annotations

import numpy as np

from seglab.cli.main import main
from seglab.config import build_config
from seglab.data.formats import read_list_file
from seglab.data.plan import plan_data
from seglab.data.split import coverage_bins, kfold_indices


def test_split_lists_are_reproducible_and_used_by_training(grains_dir, tmp_path):
    out = tmp_path / "splits"
    assert main(["data", "split", f"data={grains_dir}", f"out={out}", "seed=7", "folds=4"]) == 0
    first = {p.name: p.read_text() for p in out.iterdir()}
    assert main(["data", "split", f"data={grains_dir}", f"out={out}", "seed=7", "folds=4"]) == 0
    assert first == {p.name: p.read_text() for p in out.iterdir()}
    train, val, test = (read_list_file(out / f"{s}.txt") for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (20, 2, 2)
    assert not {s.id for s in train} & {s.id for s in test}
    pool = {s.id for s in train + val}
    for k in range(4):  # each fold's val is disjoint from its train; the folds' vals cover the pool once
        ftrain, fval = read_list_file(out / f"fold{k}_train.txt"), read_list_file(out / f"fold{k}_val.txt")
        assert {s.id for s in ftrain} | {s.id for s in fval} == pool and not {s.id for s in ftrain} & {s.id for s in fval}
    assert sum(len(read_list_file(out / f"fold{k}_val.txt")) for k in range(4)) == len(pool)
    plan = plan_data(build_config({"data": str(grains_dir), "train_list": str(out / "train.txt"),
                                   "val_list": str(out / "val.txt"), "test_list": str(out / "test.txt")}))
    assert [s.id for s in plan.splits["test"]] == [s.id for s in test]


def test_kfold_is_stratified_by_coverage():
    coverage = np.r_[np.zeros(40), np.linspace(0.01, 0.99, 60)]  # 40% empty masks, as in TGS
    folds = kfold_indices(len(coverage), 5, seed=0, strata=coverage_bins(coverage))
    assert sorted(np.concatenate(folds).tolist()) == list(range(100))
    assert [int((coverage[f] == 0).sum()) for f in folds] == [8, 8, 8, 8, 8]
    assert all(len(f) == 20 for f in folds)


def test_a_split_of_few_held_out_images_is_said_to_be_one(tmp_path):
    """12 large tiles split 8:1:1 score one val and one test image: the log says so instead of reporting it as the
    data's score."""
    from seglab.data.synthetic import make_grains_dataset

    make_grains_dataset(tmp_path / "d", n=12, size=32, seed=0)
    notes = plan_data(build_config({"data": str(tmp_path / "d")})).notes
    assert any(n.startswith("few held-out images (val 1, test 1)") and
               "split=2:1:1 holds out 3 val and 3 test images of 12" in n for n in notes), notes
    notes = plan_data(build_config({"data": str(tmp_path / "d"), "split": "2:1:1"})).notes
    assert not any("few held-out" in n for n in notes)  # 3 val, 3 test: nothing to say
