"""Which classes of a mask are background (not measured as grains): ``background=auto|none|0|matrix,pore``.

Class 0 is not always background. A tourmaline mask's 0 is the matrix around the grains, but a thin section labelled
with five minerals has quartz as class 0, and every pixel belongs to some mineral: leaving quartz out would drop half
the section from the tables without a word. ``auto`` decides by the class names and says what it chose.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..data.labels import is_background_name, is_generic_name
from ..errors import ConfigError


def resolve_background(spec: object, class_names: Sequence[str] | None) -> tuple[tuple[int, ...], str]:
    """The class ids ``spec`` leaves out as background, and a one-line note saying what was measured and how to
    change it.

    ``auto``: class 0 is background when the classes are unnamed (or generically named), when there are only two
    (an object and its surroundings), or when class 0 is named like a background (background, bg, matrix, none);
    otherwise (``quartz``, ``feldspar``, ...) every class is measured. ``none``: every class. Otherwise class ids
    or names, comma-separated.
    """
    names = [str(n) for n in class_names] if class_names else []
    text = ",".join(str(x) for x in spec) if isinstance(spec, (list, tuple)) else str(spec).strip()
    if text.lower() == "auto":
        if not names or len(names) <= 2 or is_generic_name(names[0]) or is_background_name(names[0]):
            label = f"class 0 ({names[0]})" if names else "class 0"
            return (0,), f"{label} is background, not measured (background=none measures every class)"
        return (), (f"every class is measured, {names[0]!r} (class 0) included: it is not named like a background "
                    f"(background=0 or background={names[0]} leaves it out)")
    if text.lower() in ("none", "", "-1"):
        return (), "every class is measured (background=none)"
    ids = tuple(sorted({_class_id(item.strip(), names) for item in text.split(",") if item.strip()}))
    shown = ", ".join(f"{i} ({names[i]})" if i < len(names) else str(i) for i in ids)
    return ids, f"background, not measured: class {shown}"


def _class_id(item: str, names: list[str]) -> int:
    """One entry of ``background=``: a class id, or a class name (case-insensitive)."""
    if item.lstrip("-").isdigit():
        value = int(item)
        if value < 0 or (names and value >= len(names)):
            raise ConfigError(f"background={item}: no such class; the classes are "
                              f"{', '.join(f'{i} {n}' for i, n in enumerate(names)) or 'class indices >= 0'}")
        return value
    lowered = [n.lower() for n in names]
    if item.lower() in lowered:
        return lowered.index(item.lower())
    known = ", ".join(names) if names else "none (give class indices, or classes=[...] to name them)"
    raise ConfigError(f"background={item}: no class of that name; the class names are: {known}")
