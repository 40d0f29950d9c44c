"""Reading documents for the executor: one pipeline per batch, under RESP2 and RESP3.

* :func:`read_batch` reads the values operations need (plus, for JSON, the whole document,
  which is what the backup keeps so a rollback restores it byte for byte, key order included);
  with ``whole=True`` every field of each hash (for a ``converts_to`` operation).
* :func:`read_ttls`, :func:`keys_exist`, :func:`fields_exist`: one command per key, pipelined;
  :func:`count_existing` and :func:`count_holding` answer "how many" for a page of keys in a
  few commands (the collision checks' common case: none).

Keys and hash values are ``bytes``; JSON values are decoded Python values. A field or path a
document does not have is :data:`~rvlm.core.plugins.documents.MISSING`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import repeat
from typing import Any

import attrs
import redis

from rvlm.core.plugins.documents import MISSING
from rvlm.core.redis import wire
from rvlm.core.redis.resp import to_bytes, to_int, to_map
from rvlm.core.redis.wire import raise_first

#: The root path of a JSON document; also the backup field name under which a JSON
#: document's whole text is kept.
JSON_ROOT = b"$"


@attrs.define
class ReadDoc:
    """One document as read: key, values by name (MISSING when absent), the raw JSON text
    of the whole document (JSON storage only) and the PTTL in ms (-1: none; None: not read,
    see :func:`read_ttls`)."""

    key: bytes
    values: dict[str, Any]
    raw_json: bytes | None = None
    pttl: int | None = -1


def read_batch(
    client: redis.Redis, storage_type: str, keys: Sequence[bytes], names: Sequence[str],
    *, whole: bool = False, ttl: bool = True,
) -> list[ReadDoc]:
    """Read ``names`` (hash fields or JSON paths) of every key, in one pipeline.

    Keys that do not exist (deleted since enumeration) are left out. Hash values are bytes;
    JSON values are the first match of each path, decoded. Returns docs in key order.
    ``whole=True`` (a ``converts_to`` operation): a hash is read with ``HGETALL`` (every
    field, names as ``str`` via :func:`~rvlm.core.redis.resp.to_str`); a JSON document's root is
    also under ``"$"``; the TTL is always read.

    One command per key (``HMGET``, ``HGETALL`` or ``JSON.GET``), plus ``PTTL`` when ``ttl``
    is true (``ttl=False`` leaves ``pttl`` None; the executor reads TTLs only for keys it
    renames, with :func:`read_ttls`). A hash whose ``HMGET`` is all nil may not exist: only
    those keys are checked with ``EXISTS``, in a second round trip.

    Samples (plan time, validate hooks) use :func:`rvlm.core.redis.docio.sample.read_documents`
    instead: it keeps a document for every key asked for, and nothing here is spent on it.
    """
    json_storage = storage_type == "json"
    hgetall = whole and not json_storage
    ttl = ttl or whole
    bnames = [to_bytes(n) for n in names]
    if not json_storage and not hgetall and bnames and not ttl:
        return _read_hash_fields(client, keys, names, bnames)
    # a command reading values, unless the key is only moved: then PTTL alone says whether
    # it exists (-2: no such key)
    probe = json_storage or hgetall or bool(bnames) or not ttl
    per = int(probe) + int(ttl)
    commands: list[tuple[Any, ...]] = []
    add = commands.append
    for k in keys:
        if json_storage:
            add((b"JSON.GET", k, b"$", *bnames))
        elif hgetall:
            add((b"HGETALL", k))
        elif bnames:
            add((b"HMGET", k, *bnames))
        elif not ttl:
            add((b"EXISTS", k))
        if ttl:
            add((b"PTTL", k))
    replies = wire.execute(client, commands)
    raise_first(replies)
    values_of: list[Any] = replies[0::per] if probe else [None] * len(keys)
    ttls: list[Any] = replies[int(probe)::per] if ttl else [None] * len(keys)
    exists: list[bool] | None = None
    if not json_storage and not ttl:
        unsure = ([i for i, v in enumerate(values_of) if v.count(None) == len(v)]
                  if bnames else list(range(len(keys))))
        if unsure:
            exists = [True] * len(keys)
            found = keys_exist(client, [keys[i] for i in unsure])
            for i, ok in zip(unsure, found, strict=True):
                exists[i] = ok
    out: list[ReadDoc] = []
    for i, k in enumerate(keys):
        value, pttl = values_of[i], ttls[i]
        if ttl and to_int(pttl) == -2:
            continue  # no such key
        if exists is not None and not exists[i]:
            continue
        values: dict[str, Any] = {}
        raw_json: bytes | None = None
        if json_storage:
            if value is None:
                continue
            parsed = json.loads(value)
            # one path -> plain array; several -> {path: [matches]}; "$" is always asked for
            doc_matches = parsed.get("$") if isinstance(parsed, dict) else parsed
            if not doc_matches:
                continue
            raw_json = json.dumps(doc_matches[0], separators=(",", ":"),
                                  ensure_ascii=False).encode("utf-8")
            for n in names:
                matches = parsed.get(n) if isinstance(parsed, dict) else None
                values[n] = matches[0] if matches else MISSING
            if whole:
                values[JSON_ROOT.decode()] = doc_matches[0]
        elif hgetall:
            values = to_map(value)
            if not values:
                continue  # a hash without fields does not exist
        elif bnames:
            for n, v in zip(names, value, strict=False):
                values[n] = MISSING if v is None else v
        out.append(ReadDoc(key=k, values=values, raw_json=raw_json,
                           pttl=to_int(pttl, -1) if ttl else None))
    return out


def _read_hash_fields(client: redis.Redis, keys: Sequence[bytes], names: Sequence[str],
                      bnames: Sequence[bytes]) -> list[ReadDoc]:
    """:func:`read_batch` of hash fields without TTLs (the executor's hot path): ``HMGET``
    per key; a key whose fields are all nil is checked with ``EXISTS`` (a second round trip,
    only for those) and left out when it does not exist."""
    replies = wire.execute(client, wire.same_tail(b"HMGET", keys, bnames))
    raise_first(replies)
    if len(names) == 1:
        only = names[0]
        unsure = [i for i, v in enumerate(replies) if v[0] is None]
        if not unsure:
            return list(map(ReadDoc, keys, [{only: v[0]} for v in replies], repeat(None),
                            repeat(None)))
        gone = _gone(client, keys, unsure)
        out: list[ReadDoc] = []
        add = out.append
        for i, k in enumerate(keys):
            v = replies[i][0]
            if v is None:
                if i in gone:
                    continue
                v = MISSING
            add(ReadDoc(k, {only: v}, None, None))
        return out
    # a column at a time: nil (None) becomes MISSING, then one dict per document, built in C
    # (a name the plan creates is nil in every document: its column is replaced whole)
    size = len(keys)
    columns: list[Sequence[Any]] = []
    holes = 0  # columns with a nil
    for col in zip(*replies, strict=True):
        if None in col:
            holes += 1
            columns.append([MISSING] * size if col.count(None) == size
                           else [MISSING if v is None else v for v in col])
        else:
            columns.append(col)
    docs = list(map(ReadDoc, keys, map(dict, map(zip, repeat(names), zip(*columns, strict=True))),
                    repeat(None), repeat(None)))
    if holes == len(columns):  # some document may hold none of the names
        width = len(names)
        gone = _gone(client, keys, [i for i, v in enumerate(replies)
                                    if v.count(None) == width])
        if gone:
            return [d for i, d in enumerate(docs) if i not in gone]
    return docs


def _gone(client: redis.Redis, keys: Sequence[bytes], unsure: Sequence[int]) -> set[int]:
    """Of the positions ``unsure`` in ``keys``, those whose key does not exist."""
    if not unsure:
        return set()
    found = keys_exist(client, [keys[i] for i in unsure])
    return {i for i, ok in zip(unsure, found, strict=True) if not ok}


def read_ttls(client: redis.Redis, keys: Sequence[bytes]) -> list[int]:
    """PTTL of each key in ms (-1: no TTL, -2: no such key), pipelined."""
    replies = wire.execute(client, [(b"PTTL", k) for k in keys])
    raise_first(replies)
    return [to_int(r, -1) for r in replies]


def keys_exist(client: redis.Redis, keys: Sequence[bytes]) -> list[bool]:
    """EXISTS for each key, pipelined (:func:`~rvlm.core.redis.wire.execute`); an error reply
    raises."""
    replies = wire.execute(client, [(b"EXISTS", k) for k in keys])
    raise_first(replies)
    return [bool(to_int(r)) for r in replies]


def count_existing(client: redis.Redis, keys: Sequence[bytes]) -> int:
    """How many of ``keys`` exist: one ``EXISTS k1 k2 ...`` per 1000 keys, all in one round
    trip (single node only: on a cluster the keys of one command must share a slot)."""
    replies = wire.execute(client, [(b"EXISTS", *keys[i:i + 1000])
                                    for i in range(0, len(keys), 1000)])
    raise_first(replies)
    return sum(to_int(r) for r in replies)


#: Counts the keys (KEYS) holding at least one of the hash fields (ARGV). Reads only; a key
#: of another type fails the script (``redis.call`` is faster than ``redis.pcall``).
_COUNT_HOLDING = b"""
local n = 0
for _, k in ipairs(KEYS) do
  for _, f in ipairs(ARGV) do
    if redis.call('HEXISTS', k, f) == 1 then
      n = n + 1
      break
    end
  end
end
return n
"""


def count_holding(client: redis.Redis, keys: Sequence[bytes],
                  names: Sequence[str]) -> int | None:
    """How many of the hashes ``keys`` hold at least one of the fields ``names``: one ``EVAL``
    per 1000 keys (the loop runs in the server; no reply per key), all in one round trip.
    None when the server refuses the script (ACL, disabled scripting, or a key of another
    type among ``keys``): then ask :func:`fields_exist`, which answers per key. Single node
    only: on a cluster the keys of one command must share a slot."""
    if not keys or not names:
        return 0
    bnames = [to_bytes(n) for n in names]
    replies = wire.execute(client, [(b"EVAL", _COUNT_HOLDING, len(part), *part, *bnames)
                                    for i in range(0, len(keys), 1000)
                                    if (part := keys[i:i + 1000])])
    if any(isinstance(r, Exception) for r in replies):
        return None
    return sum(to_int(r) for r in replies)


def fields_exist(
    client: redis.Redis, storage_type: str, keys: Sequence[bytes], names: Sequence[str]
) -> list[list[str]]:
    """For each key, which of ``names`` (hash fields or JSON paths) it already holds.

    One ``HEXISTS`` or ``JSON.TYPE`` per key and name, pipelined
    (:func:`~rvlm.core.redis.wire.execute`: raw replies, under RESP2 and RESP3). An error reply
    (e.g. a key of another type) counts as "not held"."""
    if not names:
        return [[] for _ in keys]
    json_storage = storage_type == "json"
    cmd = b"JSON.TYPE" if json_storage else b"HEXISTS"
    bnames = [to_bytes(n) for n in names]
    replies = wire.execute(client, [(cmd, k, n) for k in keys for n in bnames])
    out: list[list[str]] = []
    i = 0
    for _k in keys:
        held = []
        for n in names:
            r = replies[i]
            i += 1
            if isinstance(r, Exception):
                continue
            if json_storage:
                # RESP2: [b"type", ...] or [] (no match), None (no key); RESP3: the same,
                # nested once more ([[b"type"]], [[]], [None])
                flat = r
                while isinstance(flat, list) and flat and isinstance(flat[0], list):
                    flat = flat[0]
                if isinstance(flat, list):
                    if any(x is not None for x in flat):
                        held.append(n)
                elif flat is not None:
                    held.append(n)
            elif to_int(r):
                held.append(n)
        out.append(held)
    return out


__all__ = ["JSON_ROOT", "ReadDoc", "count_existing", "count_holding", "fields_exist",
           "keys_exist", "read_batch", "read_ttls"]
