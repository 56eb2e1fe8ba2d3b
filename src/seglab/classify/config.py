"""``seglab classify`` settings: one dataclass, ``key=value`` parsing, and per-model training recipes."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..choices import LOADERS
from ..config import parse_key_values
from ..errors import ConfigError

# Hyper-parameters forwarded to the model builder when set (also what ``sweep`` varies, besides epochs).
MODEL_KEYS = ("filters", "n_conv", "kernel_size", "padding", "activation", "width")
SWEEP_PARAMS = ("epochs", *MODEL_KEYS, "lr", "batch")


@dataclass
class ClassifyConfig:
    """Every setting of train/eval/predict/compare/sweep; None or 'auto' means the model's recipe decides."""

    data: str | None = None  # digits (train default) | mnist:PATH | cifar10:PATH | class-per-folder PATH;
    # eval/predict default to the data a checkpoint was trained on
    model: str = "fast_allconv"  # a built-in classifier or timm:<name>
    epochs: int = 10
    batch: int | None = None
    lr: float | None = None
    optimizer: str = "auto"  # sgd | adam | adamw
    sched: str = "auto"  # onecycle | cosine | constant
    warmup: float = 0.2  # fraction of steps spent warming up
    weight_decay: float | None = None
    momentum: float | None = None  # SGD momentum (auto: the recipe's)
    norm_lr_scale: float | None = None  # learning-rate multiplier of BatchNorm shifts (auto: the recipe's)
    lookahead: bool | None = None  # pull weights to a growing running average every 5 steps (auto: the recipe's)
    time_limit: float = 0.0  # minutes of training; > 0 fits the epochs (at most `epochs`) and LR schedule to it
    label_smoothing: float | None = None
    shift: float = 0.1  # random shifts of up to 10% of the size, as in the study
    flip: bool | str = "auto"  # true | false | auto = on, except for digits (a mirrored digit is not a digit)
    tta: bool = False  # average predictions with mirrored images at evaluation
    precision: str = "auto"
    device: str = "auto"
    loader: str = "auto"  # auto | device | cpu: hold the training split on the device (auto: on CUDA when it fits)
    threads: int = 0  # CPU threads for this run (0 = torch's default); 1 is far faster on a busy shared CPU
    cpu_procs: int = 1  # CPU data parallelism: N processes (DDP, gloo) share the cores and the batch
    seed: int = 0
    imgsz: int | None = None
    fraction: float = 1.0  # train on a random fraction (quick runs)
    download: bool = True
    plots: bool = True
    out: str | None = None  # run folder; default runs/classify/<mode>, <mode>2, ...
    weights: str | None = None  # eval / predict: a best.pt or last.pt
    source: str | None = None  # predict: an image file or a folder of images
    models: str | None = None  # compare: comma-separated model names
    param: str | None = None  # sweep: which setting to vary
    values: str | None = None  # sweep: comma-separated values
    filters: int | None = None
    n_conv: int | None = None
    kernel_size: int | None = None
    padding: str | None = None
    activation: str | None = None
    width: int | None = None

    def model_kwargs(self) -> dict:
        """The model hyper-parameters that were set."""
        return {k: getattr(self, k) for k in MODEL_KEYS if getattr(self, k) is not None}


@dataclass(frozen=True)
class Recipe:
    """Training defaults that suit a family of models (``lr`` is for ``batch``; SGD rates scale as sqrt(batch))."""

    optimizer: str
    lr: float
    weight_decay: float
    sched: str
    label_smoothing: float
    batch: int
    momentum: float = 0.9
    norm_lr_scale: float = 1.0
    lookahead: bool = False


