"""The datatypes rvlm converts between (names, widths, wire dtypes, ranges), the
one-line :class:`VectorError`, and the checks of datatypes, dims, metrics and arrays."""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np

DATATYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16", "int8", "uint8")
"""Every vector datatype rvlm understands, widest first."""

WIDTH: dict[str, int] = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int8": 1,
    "uint8": 1,
}
"""Bytes per component of each datatype in a Redis hash."""

FLOAT_DATATYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
INT_DATATYPES: tuple[str, ...] = ("int8", "uint8")
KINDS: tuple[str, ...] = ("cast", "per_vector_max_abs", "global_scale", "global_affine")
METRICS: tuple[str, ...] = ("COSINE", "L2", "IP")

# Little-endian on-the-wire dtypes (bfloat16 travels as its raw uint16 bit pattern).
WIRE: dict[str, np.dtype[Any]] = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
}

# Largest finite value of each float datatype (float16 < bfloat16 < float32 < float64).
MAX_FINITE: dict[str, float] = {
    "float64": float(np.finfo(np.float64).max),
    "float32": float(np.finfo(np.float32).max),
    "float16": float(np.finfo(np.float16).max),
    "bfloat16": float.fromhex("0x1.fep127"),
}

# Values an int datatype can hold, and the symmetric range quantization writes into.
INT_LIMITS: dict[str, tuple[int, int]] = {"int8": (-128, 127), "uint8": (0, 255)}
QUANT_RANGE: dict[str, tuple[int, int]] = {"int8": (-127, 127), "uint8": (0, 255)}

# Casts where every source value is exactly representable in the target.
EXACT_CASTS: frozenset[tuple[str, str]] = frozenset(
    {
        ("float32", "float64"),
        ("float16", "float32"),
        ("float16", "float64"),
        ("bfloat16", "float32"),
        ("bfloat16", "float64"),
    }
    | {(i, f) for i in INT_DATATYPES for f in FLOAT_DATATYPES}
)

U32_16 = np.uint32(16)


class VectorError(ValueError):
    """A vector cannot be decoded, encoded or converted; the message is one line for users."""




def check_datatype(datatype: object, what: str = "vector datatype") -> str:
    """Return ``datatype`` if it is one of :data:`DATATYPES`, else raise VectorError."""
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise VectorError(f"unknown {what} {datatype!r}; expected one of {', '.join(DATATYPES)}")
    return datatype


def check_dims(dims: object) -> int:
    """Return ``dims`` as an int if it is a positive integer, else raise VectorError."""
    if isinstance(dims, bool) or not isinstance(dims, Integral) or int(dims) <= 0:
        raise VectorError(f"vector dims must be a positive integer, got {dims!r}")
    return int(dims)


def check_metric(metric: object) -> str:
    """Return the upper-cased distance metric, or raise VectorError if it is unknown."""
    if not isinstance(metric, str) or metric.upper() not in METRICS:
        raise VectorError(
            f"unknown distance metric {metric!r}; expected one of {', '.join(METRICS)}"
        )
    return metric.upper()


def numeric_2d(values: object, what: str) -> np.ndarray:
    """Return ``values`` as a 2-D int/float ndarray (n, dims) or raise VectorError.

    An empty input of any shape becomes a ``(0, 0)`` float64 array.
    """
    try:
        arr = np.asarray(values)
    except ValueError as exc:  # ragged nested sequences
        raise VectorError(f"{what} must be a rectangular array of numbers ({exc})") from None
    if arr.size == 0 and arr.ndim <= 2 and (arr.ndim < 2 or arr.shape[0] == 0):
        return np.zeros((0, arr.shape[1] if arr.ndim == 2 else 0), dtype=np.float64)
    if arr.dtype.kind not in "iuf":
        raise VectorError(f"{what} must contain only numbers, got array of {arr.dtype}")
    if arr.ndim != 2:
        raise VectorError(f"{what} must be 2-D (n vectors x dims), got shape {arr.shape}")
    return arr


__all__ = [
    "DATATYPES",
    "EXACT_CASTS",
    "FLOAT_DATATYPES",
    "INT_DATATYPES",
    "INT_LIMITS",
    "KINDS",
    "MAX_FINITE",
    "METRICS",
    "QUANT_RANGE",
    "U32_16",
    "WIDTH",
    "WIRE",
    "VectorError",
    "check_datatype",
    "check_dims",
    "check_metric",
    "numeric_2d",
]
