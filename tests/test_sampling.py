"""Coverage-balanced sampling (``balance=``): bins, weights, the per-epoch sampler and a training run that uses it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.cli.main import main
from seglab.config import build_config
from seglab.data.sampling import WeightedEpochSampler, bin_shares, coverage_weights
from seglab.metrics.tgs import coverage_bin_of
from seglab.errors import ConfigError

from conftest import write_png


def test_coverage_bins_follow_the_breakdown_edges():
    coverage = [0.0, 0.001, 0.02, 0.021, 0.1, 0.2, 0.3, 0.5, 0.7, 0.71, 1.0]
    assert coverage_bin_of(coverage).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_weights_by_hand():
    coverage = [0.0, 0.0, 0.0, 0.5]  # three empty images, one in the 30-70% bin
    assert coverage_weights(coverage, 0.0).tolist() == pytest.approx([0.25] * 4)
    # balance 1: each bin drawn equally often -> the lone object image gets half the draws
    assert coverage_weights(coverage, 1.0).tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 0.5])
    # balance 0.5: weight (1/share)^0.5 = (4/3)^0.5 for empty, 2 for the object image, then normalised
    w = np.array([(4 / 3) ** 0.5] * 3 + [2.0])
    assert coverage_weights(coverage, 0.5).tolist() == pytest.approx((w / w.sum()).tolist())
    shares = bin_shares(coverage, coverage_weights(coverage, 1.0))
    assert shares == {"empty": pytest.approx((0.75, 0.5)), "0.3-0.7": pytest.approx((0.25, 0.5))}
    with pytest.raises(ValueError, match="between 0"):
        coverage_weights(coverage, 1.5)


def test_sampler_is_seeded_sharded_and_follows_the_weights():
    weights = coverage_weights([0.0] * 30 + [0.05] * 10, 1.0)  # 10 object images get half the draws
    one = WeightedEpochSampler(weights, seed=5)
    assert len(one) == 40 and list(one) == list(WeightedEpochSampler(weights, seed=5))
    assert list(one) != list(WeightedEpochSampler(weights, seed=6))
    ranks = [list(WeightedEpochSampler(weights, seed=5, rank=r, world=2)) for r in (0, 1)]
    assert [i for pair in zip(*ranks) for i in pair] == list(one)  # the ranks split one shared list of draws
    draws = np.concatenate([list(WeightedEpochSampler(weights, seed=s)) for s in range(500)])
    assert (draws >= 30).mean() == pytest.approx(0.5, abs=0.02)
    assert (draws < 30).mean() == pytest.approx(0.5, abs=0.02)


def test_bad_balance_and_loss_weights_are_config_errors():
    with pytest.raises(ConfigError, match="balance=2.0"):
        build_config({"balance": 2.0})
    with pytest.raises(ConfigError, match="cls_weight=-1"):
        build_config({"cls_weight": -1})


def test_training_draws_rare_object_images_more_often(tmp_path, capsys, monkeypatch):
    """A run with balance=1 logs the draw shares and its loader draws the 2 object images about half the time."""
    from seglab.data.dataset import SegmentationDataset
    from seglab.data.plan import plan_data
    from seglab.engine import components

    rng = np.random.default_rng(0)
    for i in range(8):
        mask = np.zeros((32, 32), np.uint8)
        if i < 2:
            mask[8:20, 8:20] = 255  # 14% coverage
        write_png(tmp_path / "data" / "images" / f"im{i}.png", rng.integers(0, 255, (32, 32), dtype=np.uint8))
        write_png(tmp_path / "data" / "masks" / f"im{i}.png", mask)
    args = {"data": str(tmp_path / "data"), "model": "unet_small", "epochs": 1, "batch": 2, "workers": 0,
            "split": "1:0:0", "balance": 1.0, "project": str(tmp_path / "runs"), "name": "bal", "report": False}
    assert main(["train"] + [f"{k}={v}" for k, v in args.items()]) == 0
    assert "empty 75%->50%, 0.1-0.3 25%->50%" in capsys.readouterr().out
    cfg = build_config(args)
    plan = plan_data(cfg)
    ds = SegmentationDataset(plan.splits["train"], codec=plan.codec, in_channels=1)
    weights = components.sampling_weights(cfg, ds)
    drawn = [ds.samples[i].id for seed in range(200)
             for i in components.make_loader(ds, cfg, True, 0, 1, epoch_seed=seed, weights=weights).sampler]
    assert np.mean([d in ("im0", "im1") for d in drawn]) == pytest.approx(0.5, abs=0.05)
    assert isinstance(components.make_loader(ds, cfg, True, 0, 1).sampler, torch.utils.data.RandomSampler)
