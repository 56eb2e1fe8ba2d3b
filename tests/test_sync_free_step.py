"""The sync-free training step (the CUDA path), forced on CPU: a NaN step is skipped by the fused optimiser with the
weights and its state unchanged, skipped steps are counted and 5 in a row still raise NonFiniteLoss, and losses,
images and weights equal the CPU path's; the confusion matrix's scatter count equals bincount."""
from __future__ import annotations

import pytest
import torch

import seglab.engine.step as step
import seglab.engine.sync_free as sync_free
from seglab.engine.loop import NonFiniteLoss, train_one_epoch
from seglab.engine.optim import optimizer_for_groups
from seglab.engine.sync_free import skips_on_device, train_one_epoch_sync_free
from seglab.metrics import ConfusionMatrix
from seglab.runtime.precision import Precision
from seglab.runtime.progress import Progress

CPU = Precision(torch.device("cpu"), None, False)


def nan_on_marked(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE, times NaN for batches whose mask holds a 7: NaN loss and NaN gradients, with no NaN in the forward."""
    base = ((output[:, 0] - target.float().clamp(max=1)) ** 2).mean()
    return base * torch.where(target.max() > 1, float("nan"), 1.0)


def batches(kinds: str, n: int = 4, seed: int = 0) -> list[dict]:
    """One batch per letter: ``g`` a good one, ``b`` one whose loss is NaN."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for kind in kinds:
        mask = (torch.rand(n, 8, 8, generator=gen) > 0.5).long()
        if kind == "b":
            mask[0, 0, 0] = 7
        out.append({"image": torch.randn(n, 1, 8, 8, generator=gen), "mask": mask})
    return out


def setup(optimizer: str = "adamw", seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))
    opt = optimizer_for_groups([{"params": list(model.parameters()), "weight_decay": 0.01}], optimizer, 0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return model, opt, sched


def run(model, opt, sched, data, **kw) -> dict:
    return train_one_epoch(model, data, nan_on_marked, opt, sched, CPU, lambda x: x, epoch=0, **kw)


def params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_a_nan_step_is_skipped_on_the_device_with_weights_and_state_unchanged(monkeypatch, name):
    model, opt, sched = setup(name)
    assert opt.defaults["fused"] is True  # fp32 weights on a CPU (or CUDA): the fused kernels that read found_inf
    checked = []
    real = step.train_step
    monkeypatch.setattr(step, "train_step", lambda *a, **k: checked.append(a[0]) or real(*a, **k))
    snapshots = []
    result = run(model, opt, sched, batches("gbbg"), sync_free=True, on_step=lambda s: snapshots.append(params(model)))
    assert checked == [0]  # only the first step (no optimiser state yet) is checked on the host
    assert all(torch.equal(a, b) for a, b in zip(snapshots[0], snapshots[1]))  # step 1 (NaN) changed nothing
    assert all(torch.equal(a, b) for a, b in zip(snapshots[1], snapshots[2]))  # step 2 (NaN) neither
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[2], snapshots[3]))  # step 3 trained
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not hasattr(opt, "found_inf")
    state = opt.state[next(model.parameters())]
    if "step" in state:
        assert float(state["step"]) == 2  # the skipped steps' counts were taken back
    assert (result["skipped"], result["images"], result["interrupted"]) == (2, 8, False)
    assert sched.last_epoch == 4  # the schedule advances on skipped steps, as on the CPU path


def test_losses_images_and_weights_equal_the_cpu_path():
    data = batches("gggbgg", n=3, seed=1)
    a, opt_a, sched_a = setup()
    b, opt_b, sched_b = setup()
    cpu = run(a, opt_a, sched_a, data, sync_free=False)
    dev = run(b, opt_b, sched_b, data, sync_free=True)
    assert dev["loss"] == cpu["loss"] and dev["images"] == cpu["images"] == 15
    assert dev["skipped"] == cpu["skipped"] == 1
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("sync_free", [False, True])
def test_a_spent_time_budget_ends_the_epoch_after_one_step_on_both_paths(sync_free):
    model, opt, sched = setup()
    cut = run(model, opt, sched, batches("gggg", n=3), sync_free=sync_free, time_left=0.0)
    assert cut["cut"] and not cut["interrupted"] and cut["images"] == 3  # the step that spent it, then stop
    whole = run(model, opt, sched, batches("gggg", n=3), sync_free=sync_free, time_left=3600.0)
    assert not whole["cut"] and whole["images"] == 12


