"""seglab classify: study networks, dataset readers, augmentation, training on digits and the CLI."""
from __future__ import annotations

import csv
import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_dataset, write_png

from seglab.classify.cli import main
from seglab.classify.data import (
    DatasetDownloadError,
    augment_batch,
    load_cifar10,
    load_image_folder,
    load_mnist,
    read_cifar_batch,
    read_idx,
)
from seglab.classify.models import (
    classifier_hyperparameters,
    count_parameters,
    create_classifier,
)
from seglab.classify.report import confusion_matrix, per_class_accuracy
from seglab.classify.runner import load_checkpoint


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("name, expected", [
    ("study_cnn_mnist", 98_442), ("study_allconv_mnist", 74_362),
    ("study_cnn_cifar10", 553_514), ("study_allconv_cifar10", 79_184),
])
def test_study_networks_have_the_study_parameter_counts(name, expected):
    assert count_parameters(create_classifier(name, 10)) == expected


@pytest.mark.parametrize("name, shape", [
    ("study_cnn_mnist", (1, 28)), ("study_allconv_mnist", (1, 28)),
    ("study_cnn_cifar10", (3, 32)), ("study_allconv_cifar10", (3, 32)), ("fast_allconv", (3, 32)),
])
def test_classifiers_map_images_to_one_logit_per_class(name, shape):
    channels, size = shape
    model = create_classifier(name, 10).eval()
    assert model(torch.rand(2, channels, size, size)).shape == (2, 10)


def test_study_hyperparameters_change_the_network():
    # filters=8 halves every layer: conv weights scale by ~1/4, the 3x3x32 flatten feeds dense 128.
    small = create_classifier("study_cnn_mnist", 10, filters=8)
    expected = (1 * 9 * 8 + 8) + (8 * 9 * 16 + 16) + (16 * 9 * 32 + 32) + (3 * 3 * 32 * 128 + 128) + (128 * 10 + 10)
    assert count_parameters(small) == expected
    valid = create_classifier("study_cnn_mnist", 10, padding="valid")  # 28-26-13-11-5-3-1: flatten of 64
    assert valid.classifier[2].in_features == 64
    assert isinstance(create_classifier("study_allconv_mnist", 10, activation="tanh").features[1], torch.nn.Tanh)


def test_bad_model_settings_are_clear_errors():
    with pytest.raises(ValueError, match="study_cnn_mnist"):
        create_classifier("study_cnn_mnst", 10)
    with pytest.raises(ValueError, match="width"):
        create_classifier("fast_allconv", 10, padding="same")
    with pytest.raises(ValueError, match="vanishes"):
        create_classifier("study_allconv_mnist", 10, image_size=8)
    assert "kernel_size" in classifier_hyperparameters("study_allconv_cifar10")


def test_timm_classifier_by_name():
    model = create_classifier("timm:resnet10t", 7, in_channels=1).eval()
    assert model(torch.rand(1, 1, 32, 32)).shape == (1, 7)


# --------------------------------------------------------------------------- readers


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_plain_and_gzip(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    ints = np.array([-5, 70000, 3], dtype=np.int32)
    for name, array, code in (("img.idx", images, 0x08), ("ints.idx", ints, 0x0C)):
        raw = _idx_bytes(array, code)
        (tmp_path / name).write_bytes(gzip.compress(raw) if compress else raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "img.idx"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "ints.idx"), ints)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad.idx")


