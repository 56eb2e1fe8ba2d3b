"""Window sampling of big training images and tiled validation (data/windows.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.data.dataset import SegmentationDataset, pad_collate
from seglab.data.formats import Sample
from seglab.data.masks import MaskCodec
from seglab.data.transforms import build_train_transform
from seglab.data.windows import (TileDataset, Window, WindowDataset, WindowIndex, WindowSampler, spread_draw,
                                 tile_starts, window_size)

from conftest import write_png


def exact_max_share(mask: np.ndarray, w: Window, ignore: int = 255) -> float:
    """Share of the most frequent class among the window's labelled pixels (1.0 with fewer than two classes)."""
    cut = mask[w.y: w.y + w.h, w.x: w.x + w.w]
    counts = np.bincount(cut[cut != ignore].ravel())
    counts = counts[counts > 0]
    return counts.max() / counts.sum() if len(counts) > 1 else 1.0


def test_window_size_is_the_crop_cut_to_the_image():
    assert window_size((1200, 1600), 512) == (512, 512)
    assert window_size((300, 1600), 512) == (300, 512)
    assert window_size((300, 400), 0) == (300, 400)


def test_images_are_drawn_in_proportion_to_their_area():
    sizes = [(100, 100), (200, 100), (100, 400), (300, 300)]  # areas 1 : 2 : 4 : 9
    sampler = WindowSampler(sizes, crop=64, samples=4000, seed=3)
    draws = [w for epoch in range(5) for w in sampler.draw(epoch)]
    share = np.bincount([w.index for w in draws], minlength=4) / len(draws)
    assert share == pytest.approx(np.array([1, 2, 4, 9]) / 16, abs=0.01)
    for w in draws[:500]:  # every window lies inside its image and has the crop's size (cut to the image)
        H, W = sizes[w.index]
        assert (w.h, w.w) == window_size((H, W), 64) and 0 <= w.y <= H - w.h and 0 <= w.x <= W - w.w


def test_a_batch_holds_distinct_images_when_the_images_are_alike():
    """24 equal images, 23 batches of 8: independent draws repeat an image in most batches (overlapping windows,
    a smaller effective batch); spread draws give each image its exact share and rarely repeat one in a batch."""
    sizes = [(360, 480)] * 24
    draw = [w.index for w in WindowSampler(sizes, 256, 184, seed=0).draw(0)]
    assert sorted(np.bincount(draw, minlength=24)) == [7] * 8 + [8] * 16  # 184 / 24 = 7.67, off by less than one
    repeats = sum(len(set(draw[i: i + 8])) < 8 for i in range(0, 184, 8))
    independent = np.random.default_rng(0).choice(24, size=184)
    assert repeats <= 6 < sum(len(set(independent[i: i + 8])) < 8 for i in range(0, 184, 8))


def test_spread_draw_counts_follow_the_areas_exactly():
    p = np.array([1, 2, 4, 9]) / 16
    for seed in range(5):
        counts = np.bincount(spread_draw(p, 37, np.random.default_rng(seed)), minlength=4)
        assert counts.sum() == 37 and np.all(np.abs(counts - 37 * p) < 1)


def test_the_draw_depends_only_on_seed_and_epoch():
    sizes = [(500, 700), (900, 400)]
    a, b = WindowSampler(sizes, 128, 50, seed=7), WindowSampler(sizes, 128, 50, seed=7)
    assert a.draw(0) == b.draw(0) and a.draw(4) == b.draw(4)
    assert a.draw(0) != a.draw(1)
    assert a.draw(0) != WindowSampler(sizes, 128, 50, seed=8).draw(0)
    a.set_epoch(4)
    assert list(a) == a.draw(4) and len(a) == 50


def test_ddp_ranks_take_disjoint_shares_whose_union_is_the_draw():
    sizes = [(500, 700), (900, 400), (300, 300)]
    world = 3
    ranks = [WindowSampler(sizes, 128, 100, seed=1, rank=r, world=world) for r in range(world)]
    for r in ranks:
        r.set_epoch(2)
    shards = [list(r) for r in ranks]
    full = ranks[0].draw(2)
    assert len(full) == 102  # rounded up to a multiple of the ranks: every rank runs the same number of steps
    assert all(len(s) == len(r) == 34 for s, r in zip(shards, ranks))
    assert [w for trio in zip(*shards) for w in trio] == full  # rank r takes r, r+3, ...: disjoint, union = draw


