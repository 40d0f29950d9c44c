"""Document I/O for the executor and rollback: key enumeration, batch reads, batch writes.

Everything here is pipelined (one round trip per batch and step, never one per key) and works
under RESP2 and RESP3. Keys and hash values are ``bytes``; JSON values are decoded Python
values. A field or path a document does not have is :data:`~rvlm.core.documents.MISSING`.

* :func:`enumerate_keys` streams the keys of an index into a :class:`KeyFileWriter`
  (FT.AGGREGATE cursor, or SCAN per prefix when the index has failures or a FILTER, or when
  the cursor count does not match FT.INFO). Duplicates are removed on disk (SCAN may return a
  key twice, and prefixes may overlap), so a key is never transformed twice.
* :func:`read_batch` reads the values operations need (plus, for JSON, the whole document,
  which is what the backup keeps so a rollback restores it byte for byte, key order included);
  with ``whole=True`` every field of each hash (for a ``converts_to`` operation).
* :func:`write_batch` writes merged updates and key renames in one pipeline (renames last),
  checking every reply; a whole-document replacement is one ``MULTI``/``EXEC`` per key.
  :func:`restore_records` puts backup records back.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import redis

from rvlm.core import wire
from rvlm.core.backup import BackupRecord, FieldOriginal
from rvlm.core.documents import MISSING
from rvlm.core.errors import MigrationFailed
from rvlm.core.keyfile import KeyFileWriter
from rvlm.core.resp import to_int, to_list, to_map, to_str
from rvlm.core.schema import IndexSchema
from rvlm.core.wire import first_error

#: The backup field name under which a JSON document's whole text is kept.
JSON_ROOT = b"$"
SCAN_COUNT = 1000
CURSOR_COUNT = 1000
_DEDUP_BUCKETS = 64


# --------------------------------------------------------------------------- helpers


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def _name(value: str | bytes) -> bytes:
    """A hash field name as bytes: the inverse of :func:`~rvlm.core.resp.to_str` (names that
    are not UTF-8 were decoded with ``surrogateescape`` and come back byte for byte)."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def escape_glob(prefix: str | bytes) -> bytes:
    """``prefix`` with the glob characters ``* ? [ ] \\`` escaped for SCAN MATCH."""
    out = bytearray()
    for c in _b(prefix):
        if c in b"*?[]\\":
            out += b"\\"
        out.append(c)
    return bytes(out)


def _ok(reply: Any) -> bool:
    return reply is True or reply in (b"OK", "OK")


def hash_slot(key: bytes) -> int:
    """The cluster hash slot of ``key`` (hash tags honoured)."""
    from redis.crc import key_slot

    return int(key_slot(key))


# --------------------------------------------------------------------------- enumeration


@attrs.frozen
class Enumeration:
    """How the keys were found: ``count`` keys by ``method`` (``cursor`` or ``scan``),
    ``fallback`` says why SCAN was used (empty for the cursor)."""

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
                    keys.append(_b(attrs_map["__key"]))
        else:
            for row in to_list(page)[1:]:
                m = to_map(row)
                if "__key" in m:
                    keys.append(_b(m["__key"]))
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
            yield [_b(k) for k in to_list(keys)]
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


# --------------------------------------------------------------------------- reads


@attrs.define
class ReadDoc:
    """One document as read: key, values by name (MISSING when absent), the raw JSON text
    of the whole document (JSON storage only) and the PTTL in ms (-1: none; None: not read,
    see :func:`read_ttls`)."""

    key: bytes
    values: dict[str, Any]
    raw_json: bytes | None = None
    pttl: int | None = -1


def _raise_first(replies: Sequence[Any]) -> None:
    err = first_error(replies)
    if err is not None:
        raise err


