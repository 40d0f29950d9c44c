"""Document I/O for online mode: read source documents whole, write and read target documents.

Online mode never writes a source key; it writes each document's copy under the target prefix.
Everything here is pipelined (:func:`rvlm.core.redis.wire.execute`: one round trip per step of
a batch), works under RESP2 and RESP3, and keeps absolute expiry times: a source key's
``PEXPIRETIME`` becomes its copy's ``PEXPIREAT``, so the two expire at the same millisecond
however long the copy took.

* :func:`read_sources`: every field of each hash (``HGETALL``), or each JSON document's root
  plus the paths the plan's operations name (``JSON.GET key $ path...``), and its expiry. A key
  that is gone, or holds another type (a string, a list, a JSON document under a hash index),
  is not a document: it is reported as absent, and its copy is deleted.
* :class:`TargetDoc`: what one target key must hold; :func:`write_targets` writes it (``DEL``,
  then ``HSET`` of every field or ``JSON.SET $``, then path edits the server applies, then
  ``PEXPIREAT``), each key in one ``MULTI``/``EXEC`` when ``atomic`` (a serving index then
  never sees a half-written document), and deletes the copies of absent documents.
* :func:`read_targets` reads copies back, so a resume compares and writes only what differs.

JSON edits: a plan's set/delete of plain ``$.a.b`` paths is applied to the document here, so
the copy is written once; other paths are sent as ``JSON.SET``/``JSON.DEL`` after the root,
inside the same ``MULTI``/``EXEC`` (and such copies are always rewritten on resume).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import attrs
import redis

from rvlm.core.errors import MigrationFailed
from rvlm.core.plugins.documents import MISSING
from rvlm.core.redis import routing, wire
from rvlm.core.redis.docio.read import JSON_ROOT, ReadDoc
from rvlm.core.redis.resp import to_int, to_list, to_map, to_str

#: ``$.a.b``: a path rvlm applies to a document itself.
SIMPLE_PATH = re.compile(r"^\$(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_ROOT = JSON_ROOT.decode()


def _key_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def encode_field(name: str, value: Any, key: bytes) -> bytes:
    """A hash field value as bytes (bytes as they are, str as UTF-8, numbers as text)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value).encode()
    raise MigrationFailed(f"value for hash field {name!r} of {to_str(key)!r} must be bytes, "
                          f"not {type(value).__name__}")


def encode_json(value: Any, key: bytes) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise MigrationFailed(f"the document for {to_str(key)!r} is not JSON-serialisable: "
                              f"{exc}") from None


# --------------------------------------------------------------------------- sources


@attrs.define
class Sources:
    """One batch as read: the documents (``docs``, in key order, with ``pttl`` set), each
    one's absolute expiry in ms (``expire_at``, -1: none) and the keys that are not documents
    (``absent``)."""

    docs: list[ReadDoc]
    expire_at: dict[bytes, int]
    absent: list[bytes]


def read_sources(client: redis.Redis, storage_type: str, keys: Sequence[bytes],
                 names: Sequence[str], *, now_ms: int | None = None) -> Sources:
    """Read every key of ``keys`` whole (see the module docstring). ``names`` are the JSON
    paths the plan's operations read or write (ignored for hashes: every field is read).
    ``now_ms`` (the server's clock, ``TIME``) turns expiry times into the ``pttl`` the
    executor's transform expects; None reads ``TIME`` in the same pipeline (one round trip
    fewer)."""
    sources, _targets = read_sources_and_targets(client, storage_type, keys, names, "", (),
                                                 now_ms=now_ms)
    return sources