def test_five_bad_steps_in_a_row_raise_at_the_interval_at_the_latest():
    model, opt, sched = setup()
    with pytest.raises(NonFiniteLoss, match="consecutive steps"):  # read at the end of the epoch (or a 2-s interval)
        run(model, opt, sched, batches("gbbbbbbg"), sync_free=True)
    model, opt, sched = setup()
    assert run(model, opt, sched, batches("gbbbbgbbbbg"), sync_free=True)["skipped"] == 8  # never 5 in a row
    model, opt, sched = setup()
    steps = []
    with pytest.raises(NonFiniteLoss, match="5 consecutive steps"):  # an interval of one step: right after the 5th
        train_one_epoch_sync_free(model, batches("gbbbbbbbbbg"), nan_on_marked, opt, sched, CPU, lambda x: x,
                                  epoch=0, on_step=steps.append, log_steps=1)
    assert steps == [0, 1, 2, 3, 4, 5]


def test_an_epoch_of_only_nan_steps_raises():
    model, opt, sched = setup()
    with pytest.raises(NonFiniteLoss, match="every step of epoch 0"):
        run(model, opt, sched, batches("bbb"), sync_free=True)


def test_the_cpu_keeps_the_checked_step(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the sync-free epoch ran on a CPU")

    monkeypatch.setattr(sync_free, "train_one_epoch_sync_free", refuse)
    model, opt, sched = setup()
    assert run(model, opt, sched, batches("gbg"))["skipped"] == 1  # default on a CPU: the per-step check
    with pytest.raises(AssertionError, match="sync-free epoch ran"):
        run(model, opt, sched, batches("g"), sync_free=True)


def test_the_bar_gets_the_interval_mean_loss(monkeypatch):
    seen = []
    monkeypatch.setattr(Progress, "update", lambda self, n=1, **post: seen.append(post))
    model, opt, sched = setup()
    data = batches("gggg")
    train_one_epoch_sync_free(model, data, nan_on_marked, opt, sched, CPU, lambda x: x, epoch=0, log_steps=2,
                              log_seconds=1e9)
    posted = [p for p in seen if p]
    assert len(posted) == 2 and all(set(p) == {"loss", "lr"} for p in posted)  # one per interval, not per step
    assert float(posted[0]["lr"]) == pytest.approx(0.01)


def test_progress_keeps_the_last_postfix_for_heartbeat_lines(capsys):
    bar = Progress(10, "train 1", every=1e-9)
    bar.update(2, loss="0.5000")
    bar.update(2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.endswith("loss 0.5000") for line in lines)


def test_skips_on_device_needs_fused_kernels_and_their_state():
    model, opt, sched = setup()
    assert not skips_on_device(opt)  # no state yet: a skipped first step would leave SGD's buffers uninitialised
    run(model, opt, sched, batches("g"))
    assert skips_on_device(opt)
    plain = torch.optim.AdamW(model.parameters(), foreach=True)
    plain.state[next(model.parameters())]["step"] = torch.tensor(1.0)
    assert not skips_on_device(plain)


@pytest.mark.parametrize("ignore_index", [255, None])
def test_confusion_matrix_without_syncs_counts_as_bincount(ignore_index):
    gen = torch.Generator().manual_seed(3)
    target = torch.randint(0, 4, (3, 16, 16), generator=gen)
    target[0, :2] = 255  # ignored (or out of range: skipped either way)
    pred = torch.randint(0, 5, (3, 16, 16), generator=gen)  # 4 is out of range: clamped to the last class
    a, b = ConfusionMatrix(4, ignore_index), ConfusionMatrix(4, ignore_index)
    for _ in range(2):
        a.update(pred.clone(), target, sync_free=False)
        b.update(pred.clone(), target, sync_free=True)
    assert torch.equal(a.mat, b.mat) and int(b.mat.sum()) == 2 * (3 * 256 - 32)
    assert a.compute() == b.compute()


@pytest.mark.parametrize("spec", ["bce+lovasz", "bce+dice"])
def test_aux_loss_by_ignored_pixels_equals_selecting_the_images(spec):
    from seglab.losses import build_loss
    from seglab.losses.deep_supervision import has_foreground

    loss = build_loss(spec, num_classes=1, ignore_index=255)
    gen = torch.Generator().manual_seed(5)
    target = (torch.rand(4, 16, 16, generator=gen) > 0.7).long()
    target[1] = 0  # an empty image: left out of the auxiliary losses
    target[2, :3] = 255
    for tgt in (target, torch.zeros_like(target)):  # also a batch with no non-empty image at all
        heads = [torch.randn(4, 1, 8, 8, generator=gen, requires_grad=True) for _ in range(2)]
        keep = has_foreground(tgt, 255)
        selected = loss.aux_loss(heads, tgt, keep, masked=False)
        grads = torch.autograd.grad(selected, heads)
        masked = loss.aux_loss(heads, tgt, keep, masked=True)
        assert torch.allclose(masked, selected, atol=1e-6), (spec, float(masked), float(selected))
        assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(torch.autograd.grad(masked, heads), grads))
