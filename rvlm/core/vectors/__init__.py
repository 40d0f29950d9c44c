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

The package, one module per job: :mod:`~rvlm.core.vectors.datatypes` (names, widths, ranges,
checks), :mod:`~rvlm.core.vectors.bfloat16` (its bit patterns),
:mod:`~rvlm.core.vectors.casts` (cast kernels), :mod:`~rvlm.core.vectors.codec` (decode and
encode), :mod:`~rvlm.core.vectors.scheme` (the scheme), :mod:`~rvlm.core.vectors.quantize`
(converting batches, choosing a scheme) and :mod:`~rvlm.core.vectors.measure` (the error of
a conversion).
"""

from __future__ import annotations

from rvlm.core.vectors.codec import decode, decode_batch, encode_batch
from rvlm.core.vectors.datatypes import (
    DATATYPES,
    FLOAT_DATATYPES,
    INT_DATATYPES,
    KINDS,
    METRICS,
    WIDTH,
    VectorError,
)
from rvlm.core.vectors.measure import ConversionError, is_lossy, measure_error
from rvlm.core.vectors.quantize import (
    choose_scheme,
    convert_bytes_batch,
    convert_values_batch,
    dequantize,
)
from rvlm.core.vectors.scheme import QuantizationScheme

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
