"""Option checking shared by the model builders: unknown options are a clear ValueError, not a TypeError."""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

from ..errors import ConfigError


def reject_unknown_options(model_name: str, unknown: dict[str, Any], builder: Callable) -> None:
    """Raise a ValueError naming the options ``builder`` does not take, near-miss suggestions and the valid ones."""
    if not unknown:
        return
    valid = [p.name for p in inspect.signature(builder).parameters.values()
             if p.kind is not inspect.Parameter.VAR_KEYWORD and p.name not in ("num_classes", "in_channels")]
    hints = [f"{key} -> {close[0]}" for key in sorted(unknown)
             if (close := difflib.get_close_matches(key, valid, n=1, cutoff=0.75))]
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    raise ConfigError(f"model {model_name!r} does not take option(s) {sorted(unknown)}{hint}; "
                      f"valid options: {', '.join(valid) or 'none'}")
