"""Convert stored vectors between datatypes, with a recorded quantization scheme.

This is the only place rvlm converts vector values.  It is pure numpy (no Redis) and
works on whole batches: every conversion is a fixed, small number of numpy calls per
batch, never a Python loop over components.

Storage formats:

* Redis hash: raw little-endian bytes, ``dims x WIDTH[datatype]`` long.
* Redis JSON: an array of numbers (Python floats for float datatypes, ints for int ones).

Datatypes are the lower-case names in :data:`DATATYPES`.  ``bfloat16`` is handled as
the top 16 bits of an IEEE float32 (narrowing is round-to-nearest-even, NaN stays a
quiet NaN).

Conversions are described by a :class:`QuantizationScheme`, chosen once from a sample
by :func:`choose_scheme`, written to the migration plan with
:meth:`QuantizationScheme.to_dict`, and applied batch by batch with
:func:`convert_bytes_batch` / :func:`convert_values_batch`.  Every problem is reported
as a :class:`VectorError` whose message is a single line naming the datatypes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import attrs
import numpy as np

__all__ = [
    "DATATYPES",
    "FLOAT_DATATYPES",
    "INT_DATATYPES",
    "KINDS",
    "METRICS",
    "WIDTH",
    "ConversionError",
    "QuantizationScheme",
    "VectorError",
    "choose_scheme",
    "convert_bytes_batch",
    "convert_values_batch",
    "decode",
    "decode_batch",
    "dequantize",
    "encode_batch",
    "is_lossy",
    "measure_error",
]

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
_WIRE: dict[str, np.dtype[Any]] = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
}

# Largest finite value of each float datatype (float16 < bfloat16 < float32 < float64).
_MAX_FINITE: dict[str, float] = {
    "float64": float(np.finfo(np.float64).max),
    "float32": float(np.finfo(np.float32).max),
    "float16": float(np.finfo(np.float16).max),
    "bfloat16": float.fromhex("0x1.fep127"),
}

# Values an int datatype can hold, and the symmetric range quantization writes into.
_INT_LIMITS: dict[str, tuple[int, int]] = {"int8": (-128, 127), "uint8": (0, 255)}
_QUANT_RANGE: dict[str, tuple[int, int]] = {"int8": (-127, 127), "uint8": (0, 255)}

# Casts where every source value is exactly representable in the target.
_EXACT_CASTS: frozenset[tuple[str, str]] = frozenset(
    {
        ("float32", "float64"),
        ("float16", "float32"),
        ("float16", "float64"),
        ("bfloat16", "float32"),
        ("bfloat16", "float64"),
    }
    | {(i, f) for i in INT_DATATYPES for f in FLOAT_DATATYPES}
)

_U32_16 = np.uint32(16)


class VectorError(ValueError):
    """A vector cannot be decoded, encoded or converted; the message is one line for users."""


# --------------------------------------------------------------------------- validation


def _check_datatype(datatype: object, what: str = "vector datatype") -> str:
    """Return ``datatype`` if it is one of :data:`DATATYPES`, else raise VectorError."""
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise VectorError(f"unknown {what} {datatype!r}; expected one of {', '.join(DATATYPES)}")
    return datatype


def _check_dims(dims: object) -> int:
    """Return ``dims`` as an int if it is a positive integer, else raise VectorError."""
    if isinstance(dims, bool) or not isinstance(dims, Integral) or int(dims) <= 0:
        raise VectorError(f"vector dims must be a positive integer, got {dims!r}")
    return int(dims)


def _check_metric(metric: object) -> str:
    """Return the upper-cased distance metric, or raise VectorError if it is unknown."""
    if not isinstance(metric, str) or metric.upper() not in METRICS:
        raise VectorError(
            f"unknown distance metric {metric!r}; expected one of {', '.join(METRICS)}"
        )
    return metric.upper()


def _numeric_2d(values: object, what: str) -> np.ndarray:
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


def _pair(scheme: QuantizationScheme) -> str:
    return f"{scheme.source_datatype} -> {scheme.target_datatype}"


# ------------------------------------------------------------------------ bfloat16 bits


def _bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 exactly: ``uint16 << 16``."""
    return (bits.astype(np.uint32) << _U32_16).view(np.float32)


