"""Parse loss specs such as ``"bce+dice"`` or ``"0.5*bce+1.0*lovasz"`` into (weight, name) terms, without eval."""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable

from ..errors import ConfigError

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = re.compile(rf"\s*(?:(?P<weight>{_NUMBER})\s*\*\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*")
_PLUS = re.compile(r"\+")

SPEC_HELP = "write terms joined by '+', each 'name' or 'weight*name', e.g. 'bce+dice' or '0.5*bce+1.0*lovasz'"


def unknown_name_message(name: str, valid_names: Iterable[str]) -> str:
    """Message for an unknown loss name: the closest valid name (difflib) and the full list."""
    names = sorted(valid_names)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"Did you mean {close[0]!r}? " if close else ""
    return f"unknown loss {name!r}. {hint}Valid names: {', '.join(names)}"


def parse_loss_spec(spec: str, valid_names: Iterable[str]) -> list[tuple[float, str]]:
    """Split a loss spec into ``(weight, name)`` terms (names lower-cased, weight 1 when omitted)."""
    valid = set(valid_names)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"loss spec must be a non-empty string; got {spec!r}: {SPEC_HELP}")
    terms: list[tuple[float, str]] = []
    position = 0
    while True:
        match = _TERM.match(spec, position)
        if match is None or match.end() == position:
            raise ConfigError(f"cannot parse loss spec {spec!r} at character {position + 1}: {SPEC_HELP}")
        weight = float(match["weight"]) if match["weight"] is not None else 1.0
        name = match["name"].lower()
        if not (math.isfinite(weight) and weight > 0):
            raise ConfigError(f"loss weight must be a positive number; got {match['weight']!r} in {spec!r}")
        if name not in valid:
            raise ConfigError(unknown_name_message(name, valid))
        terms.append((weight, name))
        position = match.end()
        if position == len(spec):
            return terms
        plus = _PLUS.match(spec, position)
        if plus is None:
            raise ConfigError(f"cannot parse loss spec {spec!r} at character {position + 1}: {SPEC_HELP}")
        position = plus.end()
