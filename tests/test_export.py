"""ONNX export (normalisation inside, dynamic sizes, metadata), parity with PyTorch, the onnxruntime predictor,
and the inference benchmark."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import SHARED  # noqa: E402

from seglab.data.dataset import load_image  # noqa: E402
from seglab.errors import CheckpointError  # noqa: E402
from seglab.export import ExportError, export_model_onnx, export_onnx  # noqa: E402
from seglab.export.bench import BenchResult, bench_model, random_meta, time_calls, to_markdown  # noqa: E402
from seglab.export.cli import bench_main, export_main  # noqa: E402
from seglab.inference.onnx_predictor import OnnxPredictor, load_onnx_predictor  # noqa: E402
from seglab.export.parity import check_parity  # noqa: E402
from seglab.inference.predictor import load_predictor  # noqa: E402
from seglab.models import create_model  # noqa: E402


@pytest.fixture(scope="module")
def run(grains_dir: Path, tmp_path_factory) -> Path:
    """unet_small trained 2 short epochs on the 64 px grains: its masks are neither empty nor full."""
    from seglab.cli.main import main

    project = tmp_path_factory.mktemp("export_runs")
    assert main(["train", f"data={grains_dir}", "epochs=2", "batch=4", "model=unet_small", f"project={project}",
                 "name=onnx", "workers=0", "report=false"]) == 0
    return project / "onnx"


@pytest.fixture(scope="module")
def onnx_path(run: Path) -> Path:
    """The run exported at 128x128 (the default), beside its best.pt."""
    return export_onnx(run)


def real_images(grains_dir: Path) -> list[Path]:
    """A membrane image (512x512 gray) and two TGS images (101x101), or synthetic grains when absent."""
    membrane = sorted((SHARED / "membrane" / "train" / "image").glob("*.png"))[:1]
    tgs = sorted((SHARED / "tgs-salt" / "train" / "images").glob("*.png"))[:2]
    return membrane + tgs or sorted((grains_dir / "images").glob("*.png"))[:3]


def test_export_writes_beside_the_checkpoint_with_seglab_metadata(run, onnx_path):
    assert onnx_path == run / "checkpoints" / "best.onnx"
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    meta = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["meta"]
    assert json.loads(props["class_names"]) == meta["class_names"] == ["background", "object"]
    assert props["in_channels"] == "3" and props["pad_stride"] == "16" and float(props["threshold"]) == 0.5
    assert json.loads(props["seglab_meta"]) == {**meta, "pad_stride": 16}
    graph = onnx.load(str(onnx_path)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]


def test_parity_with_pytorch_on_real_images(run, onnx_path, grains_dir):
    parity = check_parity(run, onnx_path, real_images(grains_dir))
    assert parity["max_abs_logit_diff"] < 1e-3
    assert parity["mask_agreement"] >= 0.9999


@pytest.mark.parametrize("shape", [(2, 101, 101), (1, 360, 480), (1, 20, 37)])
def test_dynamic_sizes_match_pytorch(run, onnx_path, shape):
    batch, h, w = shape
    raw = torch.randint(0, 256, (batch, 3, h, w), generator=torch.Generator().manual_seed(h), dtype=torch.uint8)
    reference = load_predictor(str(run), device="cpu", precision="fp32").logits(raw)
    logits = OnnxPredictor(onnx_path).logits(raw)
    assert logits.shape == reference.shape == (batch, 1, h, w)
    assert (logits - reference).abs().max() < 1e-3


def test_onnx_predictor_equals_predictor_with_tta(run, onnx_path):
    raw = torch.randint(0, 256, (2, 3, 64, 80), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    torch_predictor = load_predictor(str(run), device="cpu", precision="fp32", tta="flip")
    onnx_predictor = load_onnx_predictor(run, tta="flip")  # a run folder finds checkpoints/best.onnx
    assert onnx_predictor.num_classes == torch_predictor.num_classes == 2
    assert onnx_predictor.meta["pad_to"] == torch_predictor.meta["pad_to"]
    probs = onnx_predictor.probs(raw)
    assert probs.shape == (2, 1, 64, 80) and probs.dtype == torch.float32
    assert (probs - torch_predictor.probs(raw)).abs().max() < 1e-5
    # +shift re-pads each image at other positions: the same on both backends (a 60x70 image centre-padded to 64)
    shift_torch = load_predictor(str(run), device="cpu", precision="fp32", tta="flip+shift")
    shift_onnx = load_onnx_predictor(run, tta="flip+shift")
    shift_torch.meta["pad_to"] = shift_onnx.meta["pad_to"] = 64
    shifted = shift_onnx.probs(raw, [(60, 70)] * 2)
    assert (shifted - shift_torch.probs(raw, [(60, 70)] * 2)).abs().max() < 1e-5
    assert (shifted - probs).abs().max() > 1e-3
    with pytest.raises(ValueError, match="tta must be one of"):
        OnnxPredictor(onnx_path, tta="rot")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the classic exporter announces its retirement
def test_predict_pipeline_gives_the_same_masks_on_the_onnx_predictor(run, grains_dir, tmp_path, monkeypatch):
    import seglab.inference.predict as predict
    from seglab.config import build_config

    source = grains_dir / "images" / "grain_006.png"
    reference = predict.run_predict(build_config({"weights": str(run), "source": str(source), "precision": "fp32",
                                                  "device": "cpu", "project": str(tmp_path), "name": "torch"}))
    # What `backend=onnx` will select in run_predict: the OnnxPredictor in place of the PyTorch Predictor.
    monkeypatch.setattr(predict, "load_predictor",
                        lambda weights, device, precision, tta: load_onnx_predictor(weights, tta))
    out = predict.run_predict(build_config({"weights": str(run), "source": str(source), "project": str(tmp_path),
                                            "name": "onnx"}))
    masks = [np.array(Image.open(folder / "grain_006_mask.png")) for folder in (reference, out)]
    assert 0 < masks[0].sum() < masks[0].size and np.array_equal(masks[0], masks[1])
    # The sliding-window path calls probs() on batches of tiles.
    image = load_image(source, 3)
    tiled = [predict.predict_image(p, image, 0.5, tile=32)[0] for p in
             (load_predictor(str(run), device="cpu", precision="fp32"), load_onnx_predictor(run))]
    assert np.array_equal(tiled[0], tiled[1])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the classic exporter announces its retirement
def test_foreign_onnx_files_and_ensembles_are_refused(tmp_path, onnx_path):
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(nn.Conv2d(3, 1, 1), (torch.rand(1, 3, 8, 8),), str(plain), dynamo=False)
    with pytest.raises(CheckpointError, match="not a seglab ONNX export"):
        OnnxPredictor(plain)
    with pytest.raises(CheckpointError, match="no such ONNX file"):
        OnnxPredictor(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="one model"):
        load_onnx_predictor(f"{onnx_path},{onnx_path}")


class FrozenSizeModel(nn.Module):
    """Resizes to its input size read as Python ints: tracing freezes that size, so dynamic export is wrong."""

    stride = 1

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(self.conv(x), 2)
        return F.interpolate(y, size=(int(x.shape[-2]), int(x.shape[-1])), mode="bilinear")


def test_export_refuses_a_model_that_loses_its_dynamic_sizes(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ExportError, match="does not export with dynamic sizes"):
        export_model_onnx(FrozenSizeModel(), random_meta(), tmp_path / "frozen.onnx", imgsz=32)
    fixed = export_model_onnx(FrozenSizeModel(), random_meta(), tmp_path / "fixed.onnx", imgsz=32, dynamic=False)
    assert OnnxPredictor(fixed).logits(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)


def test_export_cli_with_parity_check(run, grains_dir, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    image = grains_dir / "images" / "grain_005.png"
    assert export_main([f"weights={run}", f"out={out}", "imgsz=64", f"check={image}"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "parity of model.onnx on 1 image(s)" in printed and "mask agreement 100.000%" in printed


def test_export_check_on_a_folder_of_images_beside_their_masks_and_a_failed_check_leaves_nothing(
        run, grains_dir, tmp_path, capsys):
    """check= on a farmland-style folder (x.png beside x_mask.png) compares on the images, not on the masks; a check
    that fails half-way removes the .onnx it wrote, so the same command can run again."""
    import shutil

    side = tmp_path / "side"
    side.mkdir()
    for i in (1, 2):
        shutil.copy(grains_dir / "images" / f"grain_00{i}.png", side / f"g{i}.png")
        shutil.copy(grains_dir / "masks" / f"grain_00{i}.png", side / f"g{i}_mask.png")
    out = tmp_path / "model.onnx"
    assert export_main([f"weights={run}", f"out={out}", "imgsz=64", f"check={side}"]) == 0
    assert "parity of model.onnx on 2 image(s)" in capsys.readouterr().out
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png")
    again = tmp_path / "again.onnx"
    with pytest.raises(Exception):
        export_main([f"weights={run}", f"out={again}", "imgsz=64", f"check={bad}"])
    assert not again.exists() and "(the export did not finish)" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_int8_export_is_calibrated_quantised_and_agrees_with_fp32(run, grains_dir, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    images = sorted((grains_dir / "images").glob("*.png"))
    assert export_main([f"weights={run}", f"out={out}", "quantize=int8", f"calib={grains_dir / 'images'}",
                        "calib_images=8", f"check={images[-1]}"]) == 0
    printed = capsys.readouterr().out
    int8 = tmp_path / "model.int8.onnx"
    assert int8.is_file() and "calibrated on 8 image(s)" in printed and "parity of model.int8.onnx" in printed
    proto = onnx.load(str(int8))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # weights are stored as int8: the file is several times smaller than the fp32 export
    assert int8.stat().st_size < 0.5 * out.stat().st_size
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["quantization"].startswith("int8") and "seglab_meta" in props
    # not bit-exact, but the masks of held-back images agree with the fp32 PyTorch model almost everywhere
    parity = check_parity(run, int8, images[-4:])
    assert 0 < parity["max_abs_logit_diff"] and parity["mask_agreement"] >= 0.97
    assert OnnxPredictor(int8).probs(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape == (1, 1, 64, 64)


def test_int8_export_needs_calibration_images_and_a_known_scheme(run, tmp_path):
    from seglab.errors import ConfigError

    with pytest.raises(ConfigError, match="calib=path/to/images"):
        export_main([f"weights={run}", f"out={tmp_path / 'a.onnx'}", "quantize=int8"])
    with pytest.raises(ConfigError, match="choose quantize=int8"):
        export_main([f"weights={run}", f"out={tmp_path / 'a.onnx'}", "quantize=int4", "calib=x"])


def test_time_calls_runs_warmup_then_takes_the_median():
    calls = []

    def work() -> None:
        calls.append(1)
        time.sleep(0.002 * (len(calls) % 3 + 1))  # 2, 4 or 6 ms, cycling

    seconds = time_calls(work, warmup=2, iters=5)
    assert len(calls) == 7
    assert 0.002 <= seconds < 0.05


def test_bench_smoke_returns_positive_numbers_and_markdown(tmp_path, capsys):
    out = tmp_path / "bench.md"
    assert bench_main(["model=unet_small", "imgsz=32", "batch=2", "warmup=1", "iters=2", f"out={out}"]) == 0
    table = out.read_text()
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith(("| torch", "| onnx"))]
    assert [r[0].strip() for r in rows] == ["torch_fp32", "torch_bf16", "onnxruntime", "onnxruntime_int8"]
    assert "int8, noise-calibrated" in table
    for row in rows:
        latency, images_per_s = float(row[3]), float(row[4])
        assert latency > 0 and images_per_s == pytest.approx(2 * 1000 / latency, rel=0.02)
    assert "unet_small, random weights" in capsys.readouterr().out


def test_bench_rejects_unknown_backends():
    with pytest.raises(ValueError, match="unknown backend"):
        bench_model(create_model("unet_small"), random_meta(), sizes=(32,), backends=["tensorrt"])
    table = to_markdown([BenchResult("onnxruntime", 128, 1, 12.5, 80.0),
                         BenchResult("torch_fp32", 512, 1, 3160, 0.316)])
    assert "| onnxruntime | 128 | 1 | 12.5 | 80.0 |  |" in table
    assert "| torch_fp32 | 512 | 1 | 3160.0 | 0.32 |  |" in table
