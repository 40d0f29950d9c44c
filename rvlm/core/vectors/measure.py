"""What a conversion does to a sample: :class:`ConversionError` and
:func:`measure_error`, and whether a scheme is lossy."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from rvlm.core.vectors.bfloat16 import to_f64
from rvlm.core.vectors.casts import cast_floats, floats_from_wire
from rvlm.core.vectors.datatypes import EXACT_CASTS, numeric_2d
from rvlm.core.vectors.quantize import dequantize, quantize_values
from rvlm.core.vectors.scheme import QuantizationScheme, pair_label


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
    original = to_f64(numeric_2d(sample, f"{pair_label(scheme)}: sample"))
    n = original.shape[0]
    if n == 0 or original.size == 0:
        nan = float("nan")
        return ConversionError(nan, nan, nan, nan, sample_size=n)
    clipped = 0
    if scheme.source_datatype == scheme.target_datatype:
        restored = original.copy()
    elif scheme.kind == "cast":
        counted: list[int] = []
        converted = cast_floats(original, scheme.target_datatype, pair_label(scheme),
                                 scheme.overflow, counted.append)
        clipped = sum(counted)
        restored = to_f64(floats_from_wire(converted, scheme.target_datatype))
    else:
        q, clipped = quantize_values(original, scheme, "sample")
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
    return not (pair[0] == pair[1] or pair in EXACT_CASTS)


__all__ = [
    "ConversionError",
    "is_lossy",
    "measure_error",
]
