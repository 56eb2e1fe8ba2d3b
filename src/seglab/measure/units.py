"""Pixel-size parsing: turn "0.65um", "0.65 µm", "1.2mm" or a number plus unit into (size, unit)."""

from __future__ import annotations

import math
import re

from ..errors import ConfigError

# Canonical unit names are ASCII so they can be used in CSV column names ("area_um2").
_UNIT_ALIASES: dict[str, str] = {
    "nm": "nm",
    "um": "um",
    "µm": "um",  # U+00B5 MICRO SIGN
    "μm": "um",  # U+03BC GREEK SMALL LETTER MU
    "micron": "um",
    "microns": "um",
    "micrometer": "um",
    "micrometers": "um",
    "micrometre": "um",
    "micrometres": "um",
    "mm": "mm",
    "cm": "cm",
    "m": "m",
}

# Pretty names for plot labels.
_UNIT_DISPLAY: dict[str, str] = {"nm": "nm", "um": "µm", "mm": "mm", "cm": "cm", "m": "m", "px": "px"}

_PIXEL_SIZE_PATTERN = re.compile(
    r"^\s*(?P<value>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>[^\s/0-9.]+)\s*(?:/\s*(?:px|pixels?))?\s*$"
)

_FORMAT_HINT = "pixel_size must look like 0.65um (a positive number followed by a unit: nm, um, µm, mm, cm or m)"


def normalize_unit(unit: str) -> str:
    """Return the canonical ASCII name of a length unit ("µm" -> "um"), or raise a ConfigError."""
    canonical = _UNIT_ALIASES.get(unit.strip().lower()) if isinstance(unit, str) else None
    if canonical is None:
        known = ", ".join(sorted(set(_UNIT_ALIASES.values())))
        raise ConfigError(f"unknown length unit {unit!r}; use one of: {known} (µm and 'micron' are accepted for um)")
    return canonical


def display_unit(unit: str) -> str:
    """Return the unit as it should appear on plot axes ("um" -> "µm")."""
    return _UNIT_DISPLAY.get(unit, unit)


def parse_pixel_size(text: str | float, unit: str | None = None) -> tuple[float, str]:
    """Parse a pixel size such as "0.65um", "0.65 µm/px" or (0.65, unit="um") into (0.65, "um")."""
    if isinstance(text, bool):
        raise ConfigError(f"{_FORMAT_HINT}; got {text!r}")  # noqa: TRY004 (seglab reports bad input as ValueError)
    if isinstance(text, (int, float)):
        if unit is None or unit.strip().lower() in ("", "px", "pixel", "pixels"):
            raise ConfigError(
                f"pixel_size={text} has no physical unit: write pixel_size={text}um (or nm, mm), or add unit=um"
            )
        value, canonical = float(text), normalize_unit(unit)
    elif isinstance(text, str):
        match = _PIXEL_SIZE_PATTERN.match(text)
        if match is None:
            raise ConfigError(f"{_FORMAT_HINT}; got {text!r}")
        value = float(match.group("value"))
        try:
            canonical = normalize_unit(match.group("unit"))
        except ValueError as error:
            raise ConfigError(f"{_FORMAT_HINT}; got {text!r} ({error})") from None
    else:
        raise ConfigError(f"{_FORMAT_HINT}; got a {type(text).__name__}: {text!r}")  # noqa: TRY004
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"pixel_size must be a positive, finite number of length units per pixel; got {text!r}")
    return value, canonical
