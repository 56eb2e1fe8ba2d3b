"""Property-based fuzzing of every reader and of the config parser (hypothesis, derandomized for CI).

The contract: a reader returns a valid value or raises its seglab error (DataError, ConfigError,
CheckpointError) naming the file; any other exception type, a hang, or a malformed result fails.
Image files are fuzzed both as random bytes behind a real format signature and as valid encodings
(PNG, JPEG, TIFF, BMP, GIF, WebP of many pixel types) with bytes overwritten and tails cut off,
which reaches far deeper into the decoders than random bytes alone. ``pytest -s`` prints the counts.
"""
from __future__ import annotations

import io
import string
import tempfile
import typing
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from seglab.config import Config, build_config, field_names, load_yaml, parse_overrides, save_config
from seglab.data.formats import read_list_file
from seglab.data.io import image_size, read_image, read_mask_raw
from seglab.data.masks import infer_mask_codec
from seglab.models import model_from_checkpoint
from seglab.runtime.checkpoint import load_checkpoint
from seglab.errors import CheckpointError, ConfigError, DataError
from seglab.models import create_model

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TRIED: Counter = Counter()  # inputs per reader
REFUSED: Counter = Counter()  # of those, the ones that ended in a seglab error (the rest gave a valid result)
SIGNATURES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00",
              b"BM", b"GIF89a", b"RIFF\x00\x01\x00\x00WEBPVP8 "]
EXTS = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"]
# A fixed alphabet keeps text generation cheap (hypothesis' default one costs seconds to set up on a fresh
# machine) while still reaching the characters that break parsers: YAML syntax, quotes, controls, NUL, non-ASCII.
ALPHABET = string.printable + "\x00\x01\x1b\x7f\u00a0\u2028\u202e\ufeffé数ü\U0001f600"


def texts(max_size: int) -> st.SearchStrategy[str]:
    """Random text over ALPHABET."""
    return st.text(alphabet=st.sampled_from(ALPHABET), max_size=max_size)


