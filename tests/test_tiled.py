"""Tiled prediction of huge images: blending, borders, overlap-tile margins, bounded memory, file I/O."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from seglab.inference import largeio
from seglab.inference.largeio import (
    create_label_writer,
    open_image_reader,
    reflect_indices,
)
from seglab.inference.tiled import (
    gaussian_weight_map,
    predict_large_file,
    predict_tiled,
    tile_starts,
    tiled_batch_probs,
)

RECEPTIVE_RADIUS = 3  # three 3x3 convolutions


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread():
    # Tiny convolutions on a shared 2-core machine: a second thread mostly waits on the first.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def to_tensor(tile: np.ndarray) -> torch.Tensor:
    """HxWxC uint8 -> CxHxW float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(tile, dtype=np.float32) / 255).permute(2, 0, 1)


def three_layer_net(padding: int = 1, classes: int = 2) -> nn.Module:
    """Random fully convolutional net, receptive field 7x7; logits scaled so probabilities are far from 0.5."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=padding), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=padding), nn.ReLU(),
                        nn.Conv2d(8, classes, 3, padding=padding))
    with torch.no_grad():
        net[-1].weight.mul_(10)
    return net.eval()


def balanced(net: nn.Module, image: np.ndarray) -> nn.Module:
    """Shift the class-1 bias so that the two classes split ``image`` half and half."""
    with torch.no_grad():
        logits = net(to_tensor(image)[None])[0]
        net[-1].bias[1] -= (logits[1] - logits[0]).median()
    return net


def softmax_forward(net: nn.Module):
    return lambda batch: torch.softmax(net(batch), dim=1)


def whole_image_probs(forward, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return forward(to_tensor(image)[None])[0].permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def rgb_image() -> np.ndarray:
    # Smooth structures plus noise, so the net's output has real edges and texture.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:400]
    base = 127 + 80 * np.sin(xx / 23.0)[..., None] * np.cos(yy / 31.0)[..., None]
    return np.clip(base + rng.normal(0, 25, (300, 400, 3)), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------- geometry
def test_tile_starts_hand_computed():
    # stride 96, mirrored border 16, span 332, ceil((332-128)/96)+1 = 4 tiles spread 68 apart
    assert tile_starts(300, 128, 0.25) == [-16, 52, 120, 188]
    assert tile_starts(400, 128, 0.25) == [-16, 60, 136, 212, 288]  # 5 tiles, step 76
    assert tile_starts(256, 128, 0.0) == [0, 128]  # no overlap: no border, abutting tiles
    assert tile_starts(100, 128, 0.25) == [-14]  # smaller than a tile: one centred tile


def test_gaussian_weight_map_follows_nnunet():
    weights = gaussian_weight_map(128)
    sigma, centre = 16.0, 63.5
    assert weights.shape == (128, 128) and weights.max() == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(weights, weights.T)
    np.testing.assert_allclose(weights, weights[::-1, ::-1])
    # value at (63, 0), the tile edge along x (about exp(-8)), relative to the peak at (63, 63)
    def gaussian(y: float, x: float) -> float:
        return np.exp(-((y - centre) ** 2 + (x - centre) ** 2) / (2 * sigma**2))
    expected = gaussian(63, 0) / gaussian(63, 63)
    assert weights[63, 0] == pytest.approx(expected, rel=1e-4)
    assert weights[0, 0] == pytest.approx(gaussian(0, 0) / gaussian(63, 63), rel=1e-4)
    assert weights.min() > 0


def test_reflect_indices_mirror_without_repeating_the_edge():
    assert reflect_indices(-3, 8, 5).tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    assert reflect_indices(-2, 2, 1).tolist() == [0, 0, 0, 0]


# ----------------------------------------------------------------------------------- blending
def test_tiled_equals_whole_image_away_from_borders(rgb_image):
    forward = softmax_forward(balanced(three_layer_net(), rgb_image))
    tiled = predict_tiled(forward, rgb_image, num_classes=2, tile=128, overlap=0.25,
                          preprocess=to_tensor, return_probs=True, progress=False)
    whole = whole_image_probs(forward, rgb_image)
    inner = np.s_[RECEPTIVE_RADIUS:-RECEPTIVE_RADIUS, RECEPTIVE_RADIUS:-RECEPTIVE_RADIUS]
    assert tiled.shape == (300, 400, 2) and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled.sum(-1), 1.0, atol=1e-5)
    assert np.abs(tiled[inner] - whole[inner]).max() < 2e-3
    labels = predict_tiled(forward, rgb_image, num_classes=2, tile=128, overlap=0.25,
                           preprocess=to_tensor, progress=False)
    assert labels.dtype == np.uint8
    agree = labels[inner] == whole[inner].argmax(-1)
    assert agree.mean() > 0.999 and 0.3 < labels.mean() < 0.7  # both classes occur


def column_jumps(probs: np.ndarray, columns: list[int]) -> np.ndarray:
    """Class-1 probability change from column c-1 to c, for each column c (rows clear of borders)."""
    rows = slice(RECEPTIVE_RADIUS, -RECEPTIVE_RADIUS)
    return np.stack([probs[rows, c, 1] - probs[rows, c - 1, 1] for c in columns])


def test_no_seams_at_tile_boundaries(rgb_image):
    forward = softmax_forward(three_layer_net())
    whole = whole_image_probs(forward, rgb_image)
    blended = predict_tiled(forward, rgb_image, num_classes=2, tile=128, overlap=0.25,
                            preprocess=to_tensor, return_probs=True, progress=False)
    # every tile edge (start and end) inside the image is where a seam would show
    seams = sorted({c for x in tile_starts(400, 128, 0.25) for c in (x, x + 128) if 5 < c < 395})
    whole_jumps = column_jumps(whole, seams)
    blended_error = np.abs(column_jumps(blended, seams) - whole_jumps).max()
    assert blended_error < 2e-3
    # as smooth there as the whole-image prediction: same mean jump size within 1%
    assert np.abs(column_jumps(blended, seams)).mean() == \
        pytest.approx(np.abs(whole_jumps).mean(), rel=0.01)
    # control: plain stitching (3 abutting tiles, no overlap, nothing to blend) has seams this
    # measure catches
    narrow = rgb_image[:, :384]
    stitched = predict_tiled(forward, narrow, num_classes=2, tile=128, overlap=0.0,
                             preprocess=to_tensor, return_probs=True, progress=False)
    assert tile_starts(384, 128, 0.0) == [0, 128, 256]
    stitched_error = np.abs(column_jumps(stitched, [128, 256])
                            - column_jumps(whole_image_probs(forward, narrow), [128, 256])).max()
    assert stitched_error > 20 * blended_error


def test_small_image_is_mirror_padded_up_to_the_tile(rgb_image):
    forward = softmax_forward(three_layer_net())
    small = rgb_image[:50, :70]
    tiled = predict_tiled(forward, small, num_classes=2, tile=128, overlap=0.25,
                          preprocess=to_tensor, return_probs=True, progress=False)
    # one 128x128 tile centred on the image: 39 + 50 + 39 rows, 29 + 70 + 29 columns
    padded = np.pad(small, ((39, 39), (29, 29), (0, 0)), mode="reflect")
    expected = whole_image_probs(forward, padded)[39:89, 29:99]
    np.testing.assert_allclose(tiled, expected, atol=1e-5)


def test_output_is_written_into_a_given_memmap(tmp_path, rgb_image):
    forward = softmax_forward(balanced(three_layer_net(), rgb_image))
    expected = predict_tiled(forward, rgb_image, num_classes=2, tile=128, preprocess=to_tensor,
                             progress=False)
    target = np.lib.format.open_memmap(tmp_path / "labels.npy", mode="w+", dtype=np.uint8,
                                       shape=(300, 400))
    returned = predict_tiled(forward, rgb_image, num_classes=2, tile=128, preprocess=to_tensor,
                             output=target, progress=False)
    assert returned is target
    target.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), expected)


def test_grayscale_binary_logits():
    torch.manual_seed(1)
    net = nn.Conv2d(1, 1, 3, padding=1).eval()
    image = np.random.default_rng(1).integers(0, 256, (90, 150), dtype=np.uint8)
    labels = predict_tiled(net, image, num_classes=1, tile=64, overlap=0.5, preprocess=to_tensor,
                           outputs="logits", progress=False)
    with torch.no_grad():
        expected = (net(to_tensor(image[..., None])[None])[0, 0] > 0).numpy()
    inner = np.s_[1:-1, 1:-1]
    assert (labels[inner] == expected[inner]).mean() > 0.999


# ---------------------------------------------------------------------------- overlap-tile margins
@pytest.mark.parametrize("overlap", [0.0, 0.25])
def test_margin_with_valid_convolutions_equals_whole_mirror_padded_image(rgb_image, overlap):
    net = three_layer_net(padding=0)  # output = input - 2 * 3
    forward = softmax_forward(net)
    tiled = predict_tiled(forward, rgb_image, num_classes=2, tile=96, overlap=overlap,
                          preprocess=to_tensor, margin=3, return_probs=True, progress=False)
    padded = np.pad(rgb_image, ((3, 3), (3, 3), (0, 0)), mode="reflect")
    expected = whole_image_probs(forward, padded)
    assert expected.shape == tiled.shape
    np.testing.assert_allclose(tiled, expected, atol=1e-5)


def test_margin_with_same_size_network_keeps_the_centre(rgb_image):
    # zero padding corrupts only the 3 outermost pixels, which the margin of 4 crops away
    forward = softmax_forward(three_layer_net(padding=1))
    tiled = predict_tiled(forward, rgb_image, num_classes=2, tile=100, overlap=0.0,
                          preprocess=to_tensor, margin=4, return_probs=True, progress=False)
    padded = np.pad(rgb_image, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    expected = whole_image_probs(forward, padded)[4:-4, 4:-4]
    np.testing.assert_allclose(tiled, expected, atol=1e-5)


def test_wrong_output_size_names_the_margin(rgb_image):
    forward = softmax_forward(three_layer_net(padding=0))
    with pytest.raises(ValueError, match="margin"):
        predict_tiled(forward, rgb_image, num_classes=2, tile=64, preprocess=to_tensor,
                      progress=False)


def test_logits_passed_as_probabilities_are_rejected(rgb_image):
    net = three_layer_net()
    with pytest.raises(ValueError, match="outputs='logits'"):
        predict_tiled(net, rgb_image, num_classes=2, tile=128, preprocess=to_tensor,
                      progress=False)


def test_bad_arguments_are_rejected(rgb_image):
    forward = softmax_forward(three_layer_net())
    with pytest.raises(ValueError, match="overlap"):
        predict_tiled(forward, rgb_image, num_classes=2, overlap=1.0, preprocess=to_tensor)
    with pytest.raises(ValueError, match="output has shape"):
        predict_tiled(forward, rgb_image, num_classes=2, preprocess=to_tensor,
                      output=np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="num_classes"):
        predict_tiled(forward, rgb_image, num_classes=3, tile=128, preprocess=to_tensor,
                      progress=False)


# ----------------------------------------------------------------------------------- file I/O
def test_tiff_readers_return_the_stored_windows(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "plain.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "tiled.tif", rgb, photometric="rgb", tile=(32, 32),
                     compression="zlib")
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb",
                     planarconfig="separate")
    tifffile.imwrite(tmp_path / "big.tif", rgb, photometric="rgb", bigtiff=True)
    for name, kind in [("plain.tif", largeio.ContiguousTiffReader),
                       ("big.tif", largeio.ContiguousTiffReader),
                       ("tiled.tif", largeio.ChunkedTiffReader),
                       ("planar.tif", largeio.ContiguousTiffReader)]:
        with open_image_reader(tmp_path / name) as reader:
            assert isinstance(reader, kind), name
            assert reader.shape == (70, 90, 3) and reader.dtype == np.uint8
            np.testing.assert_array_equal(reader.read(10, 50, 20, 85), rgb[10:50, 20:85])


def test_predict_large_file_matches_in_memory_prediction(tmp_path, rgb_image):
    forward = softmax_forward(three_layer_net())
    tifffile.imwrite(tmp_path / "in.tif", rgb_image, photometric="rgb", tile=(64, 64),
                     compression="zlib")
    expected = predict_tiled(forward, rgb_image, num_classes=2, tile=128, preprocess=to_tensor,
                             progress=False)
    for out_name in ["labels.tif", "labels.png"]:
        out = predict_large_file(forward, tmp_path / "in.tif", tmp_path / out_name,
                                 num_classes=2, tile=128, overlap=0.25, batch_size=3,
                                 preprocess=to_tensor, progress=False)
        with open_image_reader(out) as written:
            np.testing.assert_array_equal(written.read(0, 300, 0, 400), expected)


def test_label_writer_writes_partial_windows(tmp_path):
    labels = np.random.default_rng(3).integers(0, 5, (40, 60), dtype=np.uint8)
    with create_label_writer(tmp_path / "w.tif", (40, 60)) as writer:
        writer[0:40, 30:60] = labels[:, 30:]
        writer[0:40, 0:30] = labels[:, :30]
        with pytest.raises(ValueError, match="block"):
            writer[0:10, 0:10] = labels[:5, :5]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "w.tif"), labels)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        open_image_reader(tmp_path / "missing.tif")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported image format '.txt'"):
        open_image_reader(tmp_path / "notes.txt")
    (tmp_path / "broken.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(ValueError, match="broken.tif"):
        open_image_reader(tmp_path / "broken.tif")
    with pytest.raises(ValueError, match="unsupported output format"):
        create_label_writer(tmp_path / "out.jpg", (10, 10))


# ----------------------------------------------------------------------------------- GeoTIFF
def write_geotiff(path: Path, image: np.ndarray) -> tuple:
    rasterio = pytest.importorskip("rasterio")
    from affine import Affine

    transform = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4650000.0)  # 0.5 m pixels, UTM origin
    crs = rasterio.crs.CRS.from_epsg(32633)
    with rasterio.open(path, "w", driver="GTiff", height=image.shape[0], width=image.shape[1],
                       count=3, dtype="uint8", crs=crs, transform=transform) as dst:
        dst.write(np.moveaxis(image, -1, 0))
    return transform, crs


def test_geotiff_round_trip_keeps_transform_and_crs(tmp_path, rgb_image):
    rasterio = pytest.importorskip("rasterio")
    transform, crs = write_geotiff(tmp_path / "geo.tif", rgb_image)
    forward = softmax_forward(three_layer_net())
    out = predict_large_file(forward, tmp_path / "geo.tif", tmp_path / "pred.tif", num_classes=2,
                             tile=128, overlap=0.25, batch_size=2, preprocess=to_tensor,
                             progress=False)
    with rasterio.open(out) as result:
        assert result.crs == crs and result.transform == transform
        assert (result.height, result.width, result.count) == (300, 400, 1)
        labels = result.read(1)
    expected = predict_tiled(forward, rgb_image, num_classes=2, tile=128, preprocess=to_tensor,
                             progress=False)
    np.testing.assert_array_equal(labels, expected)
    with pytest.raises(ValueError, match="georeferenced"):
        predict_large_file(forward, tmp_path / "geo.tif", tmp_path / "pred.png", num_classes=2,
                           tile=128, preprocess=to_tensor, progress=False)


def test_geotiff_without_rasterio_fails_clearly(tmp_path, rgb_image, monkeypatch):
    write_geotiff(tmp_path / "geo.tif", rgb_image)
    monkeypatch.setattr(largeio, "_rasterio_available", lambda: False)
    with pytest.raises(ImportError, match="pip install rasterio"):
        open_image_reader(tmp_path / "geo.tif")


# ------------------------------------------------------------------------------ huge image, low RAM
BIG_SIDE, BLOCK, BIG_TILE = 20000, 1024, 1024

BIG_PREDICTION_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np, torch
    from seglab.inference.tiled import predict_large_file


    def peak_rss_bytes():
        # VmHWM belongs to this process's own address space. ru_maxrss would not do: Linux carries it
        # over exec from the parent, so under a 2 GB pytest process it reports the parent's peak.
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    torch.set_num_threads(1)  # shared 2-core machine; the work here is mostly memory-bound
    net = torch.nn.Conv2d(1, 1, 1)  # logit = 20 * (brightness - 0.5): thresholds at 127.5
    with torch.no_grad():
        net.weight.fill_(20.0)
        net.bias.fill_(-10.0)
    net.eval()
    preprocess = lambda tile: torch.from_numpy(tile.astype(np.float32) / 255).permute(2, 0, 1)
    imports_bytes = peak_rss_bytes()
    start = time.perf_counter()
    predict_large_file(net, sys.argv[1], sys.argv[2], num_classes=1, tile=int(sys.argv[3]),
                       overlap=0.125, batch_size=1, preprocess=preprocess, outputs="logits",
                       progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_bytes": peak_rss_bytes(),
                      "imports_bytes": imports_bytes}))
""")


