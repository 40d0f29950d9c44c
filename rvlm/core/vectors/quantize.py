"""Convert batches with a scheme (hash bytes and JSON arrays), dequantize, and choose
the scheme for a sample (:func:`choose_scheme`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs
import numpy as np

from rvlm.core.vectors.bfloat16 import to_f64
from rvlm.core.vectors.casts import cast_floats, check_int_values, floats_from_wire
from rvlm.core.vectors.codec import join_checked, load_rows, split_rows
from rvlm.core.vectors.datatypes import (
    FLOAT_DATATYPES,
    INT_DATATYPES,
    MAX_FINITE,
    QUANT_RANGE,
    WIDTH,
    WIRE,
    VectorError,
    check_datatype,
    check_dims,
    check_metric,
    numeric_2d,
)
from rvlm.core.vectors.scheme import QuantizationScheme, pair_label


def _check_finite(values: np.ndarray, pair: str, where: str) -> None:
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise VectorError(
            f"{pair}: {bad} components in the {where} are NaN or inf; "
            "integer quantization needs finite values"
        )


def quantize_values(values: np.ndarray, scheme: QuantizationScheme,
                    where: str) -> tuple[np.ndarray, int]:
    """Quantize (n, dims) float values with a non-cast scheme.

    Returns the int8/uint8 array and the number of components clipped to the target
    range.  Raises VectorError for NaN/inf, or negative components with a uint8
    per-vector scheme.
    """
    pair = pair_label(scheme)
    v = to_f64(values, copy=False)
    _check_finite(v, pair, where)
    lo, hi = QUANT_RANGE[scheme.target_datatype]
    if scheme.kind == "per_vector_max_abs":
        if lo == 0:
            negative = int(np.count_nonzero(v < 0))
            if negative:
                raise VectorError(
                    f"{pair}: {negative} components in the {where} are negative; uint8 cannot "
                    "keep cosine ranking for vectors with negative components, use int8"
                )
        peak = np.max(np.abs(v), axis=1, keepdims=True) if v.size else np.ones((len(v), 1))
        q = np.rint(v / np.where(peak > 0, peak, 1.0) * hi)
        clipped = 0
    else:
        assert scheme.scale is not None
        shifted = v - scheme.offset if scheme.offset else v
        with np.errstate(over="ignore", invalid="ignore"):
            q = np.rint(shifted * scheme.scale)
        outside = (q < lo) | (q > hi)
        clipped = int(np.count_nonzero(outside))
        if clipped:
            q = np.clip(q, lo, hi)
    return q.astype(WIRE[scheme.target_datatype]), clipped


def _convert_numbers(values: np.ndarray, scheme: QuantizationScheme, where: str,
                     on_clip: Callable[[int], None] | None = None) -> np.ndarray:
    """Apply a scheme to an (n, dims) array of source-domain numbers.

    Returns the target's native array (uint16 bit patterns for bfloat16).  Same-datatype
    schemes are handled by the callers, not here.  ``on_clip`` gets the number of
    components clipped (a ``clip`` overflow policy, or a global int scheme).
    """
    if scheme.kind == "cast":
        return cast_floats(values, scheme.target_datatype, pair_label(scheme), scheme.overflow,
                            on_clip)
    q, clipped = quantize_values(values, scheme, where)
    if clipped and on_clip is not None:
        on_clip(clipped)
    return q


def convert_bytes_batch(
    raws: Sequence[bytes], dims: int, scheme: QuantizationScheme, *,
    on_clip: Callable[[int], None] | None = None,
) -> list[bytes]:
    """Convert a batch of Redis hash vectors with ``scheme``.

    Takes raw byte strings in ``scheme.source_datatype`` (each ``dims x width`` long) and
    returns a list of the same length with the target datatype's bytes.  The work is one
    join, one frombuffer, the vectorised conversion, one tobytes and slicing.  Raises
    VectorError for wrong lengths, overflow to inf in a float cast, NaN/inf or (uint8
    cosine) negative components in a quantization.  Global schemes clip out-of-range
    values silently; :func:`measure_error` reports how many.
    """
    dims = check_dims(dims)
    src, tgt = scheme.source_datatype, scheme.target_datatype
    if src == tgt:
        joined = join_checked(raws, src, dims)
        step = dims * WIDTH[src]
        return [joined[i : i + step] for i in range(0, len(joined), step)]
    values = load_rows(raws, src, dims)
    return split_rows(_convert_numbers(values, scheme, "batch", on_clip), tgt, len(raws))


def convert_values_batch(
    values: Sequence[Sequence[float]], dims: int, scheme: QuantizationScheme, *,
    on_clip: Callable[[int], None] | None = None,
) -> list[list[float] | list[int]]:
    """Convert a batch of Redis JSON vectors (arrays of numbers) with ``scheme``.

    Takes n sequences of ``dims`` numbers in the source domain.  Returns n lists of
    Python numbers JSON accepts: ints for int8/uint8 targets, floats (the exact value of
    the target datatype) for float targets; equal to what the bytes path would decode to.
    Same-datatype schemes return the values unchanged (ints checked to be in range).
    Raises VectorError on a ragged or non-numeric batch, wrong dims, and the same
    conversion problems as :func:`convert_bytes_batch`.
    """
    dims = check_dims(dims)
    src, tgt = scheme.source_datatype, scheme.target_datatype
    if len(values) == 0:
        return []
    arr = numeric_2d(values, f"{src} JSON vectors")
    if arr.shape[1] != dims:
        raise VectorError(
            f"{src} JSON vectors have {arr.shape[1]} numbers each, expected {dims} dims"
        )
    out: np.ndarray
    if tgt in INT_DATATYPES:
        if src == tgt:
            out = check_int_values(arr, tgt, f"{src} JSON vectors")
        else:
            out = _convert_numbers(arr.astype(np.float64, copy=False), scheme, "batch",
                                   on_clip)
        result: list[list[int]] = out.astype(np.int64).tolist()
        return list(result)
    if src == tgt:
        out = arr.astype(np.float64, copy=False)
    else:
        out = floats_from_wire(_convert_numbers(arr, scheme, "batch", on_clip), tgt)
    floats: list[list[float]] = to_f64(out).tolist()
    return list(floats)


def dequantize(values: np.ndarray, scheme: QuantizationScheme) -> np.ndarray:
    """Map target-domain numbers back to approximate source values.

    Takes an array of target-domain numbers (ints for int targets, plain float values
    for float targets, any shape) and returns a float64 array of the same shape:
    ``q / scale + offset`` for global kinds, ``q / 127`` (int8) or ``q / 255`` (uint8)
    for per-vector kinds (the original magnitudes were not kept), and the values
    unchanged for casts.
    """
    arr = np.asarray(values, dtype=np.float64)
    if scheme.kind == "cast":
        return arr.copy()
    if scheme.kind == "per_vector_max_abs":
        return arr / float(QUANT_RANGE[scheme.target_datatype][1])
    assert scheme.scale is not None
    out = arr / scheme.scale
    if scheme.offset:
        out += scheme.offset
    return out


def choose_scheme(
    source_datatype: str, target_datatype: str, distance_metric: str, sample: np.ndarray
) -> QuantizationScheme:
    """Pick and calibrate the conversion from ``source_datatype`` to ``target_datatype``.

    ``distance_metric`` is COSINE, L2 or IP (any case).  ``sample`` is an (n, dims) array
    of decoded source values (e.g. from :func:`decode_batch`).  Returns:

    * same datatype, float -> float or int -> float: ``cast`` (a float narrowing checks
      that no sampled value overflows to inf);
    * COSINE -> int8: ``per_vector_max_abs``; COSINE -> uint8: the same with 255, only if
      no sampled component is negative;
    * L2/IP -> int8 and IP -> uint8 (non-negative sample only): ``global_scale`` with
      ``scale = qmax / max|v|``;
    * L2 -> uint8: ``global_affine`` with ``offset = min``, ``scale = 255 / (max - min)``.

    Raises VectorError for int8 <-> uint8, NaN/inf in a quantization sample, an empty or
    degenerate calibration sample, overflow in a cast, and the negative-value cases above.
    """
    src = check_datatype(source_datatype, "source datatype")
    tgt = check_datatype(target_datatype, "target datatype")
    metric = check_metric(distance_metric)
    pair = f"{src} -> {tgt}"
    arr = numeric_2d(sample, f"{pair}: sample")
    if src == tgt:
        return QuantizationScheme("cast", src, tgt)
    if src in INT_DATATYPES and tgt in INT_DATATYPES:
        raise VectorError(
            f"{pair}: converting directly between int8 and uint8 is not supported; "
            "convert to a float datatype first"
        )
    if tgt in FLOAT_DATATYPES:
        narrowing = src in FLOAT_DATATYPES and MAX_FINITE[src] > MAX_FINITE[tgt]
        # the policy is decided now, in the plan, not found mid-transform: a finite value
        # beyond the target's range is clipped to its largest finite value, and counted
        return QuantizationScheme("cast", src, tgt, overflow="clip" if narrowing else None)

    values = arr.astype(np.float64, copy=False)
    n = values.shape[0]
    _check_finite(values, pair, "sample")
    qmax = float(QUANT_RANGE[tgt][1])
    if metric == "COSINE" and tgt == "int8":
        return QuantizationScheme("per_vector_max_abs", src, tgt, calibration_sample_size=n)
    if values.size == 0:
        raise VectorError(
            f"{pair} ({metric}): cannot calibrate the {tgt} conversion from an empty sample"
        )
    if tgt == "uint8" and metric in ("COSINE", "IP"):
        negative = int(np.count_nonzero(values < 0))
        if negative:
            if metric == "COSINE":
                why = "uint8 cannot keep cosine ranking for vectors with negative components"
            else:
                why = "uint8 would need an offset, which breaks inner-product ranking"
            raise VectorError(
                f"{pair} ({metric}): {negative} sampled components are negative; {why}; "
                "use int8 instead"
            )
        if metric == "COSINE":
            return QuantizationScheme("per_vector_max_abs", src, tgt, calibration_sample_size=n)

    scheme: QuantizationScheme
    if metric == "L2" and tgt == "uint8":
        low, high = float(values.min()), float(values.max())
        scale = qmax / (high - low) if high > low else math.inf
        if not math.isfinite(scale):
            raise VectorError(
                f"{pair} ({metric}): cannot calibrate, every sampled component is {low!r}"
            )
        scheme = QuantizationScheme("global_affine", src, tgt, scale=scale, offset=low)
    else:
        peak = float(np.max(np.abs(values)))
        scale = qmax / peak if peak > 0 else math.inf
        if not math.isfinite(scale):
            raise VectorError(
                f"{pair} ({metric}): cannot calibrate, sampled components are all zero or too small"
            )
        scheme = QuantizationScheme("global_scale", src, tgt, scale=scale, offset=0.0)
    _, clipped = quantize_values(values, scheme, "sample")
    return attrs.evolve(scheme, clip_fraction=clipped / values.size, calibration_sample_size=n)


__all__ = [
    "choose_scheme",
    "convert_bytes_batch",
    "convert_values_batch",
    "dequantize",
    "quantize_values",
]
