"""Schema patches: the RedisVL format users already write, plus plugin-owned sections.

```yaml
version: 1
changes:
  add_fields:    [{name: category, type: tag, attrs: {separator: ","}}]
  remove_fields: [legacy]
  rename_fields: [{old_name: title, new_name: headline}]
  update_fields: [{name: embedding, attrs: {datatype: float16, algorithm: hnsw}}]
  index:         {name: docs_v2, prefix: "docv2:"}
  hash_to_json:  {...}   # a section a plugin declared
```

``merge`` applies the built-in sections to a source schema in a fixed order (remove, rename,
update, add, index) and refuses a patch that contradicts itself before anything runs. Names in
``update_fields`` may be a field's old name or its new name when it is renamed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from rvlm.core.errors import RvlmError
from rvlm.core.schema.model import Field, IndexSchema
from rvlm.core.schema.yaml_format import (
    attrs_to_dict,
    evolve_attrs,
    field_from_dict,
    field_to_dict,
    index_from_dict,
    index_to_dict,
    load_yaml,
)

BUILTIN_SECTIONS = ("add_fields", "remove_fields", "rename_fields", "update_fields", "index")
PATCH_KEYS = ("version", "changes")


@attrs.frozen(kw_only=True)
class FieldRename:
    old_name: str
    new_name: str


@attrs.frozen(kw_only=True)
class FieldUpdate:
    """``name`` plus what changes: ``attrs`` (merged into the field's), ``path``, ``type``."""

    name: str
    attrs: dict[str, Any] = attrs.field(factory=dict)
    path: str | None = None
    type: str | None = None


@attrs.frozen(kw_only=True)
class SchemaPatch:
    """A parsed patch; ``sections`` holds plugin-owned sections as loaded."""

    add_fields: tuple[dict[str, Any], ...] = ()
    remove_fields: tuple[str, ...] = ()
    rename_fields: tuple[FieldRename, ...] = ()
    update_fields: tuple[FieldUpdate, ...] = ()
    index: dict[str, Any] = attrs.field(factory=dict)
    sections: dict[str, Any] = attrs.field(factory=dict)
    source: str = "patch"

    def requested_changes(self) -> dict[str, Any]:
        """The ``changes:`` mapping as the user wrote it (for the plan)."""
        out: dict[str, Any] = {}
        if self.add_fields:
            out["add_fields"] = [dict(f) for f in self.add_fields]
        if self.remove_fields:
            out["remove_fields"] = list(self.remove_fields)
        if self.rename_fields:
            out["rename_fields"] = [attrs.asdict(r) for r in self.rename_fields]
        if self.update_fields:
            out["update_fields"] = [
                {k: v for k, v in attrs.asdict(u).items() if v not in (None, {})}
                for u in self.update_fields
            ]
        if self.index:
            out["index"] = dict(self.index)
        out.update(self.sections)
        return out

    @property
    def renames(self) -> dict[str, str]:
        return {r.old_name: r.new_name for r in self.rename_fields}


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RvlmError(f"{where} must be a list")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise RvlmError(f"{where} must be a non-empty string")
    return value


def patch_from_dict(data: Any, source: str = "patch",
                    plugin_sections: tuple[str, ...] = ()) -> SchemaPatch:
    """Validate a loaded patch; ``plugin_sections`` are the sections installed plugins own."""
    if not isinstance(data, Mapping):
        raise RvlmError(f"{source}: a schema patch must be a mapping with 'version' and 'changes'")
    extra = sorted(set(map(str, data)) - set(PATCH_KEYS))
    if extra:
        raise RvlmError(f"{source}: unknown key {extra[0]!r} (a patch has version and changes)")
    if data.get("version", 1) != 1:
        raise RvlmError(f"{source}: version: only version 1 is supported, not {data['version']!r}")
    changes = data.get("changes") or {}
    if not isinstance(changes, Mapping):
        raise RvlmError(f"{source}: changes must be a mapping")
    known = set(BUILTIN_SECTIONS) | set(plugin_sections)
    for key in changes:
        if key not in known:
            more = (f"; plugin sections: {', '.join(sorted(plugin_sections))}"
                    if plugin_sections else "")
            raise RvlmError(f"{source}: changes.{key}: unknown section (built-in sections: "
                            f"{', '.join(BUILTIN_SECTIONS)}{more})")
    where = f"{source}: changes"
    adds = []
    for i, f in enumerate(_list(changes.get("add_fields"), f"{where}.add_fields")):
        field_from_dict(f, f"{where}.add_fields[{i}]")  # validates now, merged later
        adds.append(dict(f))
    removes = tuple(_name(n, f"{where}.remove_fields[{i}]") for i, n in
                    enumerate(_list(changes.get("remove_fields"), f"{where}.remove_fields")))
    renames = []
    for i, r in enumerate(_list(changes.get("rename_fields"), f"{where}.rename_fields")):
        w = f"{where}.rename_fields[{i}]"
        if not isinstance(r, Mapping):
            raise RvlmError(f"{w} must be a mapping with old_name and new_name")
        bad = sorted(set(r) - {"old_name", "new_name"})
        if bad:
            raise RvlmError(f"{w}: unknown key {bad[0]!r} (expected old_name, new_name)")
        renames.append(FieldRename(old_name=_name(r.get("old_name"), f"{w}.old_name"),
                                   new_name=_name(r.get("new_name"), f"{w}.new_name")))
    updates = []
    for i, u in enumerate(_list(changes.get("update_fields"), f"{where}.update_fields")):
        w = f"{where}.update_fields[{i}]"
        if not isinstance(u, Mapping):
            raise RvlmError(f"{w} must be a mapping with name and attrs")
        bad = sorted(set(u) - {"name", "attrs", "path", "type", "options"})
        if bad:
            raise RvlmError(f"{w}: unknown key {bad[0]!r} (expected name, attrs, path, type)")
        upd_attrs = u.get("attrs") or {}
        if u.get("options"):
            if not isinstance(u["options"], Mapping):
                raise RvlmError(f"{w}.options must be a mapping")
            upd_attrs = {**u["options"], **upd_attrs}
        if not isinstance(upd_attrs, Mapping):
            raise RvlmError(f"{w}.attrs must be a mapping")
        for key in ("path", "type"):
            if u.get(key) is not None:
                _name(u[key], f"{w}.{key}")
        updates.append(FieldUpdate(name=_name(u.get("name"), f"{w}.name"), attrs=dict(upd_attrs),
                                   path=u.get("path"), type=u.get("type")))
    index = changes.get("index") or {}
    if not isinstance(index, Mapping):
        raise RvlmError(f"{where}.index must be a mapping")
    sections = {k: v for k, v in changes.items() if k in plugin_sections}
    patch = SchemaPatch(add_fields=tuple(adds), remove_fields=removes, rename_fields=tuple(renames),
                        update_fields=tuple(updates), index=dict(index), sections=sections,
                        source=source)
    _check_consistency(patch)
    return patch


def load_patch(path: str | Path, plugin_sections: tuple[str, ...] = ()) -> SchemaPatch:
    """Read and validate a schema patch file."""
    return patch_from_dict(load_yaml(path), str(path), plugin_sections)


def _check_consistency(p: SchemaPatch) -> None:
    """Refuse a patch that contradicts itself (independent of the live schema)."""
    where = f"{p.source}: changes"
    seen_removed: set[str] = set()
    for n in p.remove_fields:
        if n in seen_removed:
            raise RvlmError(f"{where}.remove_fields: {n!r} is listed twice")
        seen_removed.add(n)
    olds: set[str] = set()
    news: dict[str, str] = {}
    for r in p.rename_fields:
        if r.old_name == r.new_name:
            raise RvlmError(f"{where}.rename_fields: {r.old_name!r} is renamed onto itself")
        if r.old_name in olds:
            raise RvlmError(f"{where}.rename_fields: {r.old_name!r} is renamed twice")
        if r.new_name in news:
            raise RvlmError(f"{where}.rename_fields: {news[r.new_name]!r} and {r.old_name!r} are "
                            f"both renamed to {r.new_name!r}")
        if r.old_name in seen_removed:
            raise RvlmError(f"{where}.rename_fields: {r.old_name!r} is also in remove_fields")
        olds.add(r.old_name)
        news[r.new_name] = r.old_name
    for r in p.rename_fields:
        if r.new_name in olds:
            raise RvlmError(f"{where}.rename_fields: {r.new_name!r} is both a new name and renamed "
                            "away (chained or swapped renames are not supported; do it in two "
                            "migrations)")
    added = [str(f.get("name")) for f in p.add_fields]
    for n in added:
        if added.count(n) > 1:
            raise RvlmError(f"{where}.add_fields: {n!r} is added twice")
        if n in olds:
            raise RvlmError(f"{where}.add_fields: {n!r} is renamed away and added again in the "
                            "same patch; rename or add, not both")
        if n in news:
            raise RvlmError(f"{where}.add_fields: {n!r} is also the new name of {news[n]!r}")
    updated: set[str] = set()
    for u in p.update_fields:
        canonical = p.renames.get(u.name, u.name)
        if canonical in updated:
            raise RvlmError(f"{where}.update_fields: {u.name!r} is listed twice; put all its "
                            "changes in one entry")
        updated.add(canonical)
        if u.name in seen_removed:
            raise RvlmError(f"{where}.update_fields: {u.name!r} is also in remove_fields")
        if u.name in added:
            raise RvlmError(f"{where}.update_fields: {u.name!r} is added by this patch; put its "
                            "attrs in add_fields")


def renamed(field: Field, new_name: str, storage_type: str) -> Field:
    """What ``rename_fields`` alone does to a field: the field gets the new name, and its value
    moves with it when it lives under the old name. A hash field without ``AS`` is renamed in
    every document; a JSON value at ``$.<old name>`` moves to ``$.<new name>`` (RedisVL's
    guide: a rename updates the documents). A hash ``AS`` field name or any other JSON path
    stays (the attribute alone is renamed); an ``update_fields`` entry that sets ``path``
    decides instead (``path: $.<old name>`` keeps the value where it is)."""
    if storage_type == "json" and field.path == f"$.{field.name}":
        return field.evolve(name=new_name, path=f"$.{new_name}")
    return field.evolve(name=new_name)


def merge(source: IndexSchema, patch: SchemaPatch) -> IndexSchema:
    """The target schema: the patch's built-in sections applied to ``source``.

    Raises :class:`RvlmError` naming the key for an unknown field, a rename onto an existing
    field, an add of an existing field, or an invalid attribute.
    """
    where = f"{patch.source}: changes"
    fields: list[Field] = list(source.fields)
    names = [f.name for f in fields]

    def index_of(name: str, section: str) -> int:
        if name not in names:
            raise RvlmError(f"{where}.{section}: no field named {name!r} in index "
                            f"{source.name!r} (fields: {', '.join(names)})")
        return names.index(name)

    for n in patch.remove_fields:
        i = index_of(n, "remove_fields")
        del fields[i]
        del names[i]
    for r in patch.rename_fields:
        i = index_of(r.old_name, "rename_fields")
        if r.new_name in names:
            raise RvlmError(f"{where}.rename_fields: {r.old_name!r} -> {r.new_name!r}: the "
                            f"index already has a field named {r.new_name!r}")
        fields[i] = renamed(fields[i], r.new_name, source.storage_type)
        names[i] = r.new_name
    renames = patch.renames
    for u in patch.update_fields:
        name = renames.get(u.name, u.name)
        i = index_of(name, "update_fields")
        f = fields[i]
        w = f"{where}.update_fields[{u.name}]"
        if u.type is not None and u.type.lower() != f.type:
            attrs_dict = dict(u.attrs)
            new_attrs = field_from_dict({"name": f.name, "type": u.type, "attrs": attrs_dict},
                                        w).attrs
            f = Field(name=f.name, type=u.type, path=f.path, attrs=new_attrs)
        elif u.attrs:
            f = f.evolve(attrs=evolve_attrs(f.attrs, u.attrs, w),
                         unknown_attrs=tuple(k for k in f.unknown_attrs if k not in u.attrs))
        if u.path is not None:
            f = f.evolve(path=u.path)
        fields[i] = f
    for i, raw in enumerate(patch.add_fields):
        f = field_from_dict(raw, f"{where}.add_fields[{i}]")
        if f.name in names:
            raise RvlmError(f"{where}.add_fields: the index already has a field named {f.name!r}")
        fields.append(f)
        names.append(f.name)
    index = source.index
    if patch.index:
        merged = {**index_to_dict(index), **patch.index}
        index = index_from_dict(merged, f"{where}.index")
    try:
        return IndexSchema(index=index, fields=tuple(fields))
    except ValueError as exc:
        raise RvlmError(f"{where}: {exc}") from None


def ignore_json_paths_on_hash(source: IndexSchema,
                              target: IndexSchema) -> tuple[IndexSchema, list[str]]:
    """``target`` without the JSON paths (``$...``) its fields were given on a hash index, and
    one warning for each path dropped.

    A hash field's ``path`` names the hash field (the ``AS`` form); ``$.category`` there would
    make an attribute that reads a hash field literally called ``$.category``, which no
    document has, so the field would index nothing. RedisVL ignores ``path`` on hash with a
    warning, and so does rvlm for JSON paths (a field the source already reads that way is
    left as it is)."""
    if target.storage_type != "hash":
        return target, []
    kept = {(f.name, f.identifier(source.storage_type)) for f in source.fields}
    fields, warnings = [], []
    for f in target.fields:
        if f.path is not None and f.path.startswith("$") and (f.name, f.path) not in kept:
            warnings.append(
                f"field {f.name!r}: path {f.path!r} is a JSON path, and index {target.name!r} "
                f"stores hashes: the path is ignored (as RedisVL does), so the field reads the "
                f"hash field {f.name!r}")
            f = f.evolve(path=None)
        fields.append(f)
    return (target.with_fields(fields) if warnings else target), warnings


def patch_from_target(source: IndexSchema, target: IndexSchema) -> SchemaPatch:
    """The patch that turns ``source`` into ``target`` (no renames: those are only suggested).

    ``merge(source, patch_from_target(source, target))`` has the target's index definition and
    fields (up to field order, and the source's ``unknown_attrs`` where the target is silent).
    """
    st, tt = source.storage_type, target.storage_type
    src = {f.name: f for f in source.fields}
    tgt = {f.name: f for f in target.fields}
    removes = tuple(n for n in src if n not in tgt)
    adds = tuple(field_to_dict(f) for n, f in tgt.items() if n not in src)
    updates = []
    for n, f in tgt.items():
        s = src.get(n)
        if s is None or s.evolve(unknown_attrs=()) == f.evolve(unknown_attrs=()):
            continue
        before = attrs_to_dict(s.attrs) if s.type == f.type else {}
        after = attrs_to_dict(f.attrs)
        changed = {k: v for k, v in after.items() if before.get(k) != v}
        defaults = {a.name: a.default for a in attrs.fields(type(f.attrs))}
        for k in before:
            if k not in after:
                changed[k] = defaults.get(k)
        updates.append(FieldUpdate(
            name=n, attrs=changed,
            path=f.identifier(tt) if f.identifier(tt) != s.identifier(st) else None,
            type=f.type if f.type != s.type else None,
        ))
    src_index, tgt_index = index_to_dict(source.index), index_to_dict(target.index)
    index_defaults = {a.name: a.default for a in attrs.fields(type(target.index))}
    index_changes = {k: v for k, v in tgt_index.items() if src_index.get(k) != v}
    for k in src_index:
        if k not in tgt_index:
            default = index_defaults.get(k)
            index_changes[k] = list(default) if isinstance(default, tuple) else default
    return SchemaPatch(add_fields=adds, remove_fields=removes, update_fields=tuple(updates),
                       index=index_changes, source="target schema")