def read_batch(
    client: redis.Redis, storage_type: str, keys: Sequence[bytes], names: Sequence[str],
    *, whole: bool = False, ttl: bool = True,
) -> list[ReadDoc]:
    """Read ``names`` (hash fields or JSON paths) of every key, in one pipeline.

    Keys that do not exist (deleted since enumeration) are left out. Hash values are bytes;
    JSON values are the first match of each path, decoded. Returns docs in key order.
    ``whole=True`` (a ``converts_to`` operation): a hash is read with ``HGETALL`` (every
    field, names as ``str`` via :func:`~rvlm.core.resp.to_str`); a JSON document's root is
    also under ``"$"``; the TTL is always read.

    One command per key (``HMGET``, ``HGETALL`` or ``JSON.GET``), plus ``PTTL`` when ``ttl``
    is true (``ttl=False`` leaves ``pttl`` None; the executor reads TTLs only for keys it
    renames, with :func:`read_ttls`). A hash whose ``HMGET`` is all nil may not exist: only
    those keys are checked with ``EXISTS``, in a second round trip.
    """
    json_storage = storage_type == "json"
    hgetall = whole and not json_storage
    ttl = ttl or whole
    bnames = [_b(n) for n in names]
    per = 2 if ttl else 1
    commands: list[tuple[Any, ...]] = []
    add = commands.append
    for k in keys:
        if json_storage:
            add((b"JSON.GET", k, b"$", *bnames))
        elif hgetall:
            add((b"HGETALL", k))
        elif bnames:
            add((b"HMGET", k, *bnames))
        else:
            add((b"EXISTS", k))
        if ttl:
            add((b"PTTL", k))
    replies = wire.execute(client, commands)
    _raise_first(replies)
    values_of = replies[0::per]
    ttls: list[Any] = replies[1::per] if ttl else [None] * len(keys)
    exists: list[bool] | None = None
    if not json_storage and not ttl:
        unsure = ([i for i, v in enumerate(values_of) if not any(x is not None for x in v)]
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


def read_ttls(client: redis.Redis, keys: Sequence[bytes]) -> list[int]:
    """PTTL of each key in ms (-1: no TTL, -2: no such key), pipelined."""
    replies = wire.execute(client, [(b"PTTL", k) for k in keys])
    _raise_first(replies)
    return [to_int(r, -1) for r in replies]


def keys_exist(client: redis.Redis, keys: Sequence[bytes]) -> list[bool]:
    """EXISTS for each key, pipelined."""
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.exists(k)
    return [bool(to_int(r)) for r in pipe.execute()]


def fields_exist(
    client: redis.Redis, storage_type: str, keys: Sequence[bytes], names: Sequence[str]
) -> list[list[str]]:
    """For each key, which of ``names`` (hash fields or JSON paths) it already holds."""
    if not names:
        return [[] for _ in keys]
    pipe = client.pipeline(transaction=False)
    for k in keys:
        for n in names:
            if storage_type == "json":
                pipe.execute_command("JSON.TYPE", k, n)
            else:
                pipe.hexists(k, n)
    replies = pipe.execute(raise_on_error=False)
    out: list[list[str]] = []
    i = 0
    for _k in keys:
        held = []
        for n in names:
            r = replies[i]
            i += 1
            if isinstance(r, Exception):
                continue
            if storage_type == "json":
                flat = r
                while isinstance(flat, list) and flat and isinstance(flat[0], list):
                    flat = flat[0]
                if flat:
                    held.append(n)
            elif to_int(r):
                held.append(n)
        out.append(held)
    return out


# --------------------------------------------------------------------------- writes


@attrs.frozen
class KeyWrite:
    """The merged effect on one document: values to set, names to delete, final key.

    ``replace`` (a ``converts_to`` operation): the whole new document, of storage type
    ``converts_to``, written in place of the key in one MULTI/EXEC with the key's ``pttl``
    (-1: none) re-applied; ``set``/``delete`` are then empty. ``new_key`` moves it afterwards.
    """

    key: bytes
    set: dict[str, Any]
    delete: tuple[str, ...]
    new_key: bytes | None = None
    replace: Any = MISSING
    converts_to: str | None = None
    pttl: int = -1


def _encode_value(storage_type: str, name: str, value: Any, key: bytes) -> bytes:
    if storage_type == "json":
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise MigrationFailed(
                f"value for {name} of {to_str(key)!r} is not JSON-serialisable: {exc}"
            ) from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value).encode()
    raise MigrationFailed(
        f"value for hash field {name!r} of {to_str(key)!r} must be bytes, not "
        f"{type(value).__name__}"
    )


