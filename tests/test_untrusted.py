"""Untrusted files: a checkpoint or config is data, never code, and is validated before use.

The pickle payloads here are live: each test first proves that plain ``pickle`` would run them (the
marker file appears), then that seglab refuses the same bytes and the marker stays absent.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_png

from seglab.cli.main import main
from seglab.config import build_config, load_yaml, parse_overrides, save_config
from seglab.models import model_from_checkpoint
from seglab.runtime.checkpoint import load_checkpoint, save_checkpoint
from seglab.errors import CheckpointError, ConfigError
from seglab.models import create_model


class TouchMarker:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class OpenMarker:
    """Unpickling this calls the builtin ``open`` to create ``marker`` (no shell involved)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _seglab_state(num_classes: int = 1, in_channels: int = 3) -> dict:
    """A checkpoint as the trainer writes it (the parts model_from_checkpoint reads)."""
    model = create_model("unet_small", num_classes=num_classes, in_channels=in_channels)
    codec_classes = 2 if num_classes == 1 else num_classes
    return {"model": model.state_dict(), "model_spec": dict(model.seglab_spec), "epoch": 0,
            "meta": {"in_channels": in_channels, "codec": {"mode": "binary", "num_classes": codec_classes,
                                                          "ignore_index": 255, "fg_value": 255, "colors": []},
                     "mean": [0.5] * in_channels, "std": [0.25] * in_channels, "scale": 255.0, "pad_to": 0,
                     "pad_mode": "reflect", "threshold": 0.5, "min_area": 0}}


@pytest.fixture(scope="module")
def good_state() -> dict:
    return _seglab_state()


def _evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    """Checkpoints whose unpickling would create ``marker``: torch zip format, legacy format, raw pickle."""
    files = {}
    payload = {"model": TouchMarker(marker), "model_spec": {"name": "unet_small"}}
    files["torch"] = folder / "evil.pt"
    torch.save(payload, files["torch"])
    files["legacy"] = folder / "evil_legacy.pt"
    torch.save({"model": OpenMarker(marker)}, files["legacy"], _use_new_zipfile_serialization=False)
    files["pickle"] = folder / "evil.pkl"
    files["pickle"].write_bytes(pickle.dumps(TouchMarker(marker)))
    return files


def test_the_payloads_are_live(tmp_path):
    """Guard against a test that cannot fail: ordinary unpickling does run these payloads."""
    for i, payload in enumerate((TouchMarker, OpenMarker)):
        marker = tmp_path / f"ran{i}"
        result = pickle.loads(pickle.dumps(payload(marker)))
        if hasattr(result, "close"):
            result.close()
        assert marker.exists()


@pytest.mark.parametrize("kind", ["torch", "legacy", "pickle"])
def test_pickle_with_a_code_payload_is_refused_and_not_run(kind, tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    path = _evil_files(tmp_path, marker)[kind]
    with pytest.raises(CheckpointError, match="refused to load") as err:
        load_checkpoint(path)
    assert path.name in str(err.value) and "could run code" in str(err.value)
    assert "weights_only=False" not in str(err.value)  # never advise the unsafe way round
    assert not marker.exists()


def test_payload_inside_a_run_folder_is_refused(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"model": TouchMarker(marker)}, tmp_path / "run" / "checkpoints" / "best.pt")
    with pytest.raises(CheckpointError, match="best.pt: refused to load"):
        load_checkpoint(tmp_path / "run")
    assert not marker.exists()


