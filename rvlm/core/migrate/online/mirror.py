"""What the target key of a source document must hold: the plan's operations, applied to a copy.

Online mode copies each source document to its target key through exactly the transform a
``drop_recreate`` apply would run in place (the executor's ``transform_batch``: every
operation in plan order, plugins' writes checked against what they declared), then turns the
merged update into the whole target document:

* a hash: every source field, the operations' sets and deletes applied;
* a JSON document: the root, edited (:func:`~rvlm.core.redis.copyio.apply_json`);
* a whole replacement (``converts_to``): the plugin's new document, of the target's type.

The target key is where the plan's prefix change (or a plugin's ``new_key``) sends the
document; online mode needs it to differ from the source key. The expiry is the source's.
A source key that is not a document (gone, another type) means its target key is deleted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from rvlm.core.errors import MigrationFailed
from rvlm.core.migrate.plan import Plan
from rvlm.core.plugins.context import ApplyContext
from rvlm.core.plugins.documents import MISSING
from rvlm.core.plugins.host import PluginHost
from rvlm.core.redis.copyio import (
    Sources,
    TargetDoc,
    apply_json,
    encode_field,
    read_sources,
    read_sources_and_targets,
)
from rvlm.core.redis.docio.read import JSON_ROOT, ReadDoc
from rvlm.core.redis.docio.write import KeyWrite
from rvlm.core.redis.resp import to_bytes, to_str

#: ``transform(host, plan, ctx, docs) -> (writes, backup records)``: the executor's
#: ``transform_batch``.
Transform = Callable[[PluginHost, Plan, ApplyContext, Sequence[ReadDoc]], tuple[list[KeyWrite],
                                                                              list[Any]]]
_ROOT = JSON_ROOT.decode()
#: Field names a :class:`Mirror` keeps encoded (documents mostly share their names).
NAMES_KEPT = 1024


class Mirror:
    """Reads source documents and says what their target keys must hold (see the module
    docstring)."""

    def __init__(self, plan: Plan, host: PluginHost, ctx: ApplyContext,
                 transform: Transform) -> None:
        self.plan = plan
        self.host = host
        self.ctx = ctx
        self.transform = transform
        self.source_storage = plan.source_schema.storage_type
        self.target_storage = plan.target_schema.storage_type
        #: JSON paths the operations read or write (hashes are read whole)
        self.paths = list(dict.fromkeys(n for op in plan.operations
                                        for n in (*op.reads, *op.writes)))
        self._names: dict[str | bytes, bytes] = {}
        #: held while the operations run: a plugin need not be thread-safe
        self._transforming = threading.Lock()

    def another(self) -> Mirror:
        """A Mirror of the same plan for another thread: its own context (what plugins
        count), its transforms run one at a time with this one's."""
        twin = Mirror(self.plan, self.host, attrs.evolve(self.ctx, tallies={}), self.transform)
        twin._transforming = self._transforming
        return twin

    def _name(self, name: str | bytes) -> bytes:
        """``name`` as bytes (:func:`~rvlm.core.redis.resp.to_bytes`), kept for the next
        document (up to :data:`NAMES_KEPT` names)."""
        got = self._names.get(name)
        if got is None:
            got = to_bytes(name)
            if len(self._names) < NAMES_KEPT:
                self._names[name] = got
        return got

    def read(self, client: Any, keys: Sequence[bytes], now_ms: int | None = None) -> Sources:
        """Read ``keys`` of the source whole (:func:`~rvlm.core.redis.copyio.read_sources`;
        the server's clock read in the same round trip unless ``now_ms`` is given)."""
        return read_sources(client, self.source_storage, keys, self.paths, now_ms=now_ms)

    def read_with_targets(self, client: Any, keys: Sequence[bytes]
                          ) -> tuple[Sources, dict[bytes, TargetDoc | None]]:
        """:meth:`read`, and what the target key (:meth:`target_key`) of each of ``keys``
        holds now (:func:`~rvlm.core.redis.copyio.read_targets`), in one round trip."""
        targets = [self.target_key(k) for k in keys]
        sources, have = read_sources_and_targets(client, self.source_storage, keys, self.paths,
                                                 self.target_storage, targets)
        return sources, dict(zip(targets, have, strict=True))

    def target_key(self, key: bytes) -> bytes:
        return self.plan.map_key(key)

    def targets(self, sources: Sources) -> tuple[list[TargetDoc], list[bytes]]:
        """The target documents of ``sources.docs`` and the target keys to delete (of
        ``sources.absent``, and of documents the operations emptied)."""
        deletes = [self.target_key(k) for k in sources.absent]
        if not sources.docs:
            return [], deletes
        with self._transforming:
            writes, _records = self.transform(self.host, self.plan, self.ctx, sources.docs)
        by_key: dict[bytes, KeyWrite] = {w.key: w for w in writes}
        out: list[TargetDoc] = []
        for d in sources.docs:
            w = by_key.get(d.key)
            key = w.new_key if w is not None and w.new_key is not None else self.target_key(d.key)
            if key == d.key:
                raise MigrationFailed(
                    f"the plan leaves {to_str(d.key)!r} at its key: online mode copies every "
                    "document to a new key under the target prefix")
            at = sources.expire_at.get(d.key, -1)
            if w is not None and w.replace is not MISSING:
                out.append(self._replaced(key, w, at))
                continue
            if self.source_storage == "json":
                doc, edits = apply_json(d.values[_ROOT], w.set if w else {},
                                        w.delete if w else (), d.key)
                out.append(TargetDoc(key=key, storage="json", document=doc, edits=edits,
                                     expire_at=at))
                continue
            name = self._name
            fields = {name(n): v for n, v in d.values.items() if v is not MISSING}
            if w is not None:
                for n in w.delete:
                    fields.pop(name(n), None)
                for n, v in w.set.items():
                    fields[name(n)] = encode_field(n, v, d.key)
            if fields:
                out.append(TargetDoc(key=key, storage="hash", fields=fields, expire_at=at))
            else:
                deletes.append(key)
        return out, deletes

    def _replaced(self, key: bytes, w: KeyWrite, at: int) -> TargetDoc:
        if w.converts_to == "json":
            return TargetDoc(key=key, storage="json", document=w.replace, expire_at=at)
        if not isinstance(w.replace, dict) or not w.replace:
            raise MigrationFailed(f"the new hash for {to_str(w.key)!r} must be a non-empty "
                                  f"mapping of field names to values, not {w.replace!r:.60}")
        fields = {self._name(n): encode_field(str(n), v, w.key) for n, v in w.replace.items()}
        return TargetDoc(key=key, storage="hash", fields=fields, expire_at=at)