def read_sources_and_targets(client: redis.Redis, storage_type: str, keys: Sequence[bytes],
                             names: Sequence[str], target_storage: str,
                             target_keys: Sequence[bytes], *, now_ms: int | None = None
                             ) -> tuple[Sources, list[TargetDoc | None]]:
    """:func:`read_sources` of ``keys`` and :func:`read_targets` of ``target_keys`` (of
    ``target_storage``), in one pipeline: one round trip where two would do."""
    json_storage = storage_type == "json"
    if now_ms is None and routing.is_cluster(client):  # TIME has no key to route it by
        now_ms = server_time_ms(client)
    commands: list[tuple[Any, ...]] = [(b"TIME",)] if now_ms is None else []
    paths = [n.encode() for n in names if n != _ROOT]
    for k in keys:
        if json_storage:
            commands.append((b"JSON.GET", k, JSON_ROOT, *paths) if paths
                            else (b"JSON.GET", k, JSON_ROOT, JSON_ROOT))
        else:
            commands.append((b"HGETALL", k))
        commands.append((b"PEXPIRETIME", k))
    commands += _target_commands(target_storage, target_keys)
    replies = wire.execute(client, commands)
    if now_ms is None:
        now_ms = _time_ms(replies[0])
        replies = replies[1:]
    out = Sources(docs=[], expire_at={}, absent=[])
    for i, k in enumerate(keys):
        value, expiry = replies[2 * i], replies[2 * i + 1]
        if isinstance(expiry, Exception):
            raise MigrationFailed(f"PEXPIRETIME {to_str(k)!r} failed: {expiry}")
        if isinstance(value, Exception):
            if wire.wrong_type(value):
                out.absent.append(k)
                continue
            raise MigrationFailed(f"reading {to_str(k)!r} failed: {value}")
        at = to_int(expiry, -1)
        values: dict[str, Any]
        raw_json: bytes | None = None
        if json_storage:
            if value is None:
                out.absent.append(k)
                continue
            parsed = json.loads(value)
            matches = parsed.get(_ROOT) if isinstance(parsed, dict) else None
            if not matches:
                out.absent.append(k)
                continue
            root = matches[0]
            raw_json = encode_json(root, k)
            values = {_ROOT: root}
            for n in names:
                if n == _ROOT:
                    continue
                got = parsed.get(n)
                values[n] = got[0] if got else MISSING
        else:
            values = to_map(value)
            if not values:
                out.absent.append(k)
                continue
        if at == -2:
            out.absent.append(k)  # expired between the two reads
            continue
        pttl = -1 if at < 0 else max(1, at - now_ms)
        out.docs.append(ReadDoc(key=k, values=values, raw_json=raw_json, pttl=pttl))
        out.expire_at[k] = at
    return out, _parse_targets(target_storage, target_keys, replies[2 * len(keys):])


def server_time_ms(client: redis.Redis) -> int:
    """The server's clock in ms (``TIME``)."""
    return _time_ms(client.execute_command("TIME"))


def _time_ms(reply: Any) -> int:
    if isinstance(reply, Exception):
        raise MigrationFailed(f"TIME failed: {reply}")
    parts = to_list(reply)
    return to_int(parts[0]) * 1000 + to_int(parts[1]) // 1000


# --------------------------------------------------------------------------- targets


@attrs.define
class TargetDoc:
    """What a target key must hold: ``fields`` (hash) or ``document`` (JSON, plus ``edits``:
    ``("set", path, value)`` / ``("del", path, None)`` the server applies after the root), and
    the absolute expiry ``expire_at`` (ms; -1: none)."""

    key: bytes
    storage: str
    fields: dict[bytes, bytes] | None = None
    document: Any = MISSING
    edits: tuple[tuple[str, str, Any], ...] = ()
    expire_at: int = -1

    def comparable(self) -> bool:
        """Whether :func:`same` can tell if a target holds this (no server-side edits)."""
        return not self.edits


