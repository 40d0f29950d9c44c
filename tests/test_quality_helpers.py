"""Helpers for the quality tests: clustered and random vector data, indexes over them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from test_apply_helpers import wait_indexed

from rvlm.core import vectors


def cone(n: int, dims: int, spread: float, clusters: int = 1, seed: int = 1) -> np.ndarray:
    """``n`` float32 vectors in ``clusters`` narrow cones: unit centres plus noise of
    ``spread`` (relative to the centre's length), like embeddings that mostly agree."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dims))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    picked = centres[rng.integers(0, clusters, n)]
    return (picked + spread * rng.normal(size=(n, dims)) / np.sqrt(dims)).astype(np.float32)


def random_vectors(n: int, dims: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dims)).astype(np.float32)


def vector_index(client: Any, name: str, prefix: str, dims: int, *, datatype: str = "FLOAT32",
                 metric: str = "COSINE", algorithm: str = "FLAT", storage: str = "hash",
                 extra: Sequence[str] = (), params: Sequence[str] = (),
                 field: str = "emb") -> None:
    """FT.CREATE an index with one vector field ``field`` (and ``extra`` schema items)."""
    attrs = ["TYPE", datatype, "DIM", str(dims), "DISTANCE_METRIC", metric, *params]
    where = [f"$.{field}", "AS", field] if storage == "json" else [field]
    client.execute_command("FT.CREATE", name, "ON", storage.upper(), "PREFIX", "1", prefix,
                           "SCHEMA", *extra, *where, "VECTOR", algorithm, str(len(attrs)),
                           *attrs)


def load(client: Any, prefix: str, rows: Sequence[bytes] | np.ndarray, *,
         storage: str = "hash", datatype: str = "float32", fields: Any = None,
         field: str = "emb") -> None:
    """Write documents ``{prefix}{i}``: the vector (bytes for hash, numbers for JSON) and the
    extra ``fields(i)`` mapping, if given."""
    pipe = client.pipeline(transaction=False)
    for i, row in enumerate(rows):
        extra = fields(i) if fields else {}
        if storage == "json":
            values = row if not isinstance(row, bytes) else vectors.decode(
                row, datatype, len(row) // vectors.WIDTH[datatype])
            doc = {field: [float(x) for x in values], **extra}
            pipe.execute_command("JSON.SET", f"{prefix}{i}", "$", json.dumps(doc))
        else:
            raw = row if isinstance(row, bytes) else np.asarray(row, np.float32).tobytes()
            pipe.hset(f"{prefix}{i}", mapping={field: raw, **extra})
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()


def converted_index(client: Any, name: str, prefix: str, data: np.ndarray, datatype: str,
                    *, metric: str = "COSINE") -> vectors.QuantizationScheme:
    """What a quantize migration leaves: ``data`` converted from float32 with the scheme the
    planner would choose, indexed as ``datatype``. Returns the scheme."""
    scheme = vectors.choose_scheme("float32", datatype, metric, data)
    raws = vectors.convert_bytes_batch(vectors.encode_batch(data, "float32"), data.shape[1],
                                       scheme)
    vector_index(client, name, prefix, data.shape[1], datatype=datatype.upper(), metric=metric)
    load(client, prefix, raws)
    wait_indexed(client, name)
    return scheme


def prefix_map(old: str, new: str) -> Any:
    """A key map from documents under ``old`` to the same ones under ``new``."""
    return lambda key: new + key[len(old):] if key.startswith(old) else key
