"""Reading a sample of an index's documents: read-only, small, for people and plugins.

* :func:`sample_keys`: the first keys of an index in document-id order (deterministic);
* :func:`last_failed_key`: the document the index last failed to index, which no query returns;
* :func:`read_documents`: hash fields or JSON paths of given keys, ``MISSING`` where absent.

The planner uses these to calibrate and check changes, ``rvlm estimate`` to measure value sizes,
and plugins reach :func:`read_documents` through ``PlanContext.read_documents`` and
``ApplyContext.read_documents``. The executor's hot path does not: it reads batches with
:func:`rvlm.core.redis.docio.read.read_batch`, which leaves absent keys out, reads TTLs and
whole JSON documents, and is tuned for throughput.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis

from rvlm.core.plugins.documents import MISSING, Document
from rvlm.core.redis.resp import to_list, to_map, to_str


def as_bytes(value: Any) -> bytes:
    """A key from a reply (bytes, or str from a decoding client) as bytes."""
    return value if isinstance(value, bytes) else str(value).encode()


def sample_keys(client: redis.Redis, index: str, count: int) -> list[bytes]:
    """The first ``count`` document keys of an index, in document-id order (deterministic)."""
    if count <= 0:
        return []
    reply = client.execute_command("FT.SEARCH", index, "*", "NOCONTENT", "LIMIT", "0", str(count),
                                   "TIMEOUT", "0", "DIALECT", "2")
    if isinstance(reply, dict) or (hasattr(reply, "get") and not isinstance(reply, list)):
        results = to_list(reply.get(b"results", reply.get("results", [])))
        return [as_bytes(r.get(b"id", r.get("id"))) for r in results]
    items = to_list(reply)
    return [as_bytes(k) for k in items[1:]]


def last_failed_key(client: redis.Redis, index: str) -> bytes | None:
    """The key of the last document the index failed to index (FT.INFO ``Index Errors``), or
    None. Such documents never appear in query results, so a sample taken by query misses
    exactly the document most likely to break a change."""
    try:
        info = to_map(client.execute_command("FT.INFO", index))
        key = to_map(info.get("Index Errors")).get("last indexing error key")
    except (redis.ResponseError, ValueError):
        return None
    if key is None or to_str(key) in ("", "N/A"):
        return None
    return as_bytes(key)


def read_documents(client: redis.Redis, storage_type: str, keys: Sequence[bytes],
                   names: Sequence[str]) -> list[Document]:
    """Read hash fields or JSON paths of ``keys`` (MISSING where absent). Read-only.

    One :class:`~rvlm.core.plugins.documents.Document` per key asked for, an absent key
    included (all its values MISSING). Hash values are bytes; a JSON value is the first match
    of its path, decoded."""
    if not keys or not names:
        return [Document(k, {}) for k in keys]
    pipe = client.pipeline(transaction=False)
    for k in keys:
        if storage_type == "json":
            pipe.execute_command("JSON.GET", k, *names)
        else:
            pipe.hmget(k, list(names))
    docs = []
    for k, raw in zip(keys, pipe.execute(), strict=True):
        values: dict[str, Any] = {}
        if storage_type == "json":
            if raw is not None:
                decoded = json.loads(raw)
                if len(names) == 1:
                    decoded = {names[0]: decoded}
                for n in names:
                    found = decoded.get(n, [])
                    values[n] = found[0] if found else MISSING
            else:
                values = {n: MISSING for n in names}
        else:
            values = {n: (MISSING if v is None else v) for n, v in zip(names, raw, strict=True)}
        docs.append(Document(k, values))
    return docs
