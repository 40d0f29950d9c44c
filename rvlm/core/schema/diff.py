"""The changes between a source and a target schema, typed by change type.

Built-in change types (each owned by the built-in plugin of the same name):

``add_field``, ``remove_field``, ``rename_field``, ``update_field`` (a field's non-vector
options, or its type/path), ``vector_index`` (algorithm, metric, parameters, dims),
``quantize`` (a vector's datatype), ``rename_index``, ``change_prefix``, ``update_index``
(the other index options, storage type and key separator).

A field that disappears while an identical one appears under another name is reported by
:func:`likely_renames` so the plan can suggest the ``rename_fields`` entry.
"""

from __future__ import annotations

from typing import Any

import attrs

from rvlm.core.plugins.changes import Change
from rvlm.core.schema.model import Field, IndexSchema, VectorAttrs
from rvlm.core.schema.yaml_format import attrs_to_dict, field_to_dict, index_to_dict

VECTOR_INDEX_KEYS = ("dims", "algorithm", "distance_metric", "initial_cap", "block_size", "m",
                     "ef_construction", "ef_runtime", "epsilon", "graph_max_degree",
                     "construction_window_size", "search_window_size", "compression", "reduce",
                     "training_threshold")


#: What a vector attribute left out (None) means on the server. The model stores these defaults
#: as None, so a diff shows the value the index really uses ("m 8 -> 16", not "m 8 -> None").
VECTOR_DEFAULTS: dict[str, Any] = {"m": 16, "ef_construction": 200, "ef_runtime": 10,
                                   "epsilon": 0.01, "block_size": 1024}
#: Shown for a value FT.INFO cannot report (the field's ``unknown_attrs``).
UNKNOWN = "unknown"


def _effective(field: Field, values: dict[str, Any], key: str) -> Any:
    """The value the index uses for ``key``: the stored one, the server default, or unknown."""
    value = values.get(key)
    if value is not None:
        return value
    if key in field.unknown_attrs:
        return UNKNOWN
    if isinstance(field.attrs, VectorAttrs):
        return VECTOR_DEFAULTS.get(key)
    return None