def use_dump_restore(client: redis.Redis, pairs: Sequence[tuple[bytes, bytes]],
                     cluster: bool) -> bool:
    """True when renames must go through DUMP/RESTORE: on a cluster when a pair crosses hash
    slots (RENAME would fail with CROSSSLOT), or when ``RVLM_RENAME_MODE=dump`` forces it
    (tests exercise that path on one node). A single node renames across slots fine."""
    if os.environ.get("RVLM_RENAME_MODE", "").lower() == "dump":
        return True
    return cluster and any(hash_slot(a) != hash_slot(b) for a, b in pairs)


#: Commands whose reply only needs to be "not an error".
_ANY_REPLY = frozenset({"HSET", "HDEL", "JSON.DEL", "DEL", "PEXPIRE"})


def _check(replies: Sequence[Any], what: Sequence[tuple[str, bytes]]) -> None:
    any_reply = _ANY_REPLY
    for reply, (cmd, key) in zip(replies, what, strict=True):
        if cmd in any_reply and not isinstance(reply, Exception):
            continue
        if cmd.startswith("MULTI/EXEC"):
            _check_exec(reply, cmd, key)
            continue
        if cmd == "QUEUED":
            if isinstance(reply, Exception):
                raise MigrationFailed(f"a command for {to_str(key)!r} was refused: {reply}")
            continue
        if isinstance(reply, Exception):
            raise MigrationFailed(f"{cmd} on {to_str(key)!r} failed: {reply}")
        if cmd in ("JSON.SET", "RESTORE") and not _ok(reply):
            raise MigrationFailed(f"{cmd} on {to_str(key)!r} did not answer OK ({reply!r})")
        if cmd == "RENAMENX" and not to_int(reply):
            raise MigrationFailed(f"cannot rename {to_str(key)!r}: the new key already exists")


def _check_exec(reply: Any, what: str, key: bytes) -> None:
    """The reply of EXEC (``what`` is ``"MULTI/EXEC <cmd> <cmd> ..."``): every command ran
    and each JSON.SET answered OK."""
    if isinstance(reply, Exception) or not isinstance(reply, list):
        raise MigrationFailed(f"the MULTI/EXEC replacing {to_str(key)!r} was aborted "
                              f"({reply!r})")
    cmds = what.split()[1:]
    for cmd, r in zip(cmds, reply, strict=True):
        if isinstance(r, Exception) or (cmd == "JSON.SET" and not _ok(r)):
            raise MigrationFailed(f"{cmd} on {to_str(key)!r} failed inside the MULTI/EXEC that "
                                  f"replaces the document: {r}")