def test_load_mnist_from_generated_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    train_x, test_x = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    train_y, test_y = np.array([0, 1, 2, 3, 9], np.uint8), np.array([7, 8, 9], np.uint8)
    files = {"train-images-idx3-ubyte.gz": train_x, "train-labels-idx1-ubyte.gz": train_y,
             "t10k-images-idx3-ubyte": test_x, "t10k-labels-idx1-ubyte": test_y}  # gz and plain mixed
    for name, array in files.items():
        raw = _idx_bytes(array, 0x08)
        (tmp_path / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    data = load_mnist(tmp_path, download=False)
    assert data.train.images.shape == (5, 1, 28, 28) and data.test.images.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(data.train.images[:, 0].numpy(), train_x)
    assert data.test.labels.tolist() == [7, 8, 9] and data.class_names[9] == "9"


def test_read_cifar_batch_and_load_cifar10(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rows = {}
    for name in ["data_batch_1", "test_batch"]:
        rows[name] = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rows[name], b"labels": [3, 1, 4, 1]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    images, labels = read_cifar_batch(folder / "data_batch_1")
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    assert images.shape == (4, 3, 32, 32)
    assert images[2, 1, 5, 7] == rows["data_batch_1"][2, 1024 + 5 * 32 + 7]
    assert labels.tolist() == [3, 1, 4, 1]
    data = load_cifar10(tmp_path, download=False)
    assert len(data.train) == 4 and data.class_names[3] == "c3"
    assert data.test.images[0, 2, 0, 0] == rows["test_batch"][0, 2048]


def test_missing_datasets_fail_clearly_offline(tmp_path):
    with pytest.raises(DatasetDownloadError, match="test_batch"):
        load_cifar10(tmp_path, download=False)
    with pytest.raises(DatasetDownloadError, match="t10k-images"):
        load_mnist(tmp_path, download=False)


def _class_folder(root: Path, sizes: dict[str, tuple[int, int]], per_class: int = 5) -> None:
    for k, (name, size) in enumerate(sizes.items()):
        for i in range(per_class):
            write_png(root / name / f"{i}.png", np.full((*size, 3), (40 * k, 10 * i, 200), np.uint8))


def test_class_folder_reader_decodes_and_splits(tmp_path):
    _class_folder(tmp_path, {"cat": (6, 6), "dog": (6, 6), "ant": (6, 6)})
    data = load_image_folder(tmp_path, test_fraction=0.2)
    assert data.class_names == ["ant", "cat", "dog"]
    assert len(data.train) == 12 and len(data.test) == 3  # 4 + 1 per class
    assert data.train.images.shape[1:] == (3, 6, 6)
    first_dog = data.train.images[data.train.labels == 2][0]
    assert first_dog[0].unique().tolist() == [40] and first_dog[2].unique().tolist() == [200]  # dog was k=1


def test_class_folder_with_mixed_sizes_needs_imgsz(tmp_path):
    _class_folder(tmp_path, {"a": (6, 6), "b": (9, 9)}, per_class=3)
    with pytest.raises(ValueError, match="imgsz"):
        load_image_folder(tmp_path)
    assert load_image_folder(tmp_path, imgsz=8).train.images.shape[-2:] == (8, 8)


# --------------------------------------------------------------------------- augmentation and metrics


def test_augment_batch_shifts_are_crops_of_the_padded_image():
    images = torch.arange(4 * 1 * 10 * 10, dtype=torch.uint8).reshape(4, 1, 10, 10)
    assert torch.equal(augment_batch(images, shift=0.0, flip=False), images)
    out = augment_batch(images, shift=0.1, flip=False, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images.float(), (1, 1, 1, 1), mode="replicate").to(torch.uint8)
    for n in range(4):
        crops = [padded[n, :, dy:dy + 10, dx:dx + 10] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out[n], c) for c in crops)
    flipped = augment_batch(images, shift=0.0, flip=True, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(flipped[n], images[n]) or torch.equal(flipped[n], images[n].flip(2)) for n in range(4))


def test_confusion_matrix_counts_and_per_class_accuracy():
    targets, predictions = torch.tensor([0, 0, 1, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 0, 0])
    matrix = confusion_matrix(targets, predictions, 4)
    np.testing.assert_array_equal(matrix, [[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    acc = per_class_accuracy(matrix)
    np.testing.assert_allclose(acc[:3], [0.5, 2 / 3, 0.0])
    assert np.isnan(acc[3])


def test_prediction_gallery_is_a_seeded_mix_of_classes(tmp_path, monkeypatch):
    from seglab.classify import report
    from seglab.classify.report import gallery_indices

    targets = torch.tensor([0] * 20 + [1] * 3 + [2] * 5 + [3] * 2 + [4] * 70)  # sorted: 20 "airplanes" first
    first = gallery_indices(targets, 12, seed=3)
    assert first == gallery_indices(targets, 12, seed=3)  # same seed, same sample
    assert first != gallery_indices(targets, 12, seed=4)
    assert len(first) == len(set(first)) == 12
    per_class = np.bincount(targets[first].numpy(), minlength=5)
    assert per_class.min() >= 2 and per_class.max() - per_class.min() <= 1  # every class, evenly
    counts = np.bincount(targets[gallery_indices(targets, 25)].numpy())
    assert counts[1:4].tolist() == [3, 5, 2] and sorted(counts[[0, 4]].tolist()) == [7, 8]  # small classes whole
    assert sorted(gallery_indices(targets, 500)) == list(range(100))
    images = torch.zeros(100, 1, 8, 8, dtype=torch.uint8)
    predictions = targets.clone()
    predictions[first[0]] = 4  # one wrong
    titles = []
    monkeypatch.setattr(report, "_save", lambda fig, path: titles.extend(
        (ax.get_title(), ax.title.get_color(), ax.spines["left"].get_visible()) for ax in fig.axes
        if ax.get_title()) or Path(path))
    report.plot_prediction_grid(images, targets, predictions, list("ABCDE"), tmp_path / "p.png", count=12, seed=3)
    assert len(titles) == 12 and titles[0][0].startswith("true: A\npred: E")
    assert [t for t in titles if t[1] == "red"] == [titles[0]] and titles[0][2]  # the wrong one: red title and frame
    assert all(t[0].startswith("true: ") and not t[2] for t in titles[1:])


# --------------------------------------------------------------------------- training and CLI


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """One epoch of the default model on scikit-learn's digits through the CLI."""
    out = tmp_path_factory.mktemp("classify") / "digits"
    # threads=1: on a shared 2-core CPU, two OpenMP threads make these tiny batches many times slower.
    assert main(["train", "data=digits", "epochs=1", "threads=1", f"out={out}"]) == 0
    return out


def test_one_epoch_on_digits_reaches_90_percent(digits_run):
    results = json.loads((digits_run / "results.json").read_text())
    assert results["test_acc"] >= 0.90
    for name in ["config.yaml", "metrics.csv", "best.pt", "last.pt", "curves.png", "confusion_matrix.png",
                 "per_class_accuracy.png", "predictions.png"]:
        assert (digits_run / name).is_file(), name
    rows = _read_csv(digits_run / "metrics.csv")
    assert list(rows[0]) == ["epoch", "time", "loss", "acc", "val_loss", "val_acc", "lr"]
    assert float(rows[0]["val_acc"]) == pytest.approx(results["test_acc"])


def test_eval_and_predict_reuse_the_checkpoint(digits_run, tmp_path):
    assert main(["eval", f"weights={digits_run / 'best.pt'}", f"out={tmp_path / 'eval'}"]) == 0
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())
    trained = json.loads((digits_run / "results.json").read_text())
    assert evaluated["test_acc"] == pytest.approx(trained["test_acc"], abs=1e-6)
    per_class = _read_csv(tmp_path / "eval" / "per_class.csv")
    assert [r["class"] for r in per_class] == [str(i) for i in range(10)]
    assert sum(int(r["images"]) for r in per_class) == evaluated["images"]

    from sklearn.datasets import load_digits
    digits = load_digits()
    for i in range(3):
        write_png(tmp_path / "imgs" / f"{i}.png", np.round(digits.images[i] * 255 / 16).astype(np.uint8))
    assert main(["predict", f"weights={digits_run / 'best.pt'}", f"source={tmp_path / 'imgs'}",
                 f"out={tmp_path / 'pred'}"]) == 0
    rows = _read_csv(tmp_path / "pred" / "predictions.csv")
    assert len(rows) == 3 and all(r["class"] in [str(i) for i in range(10)] for r in rows)


def test_checkpoint_round_trip_gives_the_same_logits(digits_run):
    net, ckpt = load_checkpoint(digits_run / "last.pt")
    again, _ = load_checkpoint(digits_run / "last.pt")
    x = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    assert ckpt["class_names"] == [str(i) for i in range(10)]
    torch.testing.assert_close(net.eval()(x), again.eval()(x))


def test_sweep_writes_the_study_table(tmp_path):
    out = tmp_path / "sweep"
    assert main(["sweep", "model=study_cnn_mnist", "param=filters", "values=2,4", "epochs=1", "fraction=0.3",
                 "plots=false", "threads=1", f"out={out}"]) == 0
    rows = _read_csv(out / "sweep.csv")
    assert [r["filters"] for r in rows] == ["2", "4"]
    assert list(rows[0]) == ["filters", "params", "time", "loss", "acc", "val_loss", "val_acc"]
    expected = [count_parameters(create_classifier("study_cnn_mnist", 10, 1, 8, filters=f)) for f in (2, 4)]
    assert [int(r["params"]) for r in rows] == expected
    assert "| filters |" in (out / "sweep.md").read_text()


def test_compare_tabulates_each_model(tmp_path):
    out = tmp_path / "compare"
    assert main(["compare", "models=fast_allconv,study_cnn_mnist", "epochs=1", "fraction=0.3", "plots=false",
                 "threads=1", f"out={out}"]) == 0
    rows = _read_csv(out / "comparison.csv")
    assert [r["model"] for r in rows] == ["fast_allconv", "study_cnn_mnist"]
    expected = count_parameters(create_classifier("study_cnn_mnist", 10, 1, 8))
    assert int(rows[1]["params"]) == expected
    assert all(0 <= float(r["test_acc"]) <= 1 and float(r["train_time"]) > 0 for r in rows)
    assert (out / "fast_allconv" / "best.pt").is_file()


def test_cli_rejects_bad_input_with_the_fix(capsys):
    assert main(["train", "epoch=1"]) == 2
    assert "epochs" in capsys.readouterr().err
    assert main(["trian"]) == 2
    assert main(["train", "epochs=0"]) == 2
    assert "epochs must be >= 1" in capsys.readouterr().err
    assert main(["sweep", "param=depth", "values=1"]) == 2
    assert "n_conv" in capsys.readouterr().err



def test_settings_parse_with_seglab_rules():
    """classify reads key=value with seglab's one parser: the same bool, number, none and near-miss rules."""
    from seglab.classify.config import parse_args
    from seglab.errors import ConfigError

    cfg = parse_args(["flip=on", "lr=1e-3", "batch=none", "values=007", "data=", "lookahead=false"])
    assert cfg.flip is True and cfg.lr == 0.001 and cfg.batch is None and cfg.values == "007" and cfg.data is None
    assert cfg.lookahead is False and parse_args(["flip=auto"]).flip == "auto"
    with pytest.raises(ConfigError, match="Did you mean: epochs"):
        parse_args(["epoch=1"])
    with pytest.raises(ConfigError, match="'batch' expects int or None"):
        parse_args(["batch=1e3"])


def test_checkpoint_loads_from_its_run_folder(digits_run):
    """The shared loader takes a run folder as well as a file (classify runs keep best.pt at the top)."""
    from seglab.errors import CheckpointError

    net, ckpt = load_checkpoint(digits_run)
    assert ckpt["epoch"] == 1 and ckpt["class_names"] == [str(i) for i in range(10)]
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(digits_run / "missing.pt")

@pytest.mark.realdata
def test_cifar10_class_folders_smoke(tmp_path):
    root = shared_dataset("cifar10")
    for split in ("train", "test"):
        for name in ("airplane", "cat", "ship"):
            for src in sorted((root / split / name).iterdir())[:4]:
                dst = tmp_path / split / name / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(src)
    data = load_image_folder(tmp_path)
    assert data.class_names == ["airplane", "cat", "ship"] and data.train.images.shape == (12, 3, 32, 32)
    out = tmp_path / "run"
    assert main(["train", f"data={tmp_path}", "model=study_allconv_cifar10", "epochs=1", "batch=4", "plots=false",
                 "threads=1", f"out={out}"]) == 0
    assert json.loads((out / "results.json").read_text())["params"] == 79_184 - 7 * (66 * 9 + 1)  # 3 classes, not 10


def test_cifar_batch_with_code_payload_is_refused(tmp_path):
    import pickle

    from seglab.classify.data import read_cifar_batch

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Payload(), b"labels": [0]}))
    with pytest.raises(ValueError, match="refusing to unpickle"):
        read_cifar_batch(tmp_path / "data_batch_1")
    assert not marker.exists()


