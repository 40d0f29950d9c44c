"""Data and checks for the batch tests: small hash indexes, snapshots, query answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rvlm.core.redis.connection import read_index

DIMS = 4
RENAME_PATCH = """version: 1
changes:
  rename_fields:
    - {old_name: title, new_name: headline}
"""


def make_index(client: Any, name: str, prefix: str, n: int, *, title: bool = True,
               seed: int = 0) -> None:
    """A hash index ``name`` over ``{prefix}{i}``: title/t text, g tag, v FLOAT32 vector."""
    fields = ["t", "TEXT", "g", "TAG", "v", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM",
              str(DIMS), "DISTANCE_METRIC", "L2"]
    if title:
        fields = ["title", "TEXT", *fields]
    client.execute_command("FT.CREATE", name, "ON", "HASH", "PREFIX", "1", prefix, "SCHEMA",
                           *fields)
    rng = np.random.default_rng(seed)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        doc = {"t": f"hello doc {i}", "g": f"g{i % 3}",
               "v": rng.standard_normal(DIMS).astype(np.float32).tobytes()}
        if title:
            doc["title"] = f"title number {i}"
        pipe.hset(f"{prefix}{i}", mapping=doc)
    pipe.execute()
    wait_indexed(client, name)


def wait_indexed(client: Any, name: str) -> None:
    for _ in range(400):
        stats = read_index(client, name).stats
        if not stats.indexing and stats.percent_indexed >= 1.0:
            return
        time.sleep(0.025)


def snapshot(client: Any, prefix: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash under ``prefix``: key -> field -> bytes."""
    return {k: client.hgetall(k) for k in sorted(client.scan_iter(match=prefix + "*",
                                                                  count=1000))}


def renamed(snap: dict[bytes, dict[bytes, bytes]]) -> dict[bytes, dict[bytes, bytes]]:
    """What ``snapshot`` must read after title -> headline."""
    out = {}
    for k, doc in snap.items():
        d = dict(doc)
        if b"title" in d:
            d[b"headline"] = d.pop(b"title")
        out[k] = d
    return out


def _ids(reply: Any) -> list[bytes]:
    """Document ids of an FT.SEARCH reply, RESP3 (a map) or RESP2 (ids between field lists)."""
    if isinstance(reply, dict):
        rows = reply.get(b"results") or reply.get("results") or []
        return [r.get(b"id", r.get("id")) for r in rows]
    return [x for x in reply[1:] if not isinstance(x, list)]


def answers(client: Any, index: str, text_field: str) -> dict[str, list[bytes]]:
    """Query answers that must not change: a text query, a tag filter, a KNN."""
    wait_indexed(client, index)
    q = np.ones(DIMS, dtype=np.float32).tobytes()
    return {
        "text": sorted(_ids(client.execute_command(
            "FT.SEARCH", index, f"@{text_field}:number", "LIMIT", "0", "1000", "RETURN", "0",
            "DIALECT", "2"))),
        "tag": sorted(_ids(client.execute_command(
            "FT.SEARCH", index, "@g:{g1}", "LIMIT", "0", "1000", "RETURN", "0", "DIALECT",
            "2"))),
        "knn": _ids(client.execute_command(
            "FT.SEARCH", index, "*=>[KNN 5 @v $q AS d]", "PARAMS", "2", "q", q, "SORTBY", "d",
            "RETURN", "1", "d", "DIALECT", "2")),
    }


def rvlm(*args: str, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the ``rvlm`` CLI in a fresh process."""
    full = {k: v for k, v in os.environ.items() if k != "RVLM_FAULT"}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "rvlm", *args], env=full, capture_output=True,
                          text=True, timeout=timeout, check=False)


def write_patch(tmp: Path, text: str = RENAME_PATCH, name: str = "patch.yaml") -> Path:
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return p
