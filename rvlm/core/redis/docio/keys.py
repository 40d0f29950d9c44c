"""The keys of an index, streamed into a key file: FT.AGGREGATE cursor, or SCAN per prefix.

:func:`enumerate_keys` uses the cursor when the index has no indexing failures and no FILTER
and the cursor's count equals FT.INFO's; otherwise SCAN over each prefix (documents that failed
indexing are included). Duplicates are removed on disk (SCAN may return a key twice, and
prefixes may overlap), so a key is never transformed twice. Memory: one page plus one dedup
bucket, never all keys.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import attrs
import redis

from rvlm.core.redis.resp import to_bytes, to_int, to_list, to_map
from rvlm.core.schema.model import IndexSchema
from rvlm.core.storage.keyfile import KeyFileWriter

SCAN_COUNT = 1000
CURSOR_COUNT = 1000
_DEDUP_BUCKETS = 64


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
    """Pages of keys from ``FT.AGGREGATE index * LOAD 1 @__key WITHCURSOR`` (RESP2 or 3)."""
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
                m = to_map(row)
                if "__key" in m:
                    keys.append(to_bytes(m["__key"]))
        yield keys
        if cursor == 0:
            return
        reply = client.execute_command("FT.CURSOR", "READ", index, str(cursor),
                                       "COUNT", str(CURSOR_COUNT))


def _scan_keys(client: redis.Redis, schema: IndexSchema) -> Iterator[list[bytes]]:
    """Pages of keys of the index's storage type under each of its prefixes (SCAN)."""
    type_name = "ReJSON-RL" if schema.storage_type == "json" else "hash"
    for prefix in schema.index.prefix:
        cursor = 0
        match = escape_glob(prefix) + b"*"
        while True:
            cursor, keys = client.execute_command(
                "SCAN", cursor, "MATCH", match, "COUNT", SCAN_COUNT, "TYPE", type_name
            )
            cursor = to_int(cursor)
            yield [to_bytes(k) for k in to_list(keys)]
            if cursor == 0:
                break


class _Dedup:
    """Removes duplicate keys with bounded memory: keys are spread over bucket files by
    hash, then each bucket is de-duplicated in memory (about count / 64 keys at a time)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=".keys-dedup-", dir=directory))
        self.files = [open(self.dir / f"b{i}", "wb") for i in range(_DEDUP_BUCKETS)]  # noqa: SIM115

    def add(self, keys: Iterable[bytes]) -> None:
        for k in keys:
            f = self.files[zlib.crc32(k) % _DEDUP_BUCKETS]
            f.write(len(k).to_bytes(4, "little") + k)

    def unique(self) -> Iterator[list[bytes]]:
        for f in self.files:
            f.close()
        for i in range(_DEDUP_BUCKETS):
            data = (self.dir / f"b{i}").read_bytes()
            seen: set[bytes] = set()
            out: list[bytes] = []
            p = 0
            while p < len(data):
                n = int.from_bytes(data[p:p + 4], "little")
                k = data[p + 4:p + 4 + n]
                p += 4 + n
                if k not in seen:
                    seen.add(k)
                    out.append(k)
            yield out

    def close(self) -> None:
        for f in self.files:
            f.close()
        for p in self.dir.iterdir():
            p.unlink()
        self.dir.rmdir()


def enumerate_keys(
    client: redis.Redis,
    schema: IndexSchema,
    expected: int,
    failures: int,
    path: Path,
    *,
    on_page: Callable[[int], None] | None = None,
) -> Enumeration:
    """Write every key of the index ``schema`` describes to the key file ``path``.

    ``expected`` is FT.INFO's ``num_docs`` and ``failures`` its indexing failures, read just
    before. The cursor is used when the index has no failures and no FILTER and its count
    equals ``expected``; otherwise SCAN over each prefix (documents that failed indexing are
    included). Keys are unique in the file. ``on_page(n)`` is called with each page's size.
    Memory: one page plus one dedup bucket; never all keys.
    """
    path = Path(path)
    use_cursor = failures == 0 and schema.index.filter is None
    fallback = ""
    if use_cursor:
        count = 0
        with KeyFileWriter(path) as writer:
            for page in _cursor_keys(client, schema.name):
                writer.add_many(page)
                count += len(page)
                if on_page:
                    on_page(len(page))
            if count == expected:
                return Enumeration(count=writer.close(), method="cursor")
            writer.abort()
        fallback = f"cursor gave {count} keys, FT.INFO num_docs {expected}"
    else:
        fallback = "index has indexing failures" if failures else "index has a FILTER"
    dedup = _Dedup(path.parent)
    try:
        for page in _scan_keys(client, schema):
            dedup.add(page)
            if on_page:
                on_page(len(page))
        with KeyFileWriter(path) as writer:
            for unique in dedup.unique():
                writer.add_many(unique)
            count = writer.close()
    finally:
        dedup.close()
    return Enumeration(count=count, method="scan", fallback=fallback)


__all__ = ["CURSOR_COUNT", "SCAN_COUNT", "Enumeration", "enumerate_keys", "escape_glob"]
