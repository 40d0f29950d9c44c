"""Document I/O for the executor and rollback: key enumeration, batch reads, batch writes.

Everything here is pipelined (one round trip per batch and step, never one per key) and works
under RESP2 and RESP3. Keys and hash values are ``bytes``; JSON values are decoded Python
values. A field or path a document does not have is :data:`~rvlm.core.plugins.documents.MISSING`.

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

from rvlm.core.errors import MigrationFailed
from rvlm.core.plugins.documents import MISSING
from rvlm.core.redis import wire
from rvlm.core.redis.resp import to_int, to_list, to_map, to_str
from rvlm.core.redis.wire import first_error
from rvlm.core.schema.model import IndexSchema
from rvlm.core.storage.backup import BackupRecord, FieldOriginal, RawRecord
from rvlm.core.storage.keyfile import KeyFileWriter

#: The backup field name under which a JSON document's whole text is kept.
JSON_ROOT = b"$"
SCAN_COUNT = 1000
CURSOR_COUNT = 1000
_DEDUP_BUCKETS = 64


# --------------------------------------------------------------------------- helpers


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


_NAMES: dict[str, bytes] = {}


def bname(value: str | bytes) -> bytes:
    """:func:`_b` with a cache for the few field names a plan uses (hot path)."""
    if type(value) is bytes:
        return value
    got = _NAMES.get(value)  # type: ignore[arg-type]
    if got is None:
        got = _b(value)
        if len(_NAMES) < 1024:
            _NAMES[value] = got  # type: ignore[index]
    return got


def _name(value: str | bytes) -> bytes:
    """A hash field name as bytes: the inverse of :func:`~rvlm.core.redis.resp.to_str` (names that
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
    field, names as ``str`` via :func:`~rvlm.core.redis.resp.to_str`); a JSON document's root is
    also under ``"$"``; the TTL is always read.

    One command per key (``HMGET``, ``HGETALL`` or ``JSON.GET``), plus ``PTTL`` when ``ttl``
    is true (``ttl=False`` leaves ``pttl`` None; the executor reads TTLs only for keys it
    renames, with :func:`read_ttls`). A hash whose ``HMGET`` is all nil may not exist: only
    those keys are checked with ``EXISTS``, in a second round trip.

    Samples (plan time, validate hooks) use :func:`rvlm.core.migrate.planner.read_documents`
    instead: it keeps a document for every key asked for, and nothing here is spent on it.
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
        unsure = ([i for i, v in enumerate(values_of) if v.count(None) == len(v)]
                  if bnames else list(range(len(keys))))
        if unsure:
            exists = [True] * len(keys)
            found = keys_exist(client, [keys[i] for i in unsure])
            for i, ok in zip(unsure, found, strict=True):
                exists[i] = ok
    out: list[ReadDoc] = []
    if not json_storage and not hgetall and len(names) == 1 and not ttl:
        # the hot path (one hash field, no TTL): the same result as the loop below
        only = names[0]
        for i, k in enumerate(keys):
            if exists is not None and not exists[i]:
                continue
            v = values_of[i][0]
            out.append(ReadDoc(k, {only: MISSING if v is None else v}, None, None))
        return out
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
    """EXISTS for each key, pipelined (:func:`~rvlm.core.redis.wire.execute`); an error reply
    raises."""
    replies = wire.execute(client, [(b"EXISTS", k) for k in keys])
    _raise_first(replies)
    return [bool(to_int(r)) for r in replies]


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
    bnames = [_b(n) for n in names]
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

    @classmethod
    def edit(cls, key: bytes, set_values: dict[str, Any], delete: tuple[str, ...],
             new_key: bytes | None) -> KeyWrite:
        """``KeyWrite(key, set_values, delete, new_key)`` (no validators to skip) without the
        generated ``__init__``: the executor builds one per document."""
        w: KeyWrite = object.__new__(cls)
        _kw_key(w, key)
        _kw_set(w, set_values)
        _kw_delete(w, delete)
        _kw_new_key(w, new_key)
        _kw_replace(w, MISSING)
        _kw_converts_to(w, None)
        _kw_pttl(w, -1)
        return w


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    setter: Callable[[Any, Any], None] = cls.__dict__[name].__set__
    return setter