def _mostly_background(size: int = 256) -> np.ndarray:
    """Class 0 on most of the image, a square of class 1, a bar of class 2, a stripe of ignore_index."""
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[60:140, 60:140] = 1
    mask[180:200, 20:90] = 2
    mask[220:230, :] = 255
    return mask


def test_window_index_shares_match_exact_counts():
    mask = _mostly_background()
    index = WindowIndex.from_masks([mask], num_classes=3, ignore_index=255, cell=4)
    assert index.class_shares() == pytest.approx(np.bincount(mask[mask != 255].ravel(), minlength=3)
                                                 / (mask != 255).sum())
    rng = np.random.default_rng(1)
    for _ in range(50):
        y, x = (int(v) for v in rng.integers(0, 256 - 64, 2))
        w = Window(0, y, x, 64, 64)
        assert index.max_share(0, y, x, 64, 64) == pytest.approx(exact_max_share(mask, w), abs=0.05)


def test_cat_max_ratio_redraws_windows_one_class_fills():
    mask = _mostly_background()
    index = WindowIndex.from_masks([mask], num_classes=3, ignore_index=255, cell=4)
    plain = WindowSampler([mask.shape], 48, 400, seed=0, index=index).draw(0)
    capped = WindowSampler([mask.shape], 48, 400, seed=0, index=index, cat_max_ratio=0.75).draw(0)
    plain_share = np.array([exact_max_share(mask, w) for w in plain])
    capped_share = np.array([exact_max_share(mask, w) for w in capped])
    assert capped_share.mean() < plain_share.mean() - 0.05
    assert (capped_share < 0.8).mean() > 2 * (plain_share < 0.8).mean()
    # a window as large as its image cannot be re-drawn: it is kept as it is
    whole = WindowSampler([mask.shape], 256, 5, seed=0, index=index, cat_max_ratio=0.75).draw(0)
    assert all((w.y, w.x, w.h, w.w) == (0, 0, 256, 256) for w in whole)
    with pytest.raises(ValueError, match="WindowIndex"):
        WindowSampler([mask.shape], 48, 10, seed=0, cat_max_ratio=0.75)


def test_a_third_of_the_windows_centre_on_rare_classes_rarest_first():
    rng = np.random.default_rng(2)
    masks = []
    for k in range(4):
        m = np.zeros((200, 300), dtype=np.uint8)  # class 0 dominant
        for _ in range(8):
            y, x = rng.integers(0, 180, 1)[0], rng.integers(0, 280, 1)[0]
            m[y: y + 15, x: x + 15] = 1  # common-ish
        if k % 2 == 0:
            m[100:104, 50:54] = 2  # rarest: 16 px in half of the images
        masks.append(m)
    index = WindowIndex.from_masks(masks, num_classes=3, ignore_index=255)
    sampler = WindowSampler(index.sizes, 64, 300, seed=4, index=index, rare_windows=1 / 3)
    draws = [w for epoch in range(4) for w in sampler.draw(epoch)]
    centred = [w for w in draws if w.rare >= 0]
    assert len(centred) == 4 * round(300 / 3)
    assert {w.rare for w in centred} == {1, 2}  # never the most frequent class
    for w in centred:  # each window holds a pixel of the class it is centred on
        assert (masks[w.index][w.y: w.y + w.h, w.x: w.x + w.w] == w.rare).any()
    per_class = np.bincount([w.rare for w in centred], minlength=3)
    assert per_class[2] > per_class[1]  # the rarer class is centred on more often
    assert all(w.index % 2 == 0 for w in centred if w.rare == 2)  # only the images that hold it
    # plain windows rarely see class 2: centring is what shows it to the model
    seen_plain = np.mean([(masks[w.index][w.y: w.y + w.h, w.x: w.x + w.w] == 2).any() for w in draws if w.rare < 0])
    seen_centred = np.mean([(masks[w.index][w.y: w.y + w.h, w.x: w.x + w.w] == 2).any() for w in centred])
    assert seen_centred > 2 * seen_plain


