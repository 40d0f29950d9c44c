"""Writing documents for the executor: merged updates and key renames, every reply checked.

:func:`write_batch` writes a batch's updates in one pipeline (renames last,
:func:`~rvlm.core.redis.docio.moves.move_keys`);
a whole-document replacement is one ``MULTI``/``EXEC`` per key, so a crash leaves the key
either as it was or replaced, never missing. :func:`check_replies` turns any error reply (or a
JSON.SET, RESTORE or RENAMENX that did not succeed) into a
:class:`~rvlm.core.errors.MigrationFailed` naming the key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import redis

from rvlm.core.errors import MigrationFailed
from rvlm.core.plugins.documents import MISSING
from rvlm.core.redis import wire
from rvlm.core.redis.docio.moves import move_keys
from rvlm.core.redis.resp import field_bytes, to_bytes, to_int, to_str


def _ok(reply: Any) -> bool:
    return reply is True or reply in (b"OK", "OK")


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


    @classmethod
    def edits(cls, keys: Sequence[bytes], sets: Sequence[dict[str, Any]],
              delete: tuple[str, ...], new_keys: Sequence[bytes | None]) -> list[KeyWrite]:
        """:meth:`edit` for each document of ``keys`` (its values ``sets[i]``, its new key
        ``new_keys[i]``), all deleting ``delete``: one loop, no call per document."""
        new = object.__new__
        key_of, set_of, delete_of, new_key_of = _kw_key, _kw_set, _kw_delete, _kw_new_key
        replace_of, converts_of, pttl_of = _kw_replace, _kw_converts_to, _kw_pttl
        out: list[KeyWrite] = []
        add = out.append
        for key, values, new_key in zip(keys, sets, new_keys, strict=True):
            w = new(cls)
            key_of(w, key)
            set_of(w, values)
            delete_of(w, delete)
            new_key_of(w, new_key)
            replace_of(w, MISSING)
            converts_of(w, None)
            pttl_of(w, -1)
            add(w)
        return out


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


def encode_value(storage_type: str, name: str, value: Any, key: bytes) -> bytes:
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


#: Commands whose reply only needs to be "not an error".
_ANY_REPLY = frozenset({"HSET", "HDEL", "JSON.DEL", "DEL", "PEXPIRE"})


def check_replies(replies: Sequence[Any], what: Sequence[tuple[str, bytes]]) -> None:
    """Raise :class:`MigrationFailed` naming the key for the first reply that failed.

    ``what`` holds ``(command, key)`` per reply: any error reply fails; JSON.SET and RESTORE
    must answer OK, RENAMENX 1; ``QUEUED`` is a command queued in a MULTI and ``MULTI/EXEC
    <cmd> ...`` the EXEC reply of those commands (each must have run)."""
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
        data = encode_value("json", "the document", w.replace, key)
        cmd = ("JSON.SET", key, "$", data)
        size = len(data)
    elif w.converts_to == "hash":
        if not isinstance(w.replace, dict) or not w.replace:
            raise MigrationFailed(f"the new hash for {to_str(key)!r} must be a non-empty "
                                  f"mapping of field names to values, not {w.replace!r:.60}")
        args: list[bytes] = []
        size = 0
        for n, v in w.replace.items():
            value = encode_value("hash", str(n), v, key)
            args += [to_bytes(n), value]
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


def write_batch(
    client: redis.Redis,
    storage_type: str,
    writes: Sequence[KeyWrite],
    *,
    fault: Callable[[], None] | None = None,
    move_fault: Callable[[], None] | None = None,
) -> int:
    """Write every update in one pipeline (hash: HSET/HDEL; JSON: JSON.SET/JSON.DEL, each
    JSON.SET checked for OK), then rename keys
    (:func:`~rvlm.core.redis.docio.moves.move_keys`: RENAMENX, or DUMP/RESTORE/DEL across
    cluster slots). Returns the number of value bytes written. ``fault`` (tests) runs between
    the value writes and the renames, ``move_fault`` between a DUMP/RESTORE move's RESTORE and
    its DEL. On a cluster every command goes to the primary owning its key.

    A write with ``replace`` is one ``MULTI``/``EXEC`` on its key (see :func:`_queue_replace`):
    a crash leaves the key either as it was or replaced, never missing.

    Commands go through :func:`~rvlm.core.redis.wire.execute` (packed by hiredis, raw replies):
    this is the executor's hot path.
    """
    if storage_type != "json" and all(w.replace is MISSING for w in writes):
        written = _write_hashes(client, writes)
    else:
        written = _write_any(client, storage_type, writes)
    if fault is not None:
        fault()
    move_keys(client, [(w.key, w.new_key) for w in writes
                       if w.new_key is not None and w.new_key != w.key], between=move_fault)
    return written


def _write_hashes(client: redis.Redis, writes: Sequence[KeyWrite]) -> int:
    """:func:`write_batch`'s value writes when every write is a hash edit (the hot path):
    ``HSET`` and ``HDEL`` per key, whose replies only need to be "not an error"; the first
    error reply fails the batch naming its command and key (as :func:`check_replies`)."""
    commands: list[tuple[Any, ...]] = []
    add = commands.append
    written = 0
    # the few names of a batch as bytes, and each deleted-names tuple as the HDEL's tail
    # (the columnar transform shares one tuple among the documents of a pattern)
    wire_names: dict[Any, bytes] = {}
    tails: dict[tuple[str, ...], tuple[bytes, ...]] = {}
    for w in writes:
        key = w.key
        values = w.set
        if values:
            args: list[Any] = [b"HSET", key]
            for n, v in values.items():
                data = v if type(v) is bytes else encode_value("hash", n, v, key)
                written += len(data)
                name = wire_names.get(n)
                if name is None:
                    name = wire_names[n] = field_bytes(n)
                args += (name, data)
            add(tuple(args))
        gone = w.delete
        if gone:
            tail = tails.get(gone)
            if tail is None:
                tail = tails[gone] = tuple([field_bytes(n) for n in gone])
            add((b"HDEL", key, *tail))
    if commands:
        replies = wire.execute(client, commands)
        err = wire.first_error(replies)
        if err is not None:
            cmd = commands[next(i for i, r in enumerate(replies) if r is err)]
            raise MigrationFailed(f"{cmd[0].decode()} on {to_str(cmd[1])!r} failed: {err}")
    return written


def _write_any(client: redis.Redis, storage_type: str, writes: Sequence[KeyWrite]) -> int:
    """:func:`write_batch`'s value writes in general (JSON, whole-document replacements)."""
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
                data = encode_value(storage_type, name, value, w.key)
                written += len(data)
                pipe.execute_command("JSON.SET", w.key, name, data)
                what.append(("JSON.SET", w.key))
        else:
            if w.set:
                args: list[Any] = [b"HSET", w.key]
                for n, v in w.set.items():
                    data = v if type(v) is bytes else encode_value(storage_type, n, v, w.key)
                    written += len(data)
                    args.append(field_bytes(n))
                    args.append(data)
                commands.append(tuple(args))
                what.append(("HSET", w.key))
            if w.delete:
                pipe.hdel(w.key, *[to_bytes(n) for n in w.delete])
                what.append(("HDEL", w.key))
    if what:
        check_replies(pipe.execute(raise_on_error=False), what)
    return written


__all__ = ["KeyWrite", "check_replies", "write_batch"]
