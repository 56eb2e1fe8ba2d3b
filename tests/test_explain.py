"""Grad-CAM explanations: hand-computed CAMs on a tiny model, layer discovery and naming, and a trained U-Net
whose CAM lights up the grains it segments (and the matrix for the background class)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

pytest.importorskip("pytorch_grad_cam")

from seglab.explain import cam_layers, conv_layers, explain_image, resolve_layer  # noqa: E402
from seglab.explain.cli import explain_main  # noqa: E402
from seglab.explain.gradcam import grad_cams  # noqa: E402
from seglab.explain.run import Explainer  # noqa: E402
from seglab.models import create_model  # noqa: E402


class OneByOne(nn.Module):
    """1x1 conv -> ReLU -> 1x1 head: Grad-CAM of ``features`` has a closed form."""

    def __init__(self, head_weights: list[list[float]]):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU())
        self.head = nn.Conv2d(3, len(head_weights), 1)
        with torch.no_grad():  # features relu(x), relu(-x), relu(x/2 - 0.2): positive x reads as foreground
            self.features[0].weight.copy_(torch.tensor([1.0, -1.0, 0.5]).view(3, 1, 1, 1))
            self.features[0].bias.copy_(torch.tensor([0.0, 0.0, -0.2]))
            self.head.weight.copy_(torch.tensor(head_weights).view(-1, 3, 1, 1))
            self.head.bias.fill_(-0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def reference_cam(model: OneByOne, x: torch.Tensor, weight_sign: float, region: np.ndarray,
                  channel: int = 0) -> np.ndarray:
    """Grad-CAM by hand: d(sum over region of sign * logit)/dA_c = sign * w_c on the region, so
    alpha_c = sign * w_c * |region| / HW; CAM = ReLU(sum_c alpha_c A_c), min-max scaled."""
    with torch.no_grad():
        acts = model.features(x)[0].numpy()
    w = model.head.weight[channel, :, 0, 0].detach().numpy()
    alpha = weight_sign * w * region.mean()
    cam = np.maximum((alpha[:, None, None] * acts).sum(0), 0)
    cam = cam - cam.min()
    return cam / (cam.max() + 1e-7)


@pytest.fixture()
def tiny() -> tuple[OneByOne, torch.Tensor]:
    torch.manual_seed(3)
    return OneByOne([[1.0, -0.8, 0.6]]).eval(), torch.randn(1, 1, 8, 10)


def test_binary_foreground_cam_matches_hand_computation(tiny):
    model, x = tiny
    with torch.no_grad():
        foreground = (model(x)[0, 0] > 0).numpy()
    assert 0 < foreground.sum() < foreground.size  # both classes present, so both targets are non-trivial
    cams, mask = grad_cams(model, x, {"features": model.features}, class_index=1)
    np.testing.assert_array_equal(mask, foreground)
    assert cams["features"].shape == (8, 10)
    np.testing.assert_allclose(cams["features"], reference_cam(model, x, +1.0, foreground), atol=1e-5)


def test_binary_background_cam_uses_the_negated_logit(tiny):
    model, x = tiny
    with torch.no_grad():
        background = (model(x)[0, 0] <= 0).numpy()
    cams, mask = grad_cams(model, x, {"features": model.features}, class_index=0)
    np.testing.assert_array_equal(mask, background)
    np.testing.assert_allclose(cams["features"], reference_cam(model, x, -1.0, background), atol=1e-5)


def test_multiclass_cam_uses_the_class_channel_over_its_argmax_region():
    torch.manual_seed(5)
    model = OneByOne([[0.2, 0.9, -0.3], [-0.5, 0.1, 0.4], [1.0, -0.7, 0.3]]).eval()
    x = torch.randn(1, 1, 6, 6)
    with torch.no_grad():
        region = (model(x)[0].argmax(0) == 2).numpy()
    assert 0 < region.sum() < region.size
    cams, mask = grad_cams(model, x, {"features": model.features}, class_index=2)
    np.testing.assert_array_equal(mask, region)
    np.testing.assert_allclose(cams["features"], reference_cam(model, x, 1.0, region, channel=2), atol=1e-5)


def test_class_predicted_nowhere_gives_zero_cams(tiny):
    model, x = tiny
    with torch.no_grad():
        model.head.bias.fill_(-1e3)  # every pixel background: class 1 has no target pixels
    cams, mask = grad_cams(model, x, {"features": model.features}, class_index=1)
    assert not mask.any() and not cams["features"].any()


def test_fallback_layers_are_the_unet_levels_down_to_the_bottleneck():
    model = create_model("unet_small")
    model.cam_layers = None  # hide the model's own list to exercise the discovery by walking the modules
    # The last conv of each resolution level, widened to its DoubleConv block (post-activation features).
    assert list(cam_layers(model)) == ["inc", "downs.0", "downs.1", "downs.2", "downs.3"]
    convs = conv_layers(model)
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in model.modules())


def test_encoder_layers_accept_short_names_and_wrong_names_get_suggestions():
    model = create_model("unet_encoder", encoder="resnet18")
    assert list(cam_layers(model))[-1] == "encoder.model.layer4"
    assert resolve_layer(model, "encoder.layer4")[0] == "encoder.model.layer4"
    assert resolve_layer(model, "decoder.0.conv1")[1] is model.decoder[0].conv1
    with pytest.raises(ValueError, match=r"Did you mean: encoder\.layer4.*CAM layers of this model"):
        resolve_layer(model, "encoder.layr4")


# ---- a trained U-Net on the synthetic grains ---------------------------------------------------


@pytest.fixture(scope="module")
def grains_run(grains_dir: Path, tmp_path_factory) -> Path:
    """unet_small trained 3 epochs of batch 4 on the 64 px grains (about 15 s on a CPU): foreground IoU ~0.9."""
    from seglab.cli.main import main

    project = tmp_path_factory.mktemp("explain_runs")
    assert main(["train", f"data={grains_dir}", "epochs=3", "batch=4", "model=unet_small", f"project={project}",
                 "name=cam", "workers=0", "report=false"]) == 0
    return project / "cam"


def grain_mask(grains_dir: Path, stem: str) -> np.ndarray:
    """Ground truth of a synthetic grains image: green pixels of the RGB mask."""
    return np.array(Image.open(grains_dir / "masks" / f"{stem}.png"))[..., 1] > 128


def test_trained_unet_cam_is_high_on_grains_and_background_cam_on_matrix(grains_run, grains_dir, tmp_path):
    explainer = Explainer(str(grains_run), device="cpu")
    inside_fg, outside_fg, inside_bg, outside_bg = [], [], [], []
    for stem in ("grain_000", "grain_001"):
        truth = grain_mask(grains_dir, stem)
        image = grains_dir / "images" / f"{stem}.png"
        grain = explainer.explain(image, "object", layer="inc", out_dir=None)["cams"]["inc"]
        matrix = explainer.explain(image, 0, layer="inc", out_dir=None)["cams"]["inc"]
        assert grain.shape == truth.shape == (64, 64)
        inside_fg.append(grain[truth].mean())
        outside_fg.append(grain[~truth].mean())
        inside_bg.append(matrix[truth].mean())
        outside_bg.append(matrix[~truth].mean())
    assert np.mean(inside_fg) > 3 * np.mean(outside_fg) and np.mean(inside_fg) > 0.2
    assert np.mean(outside_bg) > 3 * np.mean(inside_bg) and np.mean(outside_bg) > 0.2


def test_default_layer_is_the_deepest_and_files_have_the_class_in_their_name(grains_run, grains_dir, tmp_path):
    image = grains_dir / "images" / "grain_003.png"
    result = explain_image(str(grains_run), image, class_index=1, out_dir=tmp_path, device="cpu")
    assert result["layers"] == ["downs.3"] and result["class_name"] == "object"
    assert result["cams"]["downs.3"].shape == (64, 64) and result["mask"].shape == (64, 64)
    files = result["files"]["downs.3"]
    assert files["panel"] == tmp_path / "grain_003_cam_object_downs.3.png"
    for path in files.values():
        assert Image.open(path).size[0] > 0
    assert Image.open(files["overlay"]).size == (64, 64)
    assert "grid" not in result["files"]


def test_sweep_cli_writes_one_grid_and_every_layer(grains_run, grains_dir, tmp_path, capsys):
    image = grains_dir / "images" / "grain_004.png"
    code = explain_main([f"weights={grains_run}", f"source={image}", "sweep=true", f"out={tmp_path}",
                         "device=cpu"])
    assert code == 0
    grid = tmp_path / "grain_004_cam_object_sweep.png"
    assert grid.is_file() and Image.open(grid).size[0] > 4 * 200  # four tiles a row
    for layer in ("inc", "downs.0", "downs.1", "downs.2", "downs.3"):
        assert (tmp_path / f"grain_004_cam_object_{layer}_overlay.png").is_file()
    assert "class 1 (object)" in capsys.readouterr().out


def test_a_sweep_of_every_convolution_shows_its_progress(grains_run, grains_dir, tmp_path, capsys, monkeypatch):
    """Dozens of layers, three pictures each: the sweep says how far it is (a heartbeat line off a terminal)."""
    monkeypatch.setenv("SEGLAB_HEARTBEAT", "1e-9")  # a line after every layer
    image = grains_dir / "images" / "grain_004.png"
    assert explain_main([f"weights={grains_run}", f"source={image}", "sweep=true", "layers=all_conv",
                         f"out={tmp_path}", "device=cpu"]) == 0
    out = capsys.readouterr().out
    layers = len(list(tmp_path.glob("grain_004_cam_object_*_overlay.png")))
    assert layers > 8 and f"grain_004: layer pictures: {layers}/{layers} layer (100%)" in out


def test_bad_inputs_fail_with_clear_messages(grains_run, grains_dir):
    explainer = Explainer(str(grains_run), device="cpu")
    image = grains_dir / "images" / "grain_000.png"
    with pytest.raises(ValueError, match=r"layer 'downs\.9'.*Did you mean.*downs\.0"):
        explainer.explain(image, 1, layer="downs.9", out_dir=None)
    with pytest.raises(ValueError, match=r"class 5 does not exist; this model has classes 0=background, 1=object"):
        explainer.explain(image, 5, out_dir=None)
    with pytest.raises(ValueError, match="not one of this model's classes"):
        explainer.explain(image, "grain", out_dir=None)
    with pytest.raises(ValueError, match="not both"):
        explainer.explain(image, 1, layer="inc", sweep=True, out_dir=None)
    from seglab.errors import ConfigError

    with pytest.raises(ConfigError, match="Did you mean"):
        explain_main([f"weights={grains_run}", f"source={image}", "layr=inc"])


# ---- readable layer names and the sweep figure (no training) ------------------------------------


def test_layers_have_readable_names_and_layer_accepts_them():
    from seglab.explain.layers import block_names, layer_names

    model = create_model("unet_small")
    names = block_names(model)
    assert [names[p] for p in cam_layers(model)] == [f"encoder stage {i}" for i in range(1, 6)]
    assert names["ups.0"] == "decoder block 1" and names["head"] == "head"
    assert layer_names(model, ["downs.0.4", "ups.1.conv.0", "downs.0.1"]) == {
        "downs.0.4": "encoder stage 2, conv 2", "ups.1.conv.0": "decoder block 2, conv 1",
        "downs.0.1": "encoder stage 2 / 1"}
    assert resolve_layer(model, "encoder stage 3") == ("downs.1", model.downs[1])
    assert resolve_layer(model, "Decoder_Block-2")[0] == "ups.1"
    assert resolve_layer(model, "head")[1] is model.head
    assert resolve_layer(model, "downs.1")[0] == "downs.1"  # the module path still works
    with pytest.raises(ValueError, match=r"encoder stage 5 \(downs\.3\).*decoder block 1 \(ups\.0\)"):
        resolve_layer(model, "encoder stage 9")
    encoder_model = create_model("unet_encoder", encoder="resnet18")
    encoder_names = block_names(encoder_model)
    assert encoder_names["encoder.model.layer4"] == "encoder stage 5"
    assert encoder_names["decoder.0"] == "decoder block 1"


def test_sweep_figure_has_a_colour_bar_and_titles_clear_of_the_images():
    from seglab.explain.render import sweep_figure

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    cams = {f"downs.{i}": rng.random((48, 64)).astype(np.float32) for i in range(6)}
    cams["downs.5"][:] = 0
    labels = {name: f"encoder stage {i + 1}" for i, name in enumerate(cams)}
    mask = np.zeros((48, 64), bool)
    mask[10:20, 10:30] = True
    fig = sweep_figure(image, cams, mask, "title", columns=4, labels=labels)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # constrained layout runs at draw time
    bars = [ax for ax in fig.axes if "Grad-CAM strength" in ax.get_ylabel()]
    assert len(bars) == 1 and bars[0].get_ylim() == (0.0, 1.0)
    tiles = [ax for ax in fig.axes if ax.get_visible() and ax not in bars]
    assert [ax.get_title() for ax in tiles] == ["image"] + list(labels.values())
    assert [ax.get_xlabel() for ax in tiles][1:3] == ["downs.0", "downs.1"]  # the module path stays below
    assert tiles[-1].get_xlabel() == "downs.5, all zero"
    renderer = canvas.get_renderer()
    for ax in tiles:  # no title or caption lies on any image, and no caption on the next row's titles
        title = ax.title.get_window_extent(renderer)
        caption = ax.xaxis.label.get_window_extent(renderer)
        for other in tiles:
            picture = other.get_window_extent(renderer)
            assert not title.overlaps(picture) and not caption.overlaps(picture)
            assert not caption.overlaps(other.title.get_window_extent(renderer))
