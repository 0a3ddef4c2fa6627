"""The JSON the pipeline writes (cards, history lines, `--json` output) is
strict JSON: a NaN or an infinity (the MAPE of a holdout that sells nothing,
the MASE of a constant series) is written as null. Python's json module would
write a bare NaN, which JavaScript's JSON.parse and other strict readers refuse.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every NaN and infinity in it, however deep, made None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(document: Any, **options: Any) -> str:
    return json.dumps(finite(document), allow_nan=False, **options)


def shown(value: float | None, spec: str) -> str:
    """`value` formatted by `spec` (">9.2f"), or "n/a" in the same width when it is missing (null, NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        width = spec.rsplit(".", 1)[0] if "." in spec else spec.rstrip("dfg%")
        return format("n/a", width if width[:1] in ("<", ">", "^", "") else ">" + width)  # right, as numbers are
    return format(value, spec)
