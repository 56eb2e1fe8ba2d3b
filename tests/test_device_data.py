"""Training data on the device (issue #32, ``loader=``), run on CPU tensors: the same batches as the CPU loader,
the choice of path and its log line, and short real runs of ``seglab train`` and ``seglab classify train``."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch

from conftest import write_png
from seglab.cli.main import main
from seglab.config import build_config
from seglab.data.batch_augment import BatchAugment
from seglab.data.dataset import SegmentationDataset
from seglab.data.device_data import DeviceData, DeviceLoader, choose_loader, data_line
from seglab.data.plan import plan_data
from seglab.data.transforms import build_train_transform
from seglab.data.windows import WindowDataset, WindowSampler
from seglab.engine.components import make_loader, window_loader
from seglab.engine.data_path import device_training, on_device

SIZES = [(30, 40), (36, 36), (40, 28), (20, 44), (33, 31), (36, 36), (28, 40)]  # one narrower than the crop below
GB = 10**9


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Seven RGB images of different sizes with binary masks, decoded into a cached dataset."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        write_png(root / "images" / f"m{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        write_png(root / "masks" / f"m{i}.png", (rng.random((h, w)) < 0.3).astype(np.uint8) * 255)
    return root


def dataset(root, pad_to: int = 0, pad_mode: str = "reflect", crop: int = 0, windows: bool = False):
    """(config, cached training dataset with the CPU transform of augment=none)."""
    cfg = build_config({"data": str(root), "split": "1:0:0", "augment": "none", "batch": 3, "pad_to": pad_to,
                        "pad_mode": pad_mode, "crop": crop, "workers": 0})
    plan = plan_data(cfg)
    ds = SegmentationDataset(plan.splits["train"], codec=plan.codec, in_channels=plan.in_channels, cache=True)
    transform = build_train_transform("none", crop, pad_to, pad_mode, plan.codec.ignore_index, plan.in_channels,
                                      seed=0)
    if not windows:
        ds.transform = transform
    return cfg, ds, transform


def assert_same_batches(cpu_loader, device_loader) -> int:
    """Every batch equal (images, masks, indices and sizes); returns the number of batches."""
    cpu, dev = list(cpu_loader), list(device_loader)
    assert len(cpu) == len(dev) == len(device_loader) > 1
    for a, b in zip(cpu, dev):
        assert a["image"].dtype == b["image"].dtype and torch.equal(a["image"], b["image"])
        assert torch.equal(a["mask"], b["mask"])
        assert a["index"].tolist() == b["index"].tolist() and a["size"] == b["size"]
    return len(cpu)


@pytest.mark.parametrize("pad_to, pad_mode", [(0, "reflect"), (48, "reflect"), (48, "constant")])
def test_the_device_loader_yields_the_cpu_loaders_samples(mixed, pad_to, pad_mode):
    """Shuffled epochs without augmentation: the same images in the same order, padded alike (to pad_to, centred,
    reflect-101 or constant, then to the batch's largest as pad_collate does)."""
    cfg, ds, _ = dataset(mixed, pad_to, pad_mode)
    data = DeviceData.from_dataset(ds, "cpu")
    augment = BatchAugment((), 0, pad_to, pad_mode, ds.codec.ignore_index, 3)
    for epoch_seed in (5, 6):
        cpu = make_loader(ds, cfg, True, 0, 1, epoch_seed=epoch_seed)
        twin = DeviceLoader.like(make_loader(ds, cfg, True, 0, 1, epoch_seed=epoch_seed), data, augment, seed=0)
        assert_same_batches(cpu, twin)


def test_balanced_draws_are_the_same_on_the_device(mixed):
    cfg, ds, _ = dataset(mixed)
    weights = np.array([1, 1, 1, 1, 6, 6, 6], dtype=np.float64)
    weights /= weights.sum()
    data = DeviceData.from_dataset(ds, "cpu")
    cpu = make_loader(ds, cfg, True, 0, 1, epoch_seed=3, weights=weights)
    twin = DeviceLoader.like(make_loader(ds, cfg, True, 0, 1, epoch_seed=3, weights=weights), data,
                             BatchAugment(()), seed=0)
    assert_same_batches(cpu, twin)


def test_window_epochs_are_the_same_on_the_device(mixed):
    """WindowSampler draws (one image narrower than the crop: its window is padded back to 24 px)."""
    cfg, ds, transform = dataset(mixed, crop=24, windows=True)
    windows = WindowDataset(ds, transform)
    sampler = WindowSampler([img.shape[:2] for img, _ in ds.cached_arrays()], 24, 12, seed=4)
    data = DeviceData.from_dataset(ds, "cpu")
    augment = BatchAugment((), 24, 0, "reflect", ds.codec.ignore_index, 3)
    for epoch in (0, 1):
        cpu = window_loader(windows, sampler, cfg, 0, 1, epoch)
        keys = [list(batch) for batch in cpu.batch_sampler]
        twin = DeviceLoader.like(window_loader(windows, sampler, cfg, 0, 1, epoch), data, augment, seed=0)
        assert assert_same_batches(cpu, twin) == 4
        assert [list(batch) for batch in twin.batch_sampler] == keys


def test_an_epoch_draws_the_same_augmented_batches_again_as_a_resumed_run_does(mixed):
    """The trainer's path (``on_device`` per epoch): epoch 1 drawn twice is the same, epoch 2 is another."""
    cfg, ds, _ = dataset(mixed, 48)
    run = types.SimpleNamespace(cfg=cfg, rank=0, device_data=DeviceData.from_dataset(ds, "cpu"),
                                batch_augment=BatchAugment(("hflip", "random_pad", "color"), pad_to=48))

    def epoch(number: int) -> list[dict]:
        return list(on_device(run, make_loader(ds, cfg, True, 0, 1, epoch_seed=cfg.seed + number), number))

    first, again, second = epoch(1), epoch(1), epoch(2)
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"]) for a, b in zip(first, again))
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(first, second))


