"""batch=auto: the probe's rule on a fake linear memory model (share, caps, rounding, lr, the log line), the plan's
CPU batch for batch=auto on a CPU, and the re-plan with the probed batch (what a run on a GPU does)."""
from __future__ import annotations

import math

import pytest
import torch

from seglab.config import build_config, parse_overrides
from seglab.data.fingerprint import Fingerprint
from seglab.engine.gpu_batch import plan_gpu_batch, wants_gpu_batch
from seglab.engine.training_plan import plan_training
from seglab.errors import ConfigError
from seglab.losses import build_loss
from seglab.runtime.autobatch import (GB, AutoBatch, Probe, choose_batch, fit_line, optimizer_state_bytes, scale_lr,
                                      training_step_probe, with_lr)
from seglab.runtime.precision import Precision

MB = 2**20
PX128 = 128 * 128


class FakeProbe:
    """Peak memory ``fixed + per_image * batch`` (out of memory above ``oom``), time from ``seconds(batch)``."""

    def __init__(self, total_gb: float, fixed_gb: float = 1.0, per_image_mb: float = 60.0, oom: int = 10**9,
                 seconds=lambda b: 0.05 + b * 1e-4, free_gb: float | None = None):
        self.total, self.fixed, self.per_image = total_gb * GB, fixed_gb * GB, per_image_mb * MB
        self.oom, self.seconds, self.free = oom, seconds, (free_gb or total_gb) * GB
        self.asked: list[int] = []

    def capacity(self) -> tuple[float, float]:
        return self.total, self.free

    def measure(self, batch: int) -> Probe | None:
        self.asked.append(batch)
        if batch > self.oom:
            return None
        return Probe(batch, self.fixed + self.per_image * batch, self.seconds(batch))


def stand_in(images: int, side: int) -> Fingerprint:
    return Fingerprint(images, side, side, side, side, side, side, images * side * side, 1, 2, [0.76, 0.24])


def test_the_largest_batch_within_the_memory_share_rounded_to_eight():
    probe = FakeProbe(total_gb=16)  # budget 0.6 x 16 = 9.6 GB: (9.6 - 1) GB / 60 MB = 146.8 images
    auto = choose_batch(probe, sample_px=PX128, reference=32)
    assert auto.fits == 146 and auto.batch == 144
    assert auto.limit == "the memory share (0.6), rounded down to a multiple of 8"
    assert auto.per_image_bytes == pytest.approx(60 * MB) and auto.fixed_bytes == pytest.approx(1 * GB)
    # never probed a size the fitted line said would not fit: 8..128 measured, 256 (16 GB) predicted too big
    assert probe.asked == [8, 16, 32, 64, 128]
    # a smaller share, or less free memory, gives a smaller batch
    assert choose_batch(FakeProbe(total_gb=16), sample_px=PX128, reference=32, share=0.3).batch == 64
    assert choose_batch(FakeProbe(total_gb=16, free_gb=4), sample_px=PX128, reference=32).batch == 48


