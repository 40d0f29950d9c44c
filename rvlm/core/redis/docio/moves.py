"""Moving keys to new names, on one node or across the slots of a Redis Cluster, crash-safe.

:func:`move_keys` renames each ``(old, new)`` pair, TTL kept, and never overwrites a key that
is not a copy of the one being moved:

* same slot (or one node): ``RENAMENX``; a refusal is accepted only when the new key is a
  copy of the old one (then the old one is deleted), else it fails naming the key;
* across slots (a cluster; ``RVLM_RENAME_MODE=dump`` forces it on one node): ``DUMP`` and
  ``PTTL`` of the old keys, ``RESTORE new ttl payload`` (no ``REPLACE``), then ``DEL`` of each
  old key whose copy is in place. A ``RESTORE`` refused with ``BUSYKEY`` counts as in place
  when the existing key holds what the old one holds (a move interrupted between ``RESTORE``
  and ``DEL``: the re-run finishes it instead of reporting a collision); anything else is a
  key someone else created, and the old key is kept.

Whether two keys hold the same document is decided by content (:func:`same_content`), never by
``DUMP`` bytes: a hash with a field over 64 bytes (a vector) is a hash table whose ``DUMP``
order follows the node's per-process hash seed, so a correct copy on another node has other
``DUMP`` bytes. :func:`delete_copies` deletes such copies (atomically in one script when both
keys share a slot).

Every command goes through :func:`rvlm.core.redis.wire.execute`: one pipeline per primary on a
cluster, redirections followed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from redis.crc import key_slot

from rvlm.core.errors import MigrationFailed
from rvlm.core.redis import routing, wire
from rvlm.core.redis.resp import to_int, to_map, to_str

RENAME_MODE_ENV = "RVLM_RENAME_MODE"

Pair = tuple[bytes, bytes]

#: 1 when KEYS[2] holds the same document as KEYS[1] (type and content), else 0; with
#: ARGV[1] == "del", a copy is deleted (returns 1 only if it was).
_SAME = """
local a, b = KEYS[1], KEYS[2]
local ta = redis.call('TYPE', a)['ok']
local tb = redis.call('TYPE', b)['ok']
local same = ta == tb and ta ~= 'none'
if same and ta == 'hash' then
  if redis.call('HLEN', a) ~= redis.call('HLEN', b) then
    same = false
  else
    local fv = redis.call('HGETALL', a)
    for i = 1, #fv, 2 do
      if redis.call('HGET', b, fv[i]) ~= fv[i + 1] then same = false break end
    end
  end
elseif same and ta == 'ReJSON-RL' then
  same = redis.call('JSON.GET', a, '$') == redis.call('JSON.GET', b, '$')
elseif same and ta == 'string' then
  same = redis.call('GET', a) == redis.call('GET', b)
elseif same then
  same = redis.call('DUMP', a) == redis.call('DUMP', b)
