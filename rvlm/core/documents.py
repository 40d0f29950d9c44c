"""The document work of a migration: operations the plan lists, documents the executor reads,
and the updates plugins return.

The executor owns every side effect. For each batch of keys it reads the values that the
plan's operations name (``reads`` and ``writes``), builds :class:`Document` objects, hands them
to ``transform_documents`` operation by operation (each operation sees the values the previous
one produced), backs up the originals of everything that changes, journals the batch, and then
writes the merged :class:`DocumentUpdate`.

Values are raw ``bytes`` for hash fields and decoded JSON values for JSON paths. A value that is
not present is :data:`MISSING` (never ``None``, which is JSON null).
"""

from __future__ import annotations

from typing import Any

import attrs

from rvlm.core.convert import strings


class _Missing:
    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:  # noqa: PYI034
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
    """

    plugin: str
    kind: str
    reads: tuple[str, ...] = attrs.field(default=(), converter=strings)
    writes: tuple[str, ...] = attrs.field(default=(), converter=strings)
    creates: tuple[str, ...] = attrs.field(default=(), converter=strings)
    rename_prefix: tuple[str, str] | None = attrs.field(default=None, converter=_pair)
    lossy: bool = False
    params: dict[str, Any] = attrs.field(factory=dict)

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
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DocumentOperation:
        known = {"plugin", "kind", "reads", "writes", "creates", "rename_prefix", "lossy",
                 "params"}
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
        )


@attrs.frozen
class Document:
    """One document of a batch: its key and the values the operations asked for."""

    key: bytes
    values: dict[str, Any]

    def get(self, name: str) -> Any:
        """The value of a hash field or JSON path, or MISSING."""
        return self.values.get(name, MISSING)


@attrs.frozen(kw_only=True)
class DocumentUpdate:
    """What one operation does to one document.

    ``set`` maps fields/paths to new values (bytes for hash, JSON-able values for JSON);
    ``delete`` lists fields/paths to remove; ``new_key`` renames the key.
    """

    set: dict[str, Any] = attrs.field(factory=dict)
    delete: tuple[str, ...] = attrs.field(default=(), converter=strings)
    new_key: bytes | None = None

    @property
    def empty(self) -> bool:
        return not self.set and not self.delete and self.new_key is None


NO_CHANGE = DocumentUpdate()
