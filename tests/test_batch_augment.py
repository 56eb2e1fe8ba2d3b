"""Batched augmentation on tensors (issue #32): per-sample random, seeded, image and mask kept aligned."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.data.batch_augment import BATCHED, FILL, NOT_BATCHED, BatchAugment, reflect101, unbatched
from seglab.data.device_data import DeviceData, DeviceLoader

IGNORE = 255
STEP = 32  # the mask is image channel 0 divided by STEP: classes 0..7 at values 0, 32, ..., 224


def pairs_with_mask_from_pixels(n: int, h: int, w: int, seed: int = 0, block: int = 1):
    """``n`` RGB images whose channel 0 is STEP x their mask (classes 0..7 in ``block`` x ``block`` squares)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        coarse = rng.integers(0, 8, (-(-h // block), -(-w // block)), dtype=np.uint8)
        mask = np.kron(coarse, np.ones((block, block), np.uint8))[:h, :w]
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image[..., 0] = mask * STEP
        pairs.append((image, mask))
    return pairs


class Keys:
    """A batch sampler stand-in: the given batches of image indices."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def one_batch(pairs, augment: BatchAugment, seed: int = 0, keys=None) -> dict:
    data = DeviceData(pairs, IGNORE, "cpu")
    keys = keys or [list(range(len(pairs)))]
    return next(iter(DeviceLoader(data, Keys(keys), augment, torch.Generator().manual_seed(seed), len(keys[0]),
                                  False)))


def test_reflect101_folds_any_offset_as_numpy_reflect_pads():
    for n in (1, 2, 5):
        pad = 3 * n + 2  # several reflections deep
        expected = np.pad(np.arange(n), pad, mode="reflect") if n > 1 else np.zeros(n + 2 * pad, int)
        got = reflect101(torch.arange(-pad, n + pad), torch.tensor(n))
        assert got.tolist() == expected.tolist(), n


def test_the_names_without_a_batched_version_are_reported_with_why():
    assert set(BATCHED) | set(NOT_BATCHED) >= {"hflip", "vflip", "rot90", "shift_scale_rotate", "color", "noise"}
    assert unbatched(("hflip", "noise"), square=True) == {"noise": "has no batched version"}
    assert "square" in unbatched(("rot90",), square=False)["rot90"]
    assert unbatched(("rot90", "hflip", "random_pad"), square=True) == {}
    with pytest.raises(ValueError, match="noise"):
        BatchAugment(("noise",))


def test_constant_padding_reads_no_pixel_and_centres_as_albumentations():
    augment = BatchAugment((), pad_to=8, pad_mode="constant")
    rows, cols = augment.spatial_maps(torch.tensor([[5, 6], [8, 3]]), torch.Generator())
    assert rows.tolist() == [[FILL, 0, 1, 2, 3, 4, FILL, FILL], list(range(8))]
    assert cols.tolist() == [[FILL, 0, 1, 2, 3, 4, 5, FILL], [FILL, FILL, 0, 1, 2, FILL, FILL, FILL]]


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize("names, crop, pad_to", [
    (("hflip",), 0, 0), (("vflip",), 0, 0), (("rot90",), 0, 0), (("random_pad",), 0, 48), ((), 24, 0),
    (("shift_scale_rotate",), 0, 0), (("rotate",), 0, 0),
    (("hflip", "vflip", "rot90", "random_pad", "rotate", "shift_scale_rotate"), 28, 44)])
def test_every_geometric_transform_keeps_the_mask_on_its_pixels(names, crop, pad_to, pad_mode):
    """The mask is drawn from the image's own pixels (channel 0 = STEP x class): after each transform, wherever
    the mask holds a class, channel 0 still holds STEP x that class (nearest resampling, so exactly)."""
    pairs = pairs_with_mask_from_pixels(12, 36, 36, seed=1)
    augment = BatchAugment(names, crop, pad_to, pad_mode, IGNORE, interpolation="nearest")
    batch = one_batch(pairs, augment)
    image, mask = batch["image"], batch["mask"]
    labelled = mask != IGNORE
    assert labelled.float().mean() > 0.5
    assert torch.equal(image[:, 0][labelled].long(), mask[labelled] * STEP)
    assert (image[:, 0][~labelled] == 0).all()  # fill pixels: image 0 where the mask is ignore_index
    untouched = one_batch(pairs, BatchAugment(()))["mask"]
    assert not torch.equal(untouched, mask)  # the transform moved something: the checks above could fail


def test_bilinear_affines_keep_the_mask_aligned_to_half_a_pixel():
    """Bilinear images blend only at class borders: inside the 8-px blocks channel 0 still reads its class."""
    pairs = pairs_with_mask_from_pixels(12, 48, 48, seed=2, block=8)
    augment = BatchAugment(("shift_scale_rotate", "rotate"), pad_mode="constant", ignore_index=IGNORE)
    batch = one_batch(pairs, augment, seed=3)
    image, mask = batch["image"], batch["mask"]
    labelled = mask != IGNORE
    agree = (image[:, 0][labelled].long() - mask[labelled] * STEP).abs() <= 2
    assert agree.float().mean() > 0.7
    flipped = (image[:, 0].flip(-1)[labelled].long() - mask[labelled] * STEP).abs() <= 2
    assert flipped.float().mean() < 0.4  # a misaligned mask would agree about as rarely


def test_parameters_are_drawn_per_sample():
    """Sixteen copies of one image: some come out flipped, some not (not the whole batch alike)."""
    pairs = pairs_with_mask_from_pixels(1, 20, 20, seed=3) * 16
    batch = one_batch(pairs, BatchAugment(("hflip",)), seed=0)
    image = batch["image"]
    original = torch.from_numpy(pairs[0][0].transpose(2, 0, 1).copy())
    same = [torch.equal(x, original) for x in image]
    mirrored = [torch.equal(x, original.flip(-1)) for x in image]
    assert all(a or b for a, b in zip(same, mirrored))
    assert 0 < sum(mirrored) < 16
    colored = one_batch(pairs, BatchAugment(("color",)), seed=0)["image"]
    assert len({x.float().mean().round().item() for x in colored}) > 2  # brightness/contrast differ per sample
    assert torch.equal(one_batch(pairs, BatchAugment(("color",)))["mask"], one_batch(pairs, BatchAugment(()))["mask"])


def test_a_seed_gives_the_same_batches_and_another_seed_others():
    pairs = pairs_with_mask_from_pixels(8, 30, 30, seed=4)
    names = ("hflip", "vflip", "rot90", "random_pad", "shift_scale_rotate", "color")
    first = one_batch(pairs, BatchAugment(names, pad_to=40), seed=11)
    again = one_batch(pairs, BatchAugment(names, pad_to=40), seed=11)
    other = one_batch(pairs, BatchAugment(names, pad_to=40), seed=12)
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["mask"], again["mask"])
    assert not torch.equal(first["image"], other["image"])
    assert first["image"].dtype == torch.uint8 and first["mask"].dtype == torch.int64
    assert first["image"].shape == (8, 3, 40, 40)