def checkerboard(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """1 on bright blocks, 0 on dark ones, for any window of the big synthetic image."""
    yy, xx = np.ogrid[y0:y1, x0:x1]
    return ((yy // BLOCK + xx // BLOCK) % 2 == 0).astype(np.uint8)


def write_big_checkerboard_tiff(path: Path) -> None:
    """20000x20000 uint8 tiled TIFF, 200 on bright blocks and 50 on dark ones, written tile by tile."""
    bright, dark = np.full((BLOCK, BLOCK), 200, np.uint8), np.full((BLOCK, BLOCK), 50, np.uint8)
    tiles = (bright if (y + x) % 2 == 0 else dark  # one TIFF tile per checkerboard block
             for y in range(math.ceil(BIG_SIDE / BLOCK)) for x in range(math.ceil(BIG_SIDE / BLOCK)))
    tifffile.imwrite(path, tiles, shape=(BIG_SIDE, BIG_SIDE), dtype=np.uint8,
                     tile=(BLOCK, BLOCK), compression="zlib", compressionargs={"level": 1},
                     photometric="minisblack")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from Linux /proc")
def test_huge_tiff_is_predicted_in_bounded_memory(tmp_path):
    source, result = tmp_path / "huge.tif", tmp_path / "huge_labels.tif"
    write_big_checkerboard_tiff(source)
    run = subprocess.run([sys.executable, "-c", BIG_PREDICTION_SCRIPT, str(source), str(result),
                          str(BIG_TILE)], capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    stats = json.loads(run.stdout.strip().splitlines()[-1])
    megapixels_per_s = BIG_SIDE**2 / 1e6 / stats["seconds"]
    print(f"\nhuge TIFF, tile {BIG_TILE}: {stats['seconds']:.1f} s, {megapixels_per_s:.1f} Mpx/s, "
          f"peak RSS {stats['peak_bytes'] / 2**20:.0f} MiB "
          f"({stats['imports_bytes'] / 2**20:.0f} MiB after imports)")
    assert stats["peak_bytes"] < 2 * 2**30
    # what prediction adds stays below the 400 MB that merely holding the uint8 label map would take
    assert stats["peak_bytes"] - stats["imports_bytes"] < 400 * 2**20

    labels = tifffile.memmap(result, mode="r")
    assert labels.shape == (BIG_SIDE, BIG_SIDE) and labels.dtype == np.uint8
    # windows across block corners, tile seams (strips start every ~1800 rows) and the far corner
    for y0, x0 in [(0, 0), (19744, 19744), (5873, 1999), (1000, 1000), (14300, 7650)]:
        window = np.s_[y0:y0 + 256, x0:x0 + 256]
        np.testing.assert_array_equal(labels[window], checkerboard(y0, y0 + 256, x0, x0 + 256))
    # 19 full blocks of 1024 and one of 544 per side; bright where block row + column is even
    sides = [BLOCK] * 19 + [BIG_SIDE - 19 * BLOCK]
    bright_pixels = sum(h * w for i, h in enumerate(sides) for j, w in enumerate(sides)
                        if (i + j) % 2 == 0)
    assert int(np.count_nonzero(labels)) == bright_pixels


def test_tiled_batch_probs_match_whole_images_of_a_batch():
    """A collated batch (padded to its largest image) predicted tile by tile equals whole-image probabilities."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 3, 1))  # pointwise: tiling cannot change it
    forward = lambda x: net(x.float() / 255)  # noqa: E731
    images = torch.zeros((2, 3, 90, 120), dtype=torch.uint8)
    images[0] = torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8)
    images[1, :, :70, :100] = torch.randint(0, 256, (3, 70, 100), dtype=torch.uint8)
    sizes = [(90, 120), (70, 100)]
    probs = tiled_batch_probs(forward, images, sizes, num_classes=3, tile=48, overlap=0.25)
    assert len(tile_starts(120, 48, 0.25)) >= 3  # really several overlapping tiles per image
    with torch.no_grad():
        whole = torch.softmax(forward(images), 1)
    torch.testing.assert_close(probs[0], whole[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(probs[1, :, :70, :100], whole[1, :, :70, :100], atol=1e-5, rtol=0)
    assert probs[1, :, 70:].abs().max() == 0 and probs[1, :, :, 100:].abs().max() == 0  # padding stays empty
