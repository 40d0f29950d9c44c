"""A small hash index with every field type, on the real server from rvlm's pytest fixture."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis

INDEX = "movies"
PREFIX = "movie:"
COUNT = 40
DIMS = 4
GENRES = ["drama", "comedy", "sci fi", "horror"]


def vector(i: int) -> np.ndarray:
    """A deterministic float32 vector per document."""
    return np.random.default_rng(i).normal(size=DIMS).astype(np.float32)


def source_doc(i: int) -> dict[bytes, bytes]:
    return {
        b"title": f"Movie {i} about {'space' if i % 2 else 'love'}".encode(),
        b"genre": f"{GENRES[i % 4]}, {GENRES[(i + 1) % 4]}".encode(),
        b"year": str(1990 + i).encode(),
        b"rating": str(i / 8).encode(),
        b"embedding": vector(i).tobytes(),
        b"location": f"{-0.1 + i / 100:.4f},{51.5 + i / 100:.4f}".encode(),
        b"desc": f"a film with the number {i}".encode(),
        b"notes": f"internal note {i}".encode(),
    }


def wait_indexed(client: redis.Redis, index: str, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        info = client.execute_command("FT.INFO", index)
        d = dict(zip(info[::2], info[1::2], strict=True))
        done = int(d[b"num_docs"]) + int(d[b"hash_indexing_failures"])
        if (done >= count and str(d[b"indexing"]) in ("0", "b'0'")) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def search(client: redis.Redis, index: str, query: str, *args: Any) -> list[bytes]:
    """Keys matched by a query (RESP2 client), in result order."""
    reply = client.execute_command("FT.SEARCH", index, query, *args, "NOCONTENT",
                                   "LIMIT", "0", "100", "DIALECT", "2")
    return list(reply[1:])


def knn(client: redis.Redis, index: str, query_vec: np.ndarray, k: int = 3) -> list[bytes]:
    return search(client, index, f"*=>[KNN {k} @embedding $q AS d]", "PARAMS", "2", "q",
                  query_vec.astype(np.float32).tobytes(), "SORTBY", "d")


@pytest.fixture
def r2(redis_client: redis.Redis, redis_url: str) -> Iterator[redis.Redis]:
    """A RESP2 bytes client on the database ``redis_client`` just cleaned."""
    client = redis.Redis.from_url(redis_url, protocol=2)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def movies(r2: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    """The ``movies`` hash index with COUNT documents; returns the originals by key."""
    r2.execute_command(
        "FT.CREATE", INDEX, "ON", "HASH", "PREFIX", "1", PREFIX, "SCHEMA",
        "title", "TEXT", "genre", "TAG", "year", "NUMERIC", "SORTABLE", "rating", "NUMERIC",
        "embedding", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", str(DIMS),
        "DISTANCE_METRIC", "COSINE", "location", "GEO", "desc", "AS", "description", "TEXT")
    originals = {}
    pipe = r2.pipeline(transaction=False)
    for i in range(COUNT):
        key = f"{PREFIX}{i}".encode()
        originals[key] = source_doc(i)
        pipe.hset(key, mapping=originals[key])
    pipe.pexpire(f"{PREFIX}0", 3_600_000)
    pipe.execute()
    wait_indexed(r2, INDEX, COUNT)
    return originals
