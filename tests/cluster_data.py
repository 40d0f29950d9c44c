"""Data and checks shared by the cluster tests: a hash-tagged index with hash or JSON
documents (vectors, some TTLs), snapshots of documents, plan + apply through the public API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rvlm.core.redis.resp import to_int, to_map

DIMS = 8
SCHEMA_HASH = ["title", "TEXT", "tag", "TAG", "vec", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32",
               "DIM", str(DIMS), "DISTANCE_METRIC", "COSINE"]
SCHEMA_JSON = ["$.title", "AS", "title", "TEXT", "$.tag", "AS", "tag", "TAG", "$.vec", "AS",
               "vec", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", str(DIMS),
               "DISTANCE_METRIC", "COSINE"]


def vectors(n: int) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((n, DIMS)).astype(np.float32)


def load(client: Any, storage: str, n: int, *, index: str = "{t1}idx",
         prefix: str = "{t1}doc:", ttl_every: int = 5, wait: bool = True) -> list[bytes]:
    """Create ``index`` over ``prefix`` and ``n`` documents (every ``ttl_every``-th with a
    TTL of 10 minutes); wait until all are indexed (``wait``). Returns the keys."""
    schema = SCHEMA_JSON if storage == "json" else SCHEMA_HASH
    client.execute_command("FT.CREATE", index, "ON", storage.upper(), "PREFIX", "1", prefix,
                           "SCHEMA", *schema)
    vecs = vectors(n)
    keys = [f"{prefix}{i}".encode() for i in range(n)]
    pipe = client.pipeline(transaction=False)
    for i, k in enumerate(keys):
        if storage == "json":
            pipe.execute_command("JSON.SET", k, "$", json.dumps(
                {"title": f"hello {i}", "tag": f"t{i % 4}", "vec": vecs[i].tolist()}))
        else:
            pipe.hset(k, mapping={"title": f"hello {i}", "tag": f"t{i % 4}",
                                  "vec": vecs[i].tobytes()})
        if i % ttl_every == 0:
            pipe.pexpire(k, 600_000)
    pipe.execute()
    if wait:
        wait_indexed(client, index, n)
    return keys


def wait_indexed(client: Any, index: str, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = to_map(client.execute_command("FT.INFO", index))
        if to_int(info.get("num_docs")) == n and not to_int(info.get("indexing")):
            return
        time.sleep(0.05)
    raise AssertionError(f"{index} did not index {n} documents")


def snapshot(client: Any, prefix: bytes, n: int) -> dict[bytes, Any]:
    """Every document ``prefix + i``: its content (hash fields or JSON text) and whether it
    has a TTL (a TTL between 0 and 10 minutes)."""
    out: dict[bytes, Any] = {}
    for i in range(n):
        k = prefix + str(i).encode()
        kind = client.type(k)
        if kind in (b"hash", "hash"):
            value: Any = client.hgetall(k)
        elif kind in (b"ReJSON-RL", "ReJSON-RL"):
            value = client.execute_command("JSON.GET", k, "$")
        else:
            value = None
        ttl = client.pttl(k)
        out[k] = (value, 0 < ttl <= 600_000 if value is not None else None)
    return out


def total(client: Any, index: str, query: str = "*") -> int:
    reply = client.execute_command("FT.SEARCH", index, query, "LIMIT", "0", "0")
    return to_int(to_map(reply)["total_results"] if isinstance(reply, dict) else reply[0])


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``rvlm ARGS`` in a fresh process (crash tests: RVLM_FAULT in ``env``)."""
    base = {k: v for k, v in os.environ.items() if k not in ("RVLM_FAULT", "RVLM_CLUSTER")}
    return subprocess.run([sys.executable, "-m", "rvlm", *args], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)


def write_patch(path: Path, changes: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"version": 1, "changes": changes}))
    return path


def one_tag_per_primary(cluster) -> list[str]:
    """Hash tags ``t<N>`` whose slots are owned by different primaries, one per primary."""
    tags: dict[int, str] = {}
    for n in range(1, 200):
        port = cluster.owner_of(f"{{t{n}}}".encode()).port
        tags.setdefault(port, f"t{n}")
        if len(tags) == len(cluster.primary_servers()):
            return sorted(tags.values())
    raise AssertionError("no hash tag for some primary")
