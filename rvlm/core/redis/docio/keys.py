"""The keys of an index, streamed into a key file: SCAN per prefix, or the FT.AGGREGATE cursor.

:func:`enumerate_keys` uses SCAN (``MATCH prefix* TYPE hash|ReJSON-RL``) when the index has a
FILTER or indexing failures (SCAN includes the documents that failed indexing), and also when
the keyspace SCAN walks (DBSIZE, once per prefix) is at most :data:`SCAN_WALK_RATIO` times the
index's documents: SCAN costs the server a fraction of what the cursor does per key (the
cursor builds a row per document, a map per row under RESP3). Otherwise it reads the cursor
(``FT.AGGREGATE index * LOAD 1 @__key WITHCURSOR``), and falls back to SCAN when the cursor's
count differs from FT.INFO's. Without a FILTER, the hashes (or JSON documents) under an index's
prefixes are exactly the documents it indexes or failed to index, so both give the same keys.

SCAN may return a key twice (the keyspace can be resized during the scan; prefixes may
overlap). The keys are written in SCAN order, and duplicates are found with bounded memory: a
64-bit fingerprint and the position of every key go to one of 64 bucket files; one bucket at a
time is checked, and only keys whose fingerprints repeat are read back and compared. If any key
repeats, the file is rewritten without the later copies. So a key is never transformed twice,
and memory is about one page plus count / 64 fingerprints, never all keys.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import attrs
import redis

from rvlm.core.redis import routing
from rvlm.core.redis.resp import to_bytes, to_int, to_list, to_map
from rvlm.core.schema.model import IndexSchema
from rvlm.core.storage.files import fsync_directory
from rvlm.core.storage.keyfile import KeyFileReader, KeyFileWriter

SCAN_COUNT = 10000
CURSOR_COUNT = 10000
#: SCAN is used while DBSIZE x the number of prefixes is at most this many times the index's
#: documents (SCAN walks every key of the database once per prefix).
SCAN_WALK_RATIO = 4
_BUCKETS = 64
_FLUSH_AT = 16384  # fingerprint buffer entries (x 8 bytes) per bucket before it is written


def escape_glob(prefix: str | bytes) -> bytes:
    """``prefix`` with the glob characters ``* ? [ ] \\`` escaped for SCAN MATCH."""
    out = bytearray()
    for c in to_bytes(prefix):
        if c in b"*?[]\\":
            out += b"\\"
        out.append(c)
    return bytes(out)



@attrs.frozen
class Enumeration:
    """How the keys were found: ``count`` keys by ``method`` (``cursor`` or ``scan``;
    ``none`` when a plan rewrites no document and no key was listed), ``fallback`` says why
    SCAN was used (empty for the cursor)."""

    count: int
    method: str
    fallback: str = ""


def _cursor_keys(client: redis.Redis, index: str) -> Iterator[list[bytes]]:
    """Pages of keys from ``FT.AGGREGATE index * LOAD 1 @__key WITHCURSOR`` (RESP2 or 3);
    rows are read directly (``[b"__key", key]`` under RESP2, a map under RESP3)."""
    reply = client.execute_command(
        "FT.AGGREGATE", index, "*", "LOAD", "1", "@__key", "WITHCURSOR",
        "COUNT", str(CURSOR_COUNT), "TIMEOUT", "0",
    )
    while True:
        page, cursor = reply[0], to_int(reply[1])
        keys: list[bytes] = []
        if isinstance(page, dict):
            for row in to_list(to_map(page).get("results")):
                attrs_map = to_map(to_map(row).get("extra_attributes"))
                if "__key" in attrs_map:
                    keys.append(to_bytes(attrs_map["__key"]))
        else:
            for row in to_list(page)[1:]:
                if len(row) == 2 and row[0] == b"__key":
                    keys.append(to_bytes(row[1]))
                else:
                    m = to_map(row)
                    if "__key" in m:
                        keys.append(to_bytes(m["__key"]))
        yield keys
        if cursor == 0:
            return
        reply = client.execute_command("FT.CURSOR", "READ", index, str(cursor),
                                       "COUNT", str(CURSOR_COUNT))


def scan_keys(client: redis.Redis, schema: IndexSchema) -> Iterator[list[bytes]]:
    """Pages of keys of the index's storage type under each of its prefixes (SCAN; on a
    cluster, SCAN on every primary, one after the other). A key may come twice, and a key the
    index filters out comes too. Read-only."""
    type_name = "ReJSON-RL" if schema.storage_type == "json" else "hash"
    for _name, node in routing.primaries(client):
        for prefix in schema.index.prefix:
            cursor = 0
            match = escape_glob(prefix) + b"*"
            while True:
                cursor, keys = node.execute_command(
                    "SCAN", cursor, "MATCH", match, "COUNT", SCAN_COUNT, "TYPE", type_name
                )
                cursor = to_int(cursor)
                page = to_list(keys)
                yield page if set(map(type, page)) <= {bytes} else list(map(to_bytes, page))
                if cursor == 0:
                    break


class _Fingerprints:
    """A 64-bit fingerprint (``hash`` of the key, this process only) and the position of each
    key added, spread over bucket files by fingerprint; :meth:`repeats` finds the groups of
    positions that share a fingerprint, one bucket in memory at a time."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=".keys-seen-", dir=directory))
        self.buffers = [array("q") for _ in range(_BUCKETS)]
        self.files = [open(self.dir / f"b{i}", "wb") for i in range(_BUCKETS)]  # noqa: SIM115
        self.count = 0

    def add(self, keys: Sequence[bytes]) -> None:
        import numpy as np  # (imported by the apply's transform anyway; not at start-up)

        n = len(keys)
        prints = np.fromiter(map(hash, keys), dtype=np.int64, count=n)
        buckets = prints & (_BUCKETS - 1)
        order = np.argsort(buckets, kind="stable")  # positions ascending within a bucket
        pairs = np.empty((n, 2), dtype=np.int64)
        pairs[:, 0] = prints[order]
        pairs[:, 1] = order
        pairs[:, 1] += self.count
        ends = np.cumsum(np.bincount(buckets, minlength=_BUCKETS)).tolist()
        start = 0
        for i, end in enumerate(ends):
            if end > start:
                b = self.buffers[i]
                b.frombytes(pairs[start:end].tobytes())
                if len(b) >= _FLUSH_AT:
                    b.tofile(self.files[i])
                    del b[:]
            start = end
        self.count += n

    def repeats(self) -> Iterator[list[int]]:
        """Positions sharing a fingerprint (ascending), one list per fingerprint."""
        for i, f in enumerate(self.files):
            self.buffers[i].tofile(f)
            del self.buffers[i][:]
            f.close()
        for i in range(_BUCKETS):
            data = array("q")
            data.frombytes((self.dir / f"b{i}").read_bytes())
            prints = data[0::2]
            if len(set(prints)) == len(prints):
                continue
            groups: dict[int, list[int]] = {}
            for h, pos in zip(prints, data[1::2], strict=True):
                groups.setdefault(h, []).append(pos)
            for positions in groups.values():
                if len(positions) > 1:
                    yield sorted(positions)

    def close(self) -> None:
        for f in self.files:
            f.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _scan_to_file(client: redis.Redis, schema: IndexSchema, path: Path,
                  on_page: Callable[[list[bytes]], None] | None) -> int:
    """SCAN the index's prefixes into the key file ``path`` without duplicates; the count."""
    raw = path.with_name(f".{path.name}.scan")
    seen = _Fingerprints(path.parent)
    try:
        with KeyFileWriter(raw) as writer:
            for page in scan_keys(client, schema):
                if on_page:
                    on_page(page)
                writer.add_many(page)
                seen.add(page)
            writer.close()
        drop: set[int] = set()
        with KeyFileReader(raw, verify=False) as reader:
            for positions in seen.repeats():
                first: dict[bytes, int] = {}
                for pos in positions:
                    key = reader.batch(pos, 1)[0]
                    if key in first:
                        drop.add(pos)
                    else:
                        first[key] = pos
            if not drop:
                count = reader.count
        if not drop:
            os.replace(raw, path)
            fsync_directory(path.parent)
            return count
        with KeyFileReader(raw, verify=False) as reader, KeyFileWriter(path) as writer:
            size = 4096
            for b in range(reader.num_batches(size)):
                start = b * size
                writer.add_many(k for i, k in enumerate(reader.batch(b, size), start)
                                if i not in drop)
            return writer.close()
    finally:
        seen.close()
        raw.unlink(missing_ok=True)


