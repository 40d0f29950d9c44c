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
    touched: dict[str, None] = {}  # those names, in the order first written
    keys = [d.key for d in docs]
    tallies = dict(ctx.tallies)  # put back if a plugin hands the batch back
    for op in plan.operations:
        names = list(dict.fromkeys((*op.reads, *op.writes)))
        if names:
            given: dict[str, list[Any]] = {}
            for name in names:
                col = cols.get(name)
                given[name] = col if col is not None else [v.get(name, MISSING)
                                                          for v in originals]
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
    return _merge(docs, keys, list(touched), cols)


#: per document and written name: the value is the original (kept), set, or deleted
_KEPT, _SET, _DELETED = 0, 1, 2


def _merge(docs: Sequence[ReadDoc], keys: list[bytes], touched: list[str],
           cols: dict[str, list[Any]]) -> tuple[list[KeyWrite], list[RawRecord]]:
    """Per document the names whose value changed, its write, its backup record (the
    originals of those names) and the digest of what it writes (the byte stream
    :func:`~rvlm.core.redis.docio.verify.written_of` hashes). Worked out a column at a time;
    documents then share what their pattern of changes (kept / set / deleted per name) makes
    alike: the names, the order of the digest's parts."""
    pack = _LEN.pack
    sha1 = hashlib.sha1
    size = len(docs)
    befores = [d.values for d in docs]
    wire = [field_bytes(n) for n in touched]
    states: list[list[int]] = []
    pieces: list[list[bytes]] = []  # the digest's part of each name (length-prefixed)
    origs: list[list[bytes | None]] = []  # the backup's original of each name
    for j, name in enumerate(touched):
        head = pack(len(wire[j])) + wire[j]
        deleted = head + ABSENT
        state: list[int] = []
        piece: list[bytes] = []
        orig: list[bytes | None] = []
        for before, b, key in zip(befores, cols[name], keys, strict=True):
            a = before.get(name, MISSING)
            if a is b or (a is not MISSING and b is not MISSING and type(a) is type(b)
                          and a == b):
                state.append(_KEPT)
                piece.append(b"")
                orig.append(None)
                continue
            if b is MISSING:
                state.append(_DELETED)
                piece.append(deleted)
            else:
                v = b if type(b) is bytes else encode_value("hash", name, b, key)
                state.append(_SET)
                piece.append(head + pack(len(v)) + v)
            orig.append(None if a is MISSING else a if type(a) is bytes else bytes(a))
        states.append(state)
        pieces.append(piece)
        origs.append(orig)
    # the digest takes names in byte order
    order = sorted(range(len(touched)), key=wire.__getitem__)
    patterns: dict[tuple[int, ...], _Pattern] = {}
    edit = KeyWrite.edit
    writes: list[KeyWrite] = []
    records: list[RawRecord] = []
    add_write, add_record = writes.append, records.append
    columns = [cols[n] for n in touched]
    sigs: list[tuple[int, ...]] = (list(zip(*states, strict=True)) if touched
                                   else [()] * size)
    for i, sig in enumerate(sigs):
        d = docs[i]
        key = d.key
        new_key = keys[i] if keys[i] != key else None
        pat = patterns.get(sig)
        if pat is None:
            pat = patterns[sig] = _Pattern(sig, touched, wire, order)
        if not pat.changed:
            if new_key is None:
                continue
            set_values: dict[str, Any] = {}
            fields: tuple[tuple[bytes, bytes | None], ...] = ()
            written = _MOVED_ONLY
        else:
            set_values = {name: columns[j][i] for j, name in pat.sets}
            fields = tuple([(wire[j], origs[j][i]) for j in pat.changed])
            digest_order = pat.digest_order
            stream = (pieces[digest_order[0]][i] if len(digest_order) == 1
                      else b"".join([pieces[j][i] for j in digest_order]))
            written = trusted_written(sha1(stream).digest()[:DIGEST_SIZE], pat.names)
        add_write(edit(key, set_values, pat.dels, new_key))
        pttl = d.pttl
        add_record((key, new_key, fields,
                    pttl if new_key is not None and pttl is not None and pttl >= 0 else None,
                    False, written))
    return writes, records


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
