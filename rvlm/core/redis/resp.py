"""Normalise Redis replies so that every caller sees one shape under RESP2 and RESP3.

RESP3 returns maps where RESP2 returns flat ``[key, value, key, value]`` lists, and a client may
or may not decode bytes. Everything that reads a reply goes through these helpers, so the rest
of the code only ever sees ``str`` keys and plain Python values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def to_str(value: Any) -> str:
    """Decode bytes as UTF-8 (invalid bytes kept via surrogateescape); other values via str()."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def to_bytes(value: str | bytes) -> bytes:
    """The inverse of :func:`to_str`: a ``str`` as UTF-8 (surrogate escapes back to the bytes
    they stand for, so a name that is not UTF-8 comes back byte for byte); bytes unchanged."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


_FIELD_BYTES: dict[str, bytes] = {}


def field_bytes(value: str | bytes) -> bytes:
    """:func:`to_bytes` with a cache for the few field names a plan uses (the executor's hot
    path)."""
    if type(value) is bytes:
        return value
    got = _FIELD_BYTES.get(value)  # type: ignore[arg-type]
    if got is None:
        got = to_bytes(value)
        if len(_FIELD_BYTES) < 1024:
            _FIELD_BYTES[value] = got  # type: ignore[index]
    return got


def to_map(value: Any) -> dict[str, Any]:
    """A RESP3 map or a RESP2 flat pair list as a ``dict`` with ``str`` keys.

    Values are left as they are (use :func:`to_map` again on nested replies).
    """
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {to_str(k): v for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = list(value)
        if len(items) % 2:
            raise ValueError(f"expected key/value pairs, got {len(items)} items")
        return {to_str(items[i]): items[i + 1] for i in range(0, len(items), 2)}
    raise ValueError(f"expected a map reply, got {type(value).__name__}")


def to_list(value: Any) -> list[Any]:
    """A reply that should be a list (RESP3 sets included) as a list; None as []."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def to_int(value: Any, default: int = 0) -> int:
    """An integer reply that may arrive as int, float, bytes or str (RESP2 sends "0.5")."""
    if value is None:
        return default
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        f = float(to_str(value))
    except ValueError:
        return default
    if math.isnan(f):
        return default
    return int(f)


def to_float(value: Any, default: float = 0.0) -> float:
    """A float reply (RESP3 double, RESP2 string, "nan", "-nan", "inf") as float."""
    if value is None:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = to_str(value).strip().lower()
    if text in ("nan", "-nan"):
        return math.nan
    try:
        return float(text)
    except ValueError:
        return default
