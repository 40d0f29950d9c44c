"""The document work of a migration: operations the plan lists, documents the executor reads,
and the updates plugins return.

The executor owns every side effect. For each batch of keys it reads the values that the
plan's operations name (``reads`` and ``writes``), builds :class:`Document` objects, hands them
to ``transform_documents`` operation by operation (each operation sees the values the previous
one produced), backs up the originals of everything that changes, journals the batch, and then
writes the merged :class:`DocumentUpdate`.

Values are raw ``bytes`` for hash fields and decoded JSON values for JSON paths. A value that is
not present is :data:`MISSING` (never ``None``, which is JSON null).

One operation per plan may *replace* whole documents (``converts_to``): it sees every field of
each document and returns the new document, possibly of the other storage type (hash -> JSON,
JSON -> hash); the executor backs up the whole original and its TTL and puts the new document
in its place atomically. See :class:`DocumentOperation` and :func:`operation_problems`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from rvlm.core.convert import strings


class _Missing:
    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()
"""A field or path that the document does not have."""


def _pair(value: Any) -> tuple[str, str] | None:
    return None if value is None else (str(value[0]), str(value[1]))


#: The storage types a ``converts_to`` operation can produce.
STORAGE_TYPES = ("hash", "json")


def _check_converts_to(_inst: object, _attr: Any, value: object) -> None:
    if value is not None and value not in STORAGE_TYPES:
        raise ValueError(f"converts_to must be one of {', '.join(STORAGE_TYPES)} or None, "
                         f"not {value!r}")


@attrs.frozen(kw_only=True)
class DocumentOperation:
    """One kind of document work, described by a plugin at plan time.

    * ``plugin`` owns it: the executor calls that plugin's ``transform_documents``.
    * ``kind`` says what it is (``rename_hash_field``, ``convert_vector``, ...).
    * ``reads`` are the hash fields or JSON paths it needs; ``writes`` the ones it may set or
      delete (the executor backs up their originals and refuses an update outside them).
    * ``creates`` are fields that must not exist in any document before the drop (the
      executor checks every key; a rename onto a name some documents already hold is refused).
    * ``rename_prefix`` is ``(old, new)`` when the executor must move each key from one prefix
      to another (RENAME, or DUMP/PTTL/RESTORE/DEL across cluster slots, TTLs kept).
    * ``params`` are the operation's own YAML-safe values (a quantization scheme, ...).
    * ``converts_to`` (``"json"`` or ``"hash"``; None: the operation edits fields) makes the
      operation replace each document as a whole by a document of that storage type, which
      must be the target index's. The executor then hands it *every* field of each document
      (hash: ``HGETALL``, field name as ``str`` -> ``bytes``, earlier operations' changes
      applied; JSON: the whole document under ``"$"``), ignores ``reads``/``writes``, and
      expects one update with ``replace`` set per document. It backs up every original field
      and the TTL, and replaces the key in one ``MULTI``/``EXEC`` (DEL, then the new document,
      then the TTL again); a prefix change moves the new document afterwards, like any
      ``rename_prefix``. Resume and rollback delete what is at the key (and at its new key) and
      recreate the original exactly. At most one operation converts, and it is the plan's last
      (the planner sorts it last); on a JSON source no earlier operation may read or write.
    """

    plugin: str
    kind: str
    reads: tuple[str, ...] = attrs.field(default=(), converter=strings)
    writes: tuple[str, ...] = attrs.field(default=(), converter=strings)
    creates: tuple[str, ...] = attrs.field(default=(), converter=strings)
    rename_prefix: tuple[str, str] | None = attrs.field(default=None, converter=_pair)
    lossy: bool = False
    params: dict[str, Any] = attrs.field(factory=dict)
    converts_to: str | None = attrs.field(default=None, validator=_check_converts_to)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"plugin": self.plugin, "kind": self.kind}
        for name in ("reads", "writes", "creates"):
            value = getattr(self, name)
            if value:
                out[name] = list(value)
        if self.rename_prefix is not None:
            out["rename_prefix"] = list(self.rename_prefix)
        if self.lossy:
            out["lossy"] = True
        if self.params:
            out["params"] = self.params
        if self.converts_to is not None:
            out["converts_to"] = self.converts_to
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DocumentOperation:
        known = {"plugin", "kind", "reads", "writes", "creates", "rename_prefix", "lossy",
                 "params", "converts_to"}
        extra = set(data) - known
        if extra:
            raise ValueError(f"unknown operation key {sorted(extra)[0]!r}")
        return cls(
            plugin=data["plugin"],
            kind=data["kind"],
            reads=data.get("reads", ()),
            writes=data.get("writes", ()),
            creates=data.get("creates", ()),
            rename_prefix=data.get("rename_prefix"),
            lossy=bool(data.get("lossy", False)),
            params=dict(data.get("params") or {}),
            converts_to=data.get("converts_to"),
        )


@attrs.frozen(kw_only=True)
class OperationCost:
    """What one document costs an operation, on average, for ``rvlm estimate``: the bytes it
    writes to Redis and the bytes the backup keeps of what it replaces. None: unknown (for
    example, a size that needs a sample and no server was given)."""

    bytes_rewritten: float | None
    backup_bytes: float | None


@attrs.frozen
class Document:
    """One document of a batch: its key and the values the operations asked for (for a
    ``converts_to`` operation: every field, or the JSON root under ``"$"``)."""

    key: bytes
    values: dict[str, Any]

    def get(self, name: str) -> Any:
        """The value of a hash field or JSON path, or MISSING."""
        return self.values.get(name, MISSING)

    @classmethod
    def of(cls, key: bytes, values: dict[str, Any]) -> Document:
        """The same as ``Document(key, values)`` (the class has no validators), without the
        generated ``__init__``: the executor builds one per document and operation."""
        doc: Document = _new(cls)
        _doc_key(doc, key)
        _doc_values(doc, values)
        return doc


@attrs.frozen(kw_only=True, init=False)
class DocumentUpdate:
    """What one operation does to one document.

    ``set`` maps fields/paths to new values (bytes for hash, JSON-able values for JSON);
    ``delete`` lists fields/paths to remove; ``new_key`` renames the key.

    ``replace`` (only from a ``converts_to`` operation, which must set it for every document)
    is the whole new document: for ``converts_to="json"`` any JSON-able value, for ``"hash"``
    a non-empty mapping of field name to ``bytes``/``str``/number. It is not combined with
    ``set``/``delete``; ``new_key`` may be given (the new document ends up there).
    """

    set: dict[str, Any] = attrs.field(factory=dict)
    delete: tuple[str, ...] = attrs.field(default=(), converter=strings)
    new_key: bytes | None = None
    replace: Any = MISSING

    def __init__(self, *, set: dict[str, Any] | None = None,
                 delete: Iterable[str] = (), new_key: bytes | None = None,
                 replace: Any = MISSING) -> None:
        # Written by hand (plugins build one per document): the same fields, defaults and
        # conversion (``delete`` as a tuple) as the attrs-generated __init__, about 3x faster.
        _upd_set(self, {} if set is None else set)
        _upd_delete(self, delete if type(delete) is tuple else strings(delete))
        _upd_new_key(self, new_key)
        _upd_replace(self, replace)

    @property
    def empty(self) -> bool:
        return (not self.set and not self.delete and self.new_key is None
                and self.replace is MISSING)


# Slot setters for the hand-written constructors above (attrs' frozen classes refuse
# ``setattr``; the slot descriptors are what their generated __init__ uses too).
_new = object.__new__
_doc_key = Document.__dict__["key"].__set__
_doc_values = Document.__dict__["values"].__set__
_upd_set = DocumentUpdate.__dict__["set"].__set__
_upd_delete = DocumentUpdate.__dict__["delete"].__set__
_upd_new_key = DocumentUpdate.__dict__["new_key"].__set__
_upd_replace = DocumentUpdate.__dict__["replace"].__set__

#: The update that changes nothing; the executor skips it without looking further (plugins
#: should return this shared object for documents they leave alone).
NO_CHANGE = DocumentUpdate()


def operation_problems(operations: Sequence[DocumentOperation], source_storage: str,
                       target_storage: str) -> list[str]:
    """Why a plan's operations cannot run as ordered (empty: they can). The rules of
    ``converts_to``: at most one operation converts, it is the last, it produces the target
    index's storage type, and on a JSON source no operation before it reads or writes (the
    converting operation gets the document root as read)."""
    problems: list[str] = []
    converting = [i for i, op in enumerate(operations) if op.converts_to is not None]
    for i in converting:
        op = operations[i]
        label = f"operation {op.kind!r} of plugin {op.plugin!r}"
        if i != len(operations) - 1:
            problems.append(f"{label} replaces whole documents (converts_to) and must be the "
                            "last operation of the plan")
        if op.converts_to != target_storage:
            problems.append(f"{label} converts documents to {op.converts_to}, but the target "
                            f"index stores {target_storage} documents")
        if source_storage == "json" and any(o.reads or o.writes for o in operations[:i]):
            problems.append(f"{label} replaces whole JSON documents: no operation before it may "
                            "read or write fields (fold that work into the conversion)")
    return problems