def _f32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 bit patterns (uint16), round-to-nearest-even.

    Works on the uint32 view: ``(u + 0x7FFF + ((u >> 16) & 1)) >> 16``.  NaN inputs map
    to a quiet NaN with the same sign instead of being carried into Inf.
    """
    f32 = np.ascontiguousarray(values, dtype=np.float32)
    u = f32.view(np.uint32)
    high = u >> _U32_16
    bits = ((u + (np.uint32(0x7FFF) + (high & np.uint32(1)))) >> _U32_16).astype(np.uint16)
    nan = np.isnan(f32)
    if nan.any():
        bits = np.where(nan, (high | np.uint32(0x0040)).astype(np.uint16), bits)
    return bits


def _f64_to_f32_round_to_odd(values: np.ndarray) -> np.ndarray:
    """Narrow float64 to float32 with round-to-odd (sticky bit), for exact double rounding.

    Rounding float64 -> float32 (nearest) -> bfloat16 (nearest) can round twice the same
    way and land on the wrong side of a tie.  Rounding to odd first (truncate toward zero,
    then set the last bit if anything was lost) makes the second, nearest-even rounding
    to bfloat16 exactly equal to rounding the float64 directly, because float32 keeps
    more than two extra bits over bfloat16.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        f32 = values.astype(np.float32)
    back = _to_f64(f32)
    inexact = (back != values) & ~np.isnan(values)
    if not inexact.any():
        return f32
    # Where nearest rounding went away from zero, step back toward zero (truncation).
    away = inexact & (np.abs(back) > np.abs(values))
    f32 = np.where(away, np.nextafter(f32, np.float32(0)), f32)
    u = f32.view(np.uint32)
    return np.where(inexact, u | np.uint32(1), u).view(np.float32)


# -------------------------------------------------------------------------- cast kernels


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