def _queue_replace(pipe: Any, what: list[tuple[str, bytes]], w: KeyWrite) -> int:
    """Queue ``MULTI; DEL key; <write the new document>; [PEXPIRE key pttl]; EXEC`` for one
    replaced document (``w.converts_to``: ``json`` -> JSON.SET key $; ``hash`` -> HSET key
    with every field). Returns the bytes written."""
    key = w.key
    cmd: tuple[Any, ...]
    if w.converts_to == "json":
        data = _encode_value("json", "the document", w.replace, key)
        cmd = ("JSON.SET", key, "$", data)
        size = len(data)
    elif w.converts_to == "hash":
        if not isinstance(w.replace, dict) or not w.replace:
            raise MigrationFailed(f"the new hash for {to_str(key)!r} must be a non-empty "
                                  f"mapping of field names to values, not {w.replace!r:.60}")
        args: list[bytes] = []
        size = 0
        for n, v in w.replace.items():
            value = _encode_value("hash", str(n), v, key)
            args += [_name(n), value]
            size += len(value)
        cmd = ("HSET", key, *args)
    else:
        raise MigrationFailed(f"cannot replace {to_str(key)!r}: unknown storage type "
                              f"{w.converts_to!r}")
    cmds: list[tuple[Any, ...]] = [("DEL", key), cmd]
    if w.pttl >= 0:
        cmds.append(("PEXPIRE", key, max(w.pttl, 1)))
    pipe.execute_command("MULTI")
    what.append(("QUEUED", key))
    for c in cmds:
        pipe.execute_command(*c)
        what.append(("QUEUED", key))
    pipe.execute_command("EXEC")
    what.append(("MULTI/EXEC " + " ".join(str(c[0]) for c in cmds), key))
    return size


def move_keys(client: redis.Redis, pairs: Sequence[tuple[bytes, bytes]], *,
              cluster: bool = False) -> None:
    """Rename each ``(old, new)``, keeping TTLs; refuse to overwrite an existing new key.

    RENAMENX on one node and within one slot; otherwise DUMP + PTTL, then RESTORE (with the
    remaining TTL) + DEL. Raises :class:`MigrationFailed` naming the key on any failure.
    """
    if not pairs:
        return
    if not use_dump_restore(client, pairs, cluster):
        pipe = client.pipeline(transaction=False)
        for old, new in pairs:
            pipe.execute_command("RENAMENX", old, new)
        _check(pipe.execute(raise_on_error=False), [("RENAMENX", o) for o, _ in pairs])
        return
    pipe = client.pipeline(transaction=False)
    for old, _new in pairs:
        pipe.execute_command("DUMP", old)
        pipe.pttl(old)
    replies = pipe.execute(raise_on_error=False)
    pipe = client.pipeline(transaction=False)
    what: list[tuple[str, bytes]] = []
    for i, (old, new) in enumerate(pairs):
        dump, pttl = replies[2 * i], replies[2 * i + 1]
        if isinstance(dump, Exception) or dump is None:
            raise MigrationFailed(f"DUMP of {to_str(old)!r} failed: {dump!r}")
        ttl = to_int(pttl, -1)
        pipe.execute_command("RESTORE", new, max(ttl, 0), dump)
        pipe.delete(old)
        what += [("RESTORE", new), ("DEL", old)]
    _check(pipe.execute(raise_on_error=False), what)


def write_batch(
    client: redis.Redis,
    storage_type: str,
    writes: Sequence[KeyWrite],
    *,
    cluster: bool = False,
    fault: Callable[[], None] | None = None,
) -> int:
    """Write every update in one pipeline (hash: HSET/HDEL; JSON: JSON.SET/JSON.DEL, each
    JSON.SET checked for OK), then rename keys (see :func:`move_keys`). Returns the number of
    value bytes written. ``fault`` (tests) runs between the value writes and the renames.

    A write with ``replace`` is one ``MULTI``/``EXEC`` on its key (see :func:`_queue_replace`):
    a crash leaves the key either as it was or replaced, never missing.

    The pipeline is a :class:`~rvlm.core.wire.Batch` (packed by hiredis, raw replies): this
    is the executor's hot path.
    """
    pipe = wire.Batch(client)
    what: list[tuple[str, bytes]] = []
    written = 0
    for w in writes:
        if w.replace is not MISSING:
            written += _queue_replace(pipe, what, w)
        elif storage_type == "json":
            for name in w.delete:
                pipe.execute_command("JSON.DEL", w.key, name)
                what.append(("JSON.DEL", w.key))
            for name, value in w.set.items():
                data = _encode_value(storage_type, name, value, w.key)
                written += len(data)
                pipe.execute_command("JSON.SET", w.key, name, data)
                what.append(("JSON.SET", w.key))
        else:
            if w.set:
                args: list[Any] = [b"HSET", w.key]
                for n, v in w.set.items():
                    data = v if type(v) is bytes else _encode_value(storage_type, n, v, w.key)
                    written += len(data)
                    args.append(_b(n))
                    args.append(data)
                pipe.execute_command(*args)
                what.append(("HSET", w.key))
            if w.delete:
                pipe.hdel(w.key, *[_b(n) for n in w.delete])
                what.append(("HDEL", w.key))
    if what:
        _check(pipe.execute(raise_on_error=False), what)
    if fault is not None:
        fault()
    move_keys(client, [(w.key, w.new_key) for w in writes
                       if w.new_key is not None and w.new_key != w.key], cluster=cluster)
    return written


