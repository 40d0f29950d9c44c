"""Run queries against one index and read their answers, the same under RESP2 and RESP3.

An :class:`Answer` is what a query returned: document keys in order, their KNN distances when
the query asked for them, the total count, or the server's error. KNN answers for recall are
asked for with ``SORTBY`` on the distance (without it the server returns KNN results in
document-id order, which a migration renumbers) and with more results than ``k`` so that a tie
at the k-th distance is not counted as a miss (see :mod:`rvlm.core.quality.recall`).

Query vectors for recall come from stored documents: :func:`draw_keys` picks them with a fixed
seed among the first :data:`KEY_POOL` documents of the index (one ``FT.SEARCH`` of keys only),
:func:`read_vectors` reads their vectors as bytes in the index's datatype.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import redis

from rvlm.core.convert import items
from rvlm.core.redis.resp import to_float, to_int, to_list, to_map, to_str

#: The query parameter that carries a recall query's vector, and the distance's alias.
VECTOR_PARAM = "rvlm_vec"
DISTANCE = "__rvlm_distance"
#: Documents (the first, in document-id order) that recall query vectors are drawn from.
KEY_POOL = 20_000

_ATTR_SAFE = re.compile(r"[A-Za-z0-9_]")


@attrs.frozen(kw_only=True)
class Answer:
    """What one query returned. ``keys`` in the order the server gave them (decoded with
    :func:`~rvlm.core.redis.resp.to_str`), ``scores`` the KNN distances of the same documents
    (empty unless asked for), ``total`` the server's count, ``error`` its error message (then
    nothing else is set)."""

    keys: tuple[str, ...] = attrs.field(default=(), converter=items)
    scores: tuple[float, ...] = attrs.field(default=(), converter=items)
    total: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        out: dict[str, Any] = {"total": self.total, "keys": list(self.keys)}
        if self.scores:
            out["scores"] = list(self.scores)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Answer:
        """Rebuild from :meth:`to_dict`; ValueError (or TypeError) naming what is wrong."""
        if "error" in data:
            if not isinstance(data["error"], str):
                raise ValueError("error must be a string")
            return cls(error=data["error"])
        keys, scores, total = data.get("keys"), data.get("scores", []), data.get("total")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError("keys must be a list of strings")
        if not isinstance(scores, list) or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
            raise ValueError("scores must be a list of numbers")
        if scores and len(scores) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(scores)} scores")
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise ValueError("total must be a non-negative integer")
        return cls(keys=keys, scores=[float(s) for s in scores], total=total)


def escape_attribute(name: str) -> str:
    """An attribute name as it may follow ``@`` in a query (other characters backslashed)."""
    return "".join(c if _ATTR_SAFE.fullmatch(c) else "\\" + c for c in name)


def parse_search(reply: Any, score: str | None = None) -> tuple[int, list[str], list[float]]:
    """(total, keys, scores) of an ``FT.SEARCH`` reply, RESP2 (list) or RESP3 (map).

    ``score`` names the returned field that holds each document's distance (``RETURN 1
    score``); without it the reply is read as NOCONTENT (RESP2: keys only) and scores are
    empty."""
    keys: list[str] = []
    scores: list[float] = []
    if isinstance(reply, Mapping):
        m = to_map(reply)
        for row in to_list(m.get("results")):
            r = to_map(row)
            keys.append(to_str(r.get("id")))
            if score is not None:
                scores.append(to_float(to_map(r.get("extra_attributes")).get(score), math.nan))
        return to_int(m.get("total_results")), keys, scores
    items = to_list(reply)
    total = to_int(items[0]) if items else 0
    if score is None:
        return total, [to_str(k) for k in items[1:]], scores
    rest = items[1:]
    for key, fields in zip(rest[::2], rest[1::2], strict=False):
        keys.append(to_str(key))
        scores.append(to_float(to_map(fields).get(score), math.nan))
    return total, keys, scores


def knn_query(field: str, fetch: int) -> str:
    """The query text of a pure KNN query over vector attribute ``field``."""
    return f"*=>[KNN {int(fetch)} @{escape_attribute(field)} ${VECTOR_PARAM} AS {DISTANCE}]"


def knn_command(index: str, field: str, vector: bytes, fetch: int) -> list[Any]:
    """``FT.SEARCH`` arguments for the ``fetch`` nearest neighbours of ``vector``, sorted by
    distance, returning only the distance."""
    return ["FT.SEARCH", index, knn_query(field, fetch), "PARAMS", "2", VECTOR_PARAM, vector,
            "SORTBY", DISTANCE, "ASC", "RETURN", "1", DISTANCE, "LIMIT", "0", str(int(fetch)),
            "TIMEOUT", "0", "DIALECT", "2"]


#: Seconds of server work one pipeline of KNN queries should take: the server answers a
#: pipeline only once it ran every query in it, and redis-py's default socket timeout is 5 s
#: (a FLAT index of 1M vectors takes 0.05-0.5 s per query, so 50 at once could time out).
PIPELINE_SECONDS = 0.5


def knn_answers(client: redis.Redis, index: str, field: str, query_vectors: Sequence[bytes],
                fetch: int, chunk: int = 50) -> list[Answer]:
    """One :class:`Answer` (keys and distances, nearest first) per query vector, pipelined in
    chunks of up to ``chunk``: the first query goes alone, and how long it took sizes the
    chunks after it (about :data:`PIPELINE_SECONDS` each). A query the server refuses (say
    the field is gone, or the vector has the wrong size) gives an Answer with ``error``; a
    lost connection raises."""
    out: list[Answer] = []
    start, size = 0, 1
    while start < len(query_vectors):
        part = query_vectors[start:start + size]
        began = time.monotonic()
        pipe = client.pipeline(transaction=False)
        for vec in part:
            pipe.execute_command(*knn_command(index, field, vec, fetch))
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, redis.ResponseError):
                out.append(Answer(error=str(reply)))
                continue
            total, keys, scores = parse_search(reply, DISTANCE)
            out.append(Answer(keys=keys, scores=scores, total=total))
        start += len(part)
        each = (time.monotonic() - began) / len(part)
        size = max(1, min(chunk, int(PIPELINE_SECONDS / each) if each > 0 else chunk))
    return out


def search(client: redis.Redis, index: str, query: str, params: Mapping[str, Any] | None = None,
           *, limit: int, sort_by: str | None = None) -> Answer:
    """Keys (NOCONTENT) of ``FT.SEARCH index query``, the first ``limit``, DIALECT 2;
    ``sort_by`` adds ``SORTBY <it> ASC``. A refused query gives an Answer with ``error``."""
    args: list[Any] = ["FT.SEARCH", index, query]
    if params:
        args += ["PARAMS", str(2 * len(params))]
        for name, value in params.items():
            args += [name, value]
    args.append("NOCONTENT")
    if sort_by is not None:
        args += ["SORTBY", sort_by, "ASC"]
    args += ["LIMIT", "0", str(int(limit)), "DIALECT", "2"]
    try:
        reply = client.execute_command(*args)
    except redis.ResponseError as exc:
        return Answer(error=str(exc))
    total, keys, _ = parse_search(reply)
    return Answer(keys=keys, total=total)


def count_documents(client: redis.Redis, index: str) -> int:
    """How many documents ``index`` holds (``FT.SEARCH index * LIMIT 0 0``: a count, no
    document)."""
    reply = client.execute_command("FT.SEARCH", index, "*", "LIMIT", "0", "0", "TIMEOUT", "0",
                                   "DIALECT", "2")
    return parse_search(reply)[0]


def draw_keys(client: redis.Redis, index: str, count: int, seed: int,
              pool: int = KEY_POOL) -> list[bytes]:
    """``count`` document keys of ``index`` picked with ``seed`` among its first ``pool``
    documents (document-id order), in that order. Deterministic for the same index."""
    if count <= 0:
        return []
    reply = client.execute_command("FT.SEARCH", index, "*", "NOCONTENT", "LIMIT", "0",
                                   str(int(pool)), "TIMEOUT", "0", "DIALECT", "2")
    _, keys, _ = parse_search(reply)
    if not keys:
        return []
    import numpy as np

    picked = np.sort(np.random.default_rng(seed).choice(len(keys), min(count, len(keys)),
                                                        replace=False))
    return [keys[int(i)].encode("utf-8", "surrogateescape") for i in picked]


def read_vectors(client: redis.Redis, storage_type: str, keys: Sequence[bytes], path: str,
                 datatype: str, dims: int) -> list[tuple[bytes, bytes]]:
    """(key, vector) for each key whose document holds a vector of ``dims`` at ``path``:
    hash values as stored (``dims x width`` bytes), JSON arrays encoded to ``datatype`` as
    the index does. Documents without one (or with a wrong-size one) are left out."""
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for k in keys:
        if storage_type == "json":
            pipe.execute_command("JSON.GET", k, path)
        else:
            pipe.hget(k, path)
    import numpy as np

    from rvlm.core import vectors

    out: list[tuple[bytes, bytes]] = []
    size = dims * vectors.WIDTH[datatype]
    for key, raw in zip(keys, pipe.execute(raise_on_error=False), strict=True):
        if raw is None or isinstance(raw, Exception):
            continue
        if storage_type != "json":
            if isinstance(raw, bytes) and len(raw) == size:
                out.append((key, raw))
            continue
        try:
            found = json.loads(raw)
        except ValueError:
            continue
        value = found[0] if isinstance(found, list) and found else None
        if not (isinstance(value, list) and len(value) == dims and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)):
            continue
        try:
            out.append((key, vectors.encode_batch(np.asarray([value], dtype=np.float64),
                                                  datatype)[0]))
        except vectors.VectorError:
            continue
    return out
