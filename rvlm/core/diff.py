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

from rvlm.core.changes import Change
from rvlm.core.schema import Field, IndexSchema, VectorAttrs
from rvlm.core.schema_yaml import attrs_to_dict, field_to_dict, index_to_dict

VECTOR_INDEX_KEYS = ("dims", "algorithm", "distance_metric", "initial_cap", "block_size", "m",
                     "ef_construction", "ef_runtime", "epsilon", "graph_max_degree",
                     "construction_window_size", "search_window_size", "compression", "reduce",
                     "training_threshold")


def _attr_diff(before: Field, after: Field, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    b = attrs_to_dict(before.attrs)
    a = attrs_to_dict(after.attrs)
    names = keys if keys is not None else tuple(dict.fromkeys([*b, *a]))
    return {k: {"before": b.get(k), "after": a.get(k)} for k in names if b.get(k) != a.get(k)}


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
        f = src.get(old)
        if f is None:
            changes.append(Change(type="add_field", new_field=name,
                                  details={"after": field_to_dict(g)}))
            continue
        if f.type != g.type:
            changes.append(Change(type="update_field", field=old, new_field=name, details={
                "type": {"before": f.type, "after": g.type}}))
            continue
        renamed = old != name
        path_changed = f.identifier(st) != g.identifier(tt) and not renamed
        if isinstance(f.attrs, VectorAttrs) and isinstance(g.attrs, VectorAttrs):
            index_diff = _attr_diff(f, g, VECTOR_INDEX_KEYS)
            if index_diff:
                changes.append(Change(type="vector_index", field=old, new_field=name,
                                      details={"attrs": index_diff}))
            if f.attrs.datatype != g.attrs.datatype:
                changes.append(Change(type="quantize", field=old, new_field=name, details={
                    "datatype": {"before": f.attrs.datatype, "after": g.attrs.datatype},
                    "dims": g.attrs.dims, "distance_metric": g.attrs.distance_metric,
                }))
            rest = _attr_diff(f, g, ("index_missing",))
        else:
            rest = _attr_diff(f, g)
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


def likely_renames(source: IndexSchema, target: IndexSchema,
                   renames: dict[str, str]) -> list[tuple[str, str]]:
    """(old, new) pairs where a removed field and an added one are identical but for the name."""
    src = {f.name: f for f in source.fields if f.name not in renames}
    tgt_names = {f.name for f in target.fields}
    added = [g for g in target.fields if g.name not in src and g.name not in renames.values()]
    removed = [f for n, f in src.items() if n not in tgt_names]
    pairs = []
    for f in removed:
        for g in added:
            same_attrs = f.type == g.type and f.attrs == g.attrs
            same_place = f.path == g.path or f.path is None or g.path is None
            if same_attrs and same_place:
                pairs.append((f.name, g.name))
                added.remove(g)
                break
    return pairs
