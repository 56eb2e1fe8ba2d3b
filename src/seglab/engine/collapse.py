"""A model collapsing to one class: validation after validation predicts one class for (nearly) every pixel.

A segmentation model that has learnt "everything is background" scores a high pixel accuracy and an IoU of zero
for every other class, and a loss curve that looks calm; without a warning the user finds out after the run.
``collapsed_class`` reads it from the validation confusion matrix (rows: true class, columns: predicted class);
``CollapseWatch`` warns once when ``IN_A_ROW`` validations in a row collapsed (or, at the end, all of them when the
run validated fewer times), naming the likely causes and the settings that address them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

SHARE = 0.99  # one class predicted on at least this share of the valid pixels ...
IN_A_ROW = 3  # ... in this many validations in a row (or in all of them, when the run validated fewer times)
ALL_ONE = 0.999  # masks this much one class look broken (or are the wrong files): the warning names them first


def collapsed_class(confusion: Any, share: float = SHARE) -> tuple[int, float, float] | None:
    """``(class, predicted share, true share)`` when one class was predicted on at least ``share`` of the valid
    pixels while the other classes got fewer than half of the pixels that truly are theirs; else None.

    The second condition keeps a model that is right from being called collapsed: on masks that are 99.5%
    background, predicting 99.6% background with the foreground found is fine, predicting 100% is not. Masks that
    are all one class (nothing else to find) count as collapsed: the model can only learn that class.
    """
    mat = torch.as_tensor(confusion, dtype=torch.float64)
    total = float(mat.sum())
    if mat.ndim != 2 or total <= 0:
        return None
    predicted = mat.sum(0)
    top = int(predicted.argmax())
    pred_share, true_share = float(predicted[top]) / total, float(mat[top].sum()) / total
    others_predicted, others_true = total - float(predicted[top]), total - float(mat[top].sum())
    if pred_share < share or 2 * others_predicted > others_true:
        return None
    return top, pred_share, true_share


def collapse_warning(name: str, pred_share: float, true_share: float, validations: int, cfg: Any,
                     windows: bool) -> str:
    """The warning: what was seen, then the likely causes with the settings to try, the likeliest first."""
    seen = (f"validation predicted {name!r} for {pred_share:.1%} of the pixels in {validations} validation"
            f"{'s in a row' if validations > 1 else ''}: the model has collapsed to one class.")
    if windows:
        rebalance = f"a higher rare_windows (now {float(getattr(cfg, 'rare_windows', 0) or 0):g}, e.g. 0.6) to " \
                    "centre more windows on rare classes"
    else:
        rebalance = f"balance=0.5 (now {float(getattr(cfg, 'balance', 0) or 0):g}) to draw images with rare " \
                    "classes more often"
    weights = "class_weights=auto" if not getattr(cfg, "class_weights", "") else "stronger class_weights"
    causes = [f"class imbalance ({name!r} is {true_share:.1%} of the labelled validation pixels): try {weights} "
              f"or {rebalance}",
              f"a learning rate too high or too low (lr={getattr(cfg, 'lr', '?')}): try 10x lower or higher",
              f"masks that are all one value: check them with `seglab data check data={getattr(cfg, 'data', '')}`"]
    if true_share >= ALL_ONE:  # the labels themselves are one class: the masks come first
        causes = [f"the validation masks are {true_share:.1%} {name!r}: check the masks with "
                  f"`seglab data check data={getattr(cfg, 'data', '')}`", causes[0], causes[1]]
    return f"warning: {seen} Likely causes: " + "; ".join(f"({i}) {c}" for i, c in enumerate(causes, 1))


@dataclass
class CollapseWatch:
    """Validations seen and how many in a row collapsed; ``warning`` is set once, the first time it applies."""

    in_a_row: int = IN_A_ROW
    validations: int = 0
    streak: int = 0
    last: tuple[int, float, float] | None = None
    warning: str = ""

    def observe(self, confusion: Any) -> bool:
        """Count one validation; True when it completes the first run of ``in_a_row`` collapsed ones."""
        self.validations += 1
        self.last = collapsed_class(confusion)
        self.streak = self.streak + 1 if self.last is not None else 0
        return not self.warning and self.streak >= self.in_a_row

    def at_end(self) -> bool:
        """True when the run validated fewer than ``in_a_row`` times, every one of them collapsed, and no warning
        was given yet."""
        return not self.warning and 0 < self.validations == self.streak < self.in_a_row

    def warn(self, class_names: Sequence[str], cfg: Any, windows: bool) -> str:
        """The warning for the last collapsed validation (kept in ``warning``, so it is given once)."""
        top, pred_share, true_share = self.last  # type: ignore[misc]
        name = class_names[top] if top < len(class_names) else f"class {top}"
        self.warning = collapse_warning(str(name), pred_share, true_share, self.streak, cfg, windows)
        return self.warning
