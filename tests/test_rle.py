"""Kaggle RLE: hand cases, round trip (hypothesis), malformed strings, CSV files, decoder vs the real TGS PNGs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from seglab.data.rle import read_rle_csv, rle_decode, rle_encode, write_submission

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TGS = DATA / "tgs-salt"


@pytest.mark.parametrize(
    "mask,rle",
    [
        ([[0, 0], [0, 0]], ""),
        ([[1, 1, 1], [1, 1, 1]], "1 6"),
        ([[0, 1], [1, 1]], "2 3"),  # column-major: (0,0)=0, (1,0)=1, (0,1)=1, (1,1)=1
        ([[1, 1], [0, 0]], "1 1 3 1"),  # the top row is pixels 1 and 3
        ([[0, 0, 255], [0, 0, 255]], "5 2"),  # any non-zero value is foreground
    ],
)
def test_hand_cases(mask, rle):
    array = np.array(mask)
    assert rle_encode(array) == rle
    decoded = rle_decode(rle, array.shape)
    assert decoded.dtype == np.uint8
    assert np.array_equal(decoded, (array != 0).astype(np.uint8))


@settings(max_examples=100, deadline=None)
@given(st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(lambda shape: arrays(bool, shape)))
def test_round_trip_random_masks(mask):
    rle = rle_encode(mask)
    assert np.array_equal(rle_decode(rle, mask.shape), mask.astype(np.uint8))
    values = [int(v) for v in rle.split()]
    starts, lengths = values[0::2], values[1::2]
    assert sum(lengths) == int(mask.sum())
    assert all(end < start for start, end in zip(starts[1:], [s + n for s, n in zip(starts, lengths)]))


@pytest.mark.parametrize(
    "rle,shape,message",
    [
        ("1 2 3", (2, 2), "odd number"),
        ("1 x", (2, 2), "'x' is not a non-negative integer"),
        ("1 -2", (2, 2), "'-2'"),
        ("0 2", (2, 2), "start 0"),
        ("1 0", (2, 2), "length 0"),
        ("3 3", (2, 2), "beyond the 4 pixels of a 2x2 mask"),
        ("3 1 1 1", (2, 2), "sorted and must not overlap"),
        ("1 2 2 1", (2, 2), "sorted and must not overlap"),
        ("1 1", (0, 2), "positive integers"),
        ("1 1", (2,), "positive integers"),
    ],
)
def test_malformed_strings_raise(rle, shape, message):
    with pytest.raises(ValueError, match=message):
        rle_decode(rle, shape)


def test_non_string_rle_raises():
    with pytest.raises(ValueError, match="must be a string"):
        rle_decode(float("nan"), (2, 2))


def test_submission_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    masks = [rng.random((5, 4)) > 0.5 for _ in range(3)] + [np.zeros((5, 4), dtype=bool)]
    ids = ["a", "b", "c", "empty"]
    path = write_submission(tmp_path / "out" / "submission.csv", ids, masks)
    assert path.read_text().splitlines()[0] == "id,rle_mask"
    assert path.read_text().splitlines()[-1] == "empty,"
    table = read_rle_csv(path)
    assert list(table) == ids
    for image_id, mask in zip(ids, masks):
        assert np.array_equal(rle_decode(table[image_id], mask.shape), mask.astype(np.uint8))
    with pytest.raises(ValueError, match="2 ids but 1 masks"):
        write_submission(tmp_path / "bad.csv", ["a", "b"], masks[:1])


def test_read_rle_csv_header_variants_and_errors(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("ImageId,EncodedPixels\nx,1 3\ny,\n")
    assert read_rle_csv(other) == {"x": "1 3", "y": ""}
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("name,mask\nx,1 3\n")
    with pytest.raises(ValueError, match="expected an id column"):
        read_rle_csv(wrong)
    duplicated = tmp_path / "dup.csv"
    duplicated.write_text("id,rle_mask\nx,1 3\nx,\n")
    with pytest.raises(ValueError, match="line 3: id 'x' appears twice"):
        read_rle_csv(duplicated)
    with pytest.raises(ValueError, match="cannot read"):
        read_rle_csv(tmp_path / "missing.csv")


@pytest.mark.realdata
@pytest.mark.skipif(not (TGS / "train.csv").is_file(), reason="TGS Salt data not present in ../shared/data")
def test_decoder_matches_real_tgs_masks():
    from PIL import Image

    table = read_rle_csv(TGS / "train.csv")
    rows = list(table.items())[:40]
    assert any(rle for _, rle in rows) and any(not rle for _, rle in rows)  # both kinds are exercised
    for image_id, rle in rows:
        png = np.array(Image.open(TGS / "train" / "masks" / f"{image_id}.png"))
        expected = (png != 0).astype(np.uint8)  # stored as 0/255 (8-bit) or 0/65535 (16-bit)
        assert np.array_equal(rle_decode(rle, expected.shape), expected), image_id
        assert rle_encode(expected) == rle, image_id
