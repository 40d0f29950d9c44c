"""Plan-time estimate of recall@k for a vector field's change, from the sampled vectors alone.

The question a user asks before quantizing or changing a metric: of the ``k`` documents a KNN
query returns today, how many will it still return afterwards? The planner answers it without
touching the server: it takes query vectors from the sample (a fixed seed), finds their exact
neighbours among the sampled vectors as the source index would (source values, source metric)
and as the target index would (the values converted with the plan's recorded scheme, the
target metric), and reports the mean overlap.

What the server keeps (why a plain estimate is not enough)
----------------------------------------------------------
The vector index does not compare the bytes of a document as they are. For ``COSINE`` it
normalises every stored vector (and every query vector) when it receives it, *in the index's
datatype*: a ``FLOAT16`` or ``BFLOAT16`` vector is widened to float32, divided by its norm and
rounded to float16 / bfloat16 again, so it is rounded twice; a ``FLOAT32`` one is divided in
float32. ``INT8`` / ``UINT8`` keep their integers and a float norm beside them. Distances are
``1 - dot`` for COSINE and IP and the squared euclidean distance for L2. On vectors in a narrow
cone (embeddings that all point roughly the same way, which is common), the second rounding
moves a bfloat16 vector by as much as its neighbours are apart: an estimate that casts the
values and computes cosine in float64 said 0.97 where the server measured 0.48 (1,000 64-d
vectors, spread 0.1 around one direction); with :func:`stored_form`, which does what the server
does, the estimate is 0.46.

A denser index
--------------
Neighbours in the full index are closer together than in a sample of it, so the same rounding
swaps more of them. When the index holds more documents than the sample, the estimate is
extrapolated: recall on nested sub-samples (a quarter, half and all of the sample, the same
query vectors) gives its slope per doubling of the corpus, continued to the index's size (never
above the sample's figure). ``recall_on_sample`` keeps the figure before extrapolation. Apply
measures the real figure on the live indexes (:mod:`rvlm.core.quality.recall`).

Cost: ``queries x sample x dims`` multiply-adds per corpus size, in blocks of query rows, so
memory stays ``O(block x sample)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from rvlm.core import vectors
from rvlm.core.plugins.documents import Document

DEFAULT_K = 10
#: Query vectors the estimate takes from the sample (at most; never more than the sample).
ESTIMATE_QUERIES = 200
SEED = 0
#: Rows of the query x corpus distance matrix computed at once.
_BLOCK = 64


@attrs.frozen(kw_only=True)
class RecallEstimate:
    """An estimate of recall@k: ``recall_at_k`` for an index of ``documents`` documents,
    ``recall_on_sample`` among the ``sample`` sampled vectors (equal when the sample is the
    whole index, or too small to extrapolate from), over ``queries`` query vectors."""

    recall_at_k: float
    recall_on_sample: float
    k: int
    sample: int
    queries: int
    documents: int

    def to_dict(self) -> dict[str, Any]:
        """The plan's ``rvlm.quality.<field>`` entry (rounded: plans are compared byte for
        byte)."""
        out: dict[str, Any] = {"estimated_recall_at_k": round(self.recall_at_k, 4),
                               "k": self.k, "sample": self.sample, "queries": self.queries}
        if self.documents > self.sample:
            out["recall_on_sample"] = round(self.recall_on_sample, 4)
            out["documents"] = self.documents
        return out


def vector_matrix(documents: Sequence[Document], path: str, storage_type: str, datatype: str,
                  dims: int) -> np.ndarray:
    """The sampled documents' vectors at ``path`` as an (n, dims) float64 array of their values.

    Hash values are raw bytes in ``datatype``; JSON values are lists of numbers. Documents
    without a vector of the right size (absent, or an indexing failure) are left out."""
    values = [d.get(path) for d in documents]
    if storage_type == "json":
        rows = [v for v in values if isinstance(v, list) and len(v) == dims
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)]
        return np.asarray(rows, dtype=np.float64).reshape(-1, dims)
    size = dims * vectors.WIDTH[datatype]
    raws = [v for v in values if isinstance(v, bytes) and len(v) == size]
    if not raws:
        return np.zeros((0, dims))
    return vectors.decode_batch(raws, datatype, dims)


def _round_to(values: np.ndarray, datatype: str) -> np.ndarray:
    """float32 values rounded to ``datatype`` (float16 or bfloat16), as float32 again."""
    if datatype == "float16":
        with np.errstate(over="ignore"):
            return values.astype(np.float16).astype(np.float32)
    raws = vectors.encode_batch(values, "bfloat16")
    return vectors.decode_batch(raws, "bfloat16", values.shape[1]).astype(np.float32)


def stored_form(values: np.ndarray, datatype: str, metric: str) -> np.ndarray:
    """The vectors as the server's vector index holds them, for distance computations.

    ``values`` are (n, dims) numbers already in ``datatype``'s domain (what the document
    holds). For COSINE, each vector divided by its norm the way the server does it: float16
    and bfloat16 in float32 then rounded back to the datatype, float32 in float32 (norm summed
    in float64), float64 in float64, int8/uint8 not rounded (the server keeps the integers and
    a float norm). For L2 and IP, the values themselves. A zero vector stays zero. Returns a
    float64 array."""
    metric = metric.upper()
    if metric != "COSINE":
        return np.asarray(values, dtype=np.float64)
    if datatype in ("float16", "bfloat16"):
        f32 = np.asarray(values, dtype=np.float32)
        norm = np.sqrt(np.einsum("ij,ij->i", f32, f32, dtype=np.float32))[:, None]
        unit = f32 / np.where(norm > 0, norm, np.float32(1))
        return _round_to(unit, datatype).astype(np.float64)
    if datatype == "float32":
        f32 = np.asarray(values, dtype=np.float32)
        wide = f32.astype(np.float64)
        norm = np.sqrt(np.einsum("ij,ij->i", wide, wide)).astype(np.float32)[:, None]
        return (f32 / np.where(norm > 0, norm, np.float32(1))).astype(np.float64)
    wide = np.asarray(values, dtype=np.float64)
    norm = np.sqrt(np.einsum("ij,ij->i", wide, wide))[:, None]
    return wide / np.where(norm > 0, norm, 1.0)


def distances(queries: np.ndarray, corpus: np.ndarray, metric: str) -> np.ndarray:
    """(q, n) distances between stored forms: ``1 - dot`` for COSINE and IP, the squared
    euclidean distance for L2 (what the server sorts KNN answers by)."""
    dots = queries @ corpus.T
    if metric.upper() == "L2":
        qn = np.einsum("ij,ij->i", queries, queries)[:, None]
        cn = np.einsum("ij,ij->i", corpus, corpus)[None, :]
        return np.maximum(qn + cn - 2.0 * dots, 0.0)
    return 1.0 - dots


def converted_values(sample: np.ndarray, scheme: vectors.QuantizationScheme) -> np.ndarray:
    """The sampled source values converted with ``scheme`` exactly as apply converts documents
    (the bytes path of :func:`rvlm.core.vectors.convert_bytes_batch`), as target-domain
    numbers (float64; integers for int8/uint8)."""
    src, tgt = scheme.source_datatype, scheme.target_datatype
    if src == tgt or len(sample) == 0:
        return np.asarray(sample, dtype=np.float64)
    dims = sample.shape[1]
    raws = vectors.encode_batch(sample, src)
    return vectors.decode_batch(vectors.convert_bytes_batch(raws, dims, scheme), tgt, dims)


def overlap(truth: np.ndarray, candidate: np.ndarray, k: int) -> np.ndarray:
    """Per query row, the share of the candidate's ``k`` nearest that the truth accepts.

    ``truth`` and ``candidate`` are (q, n) distance matrices over the same corpus. The truth
    accepts its ``k`` nearest and every other document exactly as near as its k-th (a tie at
    the boundary is not a miss). Returns a float array of length q."""
    k = min(k, truth.shape[1])
    kth = np.partition(truth, k - 1, axis=1)[:, k - 1:k]
    accepted = truth <= kth
    picked = np.argsort(candidate, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(accepted, picked, axis=1).sum(axis=1)
    return np.minimum(hits, k) / k


def _mean_recalls(src: np.ndarray, tgt: np.ndarray, queries: int, sizes: Sequence[int], k: int,
                  src_metric: str, tgt_metric: str) -> list[float]:
    """Mean recall@k of the first ``queries`` rows against the first ``size`` rows, for each
    size (the distances are computed once, against the largest corpus, a block at a time)."""
    n = max(sizes)
    scores: list[list[np.ndarray]] = [[] for _ in sizes]
    for start in range(0, queries, _BLOCK):
        stop = min(queries, start + _BLOCK)
        truth = distances(src[start:stop], src[:n], src_metric)
        cand = distances(tgt[start:stop], tgt[:n], tgt_metric)
        for i, m in enumerate(sizes):
            scores[i].append(overlap(truth[:, :m], cand[:, :m], k))
    return [float(np.concatenate(s).mean()) for s in scores]


def estimate_recall(
    sample: np.ndarray,
    *,
    source_datatype: str,
    source_metric: str,
    target_datatype: str,
    target_metric: str,
    scheme: vectors.QuantizationScheme | None = None,
    k: int = DEFAULT_K,
    queries: int = ESTIMATE_QUERIES,
    documents: int | None = None,
    seed: int = SEED,
) -> RecallEstimate | None:
    """Estimate recall@k of exact KNN after a datatype and/or metric change.

    ``sample`` is an (n, dims) array of source values (:func:`vector_matrix`); ``scheme``
    converts them to ``target_datatype`` (None when the datatype does not change). Query
    vectors are ``min(queries, n)`` sampled rows picked with ``seed``; each query's own
    document is in the corpus, as it is when apply measures. ``documents`` is the number of
    documents in the index (the extrapolation target, see the module docstring). Rows with
    NaN or inf are left out. Returns None when fewer than two vectors are usable.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    values = np.asarray(sample, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"sample must be (n, dims), got shape {values.shape}")
    values = values[np.isfinite(values).all(axis=1)]
    n = len(values)
    if n < 2:
        return None
    order = np.random.default_rng(seed).permutation(n)
    values = values[order]
    if scheme is not None and scheme.source_datatype != scheme.target_datatype:
        target_values = converted_values(values, scheme)
    else:
        target_values = values
    src = stored_form(values, source_datatype, source_metric)
    tgt = stored_form(target_values, target_datatype, target_metric)
    docs = max(int(documents or n), n)
    sizes = [n // 4, n // 2, n]
    extrapolate = docs > n and sizes[0] >= 5 * k
    q = min(queries, sizes[0] if extrapolate else n)
    recalls = _mean_recalls(src, tgt, q, sizes if extrapolate else [n], k, source_metric,
                            target_metric)
    on_sample = figure = recalls[-1]
    if extrapolate:
        xs = np.log2(np.asarray(sizes, dtype=np.float64))
        slope = min(0.0, float(np.polyfit(xs, np.asarray(recalls), 1)[0]))
        figure = float(np.clip(on_sample + slope * math.log2(docs / n), 0.0, on_sample))
    return RecallEstimate(recall_at_k=figure, recall_on_sample=on_sample, k=min(k, n),
                          sample=n, queries=q, documents=docs)