def restore_records(
    client: redis.Redis, storage_type: str, records: Sequence[BackupRecord], *,
    cluster: bool = False, recreate: bool = False,
) -> list[bytes]:
    """Put backup records back: move renamed keys home, set original values, delete fields
    that did not exist, restore a recorded TTL the key lost. Idempotent.

    A *replaced* record (a whole document a ``converts_to`` operation replaced) is restored by
    deleting whatever is at its key and new key and recreating the original (every field,
    ``storage_type`` of the source, TTL) in one ``MULTI``/``EXEC`` (the new key's DEL comes
    after it when the two are in different cluster slots): right in every state a crash
    leaves (not replaced yet, replaced, replaced and moved, moved copy beside its source).

    Returns the keys that could not be restored because neither the key nor its new name
    exists any more (deleted by someone else). ``recreate=True`` (for batches journaled as
    started but not done) recreates such replaced documents instead: a replacement whose
    write failed after the DEL leaves neither key.
    """
    if not records:
        return []
    pipe = client.pipeline(transaction=False)
    for r in records:
        pipe.exists(r.key)
        pipe.exists(r.new_key if r.new_key is not None else r.key)
    ex = [bool(to_int(x)) for x in pipe.execute()]
    moves: list[tuple[bytes, bytes]] = []
    stale: list[bytes] = []
    gone: list[bytes] = []
    present: list[BackupRecord] = []
    replaced: list[BackupRecord] = []
    for i, r in enumerate(records):
        at_old, at_new = ex[2 * i], ex[2 * i + 1]
        if r.replaced:
            if at_old or at_new or recreate:
                replaced.append(r)
            else:
                gone.append(r.key)
            continue
        if r.new_key is not None and r.new_key != r.key:
            if not at_old and at_new:
                moves.append((r.new_key, r.key))
            elif at_old and at_new:
                stale.append(r.new_key)  # a DUMP/RESTORE copy whose source was never deleted
            elif not at_old:
                gone.append(r.key)
                continue
        elif not at_old:
            gone.append(r.key)
            continue
        present.append(r)
    if stale:
        client.delete(*stale)
    move_keys(client, moves, cluster=cluster)
    pipe = client.pipeline(transaction=False)
    what: list[tuple[str, bytes]] = []
    later: list[bytes] = []
    for r in replaced:
        later += _queue_recreate(pipe, what, storage_type, r, cluster)
    for r in present:
        if storage_type == "json":
            for f in r.fields:
                if f.name == JSON_ROOT and f.value is not None:
                    pipe.execute_command("JSON.SET", r.key, "$", f.value)
                    what.append(("JSON.SET", r.key))
        else:
            setv = {f.name: f.value for f in r.fields if f.value is not None}
            dels = [f.name for f in r.fields if f.value is None]
            if setv:
                pipe.hset(r.key, mapping=setv)  # type: ignore[arg-type]
                what.append(("HSET", r.key))
            if dels:
                pipe.hdel(r.key, *dels)
                what.append(("HDEL", r.key))
        if r.ttl_ms is not None:
            # PEXPIRE NX: only if the key lost its TTL (RENAME and RESTORE keep it)
            pipe.execute_command("PEXPIRE", r.key, max(r.ttl_ms, 1), "NX")
            what.append(("PEXPIRE", r.key))
    if what:
        _check(pipe.execute(raise_on_error=False), what)
    if later:  # new keys in other cluster slots: deleted once the originals are back
        client.delete(*later)
    return gone


