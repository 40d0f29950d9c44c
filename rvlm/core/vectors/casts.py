"""Cast kernels: float to float casts (with the overflow policy of the plan), int range
checks, and the wire <-> number conversions the other modules share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rvlm.core.vectors.bfloat16 import (
    bf16_bits_to_f32,
    f32_to_bf16_bits,
    f64_to_f32_round_to_odd,
    to_f64,
)
from rvlm.core.vectors.datatypes import INT_LIMITS, MAX_FINITE, WIRE, VectorError


def _dtype_max(dtype: np.dtype[Any]) -> float:
    """Largest magnitude a numpy numeric dtype can hold."""
    if dtype.kind == "f":
        return float(np.finfo(dtype).max)
    info = np.iinfo(dtype)
    return float(max(info.max, -int(info.min)))


def _count_inf(arr: np.ndarray, bf16_bits: bool = False) -> int:
    """Count infinite components; ``bf16_bits`` means arr holds bfloat16 bit patterns.

    float16 is checked on its bit pattern: numpy's float16 isinf is several times slower.
    """
    if bf16_bits:
        return int(np.count_nonzero((arr & np.uint16(0x7FFF)) == np.uint16(0x7F80)))
    if arr.dtype == np.float16:
        bits = arr.view(np.uint16) & np.uint16(0x7FFF)
        return int(np.count_nonzero(bits == np.uint16(0x7C00)))
    if arr.dtype.kind != "f":
        return 0
    return int(np.count_nonzero(np.isinf(arr)))


def cast_floats(values: np.ndarray, target: str, label: str, overflow: str | None = None,
                 on_clip: Callable[[int], None] | None = None) -> np.ndarray:
    """Cast numbers to the float datatype ``target``, returning its wire-ready array.

    ``values`` holds plain numbers in any numeric dtype (bfloat16 sources already widened
    to float32).  The result has the native dtype of ``target`` (uint16 bit patterns for
    bfloat16).  Finite values that would become inf raise VectorError (``label`` names
    the conversion in the message), unless ``overflow`` is ``"clip"``: then they become the
    largest finite value of ``target`` (with their sign) and ``on_clip`` gets how many.
    inf and NaN inputs pass through unchanged.
    """
    out = _cast_floats_raw(values, target)
    if _dtype_max(values.dtype) > MAX_FINITE[target]:
        # Only a cast that produced infs needs the second pass over the input.
        overflowed = _count_inf(out, bf16_bits=target == "bfloat16")
        if overflowed:
            overflowed -= _count_inf(values)
        if overflowed and overflow == "clip":
            top = MAX_FINITE[target]
            with np.errstate(invalid="ignore"):
                wide = to_f64(values)
                finite = np.isfinite(wide)
                wide = np.where(finite, np.clip(wide, -top, top), wide)
            out = _cast_floats_raw(wide, target)
            if on_clip is not None:
                on_clip(overflowed)
        elif overflowed:
            raise VectorError(
                f"{label}: {overflowed} of {values.size} components are outside the {target} "
                f"range (largest finite {MAX_FINITE[target]:.6g}) and would become inf"
            )
    return out


def _cast_floats_raw(values: np.ndarray, target: str) -> np.ndarray:
    if target == "bfloat16":
        if values.dtype in (np.float32, np.float16, np.int8, np.uint8):
            with np.errstate(invalid="ignore"):
                f32 = values.astype(np.float32)
        else:
            f32 = f64_to_f32_round_to_odd(to_f64(values, copy=False))
        return f32_to_bf16_bits(f32)
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(WIRE[target].newbyteorder("="), copy=False)


def floats_from_wire(arr: np.ndarray, datatype: str) -> np.ndarray:
    """Return the numeric values of a decoded wire array (bfloat16 bits -> float32)."""
    if datatype == "bfloat16":
        return bf16_bits_to_f32(arr)
    return arr


def check_int_values(values: np.ndarray, target: str, label: str) -> np.ndarray:
    """Validate numbers destined for an int datatype; return them in its native dtype."""
    lo, hi = INT_LIMITS[target]
    if values.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise VectorError(f"{label}: {bad} components are NaN or inf; {target} needs integers")
        fractional = int(np.count_nonzero(values != np.rint(values)))
        if fractional:
            raise VectorError(
                f"{label}: {fractional} components are not whole numbers; {target} needs integers"
            )
    out_of_range = int(np.count_nonzero((values < lo) | (values > hi)))
    if out_of_range:
        raise VectorError(
            f"{label}: {out_of_range} components are outside the {target} range [{lo}, {hi}]"
        )
    return values.astype(WIRE[target])


__all__ = [
    "cast_floats",
    "check_int_values",
    "floats_from_wire",
]
