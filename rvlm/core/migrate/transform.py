"""One batch of documents through every operation of a plan: the executor's transform step.

:func:`transform_batch` is pure with respect to Redis except for one read (the TTLs of keys a
plugin moved that were read without theirs): it hands each operation's documents to its
plugin, checks what the plugin returned against what the operation declared, and merges the
results into the writes and the backup records of the batch. The drop_recreate executor
(:mod:`rvlm.core.migrate.drop_recreate`) backs the records up, journals, then writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rvlm.core.errors import MigrationFailed
from rvlm.core.migrate.columns import columnar, transform_columns_batch
from rvlm.core.migrate.plan import Plan
from rvlm.core.plugins.context import ApplyContext
from rvlm.core.plugins.documents import MISSING, NO_CHANGE, Document
from rvlm.core.plugins.host import PluginHost
from rvlm.core.redis.docio.read import JSON_ROOT, ReadDoc, read_ttls
from rvlm.core.redis.docio.restore import backup_raw
from rvlm.core.redis.docio.verify import written_of
from rvlm.core.redis.docio.write import KeyWrite
from rvlm.core.redis.resp import field_bytes
from rvlm.core.storage.backup.records import RawRecord


def transform_batch(
    host: PluginHost, plan: Plan, ctx: ApplyContext, docs: Sequence[ReadDoc]
) -> tuple[list[KeyWrite], list[RawRecord]]:
    """Run every operation on one batch and merge the results.

    Each operation gets :class:`Document` objects holding its ``reads``/``writes`` as left by
    the operations before it (an overlay). Operations with neither ``reads`` nor ``writes``
    (pure key moves) are not handed to a plugin. An update outside the operation's ``writes``
    fails the migration before anything of the batch is written. Returns the writes (only
    documents that change) and their backup records
    (:data:`~rvlm.core.storage.backup.records.RawRecord` tuples, checked when encoded, each
    with the digest of what its write will hold), in the same order.

    A ``converts_to`` operation (the last one; ``docs`` were read with ``whole=True``) gets
    every field of each document as left by the operations before it (JSON: the root under
    ``"$"``) and must return ``replace`` for every document; each becomes a replacing
    :class:`KeyWrite` and a ``replaced`` backup record holding the whole original and its TTL.

    ``docs[i].values`` (the originals the backup is built from) are never modified: each
    :class:`Document` gets its own dict, and the overlay of a document is a separate dict of
    the names operations set (or deleted: MISSING), in the order they were first touched.

    Where every operation has the columnar form (``transform_columns``) the batch takes
    :func:`~rvlm.core.migrate.columns.transform_columns_batch` instead, with the same result.
    """
    if columnar(host, plan):  # the fast path: no object per document
        got = transform_columns_batch(host, plan, ctx, docs)
        if got is not None:
            return got
    storage = plan.source_schema.storage_type
    new_document = Document.of
    # per document, name -> value for every name an operation set or deleted (MISSING);
    # None: untouched. Values not in it are the document's as read.
    changes: list[dict[str, Any] | None] = [None] * len(docs)
    keys = [d.key for d in docs]
    replacements: list[Any] = [MISSING] * len(docs)
    converts_to: str | None = None
    touched = False  # some document has an overlay in ``changes``
    for op in plan.operations:
        names = list(dict.fromkeys((*op.reads, *op.writes)))
        if op.converts_to is not None:
            converts_to = op.converts_to
            root = JSON_ROOT.decode()
            documents = []
            for i, d in enumerate(docs):
                ch = changes[i]
                cur = d.values if ch is None else {**d.values, **ch}
                documents.append(new_document(keys[i], (
                    {root: cur[root]} if storage == "json" else
                    {n: v for n, v in cur.items() if v is not MISSING})))
            for i, u in enumerate(host.transform(op, documents, ctx)):
                if u.replace is MISSING or u.set or u.delete:
                    raise MigrationFailed(
                        f"plugin {op.plugin!r} ({op.kind}) converts documents and must return "
                        f"an update with replace (and no set/delete) for every document; got "
                        f"{u!r:.120} for {keys[i]!r}")
                replacements[i] = u.replace
                if u.new_key is not None:
                    keys[i] = bytes(u.new_key)
        elif names:
            if not touched:  # no operation changed a document of this batch yet
                if len(names) == 1:
                    only = names[0]
                    documents = [new_document(k, {only: d.values.get(only, MISSING)})
                                 for k, d in zip(keys, docs, strict=True)]
                else:
                    documents = [new_document(k, {n: before.get(n, MISSING) for n in names})
                                 for k, d in zip(keys, docs, strict=True)
                                 for before in (d.values,)]
            else:
                documents = []
                add = documents.append
                for k, d, ch in zip(keys, docs, changes, strict=True):
                    before = d.values
                    add(new_document(k, {n: ch[n] if ch is not None and n in ch
                                         else before.get(n, MISSING) for n in names}))
            updates = host.transform(op, documents, ctx)
            allowed = frozenset(op.writes)
            within = allowed.issuperset
            for i, u in enumerate(updates):
                if u is NO_CHANGE:
                    continue
                if u.replace is not MISSING:
                    raise MigrationFailed(
                        f"plugin {op.plugin!r} ({op.kind}) returned a whole document (replace) "
                        "but its operation does not declare converts_to")
                uset, udel = u.set, u.delete
                if not (within(uset) and (not udel or within(udel))):
                    bad = (set(uset) | set(udel)) - allowed
                    raise MigrationFailed(
                        f"plugin {op.plugin!r} ({op.kind}) tried to write {sorted(bad)}, "
                        f"outside its declared writes {list(op.writes)}")
                if uset or udel:
                    ch = changes[i]
                    if ch is None:
                        ch = changes[i] = dict(uset)
                        touched = True
                    else:
                        ch.update(uset)
                    for n in udel:
                        ch[n] = MISSING
                if u.new_key is not None:
                    keys[i] = bytes(u.new_key)
        if op.rename_prefix is not None:  # Plan.map_key, one operation at a time, inline
            old, new = op.rename_prefix[0].encode(), op.rename_prefix[1].encode()
            keys = [new + k[len(old):] if k.startswith(old) else k for k in keys]
    unread = [i for i, d in enumerate(docs) if d.pttl is None and keys[i] != d.key]
    if unread:  # a plugin moved keys the executor read without their TTL: read it now
        ttls = read_ttls(ctx.client, [docs[i].key for i in unread])
        for i, ttl in zip(unread, ttls, strict=True):
            docs[i].pttl = ttl
    writes: list[KeyWrite] = []
    records: list[RawRecord] = []
    edit = KeyWrite.edit
    hash_storage = storage != "json"
    add_write, add_record = writes.append, records.append
    wire_name: dict[str, bytes] = {}  # field name -> its bytes (few names per plan)
    for i, d in enumerate(docs):
        key = d.key
        new_key = keys[i] if keys[i] != key else None
        if replacements[i] is not MISSING:
            writes.append(KeyWrite(key=key, set={}, delete=(), new_key=new_key,
                                   replace=replacements[i], converts_to=converts_to,
                                   pttl=-1 if d.pttl is None else d.pttl))
            records.append(backup_raw(d, storage, (), new_key, replaced=True))
            continue
        ch = changes[i]
        if ch is None:
            if new_key is None:
                continue
            writes.append(edit(key, {}, (), new_key))
            records.append(backup_raw(d, storage, (), new_key))
            continue
        before = d.values
        set_values: dict[str, Any] = {}
        dels: list[str] = []
        originals: list[tuple[bytes, bytes | None]] = []
        for n, b in ch.items():  # changed: not MISSING on both sides, not equal values of one type
            a = before.get(n, MISSING)
            if a is MISSING or b is MISSING:
                if a is b:
                    continue
            elif type(a) is type(b) and a == b:
                continue
            if b is MISSING:
                dels.append(n)
            else:
                set_values[n] = b
            if hash_storage:  # the backup keeps the original of each changed field
                fb = wire_name.get(n)
                if fb is None:
                    fb = wire_name[n] = field_bytes(n)
                originals.append((fb, None if a is MISSING else
                                  a if type(a) is bytes else bytes(a)))
        if not set_values and not dels and new_key is None:
            continue
        add_write(edit(key, set_values, tuple(dels), new_key))
        if hash_storage and (new_key is None or d.pttl is not None):
            pttl = d.pttl
            add_record((key, new_key, tuple(originals),
                        pttl if new_key is not None and pttl is not None and pttl >= 0
                        else None, False))
        else:
            add_record(backup_raw(d, storage, [*set_values, *dels], new_key))
    # each record also keeps the digest of what its document is about to be written
    # (rvlm.core.redis.docio.verify): checked before apply says succeeded, on a resume after
    # the server lost data, and by rollback (a document changed since is not overwritten)
    return writes, [(*r, written_of(storage, w)) for r, w in zip(records, writes, strict=True)]


__all__ = ["transform_batch"]