def test_cpu_procs_trains_on_two_ranks_with_the_global_batch(tmp_path, capfd):
    """cpu_procs=2: two DDP processes split every batch; rank 0 alone writes the run, which evaluates as usual."""
    out = tmp_path / "ddp"
    assert main(["train", "data=digits", "epochs=2", "cpu_procs=2", "batch=64", "plots=false", f"out={out}"]) == 0
    printed = capfd.readouterr().out
    assert printed.count("2 processes") == 1  # one header, from rank 0
    results = json.loads((out / "results.json").read_text())
    assert results["test_acc"] >= 0.90
    rows = _read_csv(out / "metrics.csv")
    assert len(rows) == 2
    assert results["images_per_second"] > 0 and sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
    assert main(["eval", f"weights={out / 'last.pt'}", f"out={tmp_path / 'eval'}", "plots=false"]) == 0
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert evaluated["test_acc"] == pytest.approx(float(rows[-1]["val_acc"]), abs=1e-6)


def test_cpu_procs_ranks_stopped_by_ctrl_c_end_as_an_interrupt_not_a_missing_file(tmp_path, monkeypatch, capsys):
    """Ranks swallow Ctrl-C (their KeyboardInterrupt ends them quietly) and write no results.json: the launching
    process then ends as interrupted (seglab exits 130), not with a FileNotFoundError trace."""
    from seglab.classify import runner
    from seglab.cli.main import main as seglab_main

    monkeypatch.setattr(runner, "launch_ranks", lambda *a, **k: None)  # ranks that stopped before writing anything
    code = seglab_main(["classify", "train", "data=digits", "epochs=2", "cpu_procs=2", "batch=64", "plots=false",
                        f"out={tmp_path / 'ddp'}"])
    assert code == 130 and "interrupted" in capsys.readouterr().err


