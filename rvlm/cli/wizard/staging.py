"""Changes staged against the live schema: a pure object (no I/O) that always holds a valid
RedisVL schema patch (see :mod:`rvlm.cli.wizard` for how staged changes combine)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rvlm.core.schema.model import Field, IndexSchema
    from rvlm.core.schema.patch import SchemaPatch


class StagingError(ValueError):
    """A staged change that cannot be made; the message is one line for the user."""


class Staging:
    """Changes staged against a live ``source`` schema, always a valid schema patch.

    Fields are addressed by their *current* name (after staged renames). The patch keeps
    source fields by their original name in ``remove_fields``/``update_fields``.
    """

    def __init__(self, source: IndexSchema) -> None:
        self.source = source
        self.renames: dict[str, str] = {}  # original -> current
        self.removed: list[str] = []  # originals
        self.updates: dict[str, dict[str, Any]] = {}  # original -> attrs
        self.adds: list[dict[str, Any]] = []
        self.index: dict[str, Any] = {}
        self.sections: dict[str, Any] = {}
        self._history: list[tuple[str, dict[str, Any]]] = []

    # -- state -----------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        return copy.deepcopy({k: getattr(self, k) for k in
                              ("renames", "removed", "updates", "adds", "index", "sections")})

    def _restore(self, snap: dict[str, Any]) -> None:
        for k, v in snap.items():
            setattr(self, k, v)

    def _step(self, label: str, action: Callable[[], None]) -> None:
        """Run ``action``; keep it only if the resulting patch is still valid."""
        snap = self._snapshot()
        try:
            action()
            self.target()
        except StagingError:
            self._restore(snap)
            raise
        except Exception as exc:
            from rvlm.core.errors import RvlmError

            self._restore(snap)
            if isinstance(exc, RvlmError):
                raise StagingError(str(exc).replace("wizard: ", "")) from None
            raise
        self._history.append((label, snap))

    def undo(self) -> str | None:
        """Undo the last staged step; returns its label (None when there is nothing)."""
        if not self._history:
            return None
        label, snap = self._history.pop()
        self._restore(snap)
        return label

    @property
    def history(self) -> list[str]:
        """Labels of the staged steps, oldest first."""
        return [label for label, _ in self._history]

    # -- names -----------------------------------------------------------------------
    def current_names(self) -> list[str]:
        """The target's field names, in order."""
        out = [self.renames.get(f.name, f.name) for f in self.source.fields
               if f.name not in self.removed]
        return out + [str(a["name"]) for a in self.adds]

    def _locate(self, name: str) -> tuple[str, Any]:
        """('source', original name) or ('added', index into adds)."""
        for f in self.source.fields:
            if f.name in self.removed:
                continue
            if self.renames.get(f.name, f.name) == name:
                return "source", f.name
        for i, a in enumerate(self.adds):
            if a["name"] == name:
                return "added", i
        raise StagingError(f"no field named {name!r} (fields: {', '.join(self.current_names())})")

    def field(self, name: str) -> Field:
        """The field ``name`` as it will be in the target."""
        found = self.target().field(name)
        if found is None:
            raise StagingError(f"no field named {name!r}")
        return found

    def check_new_name(self, new: str, original: str | None = None) -> None:
        """Refuse a name that is taken, removed or renamed away (``original`` may reuse its own)."""
        new = new.strip()
        if not new:
            raise StagingError("a field name cannot be empty")
        if any(c.isspace() for c in new):
            raise StagingError(f"{new!r}: a field name cannot contain spaces")
        if new in self.current_names():
            raise StagingError(f"the index already has a field named {new!r}")
        if new in self.removed:
            raise StagingError(f"{new!r} is a field staged for removal; its name cannot be reused "
                               "in the same migration (undo the removal, or update the field)")
        src_names = {f.name for f in self.source.fields}
        if new in src_names and new != original:
            raise StagingError(f"{new!r} is the old name of a renamed field; chained or swapped "
                               "renames need two migrations")

    # -- changes ---------------------------------------------------------------------
    def rename(self, name: str, new: str) -> None:
        """Rename the field currently called ``name`` to ``new``."""
        kind, key = self._locate(name)

        def act() -> None:
            if kind == "source":
                self.check_new_name(new, original=key)
                if new == key:
                    self.renames.pop(key, None)
                else:
                    self.renames[key] = new
            else:
                self.check_new_name(new)
                self.adds[key]["name"] = new
                if self.source.storage_type == "json" and self.adds[key].get("path") == f"$.{name}":
                    self.adds[key]["path"] = f"$.{new}"

        self._step(f"rename {name} -> {new}", act)

    def remove(self, name: str) -> None:
        """Remove the field currently called ``name`` (an added one is simply un-added)."""
        kind, key = self._locate(name)

        def act() -> None:
            if kind == "source":
                self.renames.pop(key, None)
                self.updates.pop(key, None)
                self.removed.append(key)
            else:
                del self.adds[key]

        self._step(f"remove {name}", act)

    def update(self, name: str, values: dict[str, Any]) -> None:
        """Set attributes of the field currently called ``name``."""
        kind, key = self._locate(name)

        def act() -> None:
            if kind == "added":
                merged = {**(self.adds[key].get("attrs") or {}), **values}
                self.adds[key]["attrs"] = {k: v for k, v in merged.items() if v is not None}
                return
            original = self.source.field(key)
            assert original is not None
            staged = {**self.updates.get(key, {}), **values}
            # A value equal to the live one is no change: keep the patch minimal.
            staged = {k: v for k, v in staged.items() if getattr(original.attrs, k, object()) != v}
            if staged:
                self.updates[key] = staged
            else:
                self.updates.pop(key, None)

        label = ", ".join(f"{k}={v}" for k, v in values.items())
        self._step(f"update {name}: {label}", act)

    def add(self, field: dict[str, Any]) -> None:
        """Add a field (a RedisVL field mapping: name, type, optional path, attrs)."""
        name = str(field.get("name", ""))

        def act() -> None:
            self.check_new_name(name)
            self.adds.append(dict(field))

        self._step(f"add {name} ({field.get('type')})", act)

    def rename_index(self, new: str, existing: Sequence[str] = ()) -> None:
        """Rename the index; ``existing`` are the server's index names (refused as targets)."""
        new = new.strip()

        def act() -> None:
            if not new or any(c.isspace() for c in new):
                raise StagingError("an index name must be non-empty and without spaces")
            if new != self.source.name and new in existing:
                raise StagingError(f"an index named {new!r} already exists on the server")
            if new == self.source.name:
                self.index.pop("name", None)
            else:
                self.index["name"] = new

        self._step(f"rename index -> {new}", act)

    def set_prefix(self, prefixes: Sequence[str]) -> None:
        """Change the key prefix(es) of the index."""
        clean = [p for p in (s.strip() for s in prefixes) if p]

        def act() -> None:
            if not clean:
                raise StagingError("give at least one non-empty prefix")
            if len(set(clean)) != len(clean):
                raise StagingError("a prefix is listed twice")
            if tuple(clean) == tuple(self.source.index.prefix):
                self.index.pop("prefix", None)
            else:
                self.index["prefix"] = clean[0] if len(clean) == 1 else clean

        self._step(f"prefix -> {', '.join(clean)}", act)

    # -- output ----------------------------------------------------------------------
    def changes(self) -> dict[str, Any]:
        """The ``changes:`` mapping (only non-empty sections)."""
        out: dict[str, Any] = {}
        if self.adds:
            out["add_fields"] = copy.deepcopy(self.adds)
        if self.removed:
            out["remove_fields"] = list(self.removed)
        if self.renames:
            out["rename_fields"] = [{"old_name": o, "new_name": n} for o, n in self.renames.items()]
        if self.updates:
            out["update_fields"] = [{"name": n, "attrs": dict(a)} for n, a in self.updates.items()]
        if self.index:
            out["index"] = dict(self.index)
        out.update(copy.deepcopy(self.sections))
        return out

    def patch_dict(self) -> dict[str, Any]:
        """The whole schema patch as a mapping (``version: 1``, ``changes:``)."""
        return {"version": 1, "changes": self.changes()}

    def patch(self) -> SchemaPatch:
        """The staged changes as a validated :class:`SchemaPatch`."""
        from rvlm.core.schema.patch import patch_from_dict

        return patch_from_dict(self.patch_dict(), "wizard", tuple(self.sections))

    def target(self) -> IndexSchema:
        """The schema the staged changes lead to (built-in sections only)."""
        from rvlm.core.schema.patch import merge

        return merge(self.source, self.patch())

    def to_yaml(self) -> str:
        from rvlm.core.schema.yaml_format import dump_yaml

        return dump_yaml(self.patch_dict())

    @property
    def empty(self) -> bool:
        return not self.changes()

    @classmethod
    def from_patch(cls, source: IndexSchema, patch: SchemaPatch) -> Staging:
        """Start from an existing patch (``--patch``), normalised to original names."""
        st = cls(source)
        st.removed = list(patch.remove_fields)
        st.renames = dict(patch.renames)
        back = {new: old for old, new in st.renames.items()}
        for u in patch.update_fields:
            if u.path is not None or u.type is not None:
                raise StagingError(f"{patch.source}: update_fields[{u.name}] changes the path or "
                                   "type; the wizard edits attrs only (edit that patch by hand)")
            key = back.get(u.name, u.name)
            st.updates[key] = {**st.updates.get(key, {}), **u.attrs}
        st.adds = [dict(a) for a in patch.add_fields]
        st.index = dict(patch.index)
        st.sections = dict(patch.sections)
        try:
            st.target()
        except Exception as exc:
            raise StagingError(str(exc)) from None
        return st