def test_optimiser_state_counts_against_the_share():
    plain = choose_batch(FakeProbe(total_gb=16), sample_px=PX128, reference=32)
    with_state = choose_batch(FakeProbe(total_gb=16), sample_px=PX128, reference=32, extra_bytes=3 * GB)
    assert with_state.fits == int((9.6 * GB - 4 * GB) // (60 * MB)) < plain.fits
    assert with_state.batch == 88


def test_capped_where_images_per_second_stop_rising():
    # launch-bound up to 128 images (0.1 s a step whatever the batch), then compute-bound: flat above 128
    probe = FakeProbe(total_gb=141, seconds=lambda b: max(0.1, b * 1e-3))
    auto = choose_batch(probe, sample_px=PX128, reference=32)
    assert (auto.batch, auto.limit) == (128, "img/s flat above 128")
    # a flat stretch below the CPU rule's batch (timing noise on tiny batches) does not count
    noisy = FakeProbe(total_gb=141, seconds=lambda b: {8: 0.01, 16: 0.0199}.get(b, max(0.0199, b * 1e-4)))
    assert choose_batch(noisy, sample_px=PX128, reference=32).batch > 16


def test_fixed_pixel_cap_and_two_steps_per_epoch():
    rising = dict(total_gb=141, per_image_mb=1.0, seconds=lambda b: 0.05 + b * 1e-5)
    auto = choose_batch(FakeProbe(**rising), sample_px=PX128, reference=32)
    assert (auto.batch, auto.limit) == (512, "at most 512 images of 128 px per step")
    assert choose_batch(FakeProbe(**rising), sample_px=512 * 512, reference=8).batch == 32  # same pixels per step
    few = choose_batch(FakeProbe(**rising), sample_px=PX128, reference=32, images=100)
    assert (few.batch, few.limit) == (48, "two steps per epoch of 100 images, rounded down to a multiple of 8")


def test_smaller_batches_are_tried_when_eight_do_not_fit():
    probe = FakeProbe(total_gb=16, per_image_mb=100, oom=3)
    auto = choose_batch(probe, sample_px=PX128, reference=32)
    assert probe.asked == [8, 4, 2, 4] and (auto.batch, auto.limit) == (3, "out of memory at 4")
    with pytest.raises(MemoryError, match="not even 2"):
        choose_batch(FakeProbe(total_gb=16, oom=1), sample_px=PX128, reference=32)


def test_fit_line_recovers_the_linear_model():
    probes = [Probe(b, 3e9 + 5e7 * b) for b in (8, 16, 32)]
    a, b = fit_line(probes)
    assert a == pytest.approx(3e9) and b == pytest.approx(5e7)
    assert fit_line([Probe(10, 1000.0)]) == (0.0, 100.0)  # one probe: no intercept, the conservative slope


def test_lr_rules_and_warm_up():
    assert scale_lr(1e-3, 512, 32, "adamw")[0] == pytest.approx(4e-3)  # sqrt(16)
    assert scale_lr(1e-3, 128, 32, "adam")[1] == "sqrt"
    lr, rule = scale_lr(0.01, 128, 32, "sgd")
    assert lr == pytest.approx(0.04) and rule == "linear"
    base = AutoBatch(512, 600, "x", 0.6, 141 * GB, GB, 60 * MB, reference=32)
    scaled = with_lr(base, 1e-3, "adamw", 0.0)
    assert scaled.lr == pytest.approx(4e-3) and scaled.warmup_epochs == 1.0
    assert with_lr(AutoBatch(512, 600, "x", 0.6, GB, GB, MB, reference=32), 1e-3, "adamw", 3.0).warmup_epochs == 3.0
    kept = with_lr(AutoBatch(512, 600, "x", 0.6, GB, GB, MB, reference=32), 1e-3, "adamw", 0.0, lr_given=True)
    assert (kept.lr, kept.lr_rule, kept.warmup_epochs) == (1e-3, "kept", 0.0)
    smaller = with_lr(AutoBatch(16, 16, "x", 0.6, GB, GB, MB, reference=32), 1e-3, "adamw", 0.0)
    assert smaller.lr < 1e-3 and smaller.warmup_epochs == 0.0  # no warm-up needed when the lr falls


def test_the_log_line():
    auto = with_lr(AutoBatch(512, 1300, "img/s flat above 512", 0.6, 139 * GB, 2 * GB, 61 * MB, reference=32),
                   1e-3, "adamw", 0.0)
    assert auto.line() == ("batch=auto: 512 (fits 0.6 of 139 GB at 61 MB/image; img/s flat above 512), "
                           "lr 0.001 -> 0.004 (sqrt rule from batch 32), warm-up 1 epoch")


def test_config_accepts_batch_auto_and_rejects_words():
    assert build_config(parse_overrides(["batch=auto"])).batch == "auto"
    assert build_config(parse_overrides(["batch=16"])).batch == 16
    with pytest.raises(ConfigError, match="batch='big'"):
        build_config(parse_overrides(["batch=big"]))


def test_batch_auto_on_a_cpu_is_the_plans_cpu_rule_also_over_a_recipe():
    tgs = stand_in(2560, 101)
    unset = plan_training(tgs, build_config({}))
    auto = plan_training(tgs, build_config(parse_overrides(["batch=auto"])))
    assert auto.batch == unset.batch == 32 and auto.sources["batch"] == "plan"
    assert auto.describe() == unset.describe()
    recipe = plan_training(tgs, build_config({"recipe": "tgs-salt", "batch": "auto"}))
    assert recipe.batch == 32 and recipe.sources["batch"] == "plan"
    membrane = plan_training(stand_in(24, 512), build_config({"batch": "auto"}))
    assert membrane.batch == 8  # 8 x 512^2 pixels per step, as without batch=auto


def test_only_a_fresh_gpu_run_whose_plan_decides_the_batch_probes():
    tgs = stand_in(2560, 101)
    planned = plan_training(tgs, build_config({}))
    recipe = plan_training(tgs, build_config({"recipe": "tgs-salt"}))
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert wants_gpu_batch(planned, gpu, resumed=False)
    assert not wants_gpu_batch(planned, cpu, resumed=False)  # a CPU keeps the CPU rule
    assert not wants_gpu_batch(planned, gpu, resumed=True)  # a resumed run keeps its batch
    assert not wants_gpu_batch(recipe, gpu, resumed=False)  # a recipe's batch is kept unless batch=auto


def test_replan_with_the_probed_batch_scales_lr_and_keeps_the_weights():
    tgs = stand_in(2560, 101)
    cfg0 = build_config({"recipe": "tgs-salt", "batch": "auto", "epochs": 3})  # sgd lr 0.01, warm-up 1 (recipe)
    tplan = plan_training(tgs, cfg0)
    cfg = tplan.apply(cfg0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                torch.nn.Conv2d(4, 1, 1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    precision = Precision(torch.device("cpu"), None, False)
    loss_fn = build_loss("bce", num_classes=1, ignore_index=255)
    shapes = []

    class Stepping(FakeProbe):  # runs the real probe step (moves BatchNorm statistics) on the small sizes
        def measure(self, batch):
            if batch <= 16:
                training_step_probe(model, loss_fn, precision, 1, shapes[-1], 2)(batch)
            return super().measure(batch)

    def factory(shape):
        shapes.append(shape)
        return Stepping(total_gb=141, per_image_mb=61, seconds=lambda b: max(0.2, b * 1e-3))  # flat above 256

    new_cfg, new_plan, auto = plan_gpu_batch(cfg, tplan, model, loss_fn, precision, 1, 2,
                                             probe_factory=factory)
    assert shapes == [(128, 128)]  # the planned sample: 101 px padded to 128
    assert new_cfg.batch == new_plan.batch == auto.batch == 256
    assert new_plan.steps_per_epoch == 2560 // 256 and new_plan.sources["batch"] == "plan"
    assert "batch 256" in new_plan.describe() and "img/s flat above 256" in new_plan.reasons["batch"]
    assert new_cfg.lr == pytest.approx(0.01 * 256 / 32)  # sgd: linear from the CPU rule's 32
    assert new_cfg.warmup_epochs == 1.0 and new_cfg.pad_to == 128
    assert auto.line().startswith("batch=auto: 256 (fits 0.6 of 141 GB at 61 MB/image; img/s flat above 256), "
                                  "lr 0.01 -> 0.08 (linear rule from batch 32), warm-up 1 epoch")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm statistics put back
    assert all(p.grad is None for p in model.parameters())
    # an lr given on the command line is kept
    cli = build_config({"batch": "auto", "lr": 0.002})
    p = plan_training(tgs, cli)
    kept_cfg, _, kept = plan_gpu_batch(p.apply(cli), p, model, loss_fn, precision, 1, 2,
                                       probe_factory=factory)
    assert kept_cfg.lr == 0.002 and "lr 0.002 kept" in kept.line()


def test_optimizer_state_bytes():
    model = torch.nn.Linear(10, 10)  # 110 fp32 weights
    assert optimizer_state_bytes(model, "adamw") == 2 * 110 * 4
    assert optimizer_state_bytes(model, "sgd", momentum=0.9) == 110 * 4
    assert optimizer_state_bytes(model, "sgd", momentum=0.0) == 0
    assert math.isclose(optimizer_state_bytes(model, "adam"), 880)


def test_a_run_on_a_gpu_trains_with_the_probed_batch_and_says_so(grains_dir, tmp_path, monkeypatch, capsys):
    """build_run's GPU path end to end on a CPU: the plan's batch from a fake probe, lr scaled, one log line, and
    config.yaml / plan.json holding what the run trained with."""
    import functools
    import json

    import yaml

    import seglab.engine.build as build
    from seglab.engine.dispatch import train

    monkeypatch.setattr(build, "wants_gpu_batch", lambda tplan, device, resumed: tplan.sources["batch"] == "plan")
    monkeypatch.setattr(build, "plan_gpu_batch", functools.partial(
        plan_gpu_batch, probe_factory=lambda shape: FakeProbe(total_gb=16, oom=7)))  # 8 does not fit: 7
    overrides = {"data": str(grains_dir), "model": "unet_small", "epochs": 1, "workers": 0, "precision": "fp32",
                 "device": "cpu", "batch": "auto", "project": str(tmp_path), "name": "run", "report": False}
    run = train(build_config(overrides), overrides)
    log = capsys.readouterr().out
    line = next(text for text in log.splitlines() if text.startswith("batch=auto:"))
    # one probe that fitted (4): no intercept, the whole 1.24 GB over 4 images (conservative)
    assert line == ("batch=auto: 7 (fits 0.6 of 16 GB at 316 MB/image; out of memory at 8), "
                    "lr 0.001 -> 0.000935 (sqrt rule from batch 8)")
    assert log.index("plan: ") < log.index(line) < log.index("epoch 1/1")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["batch"] == 7 and cfg["lr"] == pytest.approx(1e-3 * math.sqrt(7 / 8))
    plan = json.loads((run / "plan.json").read_text())
    assert plan["batch"] == 7 and plan["reasons"]["batch"] == "batch=auto on the GPU: out of memory at 8"
    assert plan["steps_per_epoch"] == plan["fingerprint"]["images"] // 7