def test_cpu_procs_needs_a_divisible_batch(capsys):
    assert main(["train", "data=digits", "cpu_procs=2", "batch=63"]) == 2
    assert "cpu_procs=2" in capsys.readouterr().err


# --------------------------------------------------------------------------- the fast recipe's parts


def test_whitening_stem_decorrelates_image_patches():
    """After ``fit``, the stem's linear responses to 2x2 patches of the data are white (identity covariance)."""
    from seglab.classify.models import WhiteningStem
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(200, 3, 19, 19, generator=g), 4, 1)  # correlated pixels
    images = smooth + 0.5 * smooth[:, :1]  # and correlated channels
    stem = WhiteningStem(3)
    stem.fit(images, eps=1e-6)
    with torch.no_grad():
        responses = torch.nn.functional.conv2d(images, stem.conv.weight)  # no bias: the linear part
    first = responses[:, :12].transpose(0, 1).reshape(12, -1)
    covariance = first @ first.T / first.shape[1]
    torch.testing.assert_close(covariance, torch.eye(12), atol=0.02, rtol=0)
    torch.testing.assert_close(responses[:, 12:], -responses[:, :12])  # the negated copies
    assert not stem.conv.weight.requires_grad and stem.conv.bias.requires_grad


def test_onecycle_schedule_shape_and_refit():
    from seglab.classify.engine import StepSchedule
    schedule = StepSchedule("onecycle", 100, warmup=0.2)
    assert schedule(0) == pytest.approx(0.2) and schedule(20) == pytest.approx(1.0)
    assert schedule(100) == pytest.approx(0.07) and schedule(60) == pytest.approx(1 - 0.93 * 0.5)
    schedule.total_steps = 50  # a time budget shortens the run: the decay now ends at step 50
    assert schedule(10) == pytest.approx(1.0) and schedule(50) == pytest.approx(0.07)
    with pytest.raises(ValueError, match="sched must be one of"):
        StepSchedule("linear", 10)


