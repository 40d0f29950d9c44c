"""Tests for rvlm.core.vectors: datatype conversion and quantization (no Redis needed)."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rvlm.core.vectors import (
    DATATYPES,
    WIDTH,
    QuantizationScheme,
    VectorError,
    choose_scheme,
    convert_bytes_batch,
    convert_values_batch,
    decode,
    decode_batch,
    dequantize,
    encode_batch,
    is_lossy,
    measure_error,
)

BF16_MAX = float.fromhex("0x1.fep127")


# ----------------------------------------------------------------------------- helpers


def f32_bits_to_bytes(bits: list[int]) -> bytes:
    return np.array(bits, dtype="<u4").tobytes()


def bf16_bits(raw: bytes) -> list[int]:
    return [int(b) for b in np.frombuffer(raw, dtype="<u2")]


def cast(source: str, target: str) -> QuantizationScheme:
    return QuantizationScheme("cast", source, target)


def raises_one_line(match: str) -> Any:  # pytest.raises context (type differs across versions)
    return pytest.raises(VectorError, match=match)


def check_one_line(exc: pytest.ExceptionInfo[VectorError]) -> None:
    text = str(exc.value)
    assert text and "\n" not in text


def gaussian(n: int, dims: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dims)).astype(np.float32)


def top_k(queries: np.ndarray, data: np.ndarray, metric: str, k: int = 10) -> np.ndarray:
    """Indices of the k nearest data vectors for each query (unordered within the k)."""
    q = queries.astype(np.float64)
    d = data.astype(np.float64)
    if metric == "COSINE":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
        score = -(q @ d.T)
    elif metric == "IP":
        score = -(q @ d.T)
    else:
        score = (q * q).sum(1)[:, None] - 2 * q @ d.T + (d * d).sum(1)[None, :]
    return np.argpartition(score, k, axis=1)[:, :k]


def recall_at_10(before: np.ndarray, after: np.ndarray) -> float:
    hits = [len(set(b) & set(a)) for b, a in zip(before, after, strict=True)]
    return sum(hits) / (10 * len(hits))


def quantized_values(data: np.ndarray, scheme: QuantizationScheme) -> np.ndarray:
    """Run data through the bytes path and decode what would be stored."""
    raws = [row.tobytes() for row in data.astype("<f4")]
    out = convert_bytes_batch(raws, data.shape[1], scheme)
    return decode_batch(out, scheme.target_datatype, data.shape[1])


# ----------------------------------------------------------------- lengths and decoding


def test_datatypes_and_widths() -> None:
    assert DATATYPES == ("float64", "float32", "float16", "bfloat16", "int8", "uint8")
    assert [WIDTH[d] for d in DATATYPES] == [8, 4, 2, 2, 1, 1]


@given(st.sampled_from(DATATYPES), st.integers(1, 40), st.integers(0, 5))
def test_encoded_length_is_dims_times_width(datatype: str, dims: int, n: int) -> None:
    raws = encode_batch(np.ones((n, dims)), datatype)
    assert len(raws) == n
    assert all(isinstance(r, bytes) and len(r) == dims * WIDTH[datatype] for r in raws)
    decoded = decode_batch(raws, datatype, dims)
    assert decoded.shape == (n, dims) and decoded.dtype == np.float64
    assert (decoded == 1.0).all()
    if n:
        assert (decode(raws[0], datatype, dims) == 1.0).all()


@pytest.mark.parametrize("datatype", DATATYPES)
def test_wrong_length_raises(datatype: str) -> None:
    good = bytes(4 * WIDTH[datatype])
    with raises_one_line(
        rf"{datatype} vector has {len(good) + 1} bytes, expected {len(good)}"
    ) as e:
        decode(good + b"\0", datatype, 4)
    check_one_line(e)
    with raises_one_line("batch position 1") as e:
        decode_batch([good, good[:-1], good], datatype, 4)
    check_one_line(e)
    # one short and one long vector add up to the right total: still caught
    with raises_one_line("2 of 2 vectors"):
        decode_batch([good[:-1], good + b"\0"], datatype, 4)
    with raises_one_line("batch position 0"):
        convert_bytes_batch([good[:-1]], 4, cast(datatype, datatype))


def test_bad_inputs_raise_vector_error() -> None:
    with raises_one_line("unknown vector datatype 'FLOAT32'"):
        decode(b"\0" * 4, "FLOAT32", 1)
    with raises_one_line("dims must be a positive integer"):
        decode(b"", "float32", 0)
    with raises_one_line("must be bytes"):
        decode_batch(["abcd"], "float32", 1)  # type: ignore[list-item]
    with raises_one_line("whole numbers"):
        encode_batch(np.array([[1.5]]), "int8")
    with raises_one_line(r"outside the uint8 range \[0, 255\]"):
        encode_batch(np.array([[256, -1]]), "uint8")
    with raises_one_line("must be 2-D"):
        encode_batch(np.array([1.0, 2.0]), "float32")
    with raises_one_line("unknown distance metric"):
        choose_scheme("float32", "int8", "hamming", np.ones((2, 2)))


def test_decode_is_little_endian() -> None:
    assert decode(b"\x00\x00\x80\x3f", "float32", 1).tolist() == [1.0]
    assert decode(b"\x80\x3f", "bfloat16", 1).tolist() == [1.0]
    assert decode(b"\x00\x3c", "float16", 1).tolist() == [1.0]
    assert decode(b"\xff\x80", "int8", 2).tolist() == [-1.0, -128.0]
    assert encode_batch(np.array([[1.0]]), "float64") == [np.float64(1.0).tobytes()]


# --------------------------------------------------------------------- float casts


finite_f32 = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 6), st.integers(1, 8)),
    elements=st.floats(width=32, allow_nan=False),
)


@given(finite_f32)
def test_float32_float64_float32_is_exact(data: np.ndarray) -> None:
    dims = data.shape[1]
    raws = [row.astype("<f4").tobytes() for row in data]
    wide = convert_bytes_batch(raws, dims, cast("float32", "float64"))
    assert all(len(r) == dims * 8 for r in wide)
    back = convert_bytes_batch(wide, dims, cast("float64", "float32"))
    assert back == raws


def test_nan_survives_float_casts() -> None:
    raw = np.array([np.nan, -np.nan, np.inf, -np.inf, 1.0], dtype="<f4").tobytes()
    for target in ("float64", "float16", "bfloat16"):
        out = decode(convert_bytes_batch([raw], 5, cast("float32", target))[0], target, 5)
        assert np.isnan(out[:2]).all()
        assert out[2:].tolist() == [math.inf, -math.inf, 1.0]


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=32))
def test_half_types_widen_exactly(bits: list[int]) -> None:
    raw = np.array(bits, dtype="<u2").tobytes()
    dims = len(bits)
    # bfloat16 -> float32 is the bit pattern shifted left by 16, NaN included
    out = convert_bytes_batch([raw], dims, cast("bfloat16", "float32"))[0]
    assert np.frombuffer(out, dtype="<u4").tolist() == [b << 16 for b in bits]
    # and back again unchanged, except that a signalling NaN comes back quiet
    quiet = [b | 0x0040 if (b & 0x7F80) == 0x7F80 and b & 0x7F else b for b in bits]
    assert bf16_bits(convert_bytes_batch([out], dims, cast("float32", "bfloat16"))[0]) == quiet
    # float16 -> float32 / float64 keeps every value (NaN stays NaN)
    f16 = np.frombuffer(raw, dtype="<f2")
    for target in ("float32", "float64"):
        got = decode(convert_bytes_batch([raw], dims, cast("float16", target))[0], target, dims)
        np.testing.assert_array_equal(got, f16.astype(np.float64))
        assert not is_lossy(cast("float16", target))


@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(1, 8)),
        elements=st.floats(-65504, 65504, width=32),
    )
)
def test_float32_to_float16_matches_numpy(data: np.ndarray) -> None:
    raws = [row.astype("<f4").tobytes() for row in data]
    out = convert_bytes_batch(raws, data.shape[1], cast("float32", "float16"))
    assert out == [row.astype("<f2").tobytes() for row in data]


def test_float16_overflow_is_an_error_not_inf() -> None:
    data = np.array([[1.0, 70000.0, -1e6, np.inf]], dtype=np.float32)
    with raises_one_line("float32 -> float16: 2 of 4 components are outside the float16") as e:
        convert_bytes_batch([data[0].tobytes()], 4, cast("float32", "float16"))
    check_one_line(e)
    with raises_one_line("float64 -> float16"):
        convert_values_batch([[1.0, 1e5]], 2, cast("float64", "float16"))
    # the largest value that still rounds to 65504 is fine; an existing inf is not overflow
    ok = np.array([[65519.0, np.inf]], dtype=np.float32)
    got = decode(
        convert_bytes_batch([ok[0].tobytes()], 2, cast("float32", "float16"))[0], "float16", 2
    )
    assert got.tolist() == [65504.0, math.inf]


def test_a_planned_narrowing_cast_clips_and_counts_overflow() -> None:
    """The plan decides the policy: a narrowing cast clips a finite value beyond the target's
    range to its largest finite value (with its sign) and says how many; inf stays inf."""
    data = np.array([[1.0, 70000.0, -1e6, np.inf]], dtype=np.float32)
    scheme = choose_scheme("float32", "float16", "COSINE", data)
    assert scheme == QuantizationScheme("cast", "float32", "float16", overflow="clip")
    assert QuantizationScheme.from_dict(scheme.to_dict()) == scheme
    counted: list[int] = []
    out = convert_bytes_batch([data[0].tobytes()], 4, scheme, on_clip=counted.append)
    assert decode(out[0], "float16", 4).tolist() == [1.0, 65504.0, -65504.0, math.inf]
    assert counted == [2]
    counted.clear()
    values = convert_values_batch([[1.0, 1e5]], 2, QuantizationScheme(
        "cast", "float64", "float16", overflow="clip"), on_clip=counted.append)
    assert values == [[1.0, 65504.0]] and counted == [1]
    # widening casts need no policy
    with np.errstate(over="ignore"):  # the float16 copy of the data holds inf
        narrow = data.astype(np.float16)
    assert choose_scheme("float16", "float32", "L2", narrow).overflow is None
    with raises_one_line("overflow must be clip"):
        QuantizationScheme("cast", "float32", "float16", overflow="wrap")


# ------------------------------------------------------------------- bfloat16 rounding


@pytest.mark.parametrize(
    ("f32_bits", "expected"),
    [
        (0x3F800000, 0x3F80),  # 1.0 exact
        (0x3F808000, 0x3F80),  # tie, 0x3F80 is even: stays
        (0x3F818000, 0x3F82),  # tie, 0x3F81 is odd: rounds up to even
        (0x3F808001, 0x3F81),  # just above the tie
        (0x3F807FFF, 0x3F80),  # just below the tie
        (0xBF808000, 0xBF80),  # negative tie to even
        (0xBF818000, 0xBF82),  # negative tie rounds away to even
        (0xBF80C000, 0xBF81),  # negative, above the tie
        (0x00018000, 0x0002),  # subnormal tie rounds to even
        (0x00000001, 0x0000),  # tiny subnormal rounds to zero
        (0x80000001, 0x8000),  # ... keeping its sign
        (0x7F7F0000, 0x7F7F),  # largest bfloat16
        (0x7F7F7FFF, 0x7F7F),  # largest float32 below the overflow tie
        (0x7F800000, 0x7F80),  # inf stays inf
        (0xFF800000, 0xFF80),  # -inf stays -inf
        (0x4B7FFFFF, 0x4B80),  # carry into the exponent
    ],
)
def test_bfloat16_round_to_nearest_even(f32_bits: int, expected: int) -> None:
    out = convert_bytes_batch([f32_bits_to_bytes([f32_bits])], 1, cast("float32", "bfloat16"))
    assert bf16_bits(out[0]) == [expected]


@pytest.mark.parametrize("f32_bits", [0x7FC00000, 0x7F800001, 0x7FFFFFFF, 0xFFFFFFFF, 0xFF800001])
def test_bfloat16_nan_stays_quiet_nan(f32_bits: int) -> None:
    out = convert_bytes_batch([f32_bits_to_bytes([f32_bits])], 1, cast("float32", "bfloat16"))
    (bits,) = bf16_bits(out[0])
    assert (bits & 0x7F80) == 0x7F80 and (bits & 0x0040)  # quiet NaN, not inf
    assert bits >> 15 == f32_bits >> 31  # sign kept
    assert np.isnan(decode(out[0], "bfloat16", 1)).all()


def test_bfloat16_overflow_raises() -> None:
    raw = f32_bits_to_bytes([0x3F800000, 0x7F7F8000, 0x7F7FFFFF])  # ties/above at the top
    with raises_one_line("float32 -> bfloat16: 2 of 3 components"):
        convert_bytes_batch([raw], 3, cast("float32", "bfloat16"))
    with raises_one_line("float64 -> bfloat16"):
        convert_values_batch([[1e39]], 1, cast("float64", "bfloat16"))
    # the largest bfloat16 is 255 * 2**120; half an ulp above it is a tie that rounds to inf
    assert convert_values_batch([[255.4 * 2**120]], 1, cast("float64", "bfloat16")) == [[BF16_MAX]]
    with raises_one_line("1 of 1 components"):
        convert_values_batch([[255.5 * 2**120]], 1, cast("float64", "bfloat16"))


def reference_bf16_from_f32_bits(u: int) -> int:
    """Round-to-nearest-even on the integer bit pattern, written independently."""
    upper, rest = u >> 16, u & 0xFFFF
    if rest > 0x8000 or (rest == 0x8000 and upper & 1):
        upper += 1
    return upper


@settings(max_examples=300)
@given(st.integers(0, 2**32 - 1))
def test_bfloat16_matches_bit_reference(u: int) -> None:
    raw = f32_bits_to_bytes([u])
    value = float(np.frombuffer(raw, dtype="<f4")[0])
    expected = reference_bf16_from_f32_bits(u)
    if math.isnan(value):
        out = convert_bytes_batch([raw], 1, cast("float32", "bfloat16"))
        assert math.isnan(decode(out[0], "bfloat16", 1)[0])
    elif not math.isinf(value) and expected & 0x7FFF == 0x7F80:
        with raises_one_line("would become inf"):
            convert_bytes_batch([raw], 1, cast("float32", "bfloat16"))
    else:
        out = convert_bytes_batch([raw], 1, cast("float32", "bfloat16"))
        assert bf16_bits(out[0]) == [expected]


def reference_bf16_value(x: float) -> float:
    """Nearest bfloat16 to the exact value of x (ties to even), by exact arithmetic."""
    if x == 0:
        return x
    _, exp = math.frexp(abs(x))  # |x| = m * 2**exp, 0.5 <= m < 1
    quantum = Fraction(2) ** (max(exp, -125) - 8)  # 8 significant bits; subnormals below 2**-126
    k = Fraction(abs(x)) / quantum
    lower = math.floor(k)
    rest = k - lower
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and lower % 2):
        lower += 1
    return math.copysign(float(lower * quantum), x)


@settings(max_examples=300)
@given(st.floats(-BF16_MAX, BF16_MAX) | st.floats(-1e-38, 1e-38))
def test_float64_to_bfloat16_is_correctly_rounded(x: float) -> None:
    expected = reference_bf16_value(x)
    out = convert_values_batch([[x]], 1, cast("float64", "bfloat16"))
    assert out == [[expected]]
    raws = convert_bytes_batch([np.float64(x).tobytes()], 1, cast("float64", "bfloat16"))
    assert decode(raws[0], "bfloat16", 1).tolist() == [expected]


def test_float64_to_bfloat16_avoids_double_rounding() -> None:
    # Rounds to float32 exactly on a bfloat16 tie; rounding that tie to even would give 1.0.
    x = 1 + 2**-8 + 2**-30
    assert float(np.float32(x)) == 1 + 2**-8
    out = convert_bytes_batch([np.float64(x).tobytes()], 1, cast("float64", "bfloat16"))
    assert bf16_bits(out[0]) == [0x3F81]


# ---------------------------------------------------------------------- quantization


def test_int8_cosine_keeps_neighbours() -> None:
    data, queries = gaussian(1000, 64, seed=1), gaussian(50, 64, seed=2)
    scheme = choose_scheme("float32", "int8", "COSINE", data[:200])
    assert scheme.kind == "per_vector_max_abs" and scheme.calibration_sample_size == 200
    q_data, q_queries = quantized_values(data, scheme), quantized_values(queries, scheme)
    assert np.abs(q_data).max(axis=1).tolist() == [127.0] * 1000
    recall = recall_at_10(top_k(queries, data, "COSINE"), top_k(q_queries, q_data, "COSINE"))
    assert recall >= 0.9
    err = measure_error(data, scheme)
    assert err.mean_cosine_similarity >= 0.99 and err.min_cosine_similarity >= 0.98
    assert 0 < err.mean_abs_error < 0.05 and err.sample_size == 1000 and err.clip_fraction == 0


def test_per_vector_zero_vector_stays_zero() -> None:
    scheme = choose_scheme("float32", "int8", "cosine", np.empty((0, 3)))
    out = convert_values_batch([[0.0, 0.0, 0.0], [0.5, -1.0, 0.25]], 3, scheme)
    assert out == [[0, 0, 0], [64, -127, 32]]  # round(63.5) is 64 (ties to even)


@pytest.mark.parametrize(
    ("metric", "target", "kind"),
    [
        ("L2", "int8", "global_scale"),
        ("IP", "int8", "global_scale"),
        ("L2", "uint8", "global_affine"),
    ],
)
def test_global_schemes_keep_neighbours(metric: str, target: str, kind: str) -> None:
    data, queries = gaussian(1000, 64, seed=3), gaussian(50, 64, seed=4)
    scheme = choose_scheme("float32", target, metric, data[:500])
    assert scheme.kind == kind
    assert scheme.clip_fraction == 0.0 and scheme.calibration_sample_size == 500
    restored = dequantize(quantized_values(data, scheme), scheme)
    restored_q = dequantize(quantized_values(queries, scheme), scheme)
    recall = recall_at_10(top_k(queries, data, metric), top_k(restored_q, restored, metric))
    assert recall >= 0.9
    err = measure_error(data, scheme)
    assert err.mean_cosine_similarity >= 0.99
    # data beyond the 500-vector calibration sample is clipped, but rarely
    assert 0 < err.mean_abs_error < 0.02 and err.clip_fraction < 0.001


def test_global_scale_calibration_and_clipping() -> None:
    sample = np.array([[0.5, -2.0], [1.0, 0.0]])
    scheme = choose_scheme("float64", "int8", "L2", sample)
    assert scheme.scale == pytest.approx(127 / 2.0) and scheme.offset == 0.0
    # beyond the calibrated range: clipped silently at conversion, reported by measure_error
    assert convert_values_batch([[4.0, -4.0], [1.0, 0.0]], 2, scheme) == [[127, -127], [64, 0]]
    err = measure_error(np.array([[4.0, -4.0], [1.0, 0.0]]), scheme)
    assert err.clip_fraction == 0.5 and err.max_abs_error == pytest.approx(2.0)


def test_uint8_affine_formula() -> None:
    sample = np.array([[-1.0, 0.0], [3.0, 1.0]])
    scheme = choose_scheme("float32", "uint8", "l2", sample)
    assert (scheme.kind, scheme.offset, scheme.scale) == ("global_affine", -1.0, 255 / 4)
    assert convert_values_batch(sample.tolist(), 2, scheme) == [[0, 64], [255, 128]]
    np.testing.assert_allclose(dequantize(np.array([0, 255]), scheme), [-1.0, 3.0])


def test_uint8_refuses_negative_components_for_cosine_and_ip() -> None:
    sample = gaussian(20, 8, seed=5)
    with raises_one_line(r"float32 -> uint8 \(IP\).*breaks inner-product ranking.*int8") as e:
        choose_scheme("float32", "uint8", "IP", sample)
    check_one_line(e)
    with raises_one_line(r"uint8 cannot keep cosine ranking.*use int8") as e:
        choose_scheme("float32", "uint8", "COSINE", sample)
    check_one_line(e)


def test_uint8_with_non_negative_sample() -> None:
    sample = np.abs(gaussian(50, 8, seed=6))
    ip = choose_scheme("float32", "uint8", "IP", sample)
    assert ip.kind == "global_scale" and ip.scale == pytest.approx(255 / float(sample.max()))
    cos = choose_scheme("float32", "uint8", "COSINE", sample)
    assert cos.kind == "per_vector_max_abs"
    assert np.max(quantized_values(sample, cos), axis=1).tolist() == [255.0] * 50
    # a negative value that slipped past the sample is an error at conversion, not garbage
    with raises_one_line("1 components in the batch are negative"):
        convert_values_batch([[1.0, -0.5]], 2, cos)


def test_quantization_refuses_nan_and_inf() -> None:
    sample = np.array([[1.0, np.nan], [np.inf, 2.0]])
    for metric in ("COSINE", "L2", "IP"):
        with raises_one_line(r"float32 -> int8: 2 components in the sample are NaN or inf") as e:
            choose_scheme("float32", "int8", metric, sample)
        check_one_line(e)
    scheme = choose_scheme("float32", "int8", "L2", np.array([[1.0, 2.0]]))
    raw = np.array([np.nan, 1.0], dtype="<f4").tobytes()
    with raises_one_line("1 components in the batch are NaN or inf"):
        convert_bytes_batch([raw], 2, scheme)


def test_calibration_needs_data() -> None:
    for metric, target in [("L2", "int8"), ("IP", "int8"), ("L2", "uint8"), ("IP", "uint8")]:
        with raises_one_line("cannot calibrate .* from an empty sample") as e:
            choose_scheme("float32", target, metric, np.empty((0, 4)))
        check_one_line(e)
    with raises_one_line("cannot calibrate"):
        choose_scheme("float32", "int8", "L2", np.zeros((3, 4)))
    with raises_one_line("cannot calibrate"):
        choose_scheme("float32", "uint8", "L2", np.full((3, 4), 2.0))


def test_int_conversions() -> None:
    with raises_one_line("int8 -> uint8: converting directly between int8 and uint8") as e:
        choose_scheme("int8", "uint8", "L2", np.zeros((1, 2)))
    check_one_line(e)
    with raises_one_line("not supported"):
        QuantizationScheme("cast", "uint8", "int8")
    scheme = choose_scheme("int8", "float32", "L2", np.array([[-128, 127]]))
    assert scheme == cast("int8", "float32") and not is_lossy(scheme)
    raw = np.array([-128, -1, 0, 127], dtype="i1").tobytes()
    for target in ("float16", "bfloat16", "float32", "float64"):
        out = convert_bytes_batch([raw], 4, cast("int8", target))
        assert decode(out[0], target, 4).tolist() == [-128.0, -1.0, 0.0, 127.0]
    assert convert_values_batch([[0, 255]], 2, cast("uint8", "bfloat16")) == [[0.0, 255.0]]
    np.testing.assert_array_equal(dequantize(np.array([[-128, 5]]), scheme), [[-128.0, 5.0]])


def test_same_datatype_is_a_no_op() -> None:
    for datatype in DATATYPES:
        scheme = choose_scheme(datatype, datatype, "COSINE", np.zeros((1, 3)))
        assert scheme == cast(datatype, datatype) and not is_lossy(scheme)
        raws = encode_batch(np.array([[1, 2, 3], [4, 5, 6]]), datatype)
        assert convert_bytes_batch(raws, 3, scheme) == raws
    assert convert_values_batch([[0.1, 2]], 2, cast("float32", "float32")) == [[0.1, 2.0]]
    assert convert_values_batch([[1, 2]], 2, cast("int8", "int8")) == [[1, 2]]


# ------------------------------------------------------------------------- JSON path


JSON_SCHEMES = [
    cast("float32", "float64"),
    cast("float32", "float16"),
    cast("float32", "bfloat16"),
    cast("float16", "float32"),
    QuantizationScheme("per_vector_max_abs", "float32", "int8"),
    QuantizationScheme("global_scale", "float32", "int8", scale=40.0, offset=0.0),
    QuantizationScheme("global_affine", "float32", "uint8", scale=30.0, offset=-4.0),
]


@pytest.mark.parametrize("scheme", JSON_SCHEMES, ids=lambda s: f"{s.target_datatype}-{s.kind}")
def test_json_values_match_bytes_path(scheme: QuantizationScheme) -> None:
    data = gaussian(20, 16, seed=7)
    if scheme.source_datatype == "float16":
        data = data.astype(np.float16)
    source_values = data.astype(np.float64).tolist()
    out = convert_values_batch(source_values, 16, scheme)
    want_type = int if scheme.target_datatype in ("int8", "uint8") else float
    assert all(type(v) is want_type for row in out for v in row)
    assert json.loads(json.dumps(out)) == out
    raws = encode_batch(data, scheme.source_datatype)
    via_bytes = decode_batch(convert_bytes_batch(raws, 16, scheme), scheme.target_datatype, 16)
    assert out == via_bytes.tolist()


def test_json_batch_shape_errors() -> None:
    scheme = cast("float32", "float16")
    assert convert_values_batch([], 3, scheme) == []
    with raises_one_line("expected 3 dims"):
        convert_values_batch([[1.0, 2.0]], 3, scheme)
    with raises_one_line("rectangular"):
        convert_values_batch([[1.0, 2.0], [1.0]], 2, scheme)
    with raises_one_line("only numbers"):
        convert_values_batch([["a", "b"]], 2, scheme)  # type: ignore[list-item]


# --------------------------------------------------------------------------- schemes


SCHEMES = [
    *JSON_SCHEMES,
    QuantizationScheme(
        "global_scale",
        "float64",
        "uint8",
        scale=1.5,
        offset=0.0,
        clip_fraction=0.0,
        calibration_sample_size=10,
    ),
]


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: f"{s.source_datatype}-{s.kind}")
def test_scheme_dict_round_trip(scheme: QuantizationScheme) -> None:
    d = scheme.to_dict()
    assert None not in d.values()
    assert QuantizationScheme.from_dict(d) == scheme
    assert QuantizationScheme.from_dict(yaml.safe_load(yaml.safe_dump(d))) == scheme


def test_chosen_scheme_is_yaml_safe() -> None:
    scheme = choose_scheme("float32", "uint8", "L2", gaussian(10, 4, seed=8))
    d = scheme.to_dict()
    assert {type(v) for v in d.values()} <= {str, float, int}
    assert QuantizationScheme.from_dict(yaml.safe_load(yaml.safe_dump(d))) == scheme
    assert yaml.safe_dump(measure_error(gaussian(10, 4, seed=9), scheme).to_dict())


@pytest.mark.parametrize(
    ("d", "match"),
    [
        (
            {"kind": "cast", "source_datatype": "float32", "target_datatype": "float16", "x": 1},
            "unknown keys: x",
        ),
        (
            {"kind": "magic", "source_datatype": "float32", "target_datatype": "int8"},
            "unknown quantization kind 'magic'",
        ),
        ({"kind": "cast", "source_datatype": "float32"}, "missing keys: target_datatype"),
        (
            {"kind": "cast", "source_datatype": "float32", "target_datatype": "int8"},
            "needs a quantization kind",
        ),
        (
            {"kind": "global_scale", "source_datatype": "float32", "target_datatype": "int8"},
            "needs a finite positive scale",
        ),
        (
            {
                "kind": "global_scale",
                "source_datatype": "float32",
                "target_datatype": "int8",
                "scale": "2",
            },
            "scale must be a number",
        ),
        (
            {
                "kind": "global_affine",
                "source_datatype": "float32",
                "target_datatype": "uint8",
                "scale": 2.0,
            },
            "needs a finite offset",
        ),
        (
            {"kind": "cast", "source_datatype": "float32", "target_datatype": "float8"},
            "unknown target datatype 'float8'",
        ),
    ],
)
def test_scheme_from_dict_rejects(d: dict[str, object], match: str) -> None:
    with raises_one_line(match) as e:
        QuantizationScheme.from_dict(d)
    check_one_line(e)


# --------------------------------------------------------------------- error numbers


@pytest.mark.parametrize(
    ("source", "target"),
    [("float32", "float64"), ("float16", "float32"), ("bfloat16", "float64"), ("int8", "float16")],
)
def test_measure_error_is_zero_for_widening(source: str, target: str) -> None:
    data = decode_batch(encode_batch(np.rint(gaussian(30, 8, seed=10) * 20), source), source, 8)
    scheme = choose_scheme(source, target, "L2", data)
    assert not is_lossy(scheme)
    err = measure_error(data, scheme)
    assert err.max_abs_error == 0.0 and err.mean_abs_error == 0.0
    assert err.mean_cosine_similarity == 1.0 and err.min_cosine_similarity == 1.0
    assert err.sample_size == 30


@pytest.mark.parametrize(
    ("source", "target", "metric"),
    [
        ("float32", "float16", "L2"),
        ("float32", "bfloat16", "COSINE"),
        ("float64", "float32", "IP"),
        ("float32", "int8", "COSINE"),
        ("float32", "int8", "IP"),
        ("float32", "uint8", "L2"),
    ],
)
def test_measure_error_is_positive_for_lossy(source: str, target: str, metric: str) -> None:
    data = gaussian(30, 8, seed=11).astype(np.float64)
    if source == "float64":
        data += 1e-9  # not float32-representable
    scheme = choose_scheme(source, target, metric, data)
    assert is_lossy(scheme)
    err = measure_error(data, scheme)
    assert 0 < err.mean_abs_error <= err.max_abs_error < 0.1
    assert 0.99 <= err.min_cosine_similarity <= err.mean_cosine_similarity <= 1.0


def test_measure_error_empty_sample() -> None:
    err = measure_error(np.empty((0, 4)), cast("float32", "float16"))
    assert err.sample_size == 0 and math.isnan(err.max_abs_error)


def test_is_lossy_table() -> None:
    lossless = {
        ("float32", "float64"),
        ("float16", "float32"),
        ("float16", "float64"),
        ("bfloat16", "float32"),
        ("bfloat16", "float64"),
    }
    for source in DATATYPES:
        for target in DATATYPES:
            if source in ("int8", "uint8") and target in ("int8", "uint8") and source != target:
                continue
            if source not in ("int8", "uint8") and target in ("int8", "uint8"):
                continue
            expected = not (
                source == target or (source, target) in lossless or source in ("int8", "uint8")
            )
            assert is_lossy(cast(source, target)) is expected, (source, target)
    assert is_lossy(QuantizationScheme("per_vector_max_abs", "float16", "int8"))
