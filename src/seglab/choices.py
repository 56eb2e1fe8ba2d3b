"""The allowed values of every setting with a fixed list of them, written once.

``config`` checks a run's settings against these; the code that acts on a value (TTA views, autocast dtypes,
augmentations, loggers, predict outputs) imports the same tuple, so adding a value here is the only list to edit.
Plain Python only (no torch): this module sits with ``config`` at the bottom of the package's layers.
``defaults.yaml`` documents the same lists in its comments; tests/test_choices.py keeps them in step.
"""
from __future__ import annotations

FORMATS = ("auto", "folders", "suffix", "list", "voc", "tgs")
MASK_MODES = ("auto", "index", "binary", "palette", "rgb")
CACHE_MODES = ("auto", "ram", "none")
LOADERS = ("auto", "device", "cpu")  # ``loader=``: batches from the CPU DataLoader or from data held on the device
ON_ERROR = ("raise", "skip")
PAD_MODES = ("reflect", "constant")
SCALES = (0.25, 0.5, 1.0)  # ``scale=``: the share of the images' resolution a model works at (halvings)
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "step", "poly", "none")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DATA_SPLITS = ("train", "val", "test")  # the splits a dataset plan holds
EVAL_SPLITS = (*reversed(DATA_SPLITS), "all")  # test first: the default
BACKENDS = ("torch", "onnx")

# Test-time augmentation: a set of flip/rotation views, weakest first, optionally followed by "+shift".
TTA_VIEWS = ("none", "hflip", "flip", "d4")
TTA_SHIFT = "shift"
TTA_MODES = (*TTA_VIEWS, TTA_SHIFT, *(f"{v}+{TTA_SHIFT}" for v in TTA_VIEWS if v != "none"))

# Training augmentations (``augment=`` takes a preset name or a comma list of AUGMENTS).
AUGMENTS = ("hflip", "vflip", "rot90", "rotate", "shift_scale_rotate", "crop", "color", "noise", "random_pad")
AUGMENT_PRESETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "flips": ("hflip", "vflip"),
    "light": ("hflip", "vflip", "rot90", "shift_scale_rotate"),
    "heavy": ("hflip", "vflip", "rot90", "rotate", "shift_scale_rotate", "color", "noise"),
}

LOGGERS = ("csv", "tensorboard")  # ``logger=`` takes a comma list of these (or "none"; "tb" = tensorboard)
SAVE_OUTPUTS = ("index", "color", "overlay", "probs")  # ``save=`` of predict: a comma list of these

# The settings config checks value by value: key -> its allowed values.
CHOICES: dict[str, tuple[str, ...]] = {
    "format": FORMATS,
    "mask_mode": MASK_MODES,
    "cache": CACHE_MODES,
    "loader": LOADERS,
    "on_error": ON_ERROR,
    "pad_mode": PAD_MODES,
    "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS,
    "precision": PRECISIONS,
    "eval_split": EVAL_SPLITS,
    "tta": TTA_MODES,
    "backend": BACKENDS,
}