def _queue_recreate(pipe: Any, what: list[tuple[str, bytes]], storage_type: str,
                    r: BackupRecord, cluster: bool) -> list[bytes]:
    """Queue ``MULTI; DEL key [new_key]; <original>; [PEXPIRE]; EXEC`` for a replaced record;
    returns the new key when it must be deleted separately (another cluster slot)."""
    later: list[bytes] = []
    cmds: list[tuple[Any, ...]] = [("DEL", r.key)]
    if r.new_key is not None and r.new_key != r.key:
        if cluster and hash_slot(r.new_key) != hash_slot(r.key):
            later.append(r.new_key)
        else:
            cmds.append(("DEL", r.new_key))
    if storage_type == "json":
        text = [f.value for f in r.fields if f.name == JSON_ROOT and f.value is not None]
        if len(text) != 1:
            raise MigrationFailed(f"the backup of {to_str(r.key)!r} holds no JSON document")
        cmds.append(("JSON.SET", r.key, "$", text[0]))
    else:
        args: list[bytes] = []
        for f in r.fields:
            if f.value is not None:
                args += [f.name, f.value]
        if not args:
            raise MigrationFailed(f"the backup of {to_str(r.key)!r} holds no field")
        cmds.append(("HSET", r.key, *args))
    if r.ttl_ms is not None:
        cmds.append(("PEXPIRE", r.key, max(r.ttl_ms, 1)))
    pipe.execute_command("MULTI")
    what.append(("QUEUED", r.key))
    for c in cmds:
        pipe.execute_command(*c)
        what.append(("QUEUED", r.key))
    pipe.execute_command("EXEC")
    what.append(("MULTI/EXEC " + " ".join(str(c[0]) for c in cmds), r.key))
    return later


def backup_record(
    doc: ReadDoc, storage_type: str, touched: Iterable[str], new_key: bytes | None,
    *, replaced: bool = False,
) -> BackupRecord:
    """The backup of one document before it is written: for hash, the original of every
    field in ``touched`` (None when absent); for JSON, the whole document's text; plus the
    original key, its new key and its PTTL when it is renamed.

    ``replaced=True`` (the document is replaced as a whole): every field of the hash as read
    with ``whole=True`` (``touched`` is ignored), and the PTTL whenever the key has one."""
    pttl = doc.pttl
    if pttl is None and (replaced or new_key is not None):
        raise ValueError(f"the TTL of {to_str(doc.key)!r} was not read (read_batch(ttl=True) "
                         "or read_ttls)")
    if replaced:
        if storage_type == "json":
            fields = [FieldOriginal(JSON_ROOT, doc.raw_json)]
        else:
            fields = [FieldOriginal(_name(n), bytes(v)) for n, v in doc.values.items()
                      if v is not MISSING]
        return BackupRecord(doc.key, new_key, tuple(fields),
                            pttl if pttl is not None and pttl >= 0 else None, replaced=True)
    if storage_type == "json":
        fields = [FieldOriginal(JSON_ROOT, doc.raw_json)]
    else:
        fields = []
        for n in touched:
            v = doc.values.get(n, MISSING)
            fields.append(FieldOriginal(_b(n), None if v is MISSING else bytes(v)))
    ttl = pttl if new_key is not None and pttl is not None and pttl >= 0 else None
    return BackupRecord(doc.key, new_key, tuple(fields), ttl)
