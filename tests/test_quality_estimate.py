"""The plan-time recall estimate: what the server keeps, int8/uint8 from the recorded scheme, the
extrapolation to a denser index, and agreement with the recall the real server measures on
clustered vectors (where a plain estimate is far off)."""

from __future__ import annotations

import numpy as np
import pytest
from test_apply_helpers import wait_indexed
from test_quality_helpers import cone, converted_index, load, prefix_map, vector_index

from rvlm.core import vectors
from rvlm.core.plugins.documents import MISSING, Document
from rvlm.core.quality.estimate import estimate_recall, stored_form, vector_matrix
from rvlm.core.quality.probes import measure_field, probe_source, scheme_converter
from rvlm.core.redis.connection import read_index

# -------------------------------------------------------------------------- unit


def test_cosine_float16_is_normalised_in_float32_and_rounded_again():
    data = cone(50, 32, 0.1).astype(np.float64)
    half = data.astype(np.float16).astype(np.float64)
    stored = stored_form(half, "float16", "COSINE")
    # what the index holds is float16 again, of unit length up to float16 rounding
    assert np.array_equal(stored, stored.astype(np.float16).astype(np.float64))
    assert np.allclose(np.linalg.norm(stored, axis=1), 1.0, atol=2e-3)
    # and it is not the cast values divided by their norm in float64
    plain = half / np.linalg.norm(half, axis=1, keepdims=True)
    assert not np.array_equal(stored, plain)
    # L2 and IP compare the values as stored
    assert np.array_equal(stored_form(half, "float16", "L2"), half)
    assert np.array_equal(stored_form(half, "float16", "IP"), half)


def test_no_change_estimates_full_recall():
    data = cone(300, 16, 0.2).astype(np.float64)
    est = estimate_recall(data, source_datatype="float32", source_metric="COSINE",
                          target_datatype="float32", target_metric="COSINE")
    assert est is not None
    assert est.recall_at_k == 1.0 and est.k == 10 and est.sample == 300 and est.queries == 200


def _brute_recall(src: np.ndarray, tgt: np.ndarray, metric: str, k: int) -> float:
    """recall@k over every row as a query, one query at a time, without the estimator's
    code: cosine by explicit norms, L2 by differences, IP by dot products."""
    def dist(m: np.ndarray, q: np.ndarray) -> np.ndarray:
        if metric == "L2":
            return ((m - q) ** 2).sum(axis=1)
        if metric == "COSINE":
            return 1 - (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
        return 1 - m @ q

    total = 0.0
    for i in range(len(src)):
        d_src, d_tgt = dist(src, src[i]), dist(tgt, tgt[i])
        kth = np.sort(d_src)[k - 1]
        accepted = {j for j in range(len(src)) if d_src[j] <= kth}
        picked = np.argsort(d_tgt, kind="stable")[:k]
        total += min(k, len(accepted.intersection(picked.tolist()))) / k
    return total / len(src)


@pytest.mark.parametrize("metric, datatype, positive", [
    ("COSINE", "int8", False),     # per_vector_max_abs
    ("L2", "int8", False),         # global_scale
    ("L2", "uint8", False),        # global_affine
    ("IP", "uint8", True),         # global_scale, non-negative values
    ("COSINE", "uint8", True),     # per_vector_max_abs with 255
])
def test_int_estimate_follows_the_recorded_scheme(metric, datatype, positive):
    data = cone(160, 24, 0.4, clusters=3).astype(np.float64)
    if positive:
        data = np.abs(data)
    scheme = vectors.choose_scheme("float32", datatype, metric, data)
    est = estimate_recall(data, source_datatype="float32", source_metric=metric,
                          target_datatype=datatype, target_metric=metric, scheme=scheme,
                          queries=len(data))
    assert est is not None and est.queries == len(data)
    # independently: the integers the conversion writes (as the server keeps them)
    q = np.asarray(vectors.convert_values_batch(data.tolist(), 24, scheme), dtype=np.float64)
    expected = _brute_recall(data, q, metric, 10)
    assert est.recall_at_k == pytest.approx(expected, abs=1e-9)
    assert 0.3 < est.recall_at_k < 1.0


def test_a_coarser_recorded_scheme_estimates_lower_recall():
    data = cone(400, 32, 0.5, clusters=4).astype(np.float64)
    scheme = vectors.choose_scheme("float32", "int8", "L2", data)
    coarse = vectors.QuantizationScheme("global_scale", "float32", "int8",
                                        scale=scheme.scale / 20)
    kw = dict(source_datatype="float32", source_metric="L2", target_datatype="int8",
              target_metric="L2")
    fine = estimate_recall(data, scheme=scheme, **kw)
    rough = estimate_recall(data, scheme=coarse, **kw)
    assert fine is not None and rough is not None
    assert rough.recall_at_k < fine.recall_at_k - 0.2


def test_metric_change_is_estimated_against_the_source_metric():
    data = cone(300, 16, 0.5, clusters=3).astype(np.float64)
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    kw = dict(source_datatype="float64", source_metric="COSINE", target_datatype="float64",
              target_metric="L2")
    # on unit vectors L2 ranks exactly like cosine; on others it does not
    assert estimate_recall(unit, **kw).recall_at_k == 1.0
    scaled = unit * np.random.default_rng(3).uniform(0.2, 5.0, size=(300, 1))
    assert estimate_recall(scaled, **kw).recall_at_k < 0.9


def test_a_bigger_index_extrapolates_below_the_sample_figure():
    data = cone(1000, 64, 0.1).astype(np.float64)
    scheme = vectors.choose_scheme("float32", "bfloat16", "COSINE", data)
    kw = dict(source_datatype="float32", source_metric="COSINE", target_datatype="bfloat16",
              target_metric="COSINE", scheme=scheme)
    alone = estimate_recall(data, documents=1000, **kw)
    bigger = estimate_recall(data, documents=20000, **kw)
    assert alone is not None and bigger is not None
    assert alone.recall_at_k == alone.recall_on_sample
    assert "documents" not in alone.to_dict()
    assert bigger.recall_on_sample == alone.recall_on_sample
    assert bigger.recall_at_k < alone.recall_at_k - 0.05
    d = bigger.to_dict()
    assert d["documents"] == 20000 and d["recall_on_sample"] == round(alone.recall_at_k, 4)
    # the same inputs give the same figures (plans are compared byte for byte)
    assert estimate_recall(data, documents=20000, **kw).to_dict() == d


def test_vector_matrix_keeps_only_vectors_of_the_right_size():
    good = np.arange(8, dtype=np.float32)
    docs = [Document(b"a", {"v": good.tobytes()}), Document(b"b", {"v": b"\x00" * 3}),
            Document(b"c", {"v": MISSING})]
    assert np.array_equal(vector_matrix(docs, "v", "hash", "float32", 8), good[None, :])
    jdocs = [Document(b"a", {"$.v": [1.0, 2.0]}), Document(b"b", {"$.v": [1.0]}),
             Document(b"c", {"$.v": ["x", 1.0]})]
    assert vector_matrix(jdocs, "$.v", "json", "float32", 2).tolist() == [[1.0, 2.0]]


def test_too_small_a_sample_gives_no_estimate():
    assert estimate_recall(np.ones((1, 4)), source_datatype="float32", source_metric="L2",
                           target_datatype="float16", target_metric="L2") is None


# -------------------------------------------------------------------------- real server


def _plain_estimate(data: np.ndarray, datatype: str, k: int = 10) -> float:
    """What a first attempt computes: cast, then cosine in float64 (no server rounding)."""
    scheme = vectors.choose_scheme("float32", datatype, "COSINE", data)
    cast = vectors.decode_batch(vectors.convert_bytes_batch(
        vectors.encode_batch(data, "float32"), data.shape[1], scheme), datatype, data.shape[1])
    a = data / np.linalg.norm(data, axis=1, keepdims=True)
    b = cast / np.linalg.norm(cast, axis=1, keepdims=True)
    truth = np.argsort(1 - a @ a.T, axis=1)[:, :k]
    got = np.argsort(1 - b @ b.T, axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(truth, got, strict=True)]))


