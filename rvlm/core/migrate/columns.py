"""The executor's columnar transform: a batch of hash documents through operations that have
``transform_columns``, with no object per document.

:func:`transform_columns_batch` is :func:`rvlm.core.migrate.transform.transform_batch`'s fast
path, with the same result for the same batch (the writes, and the backup records with the
digest of each write): where every operation of the plan that reads or writes has the columnar
form (``transform_columns``: the built-in rename and quantization do), the batch travels as one
list per name instead of a :class:`~rvlm.core.plugins.documents.Document` and a
:class:`~rvlm.core.plugins.documents.DocumentUpdate` per document and operation, and the
writes, records and digests are built in one pass. Hash storage only, no ``converts_to``
(whole documents), and a plugin may answer None for a batch: the per-document path then
takes that batch whole (transforms are pure, so nothing was done twice).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from itertools import repeat
from typing import Any

from rvlm.core.migrate.plan import Plan
from rvlm.core.plugins.context import ApplyContext
from rvlm.core.plugins.documents import MISSING, NO_CHANGE
from rvlm.core.plugins.host import PluginHost
from rvlm.core.redis.docio.read import ReadDoc, read_ttls
from rvlm.core.redis.docio.verify import ABSENT, DIGEST_SIZE
from rvlm.core.redis.docio.write import KeyWrite, encode_value
from rvlm.core.redis.resp import field_bytes
from rvlm.core.storage.backup.records import RawRecord, trusted_written

#: Take the columnar path where a plan allows it; False sends every batch through the
#: per-document path (a test compares the two).
COLUMNS = True

_LEN = struct.Struct("<I")
#: what a write that only moves a key is digested as (no names, nothing hashed)
_MOVED_ONLY = trusted_written(hashlib.sha1().digest()[:DIGEST_SIZE], ())


def columnar(host: PluginHost, plan: Plan) -> bool:
    """Whether ``plan``'s batches can take the columnar path: hash documents, no operation
    replaces whole documents, and every operation that reads or writes has
    ``transform_columns``."""
    if not COLUMNS or plan.source_schema.storage_type != "hash":
        return False
    for op in plan.operations:
        if op.converts_to is not None:
            return False
        if (op.reads or op.writes) and not host.has_columns(op):
            return False
    return True


def transform_columns_batch(
    host: PluginHost, plan: Plan, ctx: ApplyContext, docs: Sequence[ReadDoc]
) -> tuple[list[KeyWrite], list[RawRecord]] | None:
    """The writes and backup records of one batch (as ``transform_batch`` returns them), or
    None when a plugin does not take this batch in columns. Call only when
    :func:`columnar` is true for the plan."""
    size = len(docs)
    originals = [d.values for d in docs]
    cols: dict[str, list[Any]] = {}  # every name an operation wrote: its current values
    firsts: dict[str, list[Any]] = {}  # the original column of each name given (as read)
    touched: dict[str, None] = {}  # those names, in the order first written
    keys = [d.key for d in docs]
    tallies = dict(ctx.tallies)  # put back if a plugin hands the batch back
    for op in plan.operations:
        names = list(dict.fromkeys((*op.reads, *op.writes)))
        if names:
            given: dict[str, list[Any]] = {}
            for name in names:
                col = cols.get(name)
                if col is None:
                    col = firsts.get(name)
                    if col is None:
                        col = firsts[name] = [v.get(name, MISSING) for v in originals]
                given[name] = col
            new = host.transform_columns(op, given, size, ctx)
            if new is None:  # (what earlier operations counted is counted again there)
                ctx.tallies.clear()
                ctx.tallies.update(tallies)
                return None
            for name, column in new.items():
                cur = given[name]  # (writes are in names)
                cols[name] = [c if u is NO_CHANGE else u
                              for c, u in zip(cur, column, strict=True)]
                touched[name] = None
        if op.rename_prefix is not None:  # Plan.map_key, one operation at a time, inline
            old, new_prefix = op.rename_prefix[0].encode(), op.rename_prefix[1].encode()
            keys = [new_prefix + k[len(old):] if k.startswith(old) else k for k in keys]
    unread = [i for i, d in enumerate(docs) if d.pttl is None and keys[i] != d.key]
    if unread:  # keys read without their TTL that move (not the executor's reads)
        ttls = read_ttls(ctx.client, [docs[i].key for i in unread])
        for i, ttl in zip(unread, ttls, strict=True):
            docs[i].pttl = ttl
    return _merge(docs, keys, list(touched), cols, firsts)


#: per document and written name: the value is the original (kept), set, or deleted
_KEPT, _SET, _DELETED = 0, 1, 2


def _merge(docs: Sequence[ReadDoc], keys: list[bytes], touched: list[str],
           cols: dict[str, list[Any]],
           firsts: dict[str, list[Any]]) -> tuple[list[KeyWrite], list[RawRecord]]:
    """Per document the names whose value changed, its write, its backup record (the
    originals of those names) and the digest of what it writes (the byte stream
    :func:`~rvlm.core.redis.docio.verify.written_of` hashes).

    Documents are grouped by their pattern of changes (kept / set / deleted per name: in a
    batch usually one pattern for all), and each group is built a column at a time with
    comprehensions over the columns: the names, the digest's order, the deleted names are
    worked out once per pattern, and per document only its values, its digest stream, its
    record tuple and its write are made. ``firsts`` holds each touched name's original
    column (as read) where the caller already built it."""
    size = len(docs)
    m = MISSING
    wire = [field_bytes(n) for n in touched]
    befores: list[list[Any]] = []
    states: list[list[int]] = []
    for name in touched:
        before = firsts.get(name)
        if before is None:
            before = [d.values.get(name, m) for d in docs]
        befores.append(before)
        states.append([
            _KEPT if a is b or (a is not m and b is not m and type(a) is type(b) and a == b)
            else _DELETED if b is m else _SET
            for a, b in zip(before, cols[name], strict=True)])
    # the digest takes names in byte order
    order = sorted(range(len(touched)), key=wire.__getitem__)
    groups: dict[tuple[int, ...], Sequence[int]]
    if not touched:
        groups = {(): range(size)}
    else:
        sigs = list(zip(*states, strict=True))
        first = sigs[0] if sigs else ()
        if sigs.count(first) == size:
            groups = {first: range(size)}
        else:
            grouped: dict[tuple[int, ...], list[int]] = {}
            for i, sig in enumerate(sigs):
                at = grouped.get(sig)
                if at is None:
                    grouped[sig] = [i]
                else:
                    at.append(i)
            groups = dict(grouped)
    write_at: list[KeyWrite | None] = [None] * size
    record_at: list[RawRecord | None] = [None] * size
    every = True  # every document has a write (no need to filter)
    columns = [cols[n] for n in touched]
    for sig, idx in groups.items():
        pat = _Pattern(sig, touched, wire, order)
        every = _build(docs, keys, pat, idx, wire, befores, columns, write_at,
                       record_at) and every
    if every:
        return write_at, record_at  # type: ignore[return-value]
    return ([w for w in write_at if w is not None],
            [r for r in record_at if r is not None])


def _build(docs: Sequence[ReadDoc], keys: list[bytes], pat: _Pattern, idx: Sequence[int],
           wire: list[bytes], befores: list[list[Any]], columns: list[list[Any]],
           write_at: list[KeyWrite | None], record_at: list[RawRecord | None]) -> bool:
    """The writes and records of the documents ``idx`` (all of pattern ``pat``), into
    ``write_at`` / ``record_at`` at their positions (None stays where nothing is written).
    Returns whether every one of them has a write."""
    edit = KeyWrite.edit
    m = MISSING
    whole = isinstance(idx, range) and len(idx) == len(docs)
    olds = [d.key for d in docs] if whole else [docs[i].key for i in idx]
    news = keys if whole else [keys[i] for i in idx]
    moved = [None if n == o else n for o, n in zip(olds, news, strict=True)]
    if not pat.changed:  # only moved, or untouched (no write, no record)
        for i, key, new_key in zip(idx, olds, moved, strict=True):
            if new_key is not None:
                pttl = docs[i].pttl
                write_at[i] = edit(key, {}, (), new_key)
                record_at[i] = (key, new_key, (),
                                pttl if pttl is not None and pttl >= 0 else None, False,
                                _MOVED_ONLY)
        return all(m is not None for m in moved)
    pick = (lambda col: col) if whole else (lambda col: [col[i] for i in idx])
    # per set name: its values (as written: bytes), per changed name: its originals
    values: dict[int, list[Any]] = {}
    for j, name in pat.sets:
        col = pick(columns[j])
        values[j] = [v if type(v) is bytes else encode_value("hash", name, v, key)
                     for v, key in zip(col, olds, strict=True)]
    # the digest stream of each document: per name in byte order, its length-prefixed name
    # and its value's length and bytes, or its absence
    parts: list[Any] = []
    pack = _LEN.pack
    for j in pat.digest_order:
        head = pack(len(wire[j])) + wire[j]
        if j in values:
            parts.append([head + pack(len(v)) for v in values[j]])
            parts.append(values[j])
        else:
            parts.append(repeat(head + ABSENT, len(idx)))
    sha1 = hashlib.sha1
    written = [trusted_written(sha1(s).digest()[:DIGEST_SIZE], pat.names)
               for s in map(b"".join, zip(*parts, strict=True))]
    # the backup's originals of the changed names, in the order first written
    origs = []
    for j in pat.changed:
        wname = wire[j]
        origs.append([(wname, None if a is m else a if type(a) is bytes else bytes(a))
                      for a in pick(befores[j])])
    fields = list(zip(*origs, strict=True))
    # the writes hold the values as the plugins gave them (write_batch encodes them)
    if len(pat.sets) == 1:
        ((j, name),) = pat.sets
        sets: Any = [{name: v} for v in pick(columns[j])]
    elif len(pat.sets) == 2:
        (j0, n0), (j1, n1) = pat.sets
        sets = [{n0: a, n1: b}
                for a, b in zip(pick(columns[j0]), pick(columns[j1]), strict=True)]
    elif pat.sets:
        set_names = [name for _j, name in pat.sets]
        sets = [dict(zip(set_names, t, strict=True))
                for t in zip(*[pick(columns[j]) for j, _n in pat.sets], strict=True)]
    else:
        sets = [{} for _ in idx]
    ttl_of = ([docs[i].pttl for i in idx] if any(m is not None for m in moved)
              else [None] * len(idx))
    for i, key, new_key, f, w, pttl, kw in zip(idx, olds, moved, fields, written, ttl_of,
                                               KeyWrite.edits(olds, sets, pat.dels, moved),
                                               strict=True):
        write_at[i] = kw
        record_at[i] = (key, new_key, f,
                        pttl if new_key is not None and pttl is not None and pttl >= 0
                        else None, False, w)
    return True


class _Pattern:
    """What the documents with one pattern of changes share: the positions of the names that
    changed (in the order first written), those set (position, name), the names deleted, and
    the digest's order of the changed positions and their names."""

    __slots__ = ("changed", "dels", "digest_order", "names", "sets")

    def __init__(self, sig: tuple[int, ...], touched: list[str], wire: list[bytes],
                 order: list[int]) -> None:
        self.changed = [j for j, st in enumerate(sig) if st != _KEPT]
        self.sets = [(j, touched[j]) for j in self.changed if sig[j] == _SET]
        self.dels = tuple(touched[j] for j in self.changed if sig[j] == _DELETED)
        self.digest_order = [j for j in order if sig[j] != _KEPT]
        self.names = tuple(wire[j] for j in self.digest_order)


__all__ = ["columnar", "transform_columns_batch"]