def apply_json(root: Any, set_values: dict[str, Any], delete: Sequence[str], key: bytes
               ) -> tuple[Any, tuple[tuple[str, str, Any], ...]]:
    """``root`` with the plan's edits of plain ``$.a.b`` paths applied (a new object; ``root``
    is not changed), and the edits of other paths left for the server. Deletes come first,
    then sets, as the executor writes them. A set whose parent does not exist fails, as
    ``JSON.SET`` would."""
    doc = json.loads(json.dumps(root)) if (set_values or delete) else root
    later: list[tuple[str, str, Any]] = []
    for path in delete:
        if path == _ROOT or not SIMPLE_PATH.match(path):
            later.append(("del", path, None))
            continue
        *parents, last = path[2:].split(".")
        node = doc
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    for path, value in set_values.items():
        if path == _ROOT:
            doc = value
            continue
        if not SIMPLE_PATH.match(path) or later:
            later.append(("set", path, value))
            continue
        *parents, last = path[2:].split(".")
        node = doc
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise MigrationFailed(f"cannot set {path} in {to_str(key)!r}: its parent does not "
                                  "exist or is not an object")
        node[last] = value
    return doc, tuple(later)


def write_targets(client: redis.Redis, docs: Sequence[TargetDoc], deletes: Sequence[bytes],
                  *, atomic: bool) -> int:
    """Write ``docs`` and delete ``deletes`` (see the module docstring). Returns the value
    bytes written; raises :class:`MigrationFailed` on any error reply."""
    commands: list[tuple[Any, ...]] = []
    #: per key: its command names, and whether they are wrapped in MULTI/EXEC
    what: list[tuple[bytes, list[bytes], bool]] = []
    written = 0
    for d in docs:
        cmds: list[tuple[Any, ...]] = [(b"DEL", d.key)]
        if d.storage == "json":
            data = encode_json(d.document, d.key)
            written += len(data)
            cmds.append((b"JSON.SET", d.key, JSON_ROOT, data))
            for kind, path, value in d.edits:
                if kind == "del":
                    cmds.append((b"JSON.DEL", d.key, path))
                else:
                    data = encode_json(value, d.key)
                    written += len(data)
                    cmds.append((b"JSON.SET", d.key, path, data))
        else:
            if not d.fields:
                raise MigrationFailed(f"the copy of {to_str(d.key)!r} would have no field")
            args: list[bytes] = [b"HSET", d.key]
            for n, v in d.fields.items():
                args += [n, v]
                written += len(v)
            cmds.append(tuple(args))
        if d.expire_at >= 0:
            cmds.append((b"PEXPIREAT", d.key, d.expire_at))
        if atomic:
            commands.append((b"MULTI",))
            commands += cmds
            commands.append((b"EXEC",))
        else:
            commands += cmds
        what.append((d.key, [c[0] for c in cmds], atomic))
    for k in deletes:
        commands.append((b"DEL", k))
        what.append((k, [b"DEL"], False))
    replies = wire.execute(client, commands)
    i = 0
    for key, names, wrapped in what:
        if wrapped:
            queued = replies[i + 1:i + 1 + len(names)]
            result = replies[i + 1 + len(names)]
            i += len(names) + 2
            bad: Any = next((r for r in queued if isinstance(r, Exception)), None)
            if bad is None and not isinstance(result, list):
                bad = result if isinstance(result, Exception) else f"aborted ({result!r})"
            got = result if bad is None else []
        else:
            got = replies[i:i + len(names)]
            i += len(names)
            bad = None
        for name, r in zip(names, got, strict=True):
            if bad is None and (isinstance(r, Exception) or (name == b"JSON.SET" and not _ok(r))):
                bad = f"{name.decode()}: {r!r}"
        if bad is not None:
            raise MigrationFailed(f"writing the copy {to_str(key)!r} failed: {bad}")
    return written


def _ok(reply: Any) -> bool:
    return reply is True or reply in (b"OK", "OK")