def attr_diff(before: Field, after: Field, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    b = attrs_to_dict(before.attrs)
    a = attrs_to_dict(after.attrs)
    names = keys if keys is not None else tuple(dict.fromkeys([*b, *a]))
    out: dict[str, Any] = {}
    for k in names:
        if b.get(k) == a.get(k):
            continue
        eb, ea = _effective(before, b, k), _effective(after, a, k)
        if eb != ea:
            out[k] = {"before": eb, "after": ea}
    return out


def diff(source: IndexSchema, target: IndexSchema, renames: dict[str, str]) -> list[Change]:
    """Every change from ``source`` to ``target``; ``renames`` maps old field names to new."""
    changes: list[Change] = []
    src = {f.name: f for f in source.fields}
    tgt = {f.name: f for f in target.fields}
    reverse = {new: old for old, new in renames.items()}
    st = source.index.storage_type
    tt = target.index.storage_type

    for name, f in src.items():
        new_name = renames.get(name, name)
        if new_name not in tgt:
            changes.append(Change(type="remove_field", field=name,
                                  details={"before": field_to_dict(f)}))
    for old, new in renames.items():
        if old in src and new in tgt:
            changes.append(Change(type="rename_field", field=old, new_field=new, details={
                "old_identifier": src[old].identifier(st),
                "new_identifier": tgt[new].identifier(tt),
            }))
    for name, g in tgt.items():
        old = reverse.get(name, name)
        found = src.get(old)
        if found is None:
            changes.append(Change(type="add_field", new_field=name,
                                  details={"after": field_to_dict(g)}))
            continue
        f = found
        if f.type != g.type:
            changes.append(Change(type="update_field", field=old, new_field=name, details={
                "type": {"before": f.type, "after": g.type}}))
            continue
        renamed = old != name
        path_changed = f.identifier(st) != g.identifier(tt) and not renamed
        if isinstance(f.attrs, VectorAttrs) and isinstance(g.attrs, VectorAttrs):
            index_diff = attr_diff(f, g, VECTOR_INDEX_KEYS)
            if index_diff:
                changes.append(Change(type="vector_index", field=old, new_field=name,
                                      details={"attrs": index_diff}))
            if f.attrs.datatype != g.attrs.datatype:
                changes.append(Change(type="quantize", field=old, new_field=name, details={
                    "datatype": {"before": f.attrs.datatype, "after": g.attrs.datatype},
                    "dims": g.attrs.dims, "distance_metric": g.attrs.distance_metric,
                }))
            rest = attr_diff(f, g, ("index_missing",))
        else:
            rest = attr_diff(f, g)
        if rest or path_changed:
            details: dict[str, Any] = {}
            if rest:
                details["attrs"] = rest
            if path_changed:
                details["path"] = {"before": f.identifier(st), "after": g.identifier(tt)}
            changes.append(Change(type="update_field", field=old, new_field=name, details=details))

    si, ti = source.index, target.index
    if si.name != ti.name:
        changes.append(Change(type="rename_index", details={"before": si.name, "after": ti.name}))
    if si.prefix != ti.prefix:
        changes.append(Change(type="change_prefix", details={
            "before": list(si.prefix), "after": list(ti.prefix)}))
    b, a = index_to_dict(si), index_to_dict(ti)
    opts = {k: {"before": b.get(k), "after": a.get(k)} for k in dict.fromkeys([*b, *a])
            if k not in ("name", "prefix") and b.get(k) != a.get(k)}
    if opts:
        changes.append(Change(type="update_index", details={"options": opts}))
    return changes


@attrs.frozen
class LikelyRename:
    """A removed field and an added one that are identical but for the name (and maybe path).

    ``patch`` is the exact ``changes:`` content that turns the removal and the addition into a
    rename: a ``rename_fields`` entry, plus an ``update_fields`` entry when the value also
    moves to another path.
    """

    old_name: str
    new_name: str
    new_path: str | None = None

    @property
    def patch(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rename_fields": [{"old_name": self.old_name,
                                                  "new_name": self.new_name}]}
        if self.new_path is not None:
            out["update_fields"] = [{"name": self.new_name, "path": self.new_path}]
        return out

    def patch_text(self) -> str:
        """The entry as one line of flow YAML, ready to paste under ``changes:``."""
        parts = [f"rename_fields: [{{old_name: {self.old_name}, new_name: {self.new_name}}}]"]
        if self.new_path is not None:
            parts.append(f"update_fields: [{{name: {self.new_name}, path: '{self.new_path}'}}]")
        return " and ".join(parts)


def likely_renames(source: IndexSchema, target: IndexSchema,
                   renames: dict[str, str]) -> list[LikelyRename]:
    """Fields that disappear while an identical one (type and attrs) appears under another name.

    A pair whose rename alone gives the target field exactly is suggested as a rename; when the
    value also lives elsewhere (another JSON path or hash field), the suggestion adds the path.
    """
    tt = target.storage_type
    if source.storage_type != tt:
        return []
    tgt_names = {f.name for f in target.fields}
    src_names = {f.name for f in source.fields}
    removed = [f for f in source.fields if f.name not in renames and f.name not in tgt_names]
    added = [g for g in target.fields
             if g.name not in src_names and g.name not in renames.values()]

    def renamed_place(f: Field, new_name: str) -> str:
        # What rename_fields alone gives: the field under the new name, its path unchanged.
        moved = IndexSchema(index=target.index, fields=[f.evolve(name=new_name)])
        return moved.fields[0].identifier(tt)

    out: list[LikelyRename] = []
    for f in removed:
        candidates = [g for g in added if g.type == f.type and g.attrs == f.attrs]
        exact = [g for g in candidates if renamed_place(f, g.name) == g.identifier(tt)]
        if not candidates:
            continue
        pick = (exact or candidates)[0]
        added.remove(pick)
        new_path = None if exact else pick.identifier(tt)
        out.append(LikelyRename(old_name=f.name, new_name=pick.name, new_path=new_path))
    return out
