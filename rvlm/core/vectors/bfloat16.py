"""bfloat16 as the top 16 bits of a float32: exact widening, round-to-nearest-even
narrowing (NaN stays a quiet NaN), float64 -> float32 rounding to odd (no double
rounding on the way to bfloat16)."""

from __future__ import annotations

import numpy as np

from rvlm.core.vectors.datatypes import U32_16


def to_f64(arr: np.ndarray, copy: bool = True) -> np.ndarray:
    """Widen numbers to float64 (exact; casting NaN payloads does not warn)."""
    with np.errstate(invalid="ignore"):
        return arr.astype(np.float64, copy=copy)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 exactly: ``uint16 << 16``."""
    return (bits.astype(np.uint32) << U32_16).view(np.float32)


def f32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 bit patterns (uint16), round-to-nearest-even.

    Works on the uint32 view: ``(u + 0x7FFF + ((u >> 16) & 1)) >> 16``.  NaN inputs map
    to a quiet NaN with the same sign instead of being carried into Inf.
    """
    f32 = np.ascontiguousarray(values, dtype=np.float32)
    u = f32.view(np.uint32)
    high = u >> U32_16
    bits = ((u + (np.uint32(0x7FFF) + (high & np.uint32(1)))) >> U32_16).astype(np.uint16)
    nan = np.isnan(f32)
    if nan.any():
        bits = np.where(nan, (high | np.uint32(0x0040)).astype(np.uint16), bits)
    return bits


def f64_to_f32_round_to_odd(values: np.ndarray) -> np.ndarray:
    """Narrow float64 to float32 with round-to-odd (sticky bit), for exact double rounding.

    Rounding float64 -> float32 (nearest) -> bfloat16 (nearest) can round twice the same
    way and land on the wrong side of a tie.  Rounding to odd first (truncate toward zero,
    then set the last bit if anything was lost) makes the second, nearest-even rounding
    to bfloat16 exactly equal to rounding the float64 directly, because float32 keeps
    more than two extra bits over bfloat16.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        f32 = values.astype(np.float32)
    back = to_f64(f32)
    inexact = (back != values) & ~np.isnan(values)
    if not inexact.any():
        return f32
    # Where nearest rounding went away from zero, step back toward zero (truncation).
    away = inexact & (np.abs(back) > np.abs(values))
    f32 = np.where(away, np.nextafter(f32, np.float32(0)), f32)
    u = f32.view(np.uint32)
    return np.where(inexact, u | np.uint32(1), u).view(np.float32)


__all__ = [
    "bf16_bits_to_f32",
    "f32_to_bf16_bits",
    "f64_to_f32_round_to_odd",
    "to_f64",
]
