"""The :class:`QuantizationScheme`: how one datatype converts to another, chosen once
and recorded in the plan."""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

import attrs

from rvlm.core.vectors.datatypes import (
    FLOAT_DATATYPES,
    INT_DATATYPES,
    KINDS,
    VectorError,
    check_datatype,
)


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
        src = check_datatype(self.source_datatype, "source datatype")
        tgt = check_datatype(self.target_datatype, "target datatype")
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




def pair_label(scheme: QuantizationScheme) -> str:
    return f"{scheme.source_datatype} -> {scheme.target_datatype}"


__all__ = [
    "QuantizationScheme",
    "pair_label",
]
