"""Decode stored vectors (hash bytes) into arrays and encode arrays back, whole batches
at a time."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rvlm.core.vectors.bfloat16 import to_f64
from rvlm.core.vectors.casts import cast_floats, check_int_values, floats_from_wire
from rvlm.core.vectors.datatypes import (
    INT_DATATYPES,
    WIDTH,
    WIRE,
    VectorError,
    check_datatype,
    check_dims,
    numeric_2d,
)


def join_checked(raws: Sequence[bytes], datatype: str, dims: int) -> bytes:
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


def load_rows(raws: Sequence[bytes], datatype: str, dims: int) -> np.ndarray:
    """Decode a batch into an (n, dims) array of numbers in the narrowest exact dtype.

    bfloat16 becomes float32; other datatypes keep their own dtype (native byte order).
    """
    joined = join_checked(raws, datatype, dims)
    wire = np.frombuffer(joined, dtype=WIRE[datatype]).reshape(len(raws), dims)
    wire = wire.astype(wire.dtype.newbyteorder("="), copy=False)
    return floats_from_wire(wire, datatype)


def split_rows(arr: np.ndarray, datatype: str, n: int) -> list[bytes]:
    """Serialise an (n, dims) native array little-endian and cut it into n byte strings."""
    buf = arr.astype(WIRE[datatype], copy=False).tobytes()
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
    datatype = check_datatype(datatype)
    dims = check_dims(dims)
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise VectorError(f"{datatype} vector must be bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) != dims * WIDTH[datatype]:
        raise VectorError(
            f"{datatype} vector has {len(raw)} bytes, expected {dims * WIDTH[datatype]} "
            f"({dims} dims x {WIDTH[datatype]} bytes)"
        )
    wire = np.frombuffer(raw, dtype=WIRE[datatype])
    return to_f64(floats_from_wire(wire, datatype))


def decode_batch(raws: Sequence[bytes], datatype: str, dims: int) -> np.ndarray:
    """Decode a batch of Redis hash vectors.

    Takes a sequence of raw byte strings (each ``dims * WIDTH[datatype]`` long), the
    datatype and the dimension count.  Returns a new (n, dims) float64 array, built from a
    single ``np.frombuffer`` over ``b"".join(raws)``.  Raises VectorError naming the first
    vector of the wrong length.
    """
    datatype = check_datatype(datatype)
    dims = check_dims(dims)
    return to_f64(load_rows(raws, datatype, dims))


def encode_batch(values: np.ndarray, datatype: str) -> list[bytes]:
    """Encode an (n, dims) array of target-domain numbers as n Redis hash byte strings.

    Float datatypes round to nearest-even (bfloat16 included); finite values that would
    overflow to inf raise VectorError.  For int8/uint8 the values must already be whole
    numbers within the datatype's range (VectorError otherwise); nothing is scaled here.
    Returns a list of n little-endian byte strings, each ``dims * WIDTH[datatype]`` long.
    """
    datatype = check_datatype(datatype)
    arr = numeric_2d(values, f"values to encode as {datatype}")
    label = f"{arr.dtype} values -> {datatype}"
    if datatype in INT_DATATYPES:
        out = check_int_values(arr, datatype, label)
    else:
        out = cast_floats(arr, datatype, label)
    return split_rows(out, datatype, arr.shape[0])


__all__ = [
    "decode",
    "decode_batch",
    "encode_batch",
    "join_checked",
    "load_rows",
    "split_rows",
]