def _cast_floats(values: np.ndarray, target: str, label: str, overflow: str | None = None,
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
    if _dtype_max(values.dtype) > _MAX_FINITE[target]:
        # Only a cast that produced infs needs the second pass over the input.
        overflowed = _count_inf(out, bf16_bits=target == "bfloat16")
        if overflowed:
            overflowed -= _count_inf(values)
        if overflowed and overflow == "clip":
            top = _MAX_FINITE[target]
            with np.errstate(invalid="ignore"):
                wide = _to_f64(values)
                finite = np.isfinite(wide)
                wide = np.where(finite, np.clip(wide, -top, top), wide)
            out = _cast_floats_raw(wide, target)
            if on_clip is not None:
                on_clip(overflowed)
        elif overflowed:
            raise VectorError(
                f"{label}: {overflowed} of {values.size} components are outside the {target} "
                f"range (largest finite {_MAX_FINITE[target]:.6g}) and would become inf"
            )
    return out


def _cast_floats_raw(values: np.ndarray, target: str) -> np.ndarray:
    if target == "bfloat16":
        if values.dtype in (np.float32, np.float16, np.int8, np.uint8):
            with np.errstate(invalid="ignore"):
                f32 = values.astype(np.float32)
        else:
            f32 = _f64_to_f32_round_to_odd(_to_f64(values, copy=False))
        return _f32_to_bf16_bits(f32)
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(_WIRE[target].newbyteorder("="), copy=False)


def _floats_from_wire(arr: np.ndarray, datatype: str) -> np.ndarray:
    """Return the numeric values of a decoded wire array (bfloat16 bits -> float32)."""
    if datatype == "bfloat16":
        return _bf16_bits_to_f32(arr)
    return arr


def _to_f64(arr: np.ndarray, copy: bool = True) -> np.ndarray:
    """Widen numbers to float64 (exact; casting NaN payloads does not warn)."""
    with np.errstate(invalid="ignore"):
        return arr.astype(np.float64, copy=copy)


def _check_int_values(values: np.ndarray, target: str, label: str) -> np.ndarray:
    """Validate numbers destined for an int datatype; return them in its native dtype."""
    lo, hi = _INT_LIMITS[target]
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
    return values.astype(_WIRE[target])


# ------------------------------------------------------------------------ decode/encode


def _join_checked(raws: Sequence[bytes], datatype: str, dims: int) -> bytes:
    """Concatenate a batch of raw vectors after checking every one is dims x width long."""
    width = dims * WIDTH[datatype]
    try:
        joined = b"".join(raws)
    except TypeError:
        raise VectorError(
            f"{datatype} vectors must be bytes (raw Redis hash values), not text or numbers"
        ) from None
    n = len(raws)
    lengths = np.fromiter(map(len, raws), dtype=np.int64, count=n)
    wrong = np.flatnonzero(lengths != width)
    if wrong.size or len(joined) != n * width:
        first = int(wrong[0]) if wrong.size else 0
        raise VectorError(
            f"{datatype} vector at batch position {first} has {int(lengths[first])} bytes, "
            f"expected {width} ({dims} dims x {WIDTH[datatype]} bytes); "
            f"{wrong.size} of {n} vectors in the batch have the wrong length"
        )
    return joined


def _load(raws: Sequence[bytes], datatype: str, dims: int) -> np.ndarray:
    """Decode a batch into an (n, dims) array of numbers in the narrowest exact dtype.

    bfloat16 becomes float32; other datatypes keep their own dtype (native byte order).
    """
    joined = _join_checked(raws, datatype, dims)
    wire = np.frombuffer(joined, dtype=_WIRE[datatype]).reshape(len(raws), dims)
    wire = wire.astype(wire.dtype.newbyteorder("="), copy=False)
    return _floats_from_wire(wire, datatype)


def _split(arr: np.ndarray, datatype: str, n: int) -> list[bytes]:
    """Serialise an (n, dims) native array little-endian and cut it into n byte strings."""
    buf = arr.astype(_WIRE[datatype], copy=False).tobytes()
    if n == 0:
        return []
    step = len(buf) // n
    return [buf[i : i + step] for i in range(0, len(buf), step)]


def decode(raw: bytes, datatype: str, dims: int) -> np.ndarray:
    """Decode one Redis hash vector.

    Takes the raw little-endian bytes, the stored datatype and the dimension count.
    Returns a new 1-D float64 array of ``dims`` values (every datatype widens exactly).
    Raises VectorError if ``len(raw) != dims * WIDTH[datatype]``.
    """
    datatype = _check_datatype(datatype)
    dims = _check_dims(dims)
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise VectorError(f"{datatype} vector must be bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) != dims * WIDTH[datatype]:
        raise VectorError(
            f"{datatype} vector has {len(raw)} bytes, expected {dims * WIDTH[datatype]} "
            f"({dims} dims x {WIDTH[datatype]} bytes)"
        )
    wire = np.frombuffer(raw, dtype=_WIRE[datatype])
    return _to_f64(_floats_from_wire(wire, datatype))


def decode_batch(raws: Sequence[bytes], datatype: str, dims: int) -> np.ndarray:
    """Decode a batch of Redis hash vectors.

    Takes a sequence of raw byte strings (each ``dims * WIDTH[datatype]`` long), the
    datatype and the dimension count.  Returns a new (n, dims) float64 array, built from a
    single ``np.frombuffer`` over ``b"".join(raws)``.  Raises VectorError naming the first
    vector of the wrong length.
    """
    datatype = _check_datatype(datatype)
    dims = _check_dims(dims)
    return _to_f64(_load(raws, datatype, dims))


def encode_batch(values: np.ndarray, datatype: str) -> list[bytes]:
    """Encode an (n, dims) array of target-domain numbers as n Redis hash byte strings.

    Float datatypes round to nearest-even (bfloat16 included); finite values that would
    overflow to inf raise VectorError.  For int8/uint8 the values must already be whole
    numbers within the datatype's range (VectorError otherwise); nothing is scaled here.
    Returns a list of n little-endian byte strings, each ``dims * WIDTH[datatype]`` long.
    """
    datatype = _check_datatype(datatype)
    arr = _numeric_2d(values, f"values to encode as {datatype}")
    label = f"{arr.dtype} values -> {datatype}"
    if datatype in INT_DATATYPES:
        out = _check_int_values(arr, datatype, label)
    else:
        out = _cast_floats(arr, datatype, label)
    return _split(out, datatype, arr.shape[0])


# ---------------------------------------------------------------------- the scheme


def _opt_float(value: object) -> float | None:
    """attrs converter: None stays None, real numbers become Python floats."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise VectorError(f"quantization scheme expected a number, got {value!r}")
    return float(value)


def _opt_int(value: object) -> int | None:
    """attrs converter: None stays None, integers become Python ints."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise VectorError(f"quantization scheme expected an integer, got {value!r}")
    return int(value)


@attrs.frozen
class QuantizationScheme:
    """How one vector field is converted from ``source_datatype`` to ``target_datatype``.

    Kinds:

    * ``cast``: float <-> float (round to nearest even), int -> float (exact), or the same
      datatype (a no-op).  No parameters.
    * ``per_vector_max_abs``: float -> int8/uint8; each vector is divided by its own
      largest absolute component and multiplied by 127 (int8) or 255 (uint8).  Keeps
      cosine rankings; magnitudes are not recoverable.
    * ``global_scale``: float -> int; ``q = clip(round(v * scale))``, offset 0.
    * ``global_affine``: float -> int; ``q = clip(round((v - offset) * scale))``.

    ``clip_fraction`` and ``calibration_sample_size`` record how the parameters were
    calibrated (fraction of sampled components that were clipped, number of vectors).
    Construction validates everything and raises VectorError for inconsistent schemes.
    """

    kind: str
    source_datatype: str
    target_datatype: str
    scale: float | None = attrs.field(default=None, converter=_opt_float)
    offset: float | None = attrs.field(default=None, converter=_opt_float)
    clip_fraction: float | None = attrs.field(default=None, converter=_opt_float)
    calibration_sample_size: int | None = attrs.field(default=None, converter=_opt_int)
    #: A float narrowing cast (float32 -> float16, ...): what happens to a finite value
    #: beyond the target's range. ``clip``: it becomes the largest finite value (counted);
    #: None (plans made before the policy existed): the conversion fails.
    overflow: str | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise VectorError(
                f"unknown quantization kind {self.kind!r}; expected one of {', '.join(KINDS)}"
            )
        src = _check_datatype(self.source_datatype, "source datatype")
        tgt = _check_datatype(self.target_datatype, "target datatype")
        pair = f"{src} -> {tgt}"
        if self.kind == "cast":
            if src in FLOAT_DATATYPES and tgt in INT_DATATYPES:
                raise VectorError(f"{pair}: float to int needs a quantization kind, not cast")
            if src in INT_DATATYPES and tgt in INT_DATATYPES and src != tgt:
                raise VectorError(
                    f"{pair}: converting directly between int8 and uint8 is not supported; "
                    "convert to a float datatype first"
                )
        elif not (src in FLOAT_DATATYPES and tgt in INT_DATATYPES):
            raise VectorError(f"{pair}: {self.kind} only converts a float datatype to an int one")
        if self.kind in ("cast", "per_vector_max_abs"):
            if self.scale is not None or self.offset is not None:
                raise VectorError(f"{pair}: {self.kind} takes no scale or offset")
        else:
            if self.scale is None or not math.isfinite(self.scale) or self.scale <= 0:
                raise VectorError(
                    f"{pair}: {self.kind} needs a finite positive scale, got {self.scale!r}"
                )
            if self.kind == "global_scale" and self.offset not in (None, 0.0):
                raise VectorError(f"{pair}: global_scale has no offset; use global_affine")
            if self.kind == "global_affine" and (
                self.offset is None or not math.isfinite(self.offset)
            ):
                raise VectorError(f"{pair}: global_affine needs a finite offset")
        if self.clip_fraction is not None and not 0.0 <= self.clip_fraction <= 1.0:
            raise VectorError(f"{pair}: clip_fraction must be between 0 and 1")
        if self.overflow not in (None, "clip"):
            raise VectorError(f"{pair}: overflow must be clip, not {self.overflow!r}")
        if self.calibration_sample_size is not None and self.calibration_sample_size < 0:
            raise VectorError(f"{pair}: calibration_sample_size must not be negative")

    def to_dict(self) -> dict[str, Any]:
        """Return a plain, YAML-safe dict (str/float/int values) with None values omitted."""
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QuantizationScheme:
        """Rebuild a scheme from :meth:`to_dict` output.

        Raises VectorError for a non-mapping, unknown or missing keys, wrongly typed
        values, an unknown kind or datatype, or an inconsistent scheme.
        """
        if not isinstance(d, Mapping):
            raise VectorError(f"quantization scheme must be a mapping, got {type(d).__name__}")
        fields = {f.name: f for f in attrs.fields(cls)}
        unknown = sorted(str(k) for k in d if k not in fields)
        if unknown:
            raise VectorError(
                f"quantization scheme has unknown keys: {', '.join(unknown)}; "
                f"allowed keys are {', '.join(fields)}"
            )
        missing = [k for k in ("kind", "source_datatype", "target_datatype") if k not in d]
        if missing:
            raise VectorError(f"quantization scheme is missing keys: {', '.join(missing)}")
        for key in ("kind", "source_datatype", "target_datatype", *(
                ("overflow",) if d.get("overflow") is not None else ())):
            if not isinstance(d[key], str):
                raise VectorError(f"quantization scheme {key} must be a string, got {d[key]!r}")
        for key in ("scale", "offset", "clip_fraction", "calibration_sample_size"):
            value = d.get(key)
            want_int = key == "calibration_sample_size"
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, Integral if want_int else Real)
            ):
                kind = "an integer" if want_int else "a number"
                raise VectorError(f"quantization scheme {key} must be {kind}, got {value!r}")
        return cls(**dict(d))