def test_lookahead_leaves_early_training_alone_and_finishes_on_the_average():
    from seglab.classify.engine import Lookahead
    layer = torch.nn.Linear(1, 1, bias=False)
    layer.weight.data.fill_(0.0)
    lookahead = Lookahead(layer, every=1)
    layer.weight.data.fill_(1.0)
    lookahead.step(progress=0.0)  # decay 0: the average jumps to the weights, which stay
    assert layer.weight.item() == pytest.approx(1.0)
    layer.weight.data.fill_(3.0)
    lookahead.step(progress=1.0)  # decay 0.95: weights pulled to 0.95 * 1 + 0.05 * 3
    assert layer.weight.item() == pytest.approx(1.1)
    layer.weight.data.fill_(5.0)
    lookahead.finish()  # decay 1: the average, ignoring the latest weights
    assert layer.weight.item() == pytest.approx(1.1)


def test_norm_shifts_get_a_scaled_rate_and_the_same_decay_per_step():
    from seglab.classify.engine import build_optimizer
    model = create_classifier("fast_allconv", 10, 3, 32)
    optimizer = build_optimizer(model, "sgd", 0.5, 1e-3, 0.85, norm_lr_scale=64.0)
    decay, no_decay, norm = optimizer.param_groups
    assert norm["lr"] == 0.5 * 64 and norm["lr"] * norm["weight_decay"] == pytest.approx(0.5 * 1e-3)
    bn_shifts = [m.bias for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {id(p) for p in norm["params"]} == {id(p) for p in bn_shifts}
    assert all(p.ndim == 1 for p in no_decay["params"]) and decay["weight_decay"] == 1e-3
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == trainable


def test_tta_averages_mirrored_and_shifted_views():
    from seglab.classify.engine import Normalized, predict_logits
    from seglab.runtime.precision import resolve_precision
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 5))
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    x = images.float() / 255
    model = Normalized(model, [0.0] * 3, [1.0] * 3)  # takes the uint8 images; identity on 0..1 floats
    fp32 = resolve_precision("fp32", "cpu")
    got = predict_logits(model, images, fp32, tta=True)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [x, padded[..., :16, :16], padded[..., 2:, 2:]]
    mirrored = [(model(v) + model(v.flip(3))) / 2 for v in views]
    torch.testing.assert_close(got, (mirrored[0] + (mirrored[1] + mirrored[2]) / 2) / 2)