def test_predict_with_evil_weights_exits_2_without_running_the_payload(tmp_path, capsys):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = _evil_files(tmp_path, marker)["torch"]
    image = write_png(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    assert main(["predict", f"weights={evil}", f"source={image}", f"project={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "refused to load" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists()



def test_classify_with_evil_weights_exits_2_without_running_the_payload(tmp_path, capsys):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = _evil_files(tmp_path, marker)["torch"]
    assert main(["classify", "eval", f"weights={evil}", f"out={tmp_path / 'eval'}"]) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "Traceback" not in err
    assert not marker.exists()

def test_resume_from_an_evil_last_checkpoint_exits_2(tmp_path, capsys):
    marker = tmp_path / "PAYLOAD_RAN"
    run = tmp_path / "runs" / "r"
    (run / "checkpoints").mkdir(parents=True)
    save_config(build_config({"data": str(tmp_path)}), run / "config.yaml")
    torch.save({"model": TouchMarker(marker)}, run / "checkpoints" / "last.pt")
    assert main(["train", f"resume={run}"]) == 2
    err = capsys.readouterr().err
    assert "last.pt: refused to load" in err and "Traceback" not in err
    assert not marker.exists()


def test_genuine_checkpoint_round_trips(tmp_path, good_state):
    path = save_checkpoint(good_state, tmp_path / "good.pt")
    model = model_from_checkpoint(load_checkpoint(path), path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, good_state["model"][name]), name


@pytest.mark.parametrize("field,value,expected", [
    ("num_classes", 4, (r"weights do not fit model 'unet_small'.*head\.weight: \(1, 16, 1, 1\) in the file, "
                        r"\(4, 16, 1, 1\) in the model")),
    ("in_channels", 1, r"inc\.0\.weight: \(16, 3, 3, 3\) in the file, \(16, 1, 3, 3\) in the model"),
    ("name", "unet", r"weights do not fit model 'unet'"),
    ("name", "no_such_model", r"cannot rebuild model 'no_such_model'"),
    ("num_classes", 10**12, r"weights do not fit"),  # would need terabytes if built before checking
])
def test_spec_that_disagrees_with_the_weights_is_refused(tmp_path, good_state, field, value, expected):
    state = dict(good_state, model_spec={**good_state["model_spec"], field: value}, meta=None)
    with pytest.raises(CheckpointError, match=expected):
        model_from_checkpoint(state, tmp_path / "forged.pt")


@pytest.mark.parametrize("meta_edit,expected", [
    ({"in_channels": 1}, r"3 input channel\(s\) but the checkpoint's data has in_channels=1"),
    ({"codec": {"num_classes": 5}}, r"1 output\(s\) but the checkpoint's data has 5 classes"),
])
def test_spec_that_disagrees_with_the_data_meta_is_refused(good_state, meta_edit, expected):
    state = dict(good_state, meta={**good_state["meta"], **meta_edit})
    with pytest.raises(CheckpointError, match=expected):
        model_from_checkpoint(state, "inconsistent.pt")


def test_missing_extra_and_non_tensor_weights_are_refused(good_state):
    weights = dict(good_state["model"])
    weights.pop("head.bias")
    with pytest.raises(CheckpointError, match=r"1 missing \(e\.g\. \['head\.bias'\]\)"):
        model_from_checkpoint(dict(good_state, model=weights), "x.pt")
    with pytest.raises(CheckpointError, match=r"1 unexpected \(e\.g\. \['extra'\]\)"):
        model_from_checkpoint(dict(good_state, model={**good_state["model"], "extra": torch.zeros(1)}), "x.pt")
    with pytest.raises(CheckpointError, match="non-tensor entries"):
        model_from_checkpoint(dict(good_state, model={**good_state["model"], "head.bias": [0.0]}), "x.pt")


def test_nan_weights_are_refused(good_state):
    weights = {k: v.clone() for k, v in good_state["model"].items()}
    weights["head.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=r"NaN/Inf in \['head\.weight'\]"):
        model_from_checkpoint(dict(good_state, model=weights), "nan.pt")


def test_plain_state_dict_is_not_mistaken_for_a_seglab_checkpoint(tmp_path, good_state):
    path = tmp_path / "plain.pth"
    torch.save(good_state["model"], path)
    with pytest.raises(CheckpointError, match="not a seglab checkpoint"):
        model_from_checkpoint(load_checkpoint(path), path)


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "header_only"])
def test_damaged_checkpoint_files(tmp_path, good_state, damage):
    data = (save_checkpoint(good_state, tmp_path / "good.pt")).read_bytes()
    content = {"truncated": data[: len(data) // 2], "empty": b"", "text": b"not a checkpoint\n",
               "header_only": data[:100]}[damage]
    path = tmp_path / f"{damage}.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"{damage}\.pt: not a readable checkpoint \(truncated or corrupt\?\)"):
        load_checkpoint(path)


def test_missing_checkpoint_and_empty_run_folder(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="no checkpoints/best.pt in this run folder"):
        load_checkpoint(tmp_path)


# ---- config files are parsed, never evaluated ---------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    "data: !!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/apply:os.system ['touch {marker}']",
    "data: !!python/name:os.system",
])
def test_yaml_with_python_tags_is_refused_and_not_run(tmp_path, payload):
    marker = tmp_path / "YAML_PAYLOAD_RAN"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(payload.format(marker=marker), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"evil\.yaml: not valid YAML"):
        load_yaml(cfg)
    assert not marker.exists()


def test_override_values_are_text_not_code(tmp_path):
    marker = tmp_path / "OVERRIDE_PAYLOAD_RAN"
    expression = f"__import__('os').system('touch {marker}')"
    cfg = build_config(parse_overrides([f"data={expression}", f"name=!!python/object/apply:os.system ['touch {marker}']"]))
    assert cfg.data == expression and cfg.name.startswith("!!python/object/apply")
    with pytest.raises(ConfigError, match="config key 'epochs' expects int"):
        build_config(parse_overrides([f"epochs={expression}"]))
    assert not marker.exists()



@pytest.mark.parametrize("module, schema, defaults", [
    ("seglab.measure.cli", "MeasureOptions", "OPTIONS"), ("seglab.explain.cli", "ExplainOptions", "OPTIONS"),
    ("seglab.export.cli", "ExportOptions", "EXPORT_OPTIONS"), ("seglab.export.cli", "BenchOptions", "BENCH_OPTIONS"),
])
def test_command_options_are_typed_like_the_config(module, schema, defaults):
    """measure, explain, export and bench parse with the config's parser: defaults fit the types, text stays text."""
    import importlib

    from seglab.config import coerce_value, parse_key_values, schema_types

    cli = importlib.import_module(module)
    types, values = schema_types(getattr(cli, schema)), getattr(cli, defaults)
    assert list(types) == list(values)
    assert all(coerce_value(key, value, types[key]) == value for key, value in values.items())
    assert parse_key_values(["out=007", "weights=1.50"], types) == {"out": "007", "weights": "1.50"}
    with pytest.raises(ConfigError, match="Did you mean: weights"):
        parse_key_values(["weigths=x"], types)

def test_config_yaml_from_a_run_round_trips(tmp_path):
    cfg = build_config({"data": "x y/ü", "lr": 3e-4, "colors": [[255, 0, 0], [0, 255, 0]], "model_args": {"a": 1}})
    save_config(cfg, tmp_path / "config.yaml")
    assert build_config(load_yaml(tmp_path / "config.yaml")) == cfg