RECIPES = {
    # airbench94 (Jordan 2024) in mean-loss units: its lr 11.5 and decay 0.0153 "per 1024 examples" with Nesterov
    # momentum 0.85 are lr 1.5 and weight decay 1.33e-3 here; BN shifts 64x faster; growing lookahead average.
    "fast": Recipe("sgd", 1.5, 1.33e-3, "onecycle", 0.2, 1024, momentum=0.85, norm_lr_scale=64.0, lookahead=True),
    # The study trained its Keras networks with Adam at its default rate and no schedule.
    "study": Recipe("adam", 1e-3, 0.0, "constant", 0.0, 128),
    "timm": Recipe("adamw", 1e-3, 0.05, "cosine", 0.1, 128),
}


def recipe_for(model: str) -> Recipe:
    """The recipe of a model's family."""
    if model.startswith("study_"):
        return RECIPES["study"]
    if model.startswith("timm:"):
        return RECIPES["timm"]
    return RECIPES["fast"]


def resolve(cfg: ClassifyConfig, train_size: int) -> ClassifyConfig:
    """Fill every 'auto'/None setting from the model's recipe; an auto batch never exceeds 1/16 of the data."""
    if cfg.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {cfg.epochs}")
    if cfg.batch is not None and cfg.batch < 1:
        raise ConfigError(f"batch must be >= 1, got {cfg.batch}")
    if not 0 < cfg.fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {cfg.fraction}")
    if cfg.time_limit < 0:
        raise ConfigError(f"time_limit is in minutes and must be >= 0, got {cfg.time_limit}")
    if not 0 <= cfg.shift < 0.5:
        raise ConfigError(f"shift is a fraction of the image size in [0, 0.5), got {cfg.shift}")
    if cfg.flip != "auto" and not isinstance(cfg.flip, bool):
        raise ConfigError(f"flip must be true, false or auto, got {cfg.flip!r}")
    if cfg.loader not in LOADERS:
        raise ConfigError(f"loader must be one of {', '.join(LOADERS)}, got {cfg.loader!r}")
    r = recipe_for(cfg.model)
    data = cfg.data or "digits"
    batch = cfg.batch or min(r.batch, _power_of_two_at_most(max(16, train_size // 16)))
    if cfg.cpu_procs < 1 or batch % cfg.cpu_procs:
        raise ConfigError(f"cpu_procs={cfg.cpu_procs} needs >= 1 and a batch divisible by it (batch={batch}); "
                          f"set batch= to a multiple of {max(1, cfg.cpu_procs)}")
    return dataclasses.replace(
        cfg,
        data=data,
        batch=batch,
        optimizer=r.optimizer if cfg.optimizer == "auto" else cfg.optimizer,
        # Square-root scaling for SGD when the batch differs from the recipe's (Krizhevsky 2014): linear scaling
        # starves the small batches of small datasets (1 epoch of digits: 66% instead of 90%+).
        lr=(r.lr * math.sqrt(batch / r.batch) if r.optimizer == "sgd" else r.lr) if cfg.lr is None else cfg.lr,
        momentum=r.momentum if cfg.momentum is None else cfg.momentum,
        norm_lr_scale=r.norm_lr_scale if cfg.norm_lr_scale is None else cfg.norm_lr_scale,
        lookahead=r.lookahead if cfg.lookahead is None else cfg.lookahead,
        weight_decay=r.weight_decay if cfg.weight_decay is None else cfg.weight_decay,
        sched=r.sched if cfg.sched == "auto" else cfg.sched,
        label_smoothing=r.label_smoothing if cfg.label_smoothing is None else cfg.label_smoothing,
    )


def flip_enabled(cfg: ClassifyConfig) -> bool:
    """Horizontal flips: explicit true/false, or auto = on except for digit datasets."""
    if cfg.flip == "auto":
        data = cfg.data or "digits"
        return not (data == "digits" or data.startswith("mnist:"))
    return bool(cfg.flip)


def _power_of_two_at_most(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def parse_args(args: list[str], base: ClassifyConfig | None = None) -> ClassifyConfig:
    """Apply ``key=value`` arguments to a config, with seglab's one parser (unknown keys get the closest names)."""
    return dataclasses.replace(base or ClassifyConfig(), **parse_key_values(args, ClassifyConfig))