def test_time_limit_fits_the_epochs_and_the_schedule(tmp_path, monkeypatch, capsys):
    """A fake clock makes every training step take 1 s: 22 steps per epoch, and a 70 s budget fits 3 epochs of 10."""
    from seglab.classify import engine

    class FakeClock:
        now = 0.0

        def perf_counter(self) -> float:  # read at an epoch's start, after each step and at its end
            self.now += 1.0
            return self.now

    monkeypatch.setattr(engine, "time", FakeClock())
    out = tmp_path / "budget"
    assert main(["train", "data=digits", "epochs=10", f"time_limit={70 / 60}", "threads=1", "plots=false",
                 f"out={out}"]) == 0
    # the budget is fitted from the first 3 steps of epoch 1, not after a whole epoch on the 10-epoch schedule
    assert "3 epochs fit at the pace of the first 3 steps" in capsys.readouterr().out
    rows = _read_csv(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 3 and results["test_acc"] >= 0.9
    # "lr" is logged at each epoch's start. On the 3-epoch schedule the warm-up (20%) ends inside epoch 1 and
    # epoch 3 starts lower than epoch 2; the 10-epoch schedule would still be warming up there.
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] < lrs[1] and lrs[2] < lrs[1]
    assert main(["train", "data=digits", "time_limit=-1"]) == 2