@pytest.fixture(scope="module", autouse=True)
def report_inputs_tried():
    """Print how many inputs each fuzzer tried (visible with -s)."""
    yield
    print(f"\n[fuzz] {sum(TRIED.values())} inputs tried: " +
          ", ".join(f"{k}={n} ({REFUSED[k]} refused)" for k, n in sorted(TRIED.items())) +
          "; each gave a valid result or a seglab error naming the file")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A scratch folder shared by the examples (hypothesis re-runs a test body, not its fixtures)."""
    return tmp_path_factory.mktemp("fuzz")


def _pixels(draw, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An array of the given shape and dtype with hypothesis-chosen bytes."""
    if dtype is bool:
        return np.array(draw(st.lists(st.booleans(), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
                        ).reshape(shape)
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer(draw(st.binary(min_size=size, max_size=size)), np.uint8).view(dtype).reshape(shape).copy()


@st.composite
def encoded_images(draw) -> bytes:
    """A valid image file of a random format, size and pixel type."""
    fmt = draw(st.sampled_from(["PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP"]))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    buf = io.BytesIO()
    if fmt == "TIFF":  # tifffile writes what PIL cannot: 16-bit, float, signed, complex, stacks, planar
        dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int16, np.float32, np.float64, np.complex64, bool]))
        shape = draw(st.sampled_from([(h, w), (h, w, 3), (h, w, 4), (3, h, w), (2, h, w, 3), (h, w, 2)]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tifffile's notes on how future versions will store odd shapes
            tifffile.imwrite(buf, _pixels(draw, shape, dtype))
    else:
        mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P", "1", "LA", "I;16", "I", "F", "CMYK"]))
        img = Image.fromarray(_pixels(draw, (h, w, 3), np.uint8)).convert(mode)
        try:
            img.save(buf, format=fmt)
        except (OSError, ValueError, KeyError):  # this format cannot store this mode: store it as RGB
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


@st.composite
def damaged(draw, files) -> bytes:
    """``files`` with some bytes overwritten and maybe its tail cut off."""
    data = bytearray(draw(files))
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _check_image_readers(path: Path) -> None:
    """Every image reader returns a well-formed result for ``path`` or raises a DataError naming it."""
    for reader in (read_image, read_mask_raw, image_size):
        TRIED[reader.__name__] += 1
        try:
            result = reader(path)
        except DataError as e:
            REFUSED[reader.__name__] += 1
            assert path.name in str(e)
            continue
        if reader is read_image:
            assert result.ndim == 3 and result.shape[0] >= 1 and result.shape[1] >= 1 and result.shape[2] >= 1
            assert result.dtype.kind in "uif", result.dtype
        elif reader is read_mask_raw:
            mask, palette = result
            assert mask.ndim == 2 or (mask.ndim == 3 and mask.shape[2] == 3), mask.shape
            assert mask.dtype.kind in "uib" and isinstance(palette, bool), mask.dtype
        else:
            assert len(result) == 2 and all(isinstance(v, int) and v >= 0 for v in result)


@FUZZ
@given(data=damaged(encoded_images()), ext=st.sampled_from(EXTS))
def test_image_readers_on_damaged_files(work, data, ext):
    path = work / f"damaged{ext}"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile and PIL warn about the damage before failing; that is fine
        _check_image_readers(path)


@FUZZ
@given(signature=st.sampled_from(SIGNATURES), body=st.binary(max_size=400), ext=st.sampled_from(EXTS))
def test_image_readers_on_random_bytes(work, signature, body, ext):
    path = work / f"random bytes ü{ext}"
    path.write_bytes(signature + body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check_image_readers(path)


GRAY_VALUES = st.sampled_from([0, 1, 2, 3, 4, 7, 11, 128, 254, 255])
COLOURS = st.sampled_from([(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (12, 34, 56)])


@st.composite
def mask_sets(draw) -> tuple[list[np.ndarray], bool]:
    """A few small masks of one kind: gray values, 16-bit values, or RGB colours from a small alphabet."""
    kind = draw(st.sampled_from(["gray", "gray16", "rgb", "noise"]))
    masks = []
    for _ in range(draw(st.integers(1, 4))):
        h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        if kind == "rgb":
            cells = draw(st.lists(COLOURS, min_size=h * w, max_size=h * w))
            masks.append(np.array(cells, np.uint8).reshape(h, w, 3))
        elif kind == "noise":  # photo-like masks with many colours
            masks.append(_pixels(draw, (h, w, 3), np.uint8))
        else:
            values = draw(st.lists(GRAY_VALUES, min_size=h * w, max_size=h * w))
            masks.append(np.array(values, np.uint16 if kind == "gray16" else np.uint8).reshape(h, w))
    return masks, kind in ("rgb", "noise")


def _save_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask).save(path)  # uint16 arrays become 16-bit PNGs


@FUZZ
@given(masks=mask_sets(), mode=st.sampled_from(["auto", "index", "binary", "palette", "rgb"]),
       num_classes=st.sampled_from([0, 0, 2, 3, 5, 12]), ignore_index=st.sampled_from([255, 0, 11]))
def test_mask_codec_decodes_consistently_or_names_the_file(work, masks, mode, num_classes, ignore_index):
    arrays, _ = masks
    folder = Path(tempfile.mkdtemp(prefix="masks ", dir=work))
    paths = []
    for i, m in enumerate(arrays):
        paths.append(folder / f"m{i}.png")
        _save_mask(paths[-1], m)
    TRIED["mask sets"] += 1
    try:
        codec, _ = infer_mask_codec(paths, mode, num_classes, ignore_index)
    except DataError as e:
        REFUSED["mask sets"] += 1
        assert str(folder) in str(e)
        return
    assert codec.num_classes >= 2
    for path in paths:
        raw, _ = read_mask_raw(path)
        TRIED["mask decodes"] += 1
        try:
            decoded = codec.decode(raw, path)
        except DataError as e:
            REFUSED["mask decodes"] += 1
            assert path.name in str(e)
            continue
        assert decoded.shape == raw.shape[:2] and decoded.dtype == np.int64
        valid = decoded != codec.ignore_index
        assert ((decoded[valid] >= 0) & (decoded[valid] < codec.num_classes)).all()
        if codec.mode == "rgb":  # a colour table is a bijection: same stored value <=> same class
            stored = [tuple(v) for v in raw.reshape(raw.shape[0] * raw.shape[1], -1).tolist()]
            pairs = set(zip(stored, decoded.ravel().tolist()))
            assert len(pairs) == len(set(stored)) == len({c for _, c in pairs})
        elif codec.mode in ("index", "palette"):
            assert np.array_equal(decoded, raw.astype(np.int64))


_TYPES = typing.get_type_hints(Config)
YAML_BITS = ["1e-3", "1.0e+30", "-1", "0x10", "0o17", "2020-13-45", "2001-12-14", "!!float x", "!!int x",
             "!!binary zz", "!!python/object/apply:os.system ['true']", "&a [*a]", "*a", "[", "]", "{", "{a: [1, {b: 2}]}",
             "~", "null", ".inf", ".nan", "yes", "no", "'quoted'", '"unterminated', "a: b", "- x", "|\n  block",
             "[" * 300 + "]" * 300, "1" + "0" * 400, "\x00", "é", "C:\\data\\x.png", "s3://bucket/x", "--", "=", ""]


@st.composite
def override_lists(draw) -> list[str]:
    """Command-line style arguments: real keys and junk, YAML-ish and random values, some without '='."""
    args = []
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.one_of(st.sampled_from(field_names() + ["cfg", "recipe"]), texts(12)))
        value = draw(st.one_of(st.sampled_from(YAML_BITS), texts(40),
                               st.floats(allow_nan=True).map(repr), st.integers().map(str),
                               st.lists(st.integers(-300, 300), max_size=4).map(str)))
        args.append(f"{key}={value}" if draw(st.integers(0, 9)) else value)
    return args


def _check_config(cfg: Config) -> None:
    """A Config that was accepted has every field of its declared type."""
    for key, typ in _TYPES.items():
        value = getattr(cfg, key)
        if typ in (bool, int, float, str, list, dict):
            assert isinstance(value, typ) and (typ is bool or not isinstance(value, bool)), (key, value)


@FUZZ
@given(args=override_lists())
@example(args=["colors=&a [*a]"])  # found by this fuzzer: a self-containing value made save_config recurse forever
@example(args=["cfg=1.0e+30"])  # found by this fuzzer: a number as the config path raised TypeError
@example(args=["recipe=" + "[" * 300 + "]" * 300])  # found by this fuzzer: a name too long for the OS raised OSError
def test_overrides_give_a_config_or_a_config_error(work, args):
    TRIED["override lists"] += 1
    try:
        cfg = build_config(parse_overrides(args))
    except ConfigError:
        REFUSED["override lists"] += 1
        return
    _check_config(cfg)
    save_config(cfg, work / "config.yaml")  # what a run folder keeps, and what resume reads back
    again = build_config(load_yaml(work / "config.yaml")).to_dict()
    for key, value in cfg.to_dict().items():
        assert again[key] == value or (value != value and again[key] != again[key]), key  # NaN == NaN here


@pytest.mark.parametrize("arg,key,expected", [
    ("lr=1e-3", "lr", 0.001),  # YAML 1.1 reads this as text; a float field takes it as the number it spells
    ("lr=1.0e+30", "lr", 1e30),
    ("weight_decay=5E-4", "weight_decay", 0.0005),
    ("data=2020-13-45", "data", "2020-13-45"),  # not a date: kept as typed
    ("name=007", "name", "007"),
    ("data=C:\\data\\x y.png", "data", "C:\\data\\x y.png"),
    ("epochs=1e3", "epochs", None),  # an int field does not take a float spelling
    ("lr=1" + "0" * 400, "lr", None),  # too large for a float
    ("lr=inf", "lr", None),
    ("seed=2020-13-45", "seed", None),
    ("colors=&a [*a]", "colors", None),
])
def test_override_values_parse_to_what_they_spell(arg, key, expected):
    if expected is None:
        with pytest.raises(ConfigError, match=key):
            build_config(parse_overrides([arg]))
    else:
        assert getattr(build_config(parse_overrides([arg])), key) == expected


@st.composite
def yaml_texts(draw) -> bytes:
    """Random text, YAML fragments, dumped mappings of real keys, or bytes that are not UTF-8."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(texts(200)).encode("utf-8", "surrogatepass")
    if kind == 1:
        return draw(st.binary(max_size=200))
    if kind == 2:
        lines = draw(st.lists(st.tuples(st.sampled_from(field_names()), st.sampled_from(YAML_BITS)), max_size=5))
        return "\n".join(f"{k}: {v}" for k, v in lines).encode()
    mapping = draw(st.dictionaries(st.sampled_from(field_names()),
                                   st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts(8),
                                             st.lists(st.integers(), max_size=3)), max_size=6))
    return yaml.safe_dump(mapping).encode()


@FUZZ
@given(text=yaml_texts())
def test_yaml_files_give_a_mapping_or_a_config_error(work, text):
    path = work / "fuzz config.yaml"
    path.write_bytes(text)
    TRIED["yaml files"] += 1
    try:
        data = load_yaml(path)
    except ConfigError as e:
        REFUSED["yaml files"] += 1
        assert path.name in str(e)
        return
    assert isinstance(data, dict)
    try:
        cfg = build_config(cfg_file=path)
    except ConfigError:
        REFUSED["yaml files"] += 1
        return
    _check_config(cfg)


@FUZZ
@given(lines=st.lists(st.one_of(texts(30), st.sampled_from(
    ["images/a.png\tmasks/a.png", "images/a.png masks/a.png", "images/a.png", "# note", "", "a b c", "/nope.png"])),
    max_size=6), raw=st.binary(max_size=40))
def test_list_files_give_samples_or_a_data_error(work, lines, raw):
    (work / "images").mkdir(exist_ok=True)
    (work / "masks").mkdir(exist_ok=True)
    (work / "images" / "a.png").write_bytes(b"")
    (work / "masks" / "a.png").write_bytes(b"")
    path = work / "list.txt"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + raw)
    TRIED["list files"] += 1
    try:
        samples = read_list_file(path)
    except DataError as e:
        REFUSED["list files"] += 1
        assert path.name in str(e)
        return
    assert samples and all(s.image.exists() and (s.mask is None or s.mask.exists()) for s in samples)


@pytest.fixture(scope="module")
def checkpoint_bytes() -> bytes:
    """A small checkpoint in seglab's layout (a few KB, so damage often hits the zip and pickle structure)."""
    model = create_model("unet_small", num_classes=1, in_channels=1)
    weights = {k: v for k, v in model.state_dict().items() if k.startswith(("head.", "inc.1."))}
    state = {"model": weights, "model_spec": dict(model.seglab_spec), "epoch": 2,
             "meta": {"in_channels": 1, "codec": {"num_classes": 2}, "mean": [0.5], "std": [0.2]}}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@FUZZ
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
       cut=st.one_of(st.none(), st.floats(0, 1)))
def test_damaged_checkpoints_give_a_checkpoint_error(work, checkpoint_bytes, edits, cut):
    data = bytearray(checkpoint_bytes)
    for where, byte in edits:
        data[int(where * len(data))] = byte
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = work / "damaged.pt"
    path.write_bytes(bytes(data))
    TRIED["checkpoints"] += 1
    try:
        state = load_checkpoint(path)
    except CheckpointError as e:
        REFUSED["checkpoints"] += 1
        assert path.name in str(e)
        return
    assert isinstance(state, dict)
    with pytest.raises(CheckpointError, match="damaged.pt"):  # the weights are a subset: never a usable model
        model_from_checkpoint(state, path)


@pytest.fixture(scope="module")
def real_weights() -> dict:
    """Every weight of unet_small with one input channel and one logit."""
    return create_model("unet_small", num_classes=1, in_channels=1).state_dict()


@settings(FUZZ, max_examples=50)
@given(spec=st.fixed_dictionaries({"name": st.sampled_from(["unet_small", "unet_smal", "unet", 3])}, optional={
    "num_classes": st.one_of(st.integers(-2, 4), st.just(10**12), st.floats(0, 3), texts(3)),
    "in_channels": st.one_of(st.integers(-1, 4), st.just(10**12), st.none()),
    "dropout": st.one_of(st.floats(-1, 2), texts(3)),
    "encoder": st.sampled_from(["resnet18", "", None]),
    "base": st.integers(-4, 10**9)}))
@example(spec={"name": "unet_small", "num_classes": 1, "in_channels": 1})  # the true spec must still load
@example(spec={"name": "unet_small", "num_classes": 10**12, "in_channels": 1})
def test_forged_model_specs_are_refused_before_any_allocation(real_weights, spec):
    state = {"model": real_weights, "model_spec": spec}
    TRIED["model specs"] += 1
    try:
        model = model_from_checkpoint(state, "forged.pt")
    except CheckpointError as e:
        REFUSED["model specs"] += 1
        assert "forged.pt" in str(e)
        return
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