# ---------------------------------------------------------------------- quantization


def _check_finite(values: np.ndarray, pair: str, where: str) -> None:
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise VectorError(
            f"{pair}: {bad} components in the {where} are NaN or inf; "
            "integer quantization needs finite values"
        )


def _quantize(values: np.ndarray, scheme: QuantizationScheme, where: str) -> tuple[np.ndarray, int]:
    """Quantize (n, dims) float values with a non-cast scheme.

    Returns the int8/uint8 array and the number of components clipped to the target
    range.  Raises VectorError for NaN/inf, or negative components with a uint8
    per-vector scheme.
    """
    pair = _pair(scheme)
    v = _to_f64(values, copy=False)
    _check_finite(v, pair, where)
    lo, hi = _QUANT_RANGE[scheme.target_datatype]
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
    return q.astype(_WIRE[scheme.target_datatype]), clipped


def _convert_numbers(values: np.ndarray, scheme: QuantizationScheme, where: str,
                     on_clip: Callable[[int], None] | None = None) -> np.ndarray:
    """Apply a scheme to an (n, dims) array of source-domain numbers.

    Returns the target's native array (uint16 bit patterns for bfloat16).  Same-datatype
    schemes are handled by the callers, not here.  ``on_clip`` gets the number of
    components clipped (a ``clip`` overflow policy, or a global int scheme).
    """
    if scheme.kind == "cast":
        return _cast_floats(values, scheme.target_datatype, _pair(scheme), scheme.overflow,
                            on_clip)
    q, clipped = _quantize(values, scheme, where)
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
    dims = _check_dims(dims)
    src, tgt = scheme.source_datatype, scheme.target_datatype
    if src == tgt:
        joined = _join_checked(raws, src, dims)
        step = dims * WIDTH[src]
        return [joined[i : i + step] for i in range(0, len(joined), step)]
    values = _load(raws, src, dims)
    return _split(_convert_numbers(values, scheme, "batch", on_clip), tgt, len(raws))


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
    dims = _check_dims(dims)
    src, tgt = scheme.source_datatype, scheme.target_datatype
    if len(values) == 0:
        return []
    arr = _numeric_2d(values, f"{src} JSON vectors")
    if arr.shape[1] != dims:
        raise VectorError(
            f"{src} JSON vectors have {arr.shape[1]} numbers each, expected {dims} dims"
        )
    out: np.ndarray
    if tgt in INT_DATATYPES:
        if src == tgt:
            out = _check_int_values(arr, tgt, f"{src} JSON vectors")
        else:
            out = _convert_numbers(arr.astype(np.float64, copy=False), scheme, "batch",
                                   on_clip)
        result: list[list[int]] = out.astype(np.int64).tolist()
        return list(result)
    if src == tgt:
        out = arr.astype(np.float64, copy=False)
    else:
        out = _floats_from_wire(_convert_numbers(arr, scheme, "batch", on_clip), tgt)
    floats: list[list[float]] = _to_f64(out).tolist()
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
        return arr / float(_QUANT_RANGE[scheme.target_datatype][1])
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
    src = _check_datatype(source_datatype, "source datatype")
    tgt = _check_datatype(target_datatype, "target datatype")
    metric = _check_metric(distance_metric)
    pair = f"{src} -> {tgt}"
    arr = _numeric_2d(sample, f"{pair}: sample")
    if src == tgt:
        return QuantizationScheme("cast", src, tgt)
    if src in INT_DATATYPES and tgt in INT_DATATYPES:
        raise VectorError(
            f"{pair}: converting directly between int8 and uint8 is not supported; "
            "convert to a float datatype first"
        )
    if tgt in FLOAT_DATATYPES:
        narrowing = src in FLOAT_DATATYPES and _MAX_FINITE[src] > _MAX_FINITE[tgt]
        # the policy is decided now, in the plan, not found mid-transform: a finite value
        # beyond the target's range is clipped to its largest finite value, and counted
        return QuantizationScheme("cast", src, tgt, overflow="clip" if narrowing else None)

    values = arr.astype(np.float64, copy=False)
    n = values.shape[0]
    _check_finite(values, pair, "sample")
    qmax = float(_QUANT_RANGE[tgt][1])
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
    _, clipped = _quantize(values, scheme, "sample")
    return attrs.evolve(scheme, clip_fraction=clipped / values.size, calibration_sample_size=n)