def _measured(client, data: np.ndarray, datatype: str) -> float:
    """recall@10 the server gives: a float32 source index and a converted copy."""
    vector_index(client, "src", "s:", data.shape[1])
    load(client, "s:", data)
    wait_indexed(client, "src")
    scheme = converted_index(client, "dst", "d:", data, datatype)
    probes = probe_source(client, read_index(client, "src").schema, "emb")
    quality = measure_field(client, "dst", probes, scheme_converter(scheme, data.shape[1]),
                            prefix_map("s:", "d:"))
    assert quality.queries == 100 and quality.refused == 0
    return quality.recall_at_k


@pytest.mark.parametrize("datatype", ["float16", "bfloat16"])
def test_estimate_is_within_005_of_the_server_on_a_narrow_cone(redis_client, datatype):
    data = cone(1000, 64, 0.1)
    scheme = vectors.choose_scheme("float32", datatype, "COSINE", data)
    est = estimate_recall(data.astype(np.float64), source_datatype="float32",
                          source_metric="COSINE", target_datatype=datatype,
                          target_metric="COSINE", scheme=scheme, documents=1000)
    measured = _measured(redis_client, data, datatype)
    assert est is not None
    assert abs(est.recall_at_k - measured) <= 0.05, (est, measured)
    # the server's second rounding is what matters here: casting alone predicts far better
    assert measured < 0.97
    assert _plain_estimate(data, datatype) - measured > 0.05


@pytest.mark.parametrize("datatype", ["float16", "bfloat16"])
def test_extrapolated_estimate_is_within_005_of_the_server(redis_client, datatype):
    data = cone(4000, 48, 0.15, clusters=2, seed=5)
    sample = data[:1000].astype(np.float64)  # the planner reads the first documents
    scheme = vectors.choose_scheme("float32", datatype, "COSINE", sample)
    est = estimate_recall(sample, source_datatype="float32", source_metric="COSINE",
                          target_datatype=datatype, target_metric="COSINE", scheme=scheme,
                          documents=4000)
    measured = _measured(redis_client, data, datatype)
    assert est is not None and est.recall_at_k < est.recall_on_sample
    assert abs(est.recall_at_k - measured) <= 0.05, (est, measured)
