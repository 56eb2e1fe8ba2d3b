"""Classification data: decode once into uint8 tensors in memory, then batch and augment on tensors.

Sources: a class-per-folder tree, MNIST IDX files (gz or not), CIFAR-10 python pickle batches, and
scikit-learn's bundled digits.  ``load_dataset(spec)`` reads ``digits``, ``mnist:PATH``, ``cifar10:PATH``
or a folder path.  Small datasets are held whole as ``N x C x H x W`` uint8 tensors (CIFAR-10 is 180 MB),
so that a 2-core machine spends its time in the network and not in a per-image loader.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MNIST_FILES = {  # name -> md5, as torchvision.datasets.MNIST checks them
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetDownloadError(DataError):
    """A dataset is missing locally and could not be downloaded (offline, blocked, bad checksum)."""


@dataclass
class ImageSplit:
    """Images as an ``N x C x H x W`` uint8 tensor with int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ClassificationData:
    """A train and a test split sharing class names; the test split is also the validation data (as in the study)."""

    train: ImageSplit
    test: ImageSplit
    class_names: list[str]
    name: str

    @property
    def in_channels(self) -> int:
        """Channels per image."""
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        """Side of the (square) images."""
        return int(self.train.images.shape[-1])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)


# --------------------------------------------------------------------------- readers


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not, into a numpy array."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    data = raw[4 + 4 * ndim:]
    if len(data) != expected:
        raise DataError(f"{path}: header says {dims} ({expected} bytes) but the file holds {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a downloaded batch file must not be able to run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"refusing to unpickle {module}.{name}: CIFAR batches hold only arrays and lists")
        return super().find_class(module, name)


def _safe_pickle_load(path: str | Path):
    """pickle.load restricted to arrays and plain containers (official CIFAR batches need nothing more)."""
    with open(path, "rb") as f:
        try:
            return _ArrayOnlyUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError) as e:
            raise DataError(f"{path}: not a readable CIFAR pickle ({e})") from None


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python pickle batch into (N x 3 x 32 x 32 uint8 images, labels)."""
    batch = _safe_pickle_load(path)  # the official batches are Python 2 pickles of plain arrays
    labels = batch.get(b"labels", batch.get(b"fine_labels"))
    if b"data" not in batch or labels is None:
        raise DataError(f"{path} is not a CIFAR batch: it has no b'data' / b'labels' entries")
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(labels, dtype=np.int64)


def decode_image(path: str | Path, size: int | None, mode: str) -> np.ndarray:
    """One image file as a C x H x W uint8 array in PIL ``mode`` ('L' or 'RGB'), resized to size x size if given."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert(mode)
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _image_mode(paths: list[Path]) -> str:
    """'L' when every sampled image is grayscale, else 'RGB'."""
    from PIL import Image

    for p in paths[:: max(1, len(paths) // 50)]:
        with Image.open(p) as im:
            if im.mode not in ("L", "1", "I;16", "I"):
                return "RGB"
    return "L"


def _image_sizes(paths: list[Path]) -> Counter:
    from PIL import Image

    sizes: Counter = Counter()
    for p in paths:
        with Image.open(p) as im:  # opening reads the header only
            sizes[im.size] += 1
    return sizes


def _list_class_folder(root: Path) -> tuple[list[Path], list[str], list[str]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, labels = [], []
    for name in classes:
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [name] * len(files)
    return paths, labels, classes


def load_image_folder(root: str | Path, imgsz: int | None = None, test_fraction: float = 0.2,
                      seed: int = 0) -> ClassificationData:
    """Read ``root/train/<class>/*`` + ``root/test|val/<class>/*``, or ``root/<class>/*`` split by ``test_fraction``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; give data=digits, mnist:PATH, cifar10:PATH or a "
                         "folder with one sub-folder per class")
    test_dir = next((root / n for n in ("test", "val", "valid") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        train_paths, train_names, classes = _list_class_folder(root / "train")
        test_paths, test_names, test_classes = _list_class_folder(test_dir)
        extra = sorted(set(test_classes) - set(classes))
        if extra:
            raise DataError(f"{test_dir} has classes missing from {root / 'train'}: {', '.join(extra)}")
    else:
        paths, names, classes = _list_class_folder(root)
        train_idx, test_idx = _stratified_split(names, test_fraction, seed)
        train_paths, train_names = [paths[i] for i in train_idx], [names[i] for i in train_idx]
        test_paths, test_names = [paths[i] for i in test_idx], [names[i] for i in test_idx]
    if len(classes) < 2 or not train_paths or not test_paths:
        raise DataError(f"{root} needs at least two class folders with images (found classes {classes}, "
                         f"{len(train_paths)} train and {len(test_paths)} test images)")
    all_paths = train_paths + test_paths
    if imgsz is None:
        sizes = _image_sizes(all_paths)
        if len(sizes) > 1:
            shown = ", ".join(f"{w}x{h}" for (w, h), _ in sizes.most_common(3))
            raise DataError(f"images in {root} have {len(sizes)} different sizes (e.g. {shown}); "
                             "pass imgsz=N to resize them all to N x N")
        (w, h), = sizes
        if w != h:
            raise DataError(f"images in {root} are {w}x{h}, not square; pass imgsz=N to resize them to N x N")
    mode = _image_mode(all_paths)
    index = {c: i for i, c in enumerate(classes)}
    return ClassificationData(
        _decode_split(train_paths, [index[n] for n in train_names], imgsz, mode),
        _decode_split(test_paths, [index[n] for n in test_names], imgsz, mode),
        classes, name=root.name)


def _decode_split(paths: list[Path], labels: list[int], imgsz: int | None, mode: str) -> ImageSplit:
    # Threads: PIL releases the GIL while decoding, so two cores decode ~2x faster than one.
    with ThreadPoolExecutor(max_workers=4) as pool:
        arrays = list(pool.map(lambda p: decode_image(p, imgsz, mode), paths, chunksize=256))
    return ImageSplit(torch.from_numpy(np.stack(arrays)), torch.tensor(labels, dtype=torch.int64))


def _stratified_split(labels: list, test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of a per-class split; every class keeps at least one train and (if it has two) one test image."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in sorted(set(labels), key=str):
        idx = [i for i, lab in enumerate(labels) if lab == cls]
        rng.shuffle(idx)
        n_test = min(len(idx) - 1, max(1, round(len(idx) * test_fraction)))
        test += idx[:n_test]
        train += idx[n_test:]
    return sorted(train), sorted(test)


# --------------------------------------------------------------------------- named datasets


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> ClassificationData:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download) as the built-in demo."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise DataError("data=digits needs scikit-learn: pip install 'seglab[classify]'") from e
    digits = sk_load_digits()
    # 17 grey levels (0..16) stretched to 0..255 so that every source shares one uint8 convention.
    images = torch.from_numpy(np.round(digits.images * (255 / 16)).astype(np.uint8))[:, None]
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = _stratified_split(digits.target.tolist(), test_fraction, seed)
    return ClassificationData(ImageSplit(images[train_idx], labels[train_idx]),
                              ImageSplit(images[test_idx], labels[test_idx]),
                              [str(i) for i in range(10)], name="digits")


def _find_file(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
            if (folder / name).is_file():
                return folder / name
    return None


def load_mnist(root: str | Path, download: bool = True) -> ClassificationData:
    """MNIST from its four IDX files in ``root`` (gz or not; torchvision's MNIST/raw works too)."""
    root = Path(root)
    stems = [n[:-3] for n in MNIST_FILES]
    if any(_find_file(root, s) is None for s in stems):
        if not download:
            raise DatasetDownloadError(f"MNIST IDX files are missing in {root}; expected {', '.join(MNIST_FILES)}")
        download_mnist(root)
    arrays = [read_idx(_find_file(root, s)) for s in stems]
    train_x, train_y, test_x, test_y = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    return ClassificationData(ImageSplit(train_x[:, None].to(torch.uint8), train_y.long()),
                              ImageSplit(test_x[:, None].to(torch.uint8), test_y.long()),
                              [str(i) for i in range(10)], name="mnist")


def load_cifar10(root: str | Path, download: bool = True) -> ClassificationData:
    """CIFAR-10 from its python pickle batches (``root`` or ``root/cifar-10-batches-py``)."""
    root = Path(root)
    folder = root if (root / "data_batch_1").is_file() else root / "cifar-10-batches-py"
    if not (folder / "test_batch").is_file():
        if not download:
            raise DatasetDownloadError(f"CIFAR-10 batches are missing in {root} (need data_batch_1..5 and test_batch)")
        download_cifar10(root)
        folder = root / "cifar-10-batches-py"
    train = [read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6) if (folder / f"data_batch_{i}").is_file()]
    if not train:
        raise DataError(f"{folder} has test_batch but no data_batch_1..5")
    test_x, test_y = read_cifar_batch(folder / "test_batch")
    names = [f"class{i}" for i in range(10)]
    if (folder / "batches.meta").is_file():
        names = [n.decode() for n in _safe_pickle_load(folder / "batches.meta")[b"label_names"]]
    return ClassificationData(
        ImageSplit(torch.from_numpy(np.concatenate([x for x, _ in train])),
                   torch.from_numpy(np.concatenate([y for _, y in train]))),
        ImageSplit(torch.from_numpy(test_x), torch.from_numpy(test_y)), names, name="cifar10")


def download_mnist(root: str | Path) -> None:
    """Download the four official MNIST files into ``root`` (torchvision's mirrors and checksums)."""
    from torchvision.datasets.utils import download_url

    root = Path(root)
    for name, md5 in MNIST_FILES.items():
        errors = []
        for mirror in MNIST_MIRRORS:
            try:
                download_url(mirror + name, str(root), filename=name, md5=md5)
                break
            except Exception as e:  # noqa: BLE001 - any network failure means: try the next mirror
                errors.append(f"{mirror}: {e}")
        else:
            raise DatasetDownloadError(
                f"could not download MNIST file {name} (offline?). Tried {'; '.join(errors)}. Copy the four files "
                f"{', '.join(MNIST_FILES)} into {root} and run again.")


def download_cifar10(root: str | Path) -> None:
    """Download and unpack the official CIFAR-10 python batches into ``root``."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(CIFAR10_URL, str(root), md5=CIFAR10_MD5)
    except Exception as e:
        raise DatasetDownloadError(
            f"could not download CIFAR-10 from {CIFAR10_URL} (offline?): {e}. Download cifar-10-python.tar.gz "
            f"elsewhere, unpack it into {root}, or use a class-per-folder copy with data=FOLDER.") from e


def load_dataset(spec: str, imgsz: int | None = None, seed: int = 0, download: bool = True) -> ClassificationData:
    """``digits``, ``mnist:PATH``, ``cifar10:PATH`` or a class-per-folder path."""
    if spec == "digits":
        data = load_digits(seed)
    elif spec.startswith("mnist:"):
        data = load_mnist(spec[len("mnist:"):], download)
    elif spec.startswith("cifar10:"):
        data = load_cifar10(spec[len("cifar10:"):], download)
    else:
        return load_image_folder(spec, imgsz, seed=seed)
    return resize_data(data, imgsz) if imgsz else data


def resize_data(data: ClassificationData, imgsz: int) -> ClassificationData:
    """Resize both splits to ``imgsz`` x ``imgsz`` (bilinear, on tensors)."""
    def resize(split: ImageSplit) -> ImageSplit:
        x = F.interpolate(split.images.float(), size=(imgsz, imgsz), mode="bilinear", align_corners=False)
        return ImageSplit(x.round().clamp(0, 255).to(torch.uint8), split.labels)
    if imgsz == data.image_size:
        return data
    return ClassificationData(resize(data.train), resize(data.test), data.class_names, data.name)


def subset(split: ImageSplit, fraction: float, seed: int = 0) -> ImageSplit:
    """A random ``fraction`` of a split (for quick runs)."""
    if fraction >= 1:
        return split
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[: max(1, int(len(split) * fraction))]
    return ImageSplit(split.images[idx], split.labels[idx])


# --------------------------------------------------------------------------- batching and augmentation


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the 0..1 scale."""
    x = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(1).tolist(), x.std(1).clamp_min(1e-3).tolist()


def iterate_batches(split: ImageSplit, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images, labels) batches straight from the in-memory tensors (on whatever device they are)."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size].to(split.images.device)  # drawn on the CPU: one order anywhere
        yield split.images[idx], split.labels[idx]


def augment_batch(images: torch.Tensor, shift: float = 0.1, flip: bool = True,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random shifts of up to ``shift`` of the size (edge-replicate pad + crop) and horizontal flips, per image.

    Done on the whole batch with one gather instead of per-image transforms, so augmentation costs
    milliseconds per batch on CPU (replicate padding is Keras ImageDataGenerator's default 'nearest' fill).
    """
    n, _, h, w = images.shape
    device = images.device  # parameters are drawn on the CPU generator, so a seed gives the same batch on any device
    pad_h, pad_w = round(shift * h), round(shift * w)
    out = images
    if pad_h or pad_w:
        padded = F.pad(images.float() if images.dtype == torch.uint8 else images,
                       (pad_w, pad_w, pad_h, pad_h), mode="replicate").to(images.dtype)
        dy = torch.randint(0, 2 * pad_h + 1, (n,), generator=generator).to(device)
        dx = torch.randint(0, 2 * pad_w + 1, (n,), generator=generator).to(device)
        rows = (dy[:, None] + torch.arange(h, device=device))[:, None, :, None]  # n x 1 x h x 1
        cols = (dx[:, None] + torch.arange(w, device=device))[:, None, None, :]  # n x 1 x 1 x w
        batch = torch.arange(n, device=device)[:, None, None, None]
        chans = torch.arange(images.shape[1], device=device)[None, :, None, None]
        out = padded[batch, chans, rows, cols]
    if flip:
        mirror = (torch.rand(n, generator=generator) < 0.5).to(device)
        out = torch.where(mirror[:, None, None, None], out.flip(3), out)
    return out


def split_bytes(split: ImageSplit) -> int:
    """Memory a split takes as tensors (images and labels)."""
    return split.images.numel() * split.images.element_size() + split.labels.numel() * split.labels.element_size()


def split_on(split: ImageSplit, device: torch.device) -> ImageSplit:
    """The split's tensors on ``device`` (copied once: the device-resident path of ``loader=``)."""
    return ImageSplit(split.images.to(device), split.labels.to(device))