def enumerate_keys(
    client: redis.Redis,
    schema: IndexSchema,
    expected: int,
    failures: int,
    path: Path,
    *,
    on_page: Callable[[list[bytes]], None] | None = None,
    scan: str = "",
) -> Enumeration:
    """Write every key of the index ``schema`` describes to the key file ``path``.

    ``expected`` is FT.INFO's ``num_docs`` and ``failures`` its indexing failures, read just
    before. SCAN over each prefix when the index has failures or a FILTER, or when the
    keyspace is at most :data:`SCAN_WALK_RATIO` times the index (see the module docstring);
    otherwise the cursor, checked against ``expected`` (SCAN when it differs). Keys are unique
    in the file. ``on_page(keys)`` is called with each page of keys as it comes, before it is
    written (a key may come twice, and after a fallback to SCAN the cursor's pages came too).
    ``scan`` (a reason, e.g. the index no longer exists) forces SCAN. Memory: one page plus
    one fingerprint bucket; never all keys.
    """
    path = Path(path)
    if scan:
        return Enumeration(count=_scan_to_file(client, schema, path, on_page), method="scan",
                           fallback=scan)
    if schema.index.filter is not None:
        return Enumeration(count=_scan_to_file(client, schema, path, on_page), method="scan",
                           fallback="index has a FILTER")
    if failures:
        return Enumeration(count=_scan_to_file(client, schema, path, on_page), method="scan",
                           fallback="index has indexing failures")
    # the keys SCAN would walk: every primary's (DBSIZE on a cluster client asks one node)
    keyspace = sum(to_int(node.execute_command("DBSIZE"))
                   for _name, node in routing.primaries(client))
    walk = keyspace * max(1, len(schema.index.prefix))
    if walk <= SCAN_WALK_RATIO * max(expected, 1):
        count = _scan_to_file(client, schema, path, on_page)
        return Enumeration(count=count, method="scan", fallback="" if count == expected else
                           f"SCAN found {count} keys, FT.INFO num_docs {expected}")
    count = 0
    with KeyFileWriter(path) as writer:
        for page in _cursor_keys(client, schema.name):
            if on_page:
                on_page(page)
            writer.add_many(page)
            count += len(page)
        if count == expected:
            return Enumeration(count=writer.close(), method="cursor")
        writer.abort()
    return Enumeration(count=_scan_to_file(client, schema, path, on_page), method="scan",
                       fallback=f"cursor gave {count} keys, FT.INFO num_docs {expected}")