def test_auto_keeps_the_cpu_loader_on_a_cpu(mixed):
    cfg, ds, _ = dataset(mixed)
    choice, data, augment = device_training(cfg, ds, torch.device("cpu"))
    assert not choice.on_device and data is None and augment is None
    assert data_line(choice, None, 1) == ("data: CPU loader, 1 worker (auto takes the device path on CUDA only; "
                                          "loader=device takes it on cpu)")
    forced = build_config({**cfg.to_dict(), "loader": "device"})
    choice, data, augment = device_training(forced, ds, torch.device("cpu"))
    assert choice.on_device and data.pixels.device.type == "cpu" and len(data) == len(SIZES)
    assert data.nbytes == sum(h * w * 4 for h, w in SIZES)  # 3 uint8 channels and a uint8 label per pixel


def test_auto_takes_the_device_on_cuda_when_the_data_fit_and_every_augment_is_batched():
    cuda = torch.device("cuda")
    probe = lambda device: (139 * GB, 141 * GB)  # noqa: E731 - an H200's free memory, without a GPU
    fits = choose_loader("auto", cuda, ("hflip", "random_pad"), 33 * 10**6, memory_probe=probe)
    assert fits.on_device
    assert data_line(fits, BatchAugment(("hflip", "random_pad"), pad_to=128), 0) == \
        "data: on the device (cuda, 33 MB of 139 GB free), batched augmentation: hflip, random_pad"
    too_big = choose_loader("auto", cuda, ("hflip",), 40 * GB, memory_probe=probe)
    assert not too_big.on_device and "exceed 25% of the 139 GB free" in too_big.reason
    noisy = choose_loader("auto", cuda, ("hflip", "noise"), 10**6, memory_probe=probe)
    assert not noisy.on_device and noisy.reason == "augment 'noise' has no batched version" and not noisy.fallback
    assert not choose_loader("cpu", cuda, ("hflip",), 10**6, memory_probe=probe).on_device
    turned = choose_loader("device", cuda, ("rot90",), 10**6, square=False, memory_probe=probe)
    assert not turned.on_device and "square" in turned.fallback


