"""Did the migration's writes stick? A digest of what the executor wrote to each document.

At transform time the executor computes, for every document it rewrites, the digest of what it
writes (:func:`written_of`): the names it sets or deletes (hash fields or JSON paths) with their
new values (a delete as "absent"), or the whole new document when it replaces it. The digest
and those names go into the document's backup record, fsynced before the write
(:class:`~rvlm.core.storage.backup.records.Written`). Later the same digest is computed from the
server (:func:`live_digests`), one command per document, pipelined:

* the verification pass before apply says ``succeeded``, and ``rvlm validate --backup-dir``:
  every rewritten document still holds what was written (:func:`check_written`);
* a resume after the server restarted or lost data: a batch journaled as done whose documents
  lost their writes (they hold the originals again, :func:`originals_match`) is redone;
* rollback: a document whose digest changed since the migration was written by someone else;
  it is kept as it is (a conflict) unless forced.

The digest is the first 8 bytes of SHA-1 (the hash a Redis script can take, so the server can
check hash fields itself: :data:`CHECK_SCRIPT`) over length-prefixed parts: per name, the name
then the value (hash: the bytes written, exactly; JSON: a canonical JSON text of the value, keys
sorted, floats at 12 bits of mantissa, because RedisJSON reads some floats back one unit in the
last place off, :data:`FLOAT_BITS`).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import redis

from rvlm.core.plugins.documents import MISSING
from rvlm.core.redis import routing, wire
from rvlm.core.redis.docio.read import JSON_ROOT
from rvlm.core.redis.docio.write import KeyWrite, encode_value
from rvlm.core.redis.resp import field_bytes, to_bytes, to_list, to_map
from rvlm.core.redis.wire import raise_first
from rvlm.core.storage.backup.records import BackupRecord, Written, WrittenRef

DIGEST_SIZE = 8
_LEN = struct.Struct("<I")
#: what the digest takes for a name a write deletes (in place of a length-prefixed value)
ABSENT = b"\xff\xff\xff\xff"


def _digest(parts: Iterable[bytes | None]) -> bytes:
    h = hashlib.sha1()
    update = h.update
    for p in parts:
        if p is None:
            update(ABSENT)
        else:
            update(_LEN.pack(len(p)))
            update(p)
    return h.digest()[:DIGEST_SIZE]


#: Mantissa bits a float keeps in a digest. RedisJSON does not parse every float exactly (a
#: value may come back one or two units in the last place off: -0.9304680228233337 is read back
#: as -0.9304680228233336), so floats are compared at 12 bits: a value written and read back
#: lands on another side of a rounding edge with a probability of about 2**-40, while a real
#: change (another vector, a lost conversion) changes the digest.
FLOAT_BITS = 12
_INT_LIMIT = 2**64


def _float_form(x: float) -> str:
    if x != x or x in (float("inf"), float("-inf")):
        return repr(x)
    mantissa, exponent = math.frexp(x)
    return f"f{round(mantissa * (1 << FLOAT_BITS))}p{exponent}"


def _digest_form(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and -_INT_LIMIT < value < _INT_LIMIT:
        return value
    if isinstance(value, (int, float)):
        try:
            return _float_form(float(value))
        except OverflowError:
            return repr(value)
    if isinstance(value, dict):
        return {str(k): _digest_form(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_digest_form(v) for v in value]
    return value


def canonical_json(value: Any) -> bytes:
    """One text for a JSON value as written and as read back from RedisJSON: keys sorted, no
    spaces, floats at :data:`FLOAT_BITS` bits of mantissa (integers beyond 64 bits, which
    RedisJSON keeps as floats, too), UTF-8."""
    return json.dumps(_digest_form(value), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def written_of(storage_type: str, w: KeyWrite) -> Written:
    """The digest (and the names it covers) of what ``w`` writes: ``storage_type`` is the
    document's storage before the write; a replacement is digested whole, in the storage it
    converts to."""
    if w.replace is not MISSING:
        if w.converts_to == "json":
            return Written(_digest([canonical_json(w.replace)]), ())
        pairs = sorted((to_bytes(n), encode_value("hash", str(n), v, w.key))
                       for n, v in dict(w.replace).items())
        return Written(_digest(p for pair in pairs for p in pair), ())
    if not w.delete and len(w.set) == 1 and storage_type != "json":
        ((n, v),) = w.set.items()
        name = field_bytes(n)
        value = v if type(v) is bytes else encode_value("hash", str(n), v, w.key)
        h = hashlib.sha1(_LEN.pack(len(name)))
        h.update(name)
        h.update(_LEN.pack(len(value)))
        h.update(value)
        return Written(h.digest()[:DIGEST_SIZE], (name,))
    names = sorted({*(field_bytes(n) for n in w.set), *(field_bytes(n) for n in w.delete)})
    by_name = {field_bytes(n): v for n, v in w.set.items()}
    parts: list[bytes | None] = []
    for name in names:
        parts.append(name)
        if name not in by_name:
            parts.append(None)
        elif storage_type == "json":
            parts.append(canonical_json(by_name[name]))
        else:
            v = by_name[name]
            parts.append(v if type(v) is bytes else encode_value("hash", name.decode(
                "utf-8", "surrogateescape"), v, w.key))
    return Written(_digest(parts), tuple(names))


def _json_values(reply: Any, names: Sequence[bytes]) -> list[Any]:
    """The first match of each path in a JSON.GET reply (MISSING where none)."""
    parsed = json.loads(reply)
    if len(names) == 1 and isinstance(parsed, list):
        return [parsed[0] if parsed else MISSING]
    out = []
    for n in names:
        matches = parsed.get(n.decode("utf-8", "surrogateescape")) if isinstance(
            parsed, dict) else None
        out.append(matches[0] if matches else MISSING)
    return out


@attrs.frozen
class Target:
    """Where and how to read one document back: ``key``, the ``names`` written,
    ``storage_type`` of the document as it is now, and ``whole``: the whole document (a
    replacement) instead of names. No names and not whole: only that the key exists (a
    document the migration only moved)."""

    key: bytes
    names: tuple[bytes, ...]
    storage_type: str
    whole: bool = False


#: :func:`live_digests` of a key that holds another type than its target's: no digest (of
#: ``DIGEST_SIZE`` bytes) equals it
OTHER_TYPE = b"another type"


def live_digests(client: redis.Redis, targets: Sequence[Target]) -> list[bytes | None]:
    """The digest of each target as the server holds it now (None: no such key;
    :data:`OTHER_TYPE`: a key of another type), computed
    the way :func:`written_of` computes it; one command per key (plus ``EXISTS`` for a hash
    whose every written name is absent), pipelined."""
    commands: list[tuple[Any, ...]] = []
    for t in targets:
        if not t.whole and not t.names:
            commands.append((b"EXISTS", t.key))
        elif t.storage_type == "json":
            commands.append((b"JSON.GET", t.key, *(t.names or (JSON_ROOT,))))
        elif t.whole:
            commands.append((b"HGETALL", t.key))
        else:
            commands.append((b"HMGET", t.key, *t.names))
    replies = wire.execute(client, commands)
    # a key of another type than the target's (a document backed up whose replacement was
    # never written, still a hash where JSON was to be): no written digest matches it
    raise_first([r for r in replies if not (isinstance(r, Exception) and wire.wrong_type(r))])
    out: list[bytes | None] = []
    unsure: list[int] = []
    for i, (t, reply) in enumerate(zip(targets, replies, strict=True)):
        if isinstance(reply, Exception):
            out.append(OTHER_TYPE)
        elif not t.whole and not t.names:
            out.append(_digest(()) if int(reply) else None)
        elif t.storage_type == "json":
            if reply is None:
                out.append(None)
                continue
            if t.whole:
                docs = json.loads(reply)
                out.append(_digest([canonical_json(docs[0])]) if docs else None)
                continue
            values = _json_values(reply, t.names)
            parts: list[bytes | None] = []
            for name, v in zip(t.names, values, strict=True):
                parts += [name, None if v is MISSING else canonical_json(v)]
            out.append(_digest(parts))
        elif t.whole:
            fields = to_map(reply)
            if not fields:
                out.append(None)
                continue
            pairs = sorted((to_bytes(n), bytes(v)) for n, v in fields.items())
            out.append(_digest(p for pair in pairs for p in pair))
        else:
            values = to_list(reply)
            parts = []
            for name, v in zip(t.names, values, strict=True):
                parts += [name, None if v is None else bytes(v)]
            out.append(_digest(parts))
            if all(v is None for v in values):
                unsure.append(i)
    if unsure:  # every written name absent: the key itself may be gone
        found = wire.execute(client, [(b"EXISTS", targets[i].key) for i in unsure])
        raise_first(found)
        for i, n in zip(unsure, found, strict=True):
            if not int(n):
                out[i] = None
    return out


#: :func:`check_written` outcomes: the document holds what was written; holds something
#: else; is gone; the record has no digest (a backup made before digests existed).
OK, CHANGED, GONE, UNCHECKED = "ok", "changed", "gone", "unchecked"


def check_written(client: redis.Redis, refs: Sequence[WrittenRef],
                  storage_type: str) -> list[str]:
    """For each record (:data:`~rvlm.core.storage.backup.records.WrittenRef`: key, new key,
    replaced, written) whether its document holds what the migration wrote to it: ``ok``,
    ``changed``, ``gone`` or ``unchecked``. ``storage_type`` is the target's (a replaced
    document may have changed storage). One command per document, pipelined."""
    out = [UNCHECKED] * len(refs)
    fast: list[int] = []
    picked: list[int] = []
    for i, (_key, _new_key, replaced, written) in enumerate(refs):
        if written is None:
            continue
        if storage_type != "json" and not replaced and written.names:
            fast.append(i)
        else:
            picked.append(i)
    if fast:
        _check_hash_fields(client, refs, fast, out)
    targets = []
    for i in picked:
        key, new_key, replaced, written = refs[i]
        assert written is not None
        targets.append(Target(new_key or key, written.names, storage_type, whole=replaced))
    for i, digest in zip(picked, live_digests(client, targets), strict=True):
        written = refs[i][3]
        assert written is not None
        out[i] = GONE if digest is None else OK if digest == written.digest else CHANGED
    return out


#: The server-side check of hash fields: KEYS are documents that were written the same names,
#: ARGV is the number of names, the names, then each document's expected digest (hex). For
#: each document the script builds the byte stream :func:`written_of` hashed and compares the
#: first 8 bytes of its SHA-1; it returns the 1-based positions of those that differ (negative
#: when the key is gone). The documents never travel to the client.
CHECK_SCRIPT = """
local n = tonumber(ARGV[1])
local names, heads = {}, {}
for j = 1, n do
  local name = ARGV[1 + j]
  names[j] = name
  heads[j] = struct.pack('<I4', #name) .. name
end
local bad = {}
for i, key in ipairs(KEYS) do
  local values = redis.call('HMGET', key, unpack(names))
  local parts, none = {}, true
  for j = 1, n do
    parts[#parts + 1] = heads[j]
    local v = values[j]
    if v then
      none = false
      parts[#parts + 1] = struct.pack('<I4', #v) .. v
    else
      parts[#parts + 1] = '\\255\\255\\255\\255'
    end
  end
  if string.sub(redis.sha1hex(table.concat(parts)), 1, 16) ~= ARGV[1 + n + i] then
    if none and redis.call('EXISTS', key) == 0 then bad[#bad + 1] = -i else bad[#bad + 1] = i end
  end
end
return bad
"""

#: Documents per script call (the server runs one call at a time: about a millisecond).
SCRIPT_KEYS = 200

#: Where hash-field digests are taken: True on the server (:data:`CHECK_SCRIPT`), False by
#: the client (``HMGET``), None to decide per client (:func:`digests_on_server`).
DIGESTS_ON_SERVER: bool | None = None

_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def digests_on_server(client: Any) -> bool:
    """Whether :func:`check_written` has the server take the digests of hash fields. Not for a
    server on this machine (loopback or a Unix socket): there the values cost nothing to send,
    and the script's Lua and SHA-1 cost the server's main thread, which the target index's
    build shares, several times an ``HMGET``'s (1M x 128-d rename + quantize, load 2-4:
    server CPU of the pass 11-17 us a document by script, 2-3 us by ``HMGET``; at 200K the
    pass and the index build together took 8.6-10.5 s by script, 7.1-8.0 s by ``HMGET``).
    For a remote server the script spares the network every written value."""
    if DIGESTS_ON_SERVER is not None:
        return DIGESTS_ON_SERVER
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None) or {}
    if kwargs.get("path"):  # a Unix socket
        return False
    return str(kwargs.get("host", "")).lower() not in _LOOPBACK


def _check_in_server(client: Any, refs: Sequence[WrittenRef], picked: list[int],
                     out: list[str]) -> list[int]:
    """:func:`_check_hash_fields` with the digests taken by the server (:data:`CHECK_SCRIPT`),
    for a single server that runs scripts. Returns the positions it could not check (all of
    them on a cluster, where a script's keys must share a slot, or when scripts are refused)."""
    if type(client) is not redis.Redis or routing.node_map(client) is not None \
            or not digests_on_server(client):
        return picked
    groups: dict[tuple[bytes, ...], list[int]] = {}
    for i in picked:
        written = refs[i][3]
        assert written is not None
        groups.setdefault(written.names, []).append(i)
    commands: list[tuple[Any, ...]] = []
    chunks: list[list[int]] = []
    for names, members in groups.items():
        for start in range(0, len(members), SCRIPT_KEYS):
            chunk = members[start:start + SCRIPT_KEYS]
            keys = [refs[i][1] or refs[i][0] for i in chunk]
            digests = [refs[i][3].digest.hex() for i in chunk]  # type: ignore[union-attr]
            commands.append((b"EVAL", CHECK_SCRIPT, len(keys), *keys, len(names), *names,
                             *digests))
            chunks.append(chunk)
    replies = wire.execute(client, commands)
    left: list[int] = []
    for chunk, reply in zip(chunks, replies, strict=True):
        if isinstance(reply, redis.ResponseError):  # no scripting here: the client checks
            left += chunk
            continue
        for i in chunk:
            out[i] = OK
        for pos in to_list(reply):
            p = int(pos)
            out[chunk[abs(p) - 1]] = CHANGED if p > 0 else GONE
    return left


def _check_hash_fields(client: redis.Redis, refs: Sequence[WrittenRef], picked: list[int],
                       out: list[str]) -> None:
    """:func:`check_written`'s hot path: hash fields written by name (not a replacement).
    On a single remote server that runs scripts the server takes the digests
    (:func:`_check_in_server`, :func:`digests_on_server`); otherwise one ``HMGET`` per
    document, the digest of the reply taken over the same byte stream :func:`written_of`
    hashed (length-prefixed name, then length-prefixed value or the absent marker)."""
    picked = _check_in_server(client, refs, picked, out)
    if not picked:
        return
    commands = []
    for i in picked:
        key, new_key, _replaced, written = refs[i]
        commands.append((b"HMGET", new_key or key, *written.names))  # type: ignore[union-attr]
    replies = wire.execute(client, commands)
    raise_first(replies)
    heads: dict[bytes, bytes] = {}
    pack = _LEN.pack
    sha1 = hashlib.sha1
    unsure: list[int] = []
    for i, reply in zip(picked, replies, strict=True):
        written = refs[i][3]
        assert written is not None
        values = reply if type(reply) is list else to_list(reply)
        names = written.names
        if len(names) == 1 and values[0] is not None:  # one field: the common case
            name, v = names[0], values[0]
            head = heads.get(name)
            if head is None:
                head = heads[name] = pack(len(name)) + name
            stream = head + pack(len(v)) + v
        else:
            parts = []
            for name, v in zip(names, values, strict=True):
                head = heads.get(name)
                if head is None:
                    head = heads[name] = pack(len(name)) + name
                parts.append(head)
                parts.append(ABSENT if v is None else pack(len(v)) + v)
            stream = b"".join(parts)
        if sha1(stream).digest()[:DIGEST_SIZE] == written.digest:
            out[i] = OK
        elif all(v is None for v in values):
            unsure.append(i)
        else:
            out[i] = CHANGED
    if unsure:  # every written name absent: changed, or the key itself is gone
        found = wire.execute(client, [(b"EXISTS", refs[i][1] or refs[i][0]) for i in unsure])
        raise_first(found)
        for i, n in zip(unsure, found, strict=True):
            out[i] = CHANGED if int(n) else GONE


def originals_match(client: redis.Redis, records: Sequence[BackupRecord],
                    storage_type: str) -> list[bool]:
    """For each record: does its original key hold exactly the originals the backup kept (the
    migration's write to it was lost, or never happened)? ``storage_type`` is the source's.
    Hash: the backed-up fields (a replaced record: every field); JSON: the whole document."""
    targets: list[Target] = []
    expected: list[bytes] = []
    for r in records:
        if storage_type == "json":
            text = next((f.value for f in r.fields if f.name == JSON_ROOT), None)
            targets.append(Target(r.key, (), "json", whole=True))
            expected.append(_digest([canonical_json(json.loads(text))]) if text is not None
                            else b"")
        elif r.replaced:
            pairs = sorted((f.name, f.value) for f in r.fields if f.value is not None)
            targets.append(Target(r.key, (), "hash", whole=True))
            expected.append(_digest(p for pair in pairs for p in pair))
        else:  # no fields (a document only moved): whether the original key exists
            names = tuple(f.name for f in r.fields)
            targets.append(Target(r.key, names, "hash"))
            expected.append(_digest(p for f in r.fields for p in (f.name, f.value)))
    got = live_digests(client, targets)
    return [g is not None and g == e for g, e in zip(got, expected, strict=True)]


__all__ = ["ABSENT", "CHANGED", "DIGESTS_ON_SERVER", "DIGEST_SIZE", "GONE", "OK", "OTHER_TYPE",
           "UNCHECKED",
           "Target", "canonical_json", "check_written", "digests_on_server", "live_digests",
           "originals_match", "written_of"]