# ------------------------------------------------------------------------ error report


@attrs.frozen
class ConversionError:
    """How far converted vectors are from the originals (from :func:`measure_error`).

    Absolute errors are per component; cosine similarities are per vector.
    ``clip_fraction`` is the fraction of components a global scheme clipped.
    """

    max_abs_error: float
    mean_abs_error: float
    mean_cosine_similarity: float
    min_cosine_similarity: float
    sample_size: int
    clip_fraction: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return a plain, YAML-safe dict of the measurements."""
        return attrs.asdict(self)


def measure_error(sample: np.ndarray, scheme: QuantizationScheme) -> ConversionError:
    """Convert ``sample`` with ``scheme``, map it back and compare with the original.

    Takes an (n, dims) array of source-domain values and returns a ConversionError.
    For ``per_vector_max_abs`` each dequantized vector is rescaled by its original
    max|v| before measuring absolute error (the scheme drops magnitudes by design;
    cosine similarity is unaffected).  Components equal in both (including matching
    inf/NaN) count as zero error; vectors with non-finite components are left out of the
    cosine figures.  An empty sample gives NaN measurements with ``sample_size=0``.
    Raises VectorError for the same problems as the conversion itself.
    """
    original = _to_f64(_numeric_2d(sample, f"{_pair(scheme)}: sample"))
    n = original.shape[0]
    if n == 0 or original.size == 0:
        nan = float("nan")
        return ConversionError(nan, nan, nan, nan, sample_size=n)
    clipped = 0
    if scheme.source_datatype == scheme.target_datatype:
        restored = original.copy()
    elif scheme.kind == "cast":
        counted: list[int] = []
        converted = _cast_floats(original, scheme.target_datatype, _pair(scheme),
                                 scheme.overflow, counted.append)
        clipped = sum(counted)
        restored = _to_f64(_floats_from_wire(converted, scheme.target_datatype))
    else:
        q, clipped = _quantize(original, scheme, "sample")
        restored = dequantize(q, scheme)
        if scheme.kind == "per_vector_max_abs":
            restored *= np.max(np.abs(original), axis=1, keepdims=True)

    same = (restored == original) | (np.isnan(restored) & np.isnan(original))
    with np.errstate(invalid="ignore"):
        abs_err = np.where(same, 0.0, np.abs(restored - original))

    finite_rows = np.isfinite(original).all(axis=1) & np.isfinite(restored).all(axis=1)
    a, b = original[finite_rows], restored[finite_rows]
    if len(a):
        dot = np.einsum("ij,ij->i", a, b)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cos = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
        both_zero = ~a.any(axis=1) & ~b.any(axis=1)
        cos = np.where(same[finite_rows].all(axis=1) | both_zero, 1.0, np.clip(cos, -1.0, 1.0))
        mean_cos, min_cos = float(cos.mean()), float(cos.min())
    else:
        mean_cos = min_cos = float("nan")
    return ConversionError(
        max_abs_error=float(abs_err.max()),
        mean_abs_error=float(abs_err.mean()),
        mean_cosine_similarity=mean_cos,
        min_cosine_similarity=min_cos,
        sample_size=n,
        clip_fraction=clipped / original.size,
    )


def is_lossy(scheme: QuantizationScheme) -> bool:
    """Return False only if the conversion keeps every value exactly.

    That is the same datatype, a widening float cast (float32 -> float64, float16 or
    bfloat16 -> float32/float64) or int8/uint8 -> any float.  Everything else,
    including every quantization, is lossy.
    """
    if scheme.kind != "cast":
        return True
    pair = (scheme.source_datatype, scheme.target_datatype)
    return not (pair[0] == pair[1] or pair in _EXACT_CASTS)
