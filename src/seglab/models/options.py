"""Option checking shared by the model builders: unknown options are a clear ValueError, not a TypeError."""
from __future__ import annotations

import inspect
from typing import Any, Callable


def reject_unknown_options(model_name: str, unknown: dict[str, Any], builder: Callable) -> None:
    """Raise a ValueError naming the options ``builder`` does not take and the ones it does."""
    if not unknown:
        return
    valid = [p.name for p in inspect.signature(builder).parameters.values()
             if p.kind is not inspect.Parameter.VAR_KEYWORD and p.name not in ("num_classes", "in_channels")]
    raise ValueError(f"model {model_name!r} does not take option(s) {sorted(unknown)}; "
                     f"valid options: {', '.join(valid) or 'none'}")