def read_targets(client: redis.Redis, storage_type: str, keys: Sequence[bytes]
                 ) -> list[TargetDoc | None]:
    """What each target key holds now: None where it does not exist; a key of another type
    comes back as a :class:`TargetDoc` of storage :data:`OTHER_TYPE` (it exists, and holds
    no copy)."""
    return _parse_targets(storage_type, keys,
                          wire.execute(client, _target_commands(storage_type, keys)))


#: :attr:`TargetDoc.storage` of a target key read back that holds another type of value.
OTHER_TYPE = "other"


def _target_commands(storage_type: str, keys: Sequence[bytes]) -> list[tuple[Any, ...]]:
    json_storage = storage_type == "json"
    commands: list[tuple[Any, ...]] = []
    for k in keys:
        commands.append((b"JSON.GET", k, JSON_ROOT) if json_storage else (b"HGETALL", k))
        commands.append((b"PEXPIRETIME", k))
    return commands


def _parse_targets(storage_type: str, keys: Sequence[bytes], replies: Sequence[Any]
                   ) -> list[TargetDoc | None]:
    json_storage = storage_type == "json"
    out: list[TargetDoc | None] = []
    for i, k in enumerate(keys):
        value, expiry = replies[2 * i], replies[2 * i + 1]
        if isinstance(value, Exception):
            if not wire.wrong_type(value):
                raise MigrationFailed(f"reading the copy {to_str(k)!r} failed: {value}")
            out.append(TargetDoc(key=k, storage=OTHER_TYPE, expire_at=to_int(expiry, -1)))
            continue
        if value is None:
            out.append(None)
            continue
        at = to_int(expiry, -1)
        if json_storage:
            matches = json.loads(value)
            if not matches:
                out.append(None)
                continue
            out.append(TargetDoc(key=k, storage="json", document=matches[0], expire_at=at))
        else:
            fields = _raw_pairs(value)
            out.append(TargetDoc(key=k, storage="hash", fields=fields, expire_at=at)
                       if fields else None)
    return out


def _raw_pairs(value: Any) -> dict[bytes, bytes]:
    pairs = value.items() if isinstance(value, dict) else zip(value[::2], value[1::2],
                                                               strict=True)
    return {n if type(n) is bytes else _key_bytes(n): v if type(v) is bytes else _key_bytes(v)
            for n, v in pairs}


def same(want: TargetDoc, have: TargetDoc | None) -> bool:
    """True when ``have`` (read back) holds exactly what ``want`` describes: the expiry, and
    every hash field and no other (bytes), or the JSON document (:func:`json_equal`)."""
    if have is None or want.edits or want.storage != have.storage:
        return False
    if want.expire_at != have.expire_at:
        return False
    if want.storage == "json":
        return json_equal(want.document, have.document)
    return want.fields == have.fields


#: How far apart two floats of a JSON document may be and still be the same value: RedisJSON
#: reads some floats back a unit or two in the last place off (-0.9304680228233337 comes back
#: as -0.9304680228233336); 2**-44 relative is 256 such units, and any change a user makes.
FLOAT_TOLERANCE = 2.0 ** -44
_INT64 = 2 ** 63


def json_equal(a: Any, b: Any) -> bool:
    """Whether two JSON values (as ``json.loads`` gives them) are the same document: same
    types (a boolean is not a number, an integer is not a float) and values, floats within
    :data:`FLOAT_TOLERANCE` (an integer beyond 64 bits, which RedisJSON keeps as a float,
    compared as one)."""
    ta, tb = type(a), type(b)
    if ta is float or tb is float:
        if ta is tb:
            return bool(a == b or math.isclose(a, b, rel_tol=FLOAT_TOLERANCE))
        big = a if ta is int else b if tb is int else None
        return (big is not None and not -_INT64 <= big < _INT64
                and math.isclose(float(a), float(b), rel_tol=FLOAT_TOLERANCE))
    if ta is not tb:
        return False
    if ta is dict:
        return bool(a.keys() == b.keys() and all(json_equal(v, b[k]) for k, v in a.items()))
    if ta is list:
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
