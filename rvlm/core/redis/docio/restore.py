"""Backup records and documents: what a backup keeps of a document before it is written, and
putting it back.

* :func:`backup_raw` / :func:`backup_record`: the originals of one document as read
  (:class:`~rvlm.core.redis.docio.read.ReadDoc`) before its writes.
* :func:`restore_records` puts backup records back (resume and rollback): renamed keys home,
  original values, deleted fields, TTLs; whole documents a ``converts_to`` operation replaced
  are recreated. It never destroys a key it cannot prove is the migration's own: such a pair
  is a conflict (:class:`RestoreConflict`, :func:`conflict_message`, :func:`conflict_actions`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import redis

from rvlm.core.errors import MigrationFailed
from rvlm.core.plugins.documents import MISSING
from rvlm.core.redis import routing, wire
from rvlm.core.redis.docio.moves import delete_copies, move_keys
from rvlm.core.redis.docio.read import JSON_ROOT, ReadDoc
from rvlm.core.redis.docio.write import check_replies
from rvlm.core.redis.resp import field_bytes, to_bytes, to_int, to_str
from rvlm.core.redis.topology import slot_of
from rvlm.core.redis.wire import raise_first
from rvlm.core.storage.backup.records import BackupRecord, FieldOriginal, RawRecord


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


def restore_records(
    client: redis.Redis, storage_type: str, records: Sequence[BackupRecord], *,
    recreate: bool = False, conflicts: list[tuple[bytes, bytes]] | None = None,
) -> list[bytes]:
    """Put backup records back: move renamed keys home, set original values, delete fields
    that did not exist, restore a recorded TTL the key lost. Idempotent.

    A *replaced* record (a whole document a ``converts_to`` operation replaced) is restored by
    deleting whatever is at its key and new key and recreating the original (every field,
    ``storage_type`` of the source, TTL) in one ``MULTI``/``EXEC`` (the new key's DEL comes
    after it when the two are in different cluster slots): right in every state a crash
    leaves (not replaced yet, replaced, replaced and moved, moved copy beside its source).

    Restore never destroys a key it cannot prove is the migration's own. When a record was
    moved and *both* its key and its new key exist, the new key is deleted only if it holds the
    same document as the key (what an interrupted DUMP/RESTORE move leaves; compared by
    content, :func:`~rvlm.core.redis.docio.moves.delete_copies`); otherwise someone
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
    raise_first(replies)
    ex = [bool(to_int(x)) for x in replies]
    both = [i for i, r in enumerate(records)
            if r.new_key is not None and r.new_key != r.key and ex[2 * i] and ex[2 * i + 1]]
    found: list[tuple[bytes, bytes]] = []
    pairs = [(records[i].key, records[i].new_key or b"") for i in both]
    for i, pair, copy_deleted in zip(both, pairs, delete_copies(client, pairs), strict=True):
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
    move_keys(client, moves)
    pipe = wire.Batch(client)
    what: list[tuple[str, bytes]] = []
    later: list[bytes] = []
    split = routing.is_cluster(client)
    for r in replaced:
        later += _queue_recreate(pipe, what, storage_type, r, split)
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
                pipe.hset(r.key, mapping=setv)
                what.append(("HSET", r.key))
            if dels:
                pipe.hdel(r.key, *dels)
                what.append(("HDEL", r.key))
        if r.ttl_ms is not None:
            # PEXPIRE NX: only if the key lost its TTL (RENAME and RESTORE keep it)
            pipe.execute_command("PEXPIRE", r.key, max(r.ttl_ms, 1), "NX")
            what.append(("PEXPIRE", r.key))
    if what:
        check_replies(pipe.execute(raise_on_error=False), what)
    if later:  # new keys in other cluster slots: deleted once the originals are back
        raise_first(wire.execute(client, [(b"DEL", k) for k in later]))
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
        if cluster and slot_of(r.new_key) != slot_of(r.key):
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
    """:func:`backup_record` as a :data:`~rvlm.core.storage.backup.records.RawRecord` tuple
    (the executor's hot path; :func:`~rvlm.core.storage.backup.records.encode_records` checks
    it before it is written)."""
    pttl = doc.pttl
    if pttl is None and (replaced or new_key is not None):
        raise ValueError(f"the TTL of {to_str(doc.key)!r} was not read (read_batch(ttl=True) "
                         "or read_ttls)")
    fields: tuple[tuple[bytes, bytes | None], ...]
    if replaced:
        if storage_type == "json":
            fields = ((JSON_ROOT, doc.raw_json),)
        else:
            fields = tuple((to_bytes(n), bytes(v)) for n, v in doc.values.items()
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
            out.append((field_bytes(n), None if v is MISSING else
                        v if type(v) is bytes else bytes(v)))
        fields = tuple(out)
    ttl = pttl if new_key is not None and pttl is not None and pttl >= 0 else None
    return (doc.key, new_key, fields, ttl, False)


__all__ = ["RestoreConflict", "backup_raw", "backup_record", "conflict_actions",
           "conflict_message", "restore_records"]