end
if not same then return 0 end
if ARGV[1] == 'del' then return redis.call('DEL', b) end
return 1
"""


def force_dump_restore() -> bool:
    """``RVLM_RENAME_MODE=dump``: use the cross-slot path on one node too (tests)."""
    return os.environ.get(RENAME_MODE_ENV, "").lower() == "dump"


def crosses_slots(client: Any, old: bytes, new: bytes) -> bool:
    """True when ``old`` and ``new`` cannot be renamed into each other with ``RENAME``: in
    different slots of a cluster, or always when :func:`force_dump_restore`."""
    if force_dump_restore():
        return True
    return routing.is_cluster(client) and key_slot(old) != key_slot(new)


def _content(kind: str, key: bytes) -> tuple[Any, ...]:
    if kind == "hash":
        return (b"HGETALL", key)
    if kind == "ReJSON-RL":
        return (b"JSON.GET", key, b"$")
    if kind == "string":
        return (b"GET", key)
    return (b"DUMP", key)


def _normal(kind: str, reply: Any) -> Any:
    if kind == "hash":
        return to_map(reply)  # RESP2 flat list or RESP3 map: a dict either way
    return reply


def same_content(client: Any, pairs: Sequence[Pair]) -> list[bool]:
    """For each ``(a, b)``: both exist and hold the same document (same type; a hash's fields
    and values, a JSON document's text, a string's value, other types' DUMP). Two pipelined
    round trips, keys in any slots."""
    if not pairs:
        return []
    types = wire.execute(client, [(b"TYPE", k) for pair in pairs for k in pair])
    wire.raise_first(types)
    kinds = [to_str(t) for t in types]
    commands: list[tuple[Any, ...]] = []
    wanted: list[int] = []
    for i, (a, b) in enumerate(pairs):
        ka, kb = kinds[2 * i], kinds[2 * i + 1]
        if ka == kb and ka != "none":
            wanted.append(i)
            commands += [_content(ka, a), _content(kb, b)]
    replies = wire.execute(client, commands)
    wire.raise_first(replies)
    out = [False] * len(pairs)
    for j, i in enumerate(wanted):
        kind = kinds[2 * i]
        va, vb = replies[2 * j], replies[2 * j + 1]
        out[i] = va is not None and _normal(kind, va) == _normal(kind, vb)
    return out


def delete_copies(client: Any, pairs: Sequence[Pair]) -> list[bool]:
    """For each ``(key, copy)``: delete ``copy`` if it holds the same document as ``key``
    (atomically, in one script, when both share a slot or on one node; across slots a
    :func:`same_content` check, then ``DEL``). Returns whether each was deleted; False means
    they differ (or one is missing) and neither was touched."""
    if not pairs:
        return []
    cluster = routing.is_cluster(client)
    local = [not cluster or key_slot(a) == key_slot(b) for a, b in pairs]
    out = [False] * len(pairs)
    scripted = [i for i, one in enumerate(local) if one]
    if scripted:
        replies = wire.execute(client, [(b"EVAL", _SAME, 2, pairs[i][0], pairs[i][1], b"del")
                                           for i in scripted])
        wire.raise_first(replies)
        for i, r in zip(scripted, replies, strict=True):
            out[i] = bool(to_int(r))
    apart = [i for i, one in enumerate(local) if not one]
    if apart:
        same = same_content(client, [pairs[i] for i in apart])
        copies = [i for i, s in zip(apart, same, strict=True) if s]
        if copies:
            wire.raise_first(wire.execute(client, [(b"DEL", pairs[i][1]) for i in copies]))
            for i in copies:
                out[i] = True
    return out


def _ok(reply: Any) -> bool:
    return reply is True or reply in (b"OK", "OK")


def _busy(reply: Any) -> bool:
    return isinstance(reply, Exception) and str(reply).startswith("BUSYKEY")


def move_keys(client: Any, pairs: Sequence[Pair], *,
              between: Callable[[], None] | None = None) -> None:
    """Rename each ``(old, new)`` (see the module docstring). Raises
    :class:`~rvlm.core.errors.MigrationFailed` naming the first key that could not be moved,
    after every pair that could was moved (a source whose copy is not in place is kept).
    ``between`` (crash tests) runs once the copies are in place and before the sources are
    deleted."""
    pairs = [(o, n) for o, n in pairs if o != n]
    if not pairs:
        return
    rename: list[Pair]
    dump: list[Pair]
    if force_dump_restore():
        rename, dump = [], pairs
    elif routing.is_cluster(client):
        rename, dump = [], []
        for p in pairs:
            (dump if key_slot(p[0]) != key_slot(p[1]) else rename).append(p)
    else:
        rename, dump = pairs, []
    failures: list[str] = []
    if rename:
        replies = wire.execute(client, [(b"RENAMENX", o, n) for o, n in rename])
        refused = []
        for (o, n), r in zip(rename, replies, strict=True):
            if isinstance(r, Exception):
                failures.append(f"RENAMENX {to_str(o)!r} failed: {r}")
            elif not to_int(r):
                refused.append((o, n))
        if refused:
            # the new key exists: fine only if it is this key's copy (an earlier DUMP/RESTORE
            # move interrupted before its DEL)
            same = same_content(client, refused)
            copies = [o for (o, _n), s in zip(refused, same, strict=True) if s]
            wire.raise_first(wire.execute(client, [(b"DEL", o) for o in copies]))
            failures += [f"cannot rename {to_str(o)!r}: the new key {to_str(n)!r} already "
                         "exists" for (o, n), s in zip(refused, same, strict=True) if not s]
    if dump:
        failures += _dump_restore(client, dump, between)
    elif between is not None:
        between()
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise MigrationFailed(failures[0] + more)


def _dump_restore(client: Any, pairs: Sequence[Pair],
                  between: Callable[[], None] | None) -> list[str]:
    read: list[tuple[Any, ...]] = []
    for old, _new in pairs:
        read += [(b"DUMP", old), (b"PTTL", old)]
    replies = wire.execute(client, read)
    failures: list[str] = []
    restore: list[tuple[Any, ...]] = []
    restoring: list[Pair] = []
    for i, (old, new) in enumerate(pairs):
        payload, pttl = replies[2 * i], replies[2 * i + 1]
        if isinstance(payload, Exception) or payload is None:
            failures.append(f"DUMP of {to_str(old)!r} failed: {payload!r}")
            continue
        restore.append((b"RESTORE", new, max(to_int(pttl, -1), 0), payload))
        restoring.append((old, new))
    restored = wire.execute(client, restore)
    done: list[bytes] = []
    busy: list[Pair] = []
    for (old, new), r in zip(restoring, restored, strict=True):
        if _ok(r):
            done.append(old)
        elif _busy(r):
            busy.append((old, new))
        else:
            failures.append(f"RESTORE of {to_str(new)!r} failed: {r!r}")
    if busy:
        for (old, new), same in zip(busy, same_content(client, busy), strict=True):
            if same:
                done.append(old)  # our own copy, left by an interrupted move
            else:
                failures.append(f"cannot move {to_str(old)!r}: the new key {to_str(new)!r} "
                                "already exists with other contents")
    if between is not None:
        between()
    # a source goes only once its copy is in place
    wire.raise_first(wire.execute(client, [(b"DEL", old) for old in done]))
    return failures


__all__ = [
    "RENAME_MODE_ENV",
    "crosses_slots",
    "delete_copies",
    "force_dump_restore",
    "move_keys",
    "same_content",
]