TRAIN = ["model=unet_small", "workers=0", "precision=fp32", "report=false", "epochs=1", "batch=4", "split=4:1:0"]


def test_seglab_train_with_loader_device_on_a_cpu(grains_dir, tmp_path, capsys):
    augment = "augment=hflip,vflip,rot90,shift_scale_rotate,color,random_pad"
    assert main(["train", f"data={grains_dir}", f"project={tmp_path}", "name=dev", "loader=device", "pad_to=80",
                 augment, *TRAIN]) == 0
    out = capsys.readouterr().out
    assert "data: on the device (cpu, " in out and "loader=device)" in out
    assert "batched augmentation: hflip, vflip, rot90, shift_scale_rotate, color, random_pad" in out
    assert "epoch 1/1 train_loss=" in out and "done: best" in out
    assert (tmp_path / "dev" / "checkpoints" / "last.pt").is_file()
    summary = json.loads((tmp_path / "dev" / "summary.json").read_text())
    assert summary["loader"] == "device"
    assert f"precision {summary['precision']} on cpu" in out  # the layout too, as the log says (was "fp32" alone)


def test_an_augment_without_a_batched_version_falls_back_with_a_note(grains_dir, tmp_path, capsys):
    assert main(["train", f"data={grains_dir}", f"project={tmp_path}", "name=noisy", "loader=device",
                 "augment=hflip,noise", *TRAIN]) == 0
    out = capsys.readouterr().out
    assert "note: loader=device falls back to the CPU loader: augment 'noise' has no batched version" in out
    assert "data: CPU loader, 0 workers (augment 'noise' has no batched version)" in out
    assert "epoch 1/1 train_loss=" in out


def test_a_bad_loader_value_is_a_config_error_with_the_choices():
    from seglab.errors import ConfigError

    with pytest.raises(ConfigError, match="loader='gpu' is not one of auto, device, cpu"):
        build_config({"loader": "gpu"})
    from seglab.classify.config import parse_args, resolve

    with pytest.raises(ConfigError, match="loader must be one of auto, device, cpu, got 'gpu'"):
        resolve(parse_args(["loader=gpu"]), 100)


def test_classify_train_with_loader_device_on_a_cpu(tmp_path, capsys):
    """A generated 2-class set: the split held on the device trains exactly as the host tensors do."""
    from seglab.classify.config import parse_args
    from seglab.classify.data import ClassificationData, ImageSplit
    from seglab.classify.runner import train

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(96) % 2
    images = (torch.rand(96, 3, 32, 32, generator=gen) * 120 + labels[:, None, None, None] * 100).to(torch.uint8)
    data = ClassificationData(ImageSplit(images[:64], labels[:64]), ImageSplit(images[64:], labels[64:]),
                              ["dark", "light"], name="generated")
    results = {}
    for loader in ("device", "cpu"):
        cfg = parse_args(["epochs=1", "batch=16", "threads=1", "plots=false", "flip=true", f"loader={loader}",
                          f"out={tmp_path / loader}"])
        results[loader] = train(cfg, data)
        out = capsys.readouterr().out
        assert ("data: on the device (cpu, " in out) == (loader == "device"), out
    assert "batched augmentation: shift 0.1, hflip" in out
    assert results["device"]["loss"] == results["cpu"]["loss"]  # the same batches, augmented alike
    assert results["device"]["test_acc"] == results["cpu"]["test_acc"]


def test_window_training_with_a_time_limit_runs_on_the_device(mixed, tmp_path, capsys):
    """Planned window epochs (16-px windows of ~36-px images): the step timing and the epochs take the device path."""
    assert main(["train", f"data={mixed}", f"project={tmp_path}", "name=win", "loader=device", "crop=16",
                 "time_limit=0.5", "augment=hflip,rot90", *TRAIN]) == 0
    out = capsys.readouterr().out
    assert "data: on the device (cpu, " in out and "batched augmentation: crop=16, hflip, rot90" in out
    assert "windows" in out and "epoch 1/1 train_loss=" in out