_kw_key = _slot_setter(KeyWrite, "key")
_kw_set = _slot_setter(KeyWrite, "set")
_kw_delete = _slot_setter(KeyWrite, "delete")
_kw_new_key = _slot_setter(KeyWrite, "new_key")
_kw_replace = _slot_setter(KeyWrite, "replace")
_kw_converts_to = _slot_setter(KeyWrite, "converts_to")
_kw_pttl = _slot_setter(KeyWrite, "pttl")


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
    for i, (old, new) in enumerate(pairs):
        dump, pttl = replies[2 * i], replies[2 * i + 1]
        if isinstance(dump, Exception) or dump is None:
            raise MigrationFailed(f"DUMP of {to_str(old)!r} failed: {dump!r}")
        ttl = to_int(pttl, -1)
        pipe.execute_command("RESTORE", new, max(ttl, 0), dump)
    restored = pipe.execute(raise_on_error=False)
    # a source is deleted only once its copy is in place: a RESTORE refused (BUSYKEY: the
    # new key exists) must never cost the source
    sources = [old for (old, _new), r in zip(pairs, restored, strict=True) if _ok(r)]
    if sources:
        pipe = client.pipeline(transaction=False)
        for old in sources:
            pipe.delete(old)
        _check(pipe.execute(raise_on_error=False), [("DEL", old) for old in sources])
    _check(restored, [("RESTORE", new) for _old, new in pairs])


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

    The pipeline is a :class:`~rvlm.core.redis.wire.Batch` (packed by hiredis, raw replies): this
    is the executor's hot path.
    """
    pipe = wire.Batch(client)
    commands = pipe.commands
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
                    args.append(bname(n))
                    args.append(data)
                commands.append(tuple(args))
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


class RestoreConflict(MigrationFailed):
    """Records that could not be restored without destroying a key the migration cannot prove
    is its own (``pairs``: ``(key, new_key)``, both left as they are)."""

    def __init__(self, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        self.pairs = list(pairs)
        super().__init__(conflict_message(self.pairs))


def conflict_message(pairs: Sequence[tuple[bytes, bytes]], limit: int = 5) -> str:
    """One line naming up to ``limit`` conflicting ``(key, new_key)`` pairs."""
    shown = "; ".join(f"{to_str(a)!r} and {to_str(b)!r}" for a, b in pairs[:limit])
    more = f" (and {len(pairs) - limit} more)" if len(pairs) > limit else ""
    return (f"{len(pairs)} document(s) not restored because both their original key and their "
            f"new key exist with different contents (one was created by someone else during "
            f"the migration): {shown}{more}; both keys were left as they are")


def conflict_actions(pairs: Sequence[tuple[bytes, bytes]], backup_dir: Any,
                     limit: int = 50) -> list[str]:
    """Manual actions for a report: one per conflicting pair (up to ``limit``), then how to
    continue."""
    out = [f"both {to_str(a)!r} (the original key) and {to_str(b)!r} (its new key) exist and "
           "differ: keep the one that holds the document (its backup is in the backup dir), "
           "move or delete the other" for a, b in pairs[:limit]]
    if len(pairs) > limit:
        out.append(f"... and {len(pairs) - limit} more such pairs")
    out.append(f"then re-run the same command (backup dir {backup_dir}) to finish restoring")
    return out


#: Deletes KEYS[2] only if it holds exactly what KEYS[1] holds (same DUMP payload): an
#: interrupted DUMP/RESTORE move leaves such a copy; anything else is not the migration's.
_DEL_IF_COPY = """
local a = redis.call('DUMP', KEYS[1])
local b = redis.call('DUMP', KEYS[2])
if a and b and a == b then return redis.call('DEL', KEYS[2]) end
return 0
"""


def _delete_copies(client: redis.Redis, pairs: Sequence[tuple[bytes, bytes]],
                   cluster: bool) -> list[bool]:
    """For each ``(key, new_key)`` (both exist): delete ``new_key`` if it is an exact copy of
    ``key`` (atomically, in a script; across cluster slots a DUMP comparison then DEL).
    Returns whether each was deleted; False means the two differ and neither was touched."""
    if not pairs:
        return []
    local = [not cluster or hash_slot(a) == hash_slot(b) for a, b in pairs]
    commands: list[tuple[Any, ...]] = []
    for (a, b), one_slot in zip(pairs, local, strict=True):
        if one_slot:
            commands.append((b"EVAL", _DEL_IF_COPY, 2, a, b))
        else:
            commands += [(b"DUMP", a), (b"DUMP", b)]
    replies = wire.execute(client, commands)
    _raise_first(replies)
    out: list[bool] = []
    later: list[bytes] = []
    i = 0
    for (_a, b), one_slot in zip(pairs, local, strict=True):
        if one_slot:
            out.append(bool(to_int(replies[i])))
            i += 1
            continue
        same = replies[i] is not None and replies[i] == replies[i + 1]
        i += 2
        out.append(same)
        if same:
            later.append(b)
    if later:  # pragma: no cover - cluster only
        _raise_first(wire.execute(client, [(b"DEL", k) for k in later]))
    return out


def restore_records(
    client: redis.Redis, storage_type: str, records: Sequence[BackupRecord], *,
    cluster: bool = False, recreate: bool = False,
    conflicts: list[tuple[bytes, bytes]] | None = None,
) -> list[bytes]:
    """Put backup records back: move renamed keys home, set original values, delete fields
    that did not exist, restore a recorded TTL the key lost. Idempotent.

    A *replaced* record (a whole document a ``converts_to`` operation replaced) is restored by
    deleting whatever is at its key and new key and recreating the original (every field,
    ``storage_type`` of the source, TTL) in one ``MULTI``/``EXEC`` (the new key's DEL comes
    after it when the two are in different cluster slots): right in every state a crash
    leaves (not replaced yet, replaced, replaced and moved, moved copy beside its source).

    Restore never destroys a key it cannot prove is the migration's own. When a record was
    moved and *both* its key and its new key exist, the new key is deleted only if it is an
    exact copy of the key (what an interrupted DUMP/RESTORE move leaves); otherwise someone
    created one of them during the migration, and neither key is touched: the pair is a
    *conflict*, appended to ``conflicts`` when given, else raised as
    :class:`RestoreConflict` once every other record was restored.

    Returns the keys that could not be restored because neither the key nor its new name
    exists any more (deleted by someone else). ``recreate=True`` (for batches journaled as
    started but not done) recreates such replaced documents instead: a replacement whose
    write failed after the DEL leaves neither key.
    """
    if not records:
        return []
    probe: list[tuple[Any, ...]] = []
    for r in records:
        probe.append((b"EXISTS", r.key))
        probe.append((b"EXISTS", r.new_key if r.new_key is not None else r.key))
    replies = wire.execute(client, probe)
    _raise_first(replies)
    ex = [bool(to_int(x)) for x in replies]
    both = [i for i, r in enumerate(records)
            if r.new_key is not None and r.new_key != r.key and ex[2 * i] and ex[2 * i + 1]]
    found: list[tuple[bytes, bytes]] = []
    pairs = [(records[i].key, records[i].new_key or b"") for i in both]
    for i, pair, copy_deleted in zip(both, pairs, _delete_copies(client, pairs, cluster),
                                     strict=True):
        if copy_deleted:
            ex[2 * i + 1] = False  # only the key is left, as if the move never happened
        else:
            found.append(pair)
    moves: list[tuple[bytes, bytes]] = []
    gone: list[bytes] = []
    present: list[BackupRecord] = []
    replaced: list[BackupRecord] = []
    for i, r in enumerate(records):
        at_old, at_new = ex[2 * i], ex[2 * i + 1]
        moved = r.new_key is not None and r.new_key != r.key
        if moved and at_old and at_new:
            continue  # a conflict (in found): neither key is touched
        if r.replaced:
            if at_old or at_new or recreate:
                replaced.append(r)
            else:
                gone.append(r.key)
            continue
        if moved:
            if not at_old and at_new:
                moves.append((r.new_key, r.key))  # type: ignore[arg-type]
            elif not at_old:
                gone.append(r.key)
                continue
        elif not at_old:
            gone.append(r.key)
            continue
        present.append(r)
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
    if found:
        if conflicts is None:
            raise RestoreConflict(found)
        conflicts.extend(found)
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
    key, nk, fields, ttl, whole = backup_raw(doc, storage_type, touched, new_key,
                                             replaced=replaced)
    return BackupRecord(key, nk, tuple(FieldOriginal(n, v) for n, v in fields), ttl,
                        replaced=whole)


def backup_raw(
    doc: ReadDoc, storage_type: str, touched: Iterable[str], new_key: bytes | None,
    *, replaced: bool = False,
) -> RawRecord:
    """:func:`backup_record` as a :data:`~rvlm.core.storage.backup.RawRecord` tuple (the executor's
    hot path; :func:`~rvlm.core.storage.backup.encode_records` checks it before it is written)."""
    pttl = doc.pttl
    if pttl is None and (replaced or new_key is not None):
        raise ValueError(f"the TTL of {to_str(doc.key)!r} was not read (read_batch(ttl=True) "
                         "or read_ttls)")
    fields: tuple[tuple[bytes, bytes | None], ...]
    if replaced:
        if storage_type == "json":
            fields = ((JSON_ROOT, doc.raw_json),)
        else:
            fields = tuple((_name(n), bytes(v)) for n, v in doc.values.items()
                           if v is not MISSING)
        return (doc.key, new_key, fields,
                pttl if pttl is not None and pttl >= 0 else None, True)
    if storage_type == "json":
        fields = ((JSON_ROOT, doc.raw_json),)
    else:
        values = doc.values
        out: list[tuple[bytes, bytes | None]] = []
        for n in touched:
            v = values.get(n, MISSING)
            out.append((bname(n), None if v is MISSING else
                        v if type(v) is bytes else bytes(v)))
        fields = tuple(out)
    ttl = pttl if new_key is not None and pttl is not None and pttl >= 0 else None
    return (doc.key, new_key, fields, ttl, False)