def test_rare_windows_off_or_single_class_gives_plain_windows():
    masks = [np.zeros((100, 100), np.uint8)]
    index = WindowIndex.from_masks(masks, num_classes=2, ignore_index=255)
    draws = WindowSampler(index.sizes, 32, 30, seed=0, index=index, rare_windows=0.5).draw(0)
    assert all(w.rare == -1 for w in draws)


@pytest.fixture()
def big_pairs(tmp_path):
    """Three index-mask pairs of different sizes whose pixel values encode their position."""
    samples = []
    for k, (h, w) in enumerate([(90, 130), (64, 64), (40, 150)]):
        yy, xx = np.mgrid[0:h, 0:w]
        image = np.stack([yy % 256, xx % 256, np.full_like(yy, k)], -1).astype(np.uint8)
        mask = ((yy // 20 + xx // 20) % 3).astype(np.uint8)
        samples.append(Sample(write_png(tmp_path / "images" / f"{k}.png", image),
                              write_png(tmp_path / "masks" / f"{k}.png", mask), str(k)))
    return samples


@pytest.mark.parametrize("cache", [True, False])
def test_window_dataset_crops_then_transforms(big_pairs, cache):
    codec = MaskCodec("index", 3, 255)
    base = SegmentationDataset(big_pairs, codec, 3, cache=cache)
    ds = WindowDataset(base, transform=None)
    item = ds[Window(0, 10, 20, 32, 48)]
    assert item["image"].shape == (3, 32, 48) and item["index"] == 0 and item["window"] == (10, 20)
    assert item["image"][0, 0, 0] == 10 and item["image"][1, 0, 0] == 20  # the pixel values encode the position
    image, mask = base.load_pair(big_pairs[0])
    assert torch.equal(item["mask"], torch.from_numpy(mask[10:42, 20:68].astype(np.int64)))
    # with the training transform of the same crop: windows of images smaller than the crop are padded to it
    transform = build_train_transform("flips", crop=64, ignore_index=255, seed=0)
    ds = WindowDataset(base, transform)
    sampler = WindowSampler([(90, 130), (64, 64), (40, 150)], 64, 12, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=pad_collate)
    batches = list(loader)
    assert len(batches) == 3 and all(b["image"].shape == (4, 3, 64, 64) for b in batches)
    assert ds[1]["image"].shape == (3, 64, 64)  # an int key is the whole image


@pytest.mark.parametrize("tile", [32, 50, 64, 200])
def test_tiles_score_every_pixel_once(big_pairs, tile):
    codec = MaskCodec("index", 3, 255)
    base = SegmentationDataset(big_pairs, codec, 3, cache=True)
    ds = TileDataset(base, tile)
    for i, (image, mask) in enumerate(base.cached_arrays()):
        scored = np.zeros(mask.shape, dtype=np.int64)
        rebuilt = np.full(mask.shape, -1, dtype=np.int64)
        for k in range(len(ds)):
            item = ds[k]
            if item["index"] != i:
                continue
            y, x = item["tile"]
            m = item["mask"].numpy()
            h, w = m.shape
            own = m != 255
            scored[y: y + h, x: x + w] += own
            rebuilt[y: y + h, x: x + w][own] = m[own]
            assert torch.equal(item["image"], torch.from_numpy(image[y: y + h, x: x + w].transpose(2, 0, 1).copy()))
        assert (scored == 1).all() and (rebuilt == mask).all()


def test_tile_starts_cover_the_length_once():
    assert tile_starts(100, 0) == [(0, 0)] and tile_starts(100, 128) == [(0, 0)]
    assert tile_starts(128, 64) == [(0, 0), (64, 0)]
    assert tile_starts(150, 64) == [(0, 0), (64, 0), (86, 42)]  # the last tile scores only rows 128..149
