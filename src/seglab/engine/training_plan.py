"""The training plan: crop, batch, windows per epoch and validation, derived from the dataset's fingerprint.

nnU-Net plans every dataset by fixed rules (patch from the median image size and a memory budget, batch from what
is left, 250 iterations per epoch, 1/3 foreground-centred patches). seglab does the same with rules that also fit a
CPU time budget, and that reproduce the measured settings on small images (TGS 101x101: whole images padded to 128,
batch 32; membrane 512x512: whole images, batch 8). In order, each rule seeing the values decided before it:

1. crop: whole images while the median image holds at most ``WINDOW_RATIO`` (2) windows of ``MAX_CROP`` (512) px;
   else windows of 512 px (or of the median's shorter side, down to a multiple of 32, for narrow strips).
2. pad_to: whole images whose larger side is at most 256 px and not a multiple of 32 (the deepest encoders' stride)
   are padded to the next multiple when that at most doubles their pixels (101 -> 128); else 0.
3. windows: sample windows when the median image holds more than ``WINDOW_RATIO`` crops; else one sample (a random
   crop, or the whole image) per image per epoch, as before. ``samples_per_epoch`` = 0 or N forces either.
4. batch: ``PIXELS_PER_STEP`` (8 x 512^2) over the pixels of one sample, a power of two in 2..32; per-image
   epochs keep at least two steps. On a GPU the batch is probed instead (``gpu_batch``: the largest that fits a
   share of its memory, capped where img/s stops rising; runtime/autobatch.py), with the lr scaled from this
   rule's batch. ``batch=auto`` asks for the plan's batch over a recipe's.
5. samples per epoch (windows): enough windows to cover every training image's area about once, and at least
   ``MIN_STEPS`` (32) steps. With time_limit and a measured step time, planned windows shrink (``fit_crop_to_time``,
   not below 256 px) while the budget holds fewer than ``MIN_BUDGET_STEPS`` (150) steps, whole images of more than
   two 256-px windows become windows likewise (``windows_to_time``), and an epoch takes at most a tenth of the
   budget (``fit_to_time``), so the schedule refits and validation happen at least ten times.
6. validation: by tiles when training on windows of images holding more than 2 tiles of 512 px (the trainer and
   eval blend sliding windows of max(crop, 512) px over each whole image, as predict does: bounded memory, context at
   tile borders, every pixel scored at full resolution), else whole images; every epoch, or with
   time_limit and windows every sixth of the budget (``2m`` of 12 minutes). With time_limit a validation is
   skipped while validating would exceed ``val_share`` of the time spent (``ValidationSchedule``).

7. augment: the default ``flips`` loses ``vflip`` when the labels' class layout differs strongly between the top and
   bottom halves of the images (``Fingerprint.up_down`` >= ``ORIENTED``, consistent over the images: street scenes),
   and ``hflip`` likewise for left and right; micrographs, aerial tiles, TGS and membrane keep both.
8. scale: full resolution, except with time_limit on window training when the measured steps (after the rules of 5)
   leave the budget fewer than ``HALF_SCALE_STEPS`` (500) and the labels survive halving (``Fingerprint``: at least
   ``HALF_AGREEMENT`` of the pixels keep their class, ``HALF_AGREEMENT_STARVED`` when the budget holds fewer than
   ``MIN_BUDGET_STEPS``, and every class ``HALF_CLASS_IOU`` IoU): the model then works at half resolution
   (``fit_scale_to_time``), a quarter of the cost per step, so four times the steps. From random weights a few
   hundred steps learn the largest classes only (16 CamVid mosaics, one core, 12 minutes: 88 steps at full
   resolution 0.199 mIoU, 333 steps at half 0.270; membrane, one core, 10 minutes: 72 steps at full resolution
   0.908 pixel accuracy, 296 at half 0.913, its 1-3 px cell walls drawn from bilinear up-sampled logits).

Precedence: command line > cfg file > recipe > plan > defaults. The plan fills only keys no source set
(``config_sources``), and every rule uses the values given for the keys before it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Callable

from ..config import Config, config_sources, parse_val_every, with_sources
from ..data.fingerprint import Fingerprint, fingerprint_dataset
from ..data.windows import TileDataset, WindowDataset, WindowIndex, WindowSampler

MAX_CROP = 512  # largest training window: a 512-px view holds a grain, a cell cluster or a car with its context
STRIDE = 32  # the deepest encoders' stride: crops and pads are multiples of it
WINDOW_RATIO = 2.0  # windows when the median image holds more than this many crops
PIXELS_PER_STEP = 8 * 512 * 512  # pixels per optimiser step: the tourmaline recipe's batch; 32 x 128^2 for TGS
MIN_BATCH, MAX_BATCH = 2, 32  # BatchNorm needs two samples; beyond 32 more samples per step stop paying off
SMALL_SIDE = 256  # images up to this size are padded to a stride multiple (TGS: 101 -> 128)
MIN_STEPS = 32  # a window epoch has at least this many steps (nnU-Net: 250), so an epoch is never one step
MIN_FIT_STEPS = 8  # fitting a time budget never cuts an epoch below this
MIN_BUDGET_STEPS = 150  # a time budget holds at least this many steps, planned windows shrinking down to MIN_TIME_CROP
FEW_STEPS = 50  # a time budget holding fewer steps than this, even after every fit, is said to be too short
MIN_TIME_CROP = 256  # the smallest window the budget rule takes: a 256-px view still holds a grain or a car
EPOCHS_IN_BUDGET = 10  # with a time budget, epochs are short enough for at least this many
VALIDATIONS_IN_BUDGET = 6  # time-limited window training validates about this often
ORIENTED = 0.25  # labels this asymmetric between image halves (Fingerprint.up_down) mean the images have an up
HALF_SCALE_STEPS = 500  # a time budget holding fewer full-resolution steps than this trains at half resolution...
HALF_AGREEMENT = 0.98  # ...when at least this share of the labelled pixels keeps its class at half resolution...
# ...or, when the budget holds fewer than MIN_BUDGET_STEPS full-resolution steps (starved: the model has not learned
# its classes yet), this share: four times the steps are worth more than a few boundary pixels (membrane, 96.5%)...
HALF_AGREEMENT_STARVED = 0.95
HALF_CLASS_IOU = 0.5  # ...and no class falls below this IoU with itself (a 1-px crack class would vanish)
PLANNED = ("crop", "pad_to", "batch", "samples_per_epoch", "val_tile", "val_every", "augment", "scale")


@dataclass
class TrainingPlan:
    """The planned settings of one run, who set each one, and why."""

    fingerprint: Fingerprint
    crop: int
    pad_to: int
    batch: int
    windows: bool  # True: ``samples_per_epoch`` windows per epoch; False: one sample per image
    samples_per_epoch: int  # windows per epoch; 0 = one sample per image
    steps_per_epoch: int  # optimiser steps of one epoch at ``batch`` (one process)
    rare_windows: float
    cat_max_ratio: float
    val_tile: int
    val_every: Any  # int epochs or a time such as "2m"
    val_share: float
    time_limit: float
    sources: dict[str, str] = field(default_factory=dict)  # planned key -> plan, recipe, cfg file, command line
    reasons: dict[str, str] = field(default_factory=dict)  # planned key -> the rule that decided it
    augment: str = "flips"
    scale: float = 1.0  # the share of the images' resolution the model works at (models/scaled.py)

    def values(self) -> dict[str, Any]:
        """The config values this plan stands for (samples_per_epoch resolved to a number)."""
        return {key: getattr(self, key) for key in PLANNED}

    def apply(self, cfg: Config) -> Config:
        """``cfg`` with the planned values for the keys the plan decided (recorded as set by ``plan``)."""
        return with_sources(cfg, {k: v for k, v in self.values().items() if self.sources.get(k) == "plan"}, "plan")

    def _budget(self) -> float:
        """Seconds of the time budget left for training steps (validation's share taken off)."""
        return self.time_limit * 60 * (1 - min(self.val_share, 0.5))

    def _crop_for(self, pixels: float, held: float) -> int:
        """The square window (a multiple of 32, at least ``MIN_TIME_CROP``) whose steps, scaled from steps of
        ``pixels`` per sample of which the budget holds ``held``, the budget holds ``MIN_BUDGET_STEPS`` of."""
        return max(MIN_TIME_CROP, int(math.sqrt(pixels * held / MIN_BUDGET_STEPS)) // STRIDE * STRIDE)

    def _cover(self, crop: int) -> tuple[int, int, str]:
        """Windows and steps of an epoch of ``crop``-px windows covering the images once (at least MIN_STEPS)."""
        cover = math.ceil(self.fingerprint.total_area / crop**2)
        steps = max(MIN_STEPS, math.ceil(cover / self.batch))
        raised = f"; raised to {MIN_STEPS} steps" if steps * self.batch > cover + self.batch else ""
        return steps * self.batch, steps, f"{cover} windows of {crop} px cover the {self.fingerprint.images} " \
                                          f"images once{raised}"

    def fit_to_time(self, step_seconds: float) -> "TrainingPlan":
        """With time_limit and a measured step time, shorten planned window epochs to a tenth of the budget."""
        if not (self.windows and self.time_limit > 0 and self.sources["samples_per_epoch"] == "plan"):
            return self
        most = int(self._budget() / (EPOCHS_IN_BUDGET * max(step_seconds, 1e-6)))
        steps = max(MIN_FIT_STEPS, min(self.steps_per_epoch, most))
        if steps == self.steps_per_epoch:
            return self
        if most >= MIN_FIT_STEPS:
            cut = f"so {EPOCHS_IN_BUDGET} epochs fit {self.time_limit:g} min at {step_seconds:.2g} s/step"
        else:  # the budget holds fewer than ten epochs of the shortest epoch: say so, not "10 epochs fit"
            held = int(self._budget() / max(step_seconds, 1e-6))
            epochs = held // steps
            cut = (f"the fewest an epoch takes: {self.time_limit:g} min hold about {held} steps at "
                   f"{step_seconds:.2g} s/step, " + (f"about {epochs} epoch{'s' if epochs > 1 else ''}" if epochs
                                                     else "less than one epoch"))
        reason = f"{self.reasons['samples_per_epoch']}; cut to {steps} steps, {cut}"
        return replace(self, samples_per_epoch=steps * self.batch, steps_per_epoch=steps,
                       reasons={**self.reasons, "samples_per_epoch": reason})

    def fit_crop_to_time(self, step_seconds: float) -> "TrainingPlan":
        """With time_limit and a measured step time, smaller planned windows when the budget holds too few steps.

        A CPU takes seconds per step of 8 windows of 512 px: 12 minutes then hold a few dozen steps, too few to
        learn (issue 28's user: 19 steps, mIoU 0.16). The step time scales with the window's pixels, so the window
        shrinks (to a multiple of 32, not below ``MIN_TIME_CROP``) until the budget holds ``MIN_BUDGET_STEPS``;
        the batch stays (BatchNorm statistics). Only a planned crop of planned windows changes; a GPU never needs it.
        """
        if not (self.windows and self.time_limit > 0 and self.sources["crop"] == "plan" and self.crop > MIN_TIME_CROP):
            return self
        held = self._budget() / max(step_seconds, 1e-6)
        crop = self._crop_for(self.crop**2, held)
        if held >= MIN_BUDGET_STEPS or crop >= self.crop:
            return self
        reasons = {**self.reasons, "crop": (f"{self.reasons.get('crop', 'planned')}; cut to {crop} px: "
                                            f"time_limit={self.time_limit:g} min held {held:.0f} of the "
                                            f"{MIN_BUDGET_STEPS} steps it needs at {step_seconds:.2g} s per step "
                                            f"of {self.crop}-px windows (the batch stays {self.batch})")}
        if self.sources["batch"] == "plan":
            reasons["batch"] = f"{reasons.get('batch', 'planned')} (the {self.crop}-px windows'; kept at {crop} px)"
        samples, steps = self.samples_per_epoch, self.steps_per_epoch
        if self.sources["samples_per_epoch"] == "plan":
            samples, steps, reasons["samples_per_epoch"] = self._cover(crop)
        return replace(self, crop=crop, samples_per_epoch=samples, steps_per_epoch=steps, reasons=reasons)

    def fit_scale_to_time(self, step_seconds: float) -> "TrainingPlan":
        """With time_limit and a measured step time, half resolution when the budget holds fewer than
        ``HALF_SCALE_STEPS`` steps and the labels survive halving (module docstring, rule 8)."""
        if not (self.windows and self.time_limit > 0 and self.sources.get("scale") == "plan" and self.scale == 1.0
                and self.crop >= MIN_TIME_CROP):
            return self
        held = self._budget() / max(step_seconds, 1e-6)
        if held >= HALF_SCALE_STEPS:
            return self
        fp = self.fingerprint
        budget = (f"time_limit={self.time_limit:g} min holds {held:.0f} steps of {self.crop}-px windows at "
                  f"{step_seconds:.2g} s per step, fewer than the {HALF_SCALE_STEPS} that learn more than the "
                  f"largest classes")
        kept = (f"{fp.half_agreement:.1%} of the labelled pixels keep their class, the worst class "
                f"{fp.half_class_iou:.2f} IoU")
        agreement = HALF_AGREEMENT_STARVED if held < MIN_BUDGET_STEPS else HALF_AGREEMENT
        if fp.half_agreement < agreement or fp.half_class_iou < HALF_CLASS_IOU:
            why = f"full resolution: {budget}, but at half resolution only {kept} (fine detail; scale=0.5 forces it)"
            return replace(self, reasons={**self.reasons, "scale": why})
        why = f"half resolution: {budget}; at half a step costs about a quarter, and {kept}"
        if fp.half_agreement < HALF_AGREEMENT:
            why += (f" (enough below {MIN_BUDGET_STEPS} steps, where four times the steps are worth more than the "
                    "finest detail; scale=1 keeps it)")
        return replace(self, scale=0.5, reasons={**self.reasons, "scale": why})

    def can_window(self) -> bool:
        """True when this plan trains whole images (crop and epochs planned) big enough for windows of 256 px."""
        planned = all(self.sources[k] == "plan" for k in ("crop", "pad_to", "samples_per_epoch"))
        return (not self.windows and planned and self.time_limit > 0 and self.crop == 0 and self.pad_to == 0
                and self.fingerprint.median_area > WINDOW_RATIO * MIN_TIME_CROP**2)

    def windows_to_time(self, step_seconds: float) -> "TrainingPlan":
        """With time_limit and a measured step time, whole images become windows when the budget holds too few
        steps of them (``fit_crop_to_time`` for whole images).

        A CPU takes seconds per step of eight 480x360 frames: a 15-minute budget holds about a hundred, where
        windows of 256 px give several times more (CamVid, 20 one-core minutes: BiSeNet 0.430 mIoU on windows,
        0.320 on whole frames). The windows are the largest that hold ``MIN_BUDGET_STEPS`` steps, not below 256
        px and at most half the median image; the batch stays, and validation goes by time as for windows.
        """
        held = self._budget() / max(step_seconds, 1e-6)
        if not self.can_window() or held >= MIN_BUDGET_STEPS:
            return self
        area = self.fingerprint.median_area
        crop = min(self._crop_for(area, held), max(MIN_TIME_CROP, int(math.sqrt(area / WINDOW_RATIO)) // STRIDE
                                                   * STRIDE))
        samples, steps, covered = self._cover(crop)
        size = f"{self.fingerprint.median_w}x{self.fingerprint.median_h}"
        reasons = {**self.reasons, "samples_per_epoch": covered,
                   "crop": (f"whole {size} images: time_limit={self.time_limit:g} min held {held:.0f} of the "
                            f"{MIN_BUDGET_STEPS} steps it needs at {step_seconds:.2g} s per step, so windows of "
                            f"{crop} px (the batch stays {self.batch})")}
        val_every = self.val_every
        if self.sources["val_every"] == "plan":
            val_every = _time_text(max(30.0, self.time_limit * 60 / VALIDATIONS_IN_BUDGET))
            reasons["val_every"] = f"about {VALIDATIONS_IN_BUDGET} validations in time_limit={self.time_limit:g} min"
        return replace(self, crop=crop, windows=True, samples_per_epoch=samples, steps_per_epoch=steps,
                       val_every=val_every, reasons=reasons)

    def few_steps_note(self, step_seconds: float, model: str) -> str:
        """A hint when even the fitted plan leaves the budget too few steps to learn from ('' otherwise)."""
        held = self._budget() / max(step_seconds, 1e-6)
        if not (self.time_limit > 0 and held < FEW_STEPS):
            return ""
        return (f"note: time_limit={self.time_limit:g} min holds about {held:.0f} optimiser steps of model={model} at "
                f"{step_seconds:.2g} s per step on this machine, too few to learn from (a model from random weights "
                f"needs a few hundred): give more time, or a lighter model (model=unet_small, the default, or "
                f"recipe=scenes-cpu / tgs-salt-cpu for their data)")

    def budget_note(self, step_seconds: float) -> str:
        """A hint when a crop the user or a recipe gave leaves the time budget too few steps ('' otherwise)."""
        if not (self.windows and self.time_limit > 0 and self.sources["crop"] != "plan" and self.crop > MIN_TIME_CROP):
            return ""
        held = self._budget() / max(step_seconds, 1e-6)
        if held >= MIN_BUDGET_STEPS:
            return ""
        smaller = self._crop_for(self.crop**2, held)
        return (f"note: time_limit={self.time_limit:g} min holds about {held:.0f} optimiser steps of {self.crop}-px "
                f"windows at {step_seconds:.2g} s per step, few to learn from; crop={smaller} would give about "
                f"{MIN_BUDGET_STEPS} (the plan shrinks only windows it chose; crop was set by {self.sources['crop']})")

    @classmethod
    def from_dict(cls, saved: dict[str, Any], cfg: Config | None = None) -> "TrainingPlan":
        """The plan ``to_dict`` saved (plan.json); with ``cfg`` its planned values are the config's (a resumed run's
        config.yaml holds what the run trains with, a budget fit included)."""
        fp = {k: v for k, v in saved["fingerprint"].items() if k in Fingerprint.__dataclass_fields__}
        fields = {k: saved[k] for k in cls.__dataclass_fields__ if k in saved and k != "fingerprint"}
        plan = cls(fingerprint=Fingerprint(**fp), **fields)
        if cfg is None:
            return plan
        values = {key: getattr(cfg, key) for key in PLANNED}
        windows = values["samples_per_epoch"] not in (0, "auto")
        steps = math.ceil(values["samples_per_epoch"] / values["batch"]) if windows else plan.steps_per_epoch
        return replace(plan, **values, windows=windows, steps_per_epoch=steps, rare_windows=cfg.rare_windows,
                       cat_max_ratio=cfg.cat_max_ratio, val_share=cfg.val_share, time_limit=cfg.time_limit)

    def to_dict(self) -> dict[str, Any]:
        """Everything for plan.json: the fingerprint, the planned values, their sources and reasons."""
        return {"fingerprint": self.fingerprint.to_dict(), **self.values(), "windows": self.windows,
                "steps_per_epoch": self.steps_per_epoch, "rare_windows": self.rare_windows,
                "cat_max_ratio": self.cat_max_ratio, "val_share": self.val_share, "time_limit": self.time_limit,
                "sources": dict(self.sources), "reasons": dict(self.reasons), "line": self.describe()}

    def describe(self) -> str:
        """One log line: the fingerprint, then what the plan does (with who set what, when not the plan)."""
        parts = []
        if self.windows:
            parts.append(f"crop {self.crop}" if self.crop else "whole images")
            parts.append(f"batch {self.batch}")
            parts.append(f"{self.samples_per_epoch} windows ({self.steps_per_epoch} steps) per epoch")
            if self.rare_windows > 0:
                parts.append(f"{_fraction(self.rare_windows)} centred on rare classes")
        else:
            what = f"random {self.crop}-px crops of" if self.crop else "whole"
            pad = f" padded to {self.pad_to}" if self.pad_to else ""
            parts.append(f"{what} images{pad}")
            parts.append(f"batch {self.batch}")
            parts.append(f"one sample per image ({self.steps_per_epoch} steps) per epoch")
        if self.scale != 1.0:
            parts[0] += " at half resolution" if self.scale == 0.5 else f" at {self.scale:g} of the resolution"
        if self.augment != "flips" and self.sources.get("augment") == "plan":
            parts.append(f"augment {self.augment} (the labels have an up and a down)" if "hflip" in self.augment
                         else f"augment {self.augment}")
        how = f"by {self.val_tile}-px tiles" if self.val_tile else "on whole images"
        parts.append(f"validation {how} {_every(self.val_every)}")
        line = f"plan: {self.fingerprint.describe()}: {', '.join(parts)}"
        given: dict[str, list[str]] = {}
        for key in PLANNED:
            source = self.sources.get(key, "plan")  # plans saved before a key existed lack it
            if source not in ("plan", "default"):
                given.setdefault(source, []).append(key)
        if given:
            line += "; set by " + "; ".join(f"{src}: {', '.join(keys)}" for src, keys in given.items())
        return line


def _fraction(share: float) -> str:
    """0.33 -> ``1/3``, 0.5 -> ``1/2``; shares that are no simple fraction as a percentage."""
    frac = Fraction(share).limit_denominator(10)
    return f"{frac.numerator}/{frac.denominator}" if abs(float(frac) - share) < 0.01 else f"{share:.0%}"


def _every(val_every: Any) -> str:
    """``every epoch``, ``every 3 epochs``, ``every 2 min``, ``every 90 s``."""
    kind, amount = parse_val_every(val_every)
    if kind == "epochs":
        return "every epoch" if amount == 1 else f"every {amount:g} epochs"
    return f"every {amount / 60:g} min" if amount % 60 == 0 else f"every {amount:g} s"


def _pow2_floor(x: float) -> int:
    """Largest power of two <= x (1 for x < 2)."""
    return 1 << max(0, int(math.floor(math.log2(max(x, 1.0)))))


def _time_text(seconds: float) -> str:
    """A validation interval as config text: whole minutes as ``2m``, else ``90s``."""
    seconds = int(round(seconds / 10.0) * 10)
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


# On a GPU the plan's batch rule: (sample height and width, the CPU rule's batch, images of a one-sample-per-image
# epoch or 0 for windows) -> (batch, why); see engine/gpu_batch.py and runtime/autobatch.py.
GpuBatchRule = Callable[[tuple[int, int], int, int], tuple[int, str]]


def plan_training(fp: Fingerprint, cfg: Config, sources: dict[str, str] | None = None,
                  gpu_batch: GpuBatchRule | None = None) -> TrainingPlan:
    """Apply the rules (module docstring) to a fingerprint; keys a source set keep their value (``batch=auto``
    leaves the batch to the plan). ``gpu_batch``, on a GPU, replaces the CPU batch rule."""
    sources = dict(sources or config_sources(cfg))
    src: dict[str, str] = {}
    why: dict[str, str] = {}

    def given(key: str) -> bool:
        src[key] = sources.get(key, "default") if sources.get(key, "default") not in ("default", "plan") else "plan"
        return src[key] != "plan"

    area, size = fp.median_area, f"{fp.median_w}x{fp.median_h}"
    # 1. crop
    if given("crop"):
        crop = cfg.crop
    elif area <= WINDOW_RATIO * MAX_CROP**2:
        crop, why["crop"] = 0, f"the median image ({size}) holds at most {WINDOW_RATIO:g} windows of {MAX_CROP} px"
    else:
        crop = min(MAX_CROP, max(STRIDE, min(fp.median_h, fp.median_w) // STRIDE * STRIDE))
        why["crop"] = f"the median image ({size}) holds {area / crop**2:.1f} windows of {crop} px"
    # 2. pad_to
    side = max(fp.max_h, fp.max_w)
    padded = -(-side // STRIDE) * STRIDE
    if given("pad_to"):
        pad_to = cfg.pad_to
    elif crop == 0 and side <= SMALL_SIDE and padded != side and padded**2 <= 2 * area:
        pad_to, why["pad_to"] = padded, f"{side}-px images padded to the next multiple of {STRIDE}"
    else:
        pad_to = 0
    # 3. windows or one sample per image
    spe = cfg.samples_per_epoch
    if given("samples_per_epoch") and spe != "auto":
        windows = spe > 0
    else:
        src["samples_per_epoch"] = "plan"
        windows = crop > 0 and area > WINDOW_RATIO * crop**2
    # 4. batch
    sample_px = crop**2 if crop else max(pad_to**2, area)
    if given("batch") and cfg.batch != "auto":
        batch = cfg.batch
    else:
        src["batch"] = "plan"
        batch = min(MAX_BATCH, max(MIN_BATCH, _pow2_floor(PIXELS_PER_STEP / sample_px)))
        why["batch"] = f"{PIXELS_PER_STEP / 2**20:g} M pixels per step at {sample_px} px per sample"
        if not windows and batch > max(MIN_BATCH, _pow2_floor(fp.images / 2)):
            batch = max(MIN_BATCH, _pow2_floor(fp.images / 2))
            why["batch"] = f"at least two steps per epoch of {fp.images} images"
        if gpu_batch is not None:  # the largest batch of this sample size that fits the GPU (whole images: the largest)
            shape = (crop, crop) if crop else (max(pad_to, fp.max_h), max(pad_to, fp.max_w))
            batch, why["batch"] = gpu_batch(shape, batch, 0 if windows else fp.images)
    # 5. samples per epoch
    if not windows:
        samples, steps = 0, max(1, fp.images // batch)
        why.setdefault("samples_per_epoch", "one sample per image per epoch")
    elif src["samples_per_epoch"] != "plan":
        samples, steps = int(spe), max(1, math.ceil(int(spe) / batch))
    else:
        window_px = crop**2 if crop else area
        cover = math.ceil(fp.total_area / window_px)
        steps = max(MIN_STEPS, math.ceil(cover / batch))
        samples = steps * batch
        why["samples_per_epoch"] = (f"{cover} windows cover the {fp.images} images once"
                                    + (f"; raised to {MIN_STEPS} steps" if steps * batch > cover + batch else ""))
    # 6. validation
    if given("val_tile"):
        val_tile = cfg.val_tile
    else:
        val_tile = max(crop, MAX_CROP) if windows and area > WINDOW_RATIO * MAX_CROP**2 else 0
        if val_tile:
            why["val_tile"] = f"the median image holds more than {WINDOW_RATIO:g} tiles of {val_tile} px"
    if given("val_every"):
        val_every = cfg.val_every
    elif windows and cfg.time_limit > 0:
        val_every = _time_text(max(30.0, cfg.time_limit * 60 / VALIDATIONS_IN_BUDGET))
        why["val_every"] = f"about {VALIDATIONS_IN_BUDGET} validations in time_limit={cfg.time_limit:g} min"
    else:
        val_every = 1
    # 7. flips: a mirror image must be a plausible image. Street scenes (sky up, road down) are not plausible upside
    # down, so their labels' strong up/down asymmetry drops vertical flips (and the same left/right for horizontal).
    if given("augment") or cfg.augment != "flips":
        augment = cfg.augment
    else:
        flips = [name for name, lean in (("hflip", fp.left_right), ("vflip", fp.up_down)) if lean < ORIENTED]
        augment = "flips" if len(flips) == 2 else ",".join(flips) or "none"
        if augment != "flips":
            dropped = [f"{'left/right' if n == 'hflip' else 'up/down'} {lean:.2f}"
                       for n, lean in (("hflip", fp.left_right), ("vflip", fp.up_down)) if n not in flips]
            why["augment"] = (f"the labels sit differently in the image halves ({', '.join(dropped)} >= {ORIENTED}): "
                              f"mirrored images would be implausible, so augment={augment}")
    given("scale")  # 8. full resolution until the time budget is measured (fit_scale_to_time)
    return TrainingPlan(fp, crop, pad_to, batch, windows, samples, steps, cfg.rare_windows, cfg.cat_max_ratio,
                        val_tile, val_every, cfg.val_share, cfg.time_limit, src, why, augment, cfg.scale)


class ValidationSchedule:
    """When to validate: every N epochs or every T seconds of training time; with time_limit within ``val_share``.

    The trainer asks ``due(epoch, elapsed)`` after each epoch (``last=True`` for the final one, which always
    validates) and reports each validation's duration with ``record``. A due validation is skipped while the time
    spent validating, plus the expected cost of this one, would exceed ``val_share`` of the elapsed time.
    """

    def __init__(self, val_every: Any, val_share: float = 1.0, time_limit: float = 0.0):
        self.kind, self.amount = parse_val_every(val_every)
        self.text = val_every
        self.share = val_share if time_limit > 0 else 1.0
        self.last_at, self.spent, self.runs = 0.0, 0.0, 0
        self.held_back = 0  # due validations skipped to keep within val_share (this process; not checkpointed)
        self.estimate = 0.0  # seconds the first validation is expected to take (from the timed steps), 0: unknown

    def due(self, epoch: int, elapsed: float, last: bool = False) -> bool:
        """True when epoch ``epoch`` (0-based), ending ``elapsed`` seconds into the run, should validate."""
        if last:
            return True
        if self.kind == "epochs":
            if (epoch + 1) % int(self.amount):
                return False
        elif elapsed - self.last_at < self.amount:
            return False
        expected = self.expected()
        if self.share < 1.0 and expected > 0:
            if self.spent + expected > self.share * (elapsed + expected):
                self.held_back += 1
                return False
        return True

    def describe(self) -> str:
        """For the log: how often, and the share of a time budget validation is kept to."""
        line = f"validation {_every(self.text)}"
        if self.share < 1.0:
            line += (f"; its time counts in time_limit and is kept under val_share={self.share:g} of the time spent "
                     "(a due validation waits while it would exceed that); the last epoch always validates")
        return line

    def expected(self) -> float:
        """Seconds a validation is expected to take: what they took so far, else the estimate (0: unknown)."""
        return self.spent / self.runs if self.runs else self.estimate

    def record(self, elapsed: float, seconds: float) -> None:
        """A validation started ``elapsed`` seconds into the run and took ``seconds``."""
        self.last_at, self.spent, self.runs = elapsed + seconds, self.spent + seconds, self.runs + 1

    def state_dict(self) -> dict[str, float]:
        """For checkpoints, so a resumed run keeps its rhythm and budget."""
        return {"last_at": self.last_at, "spent": self.spent, "runs": self.runs}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Inverse of state_dict."""
        self.last_at, self.spent, self.runs = state["last_at"], state["spent"], int(state["runs"])


def plan_run(cfg: Config, train_ds, views: int = 1) -> tuple[Config, TrainingPlan]:
    """Fingerprint the training set, plan, and return the config with the plan's values filled in."""
    plan = plan_training(fingerprint_dataset(train_ds, views=views), cfg)
    return plan.apply(cfg), plan


def window_training(plan: TrainingPlan, train_ds, transform, seed: int, rank: int = 0,
                    world: int = 1) -> tuple[WindowDataset, WindowSampler]:
    """The dataset and sampler of window training (``plan.windows``); call ``sampler.set_epoch`` every epoch."""
    needs_index = plan.cat_max_ratio < 1.0 or plan.rare_windows > 0.0
    index = WindowIndex.from_dataset(train_ds, cell=max(4, plan.crop // 16), seed=seed) if needs_index else None
    sizes = index.sizes if index is not None else _sizes(train_ds)
    sampler = WindowSampler(sizes, plan.crop, plan.samples_per_epoch, seed, rank, world, index=index,
                            cat_max_ratio=plan.cat_max_ratio, rare_windows=plan.rare_windows)
    return WindowDataset(train_ds, transform), sampler


def resized(sampler: WindowSampler, samples: int) -> WindowSampler:
    """``sampler`` (same sizes, index, seed and ranks) drawing ``samples`` windows per epoch (after ``fit_to_time``)."""
    return WindowSampler(sampler.sizes, sampler.crop, samples, sampler.seed, sampler.rank, sampler.world,
                         index=sampler.index, cat_max_ratio=sampler.cat_max_ratio,
                         rare_windows=sampler.rare_windows, max_tries=sampler.max_tries)


def validation_dataset(plan: TrainingPlan, val_ds):
    """``val_ds`` cut into ``val_tile`` tiles when the plan validates by tiles, else ``val_ds`` itself."""
    return TileDataset(val_ds, plan.val_tile) if plan.val_tile and val_ds is not None else val_ds


def _sizes(ds) -> list[tuple[int, int]]:
    """(height, width) of every image of a SegmentationDataset (cache or file headers)."""
    from ..data.io import image_size

    cached = ds.cached_arrays()
    return [img.shape[:2] for img, _ in cached] if cached is not None else [image_size(s.image) for s in ds.samples]
