"""Every difference between a source and a target schema, as neutral facts.

The core lists *what* differs; which change type a difference becomes is plugin work: each
plugin's ``detect_changes`` hook claims the differences its change types handle (alembic's
comparators, as a hook), and a difference that no plugin claims blocks the plan. So a new
change type is one plugin file, and a third party can claim a kind of difference too.

:func:`differences` lists them in a fixed order, which is the order changes are listed in a
plan (a change goes where its first claimed difference is):

1. ``field_removed`` for each source field without a counterpart (source order);
2. ``field_renamed`` for each rename of the patch;
3. for each target field (target order): ``field_added``; or ``field_type`` (and nothing else
   about the field: attributes of two types do not compare); or its ``field_attr``
   differences (a vector's index parameters first, then its ``datatype``, then the rest),
   then ``field_path`` when the value lives elsewhere (a renamed field too: its
   ``field_renamed`` is the new attribute name, its ``field_path`` the value's move);
4. ``index_name``, ``index_prefix``, then one ``index_option`` per other index option.

A field that disappears while an identical one appears under another name is reported by
:func:`likely_renames` so the plan can suggest the ``rename_fields`` entry.
"""

from __future__ import annotations

from typing import Any

import attrs

from rvlm.core.plugins.changes import Difference
from rvlm.core.schema.model import Field, IndexSchema, VectorAttrs
from rvlm.core.schema.patch import renamed
from rvlm.core.schema.yaml_format import attrs_to_dict, field_to_dict, index_to_dict

#: A vector field's index parameters, in the order a plan lists them (then ``datatype``).
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
    """``{attr: {"before": ..., "after": ...}}`` for each attribute whose effective value
    differs (all attributes, or ``keys`` in that order)."""
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


def _attr_order(before: Field, after: Field) -> tuple[str, ...]:
    if isinstance(before.attrs, VectorAttrs) and isinstance(after.attrs, VectorAttrs):
        rest = [k for k in (*attrs_to_dict(before.attrs), *attrs_to_dict(after.attrs))
                if k not in VECTOR_INDEX_KEYS and k != "datatype"]
        return (*VECTOR_INDEX_KEYS, "datatype", *dict.fromkeys(rest))
    return tuple(dict.fromkeys([*attrs_to_dict(before.attrs), *attrs_to_dict(after.attrs)]))


def differences(source: IndexSchema, target: IndexSchema,
                renames: dict[str, str]) -> list[Difference]:
    """Every difference from ``source`` to ``target`` in plan order (see the module
    docstring); ``renames`` maps old field names to new ones."""
    out: list[Difference] = []
    src = {f.name: f for f in source.fields}
    tgt = {f.name: f for f in target.fields}
    reverse = {new: old for old, new in renames.items()}
    st = source.index.storage_type
    tt = target.index.storage_type

    for name, gone in src.items():
        if renames.get(name, name) not in tgt:
            out.append(Difference(kind="field_removed", field=name, before=field_to_dict(gone)))
    for old, new in renames.items():
        if old in src and new in tgt:
            out.append(Difference(kind="field_renamed", field=old, new_field=new,
                                  before=src[old].identifier(st),
                                  after=tgt[new].identifier(tt)))
    for name, g in tgt.items():
        old = reverse.get(name, name)
        f = src.get(old)
        if f is None:
            out.append(Difference(kind="field_added", new_field=name, after=field_to_dict(g)))
            continue
        if f.type != g.type:
            out.append(Difference(kind="field_type", field=old, new_field=name,
                                  before=f.type, after=g.type))
            continue
        for key, v in attr_diff(f, g, _attr_order(f, g)).items():
            out.append(Difference(kind="field_attr", field=old, new_field=name, key=key,
                                  before=v["before"], after=v["after"]))
        if f.identifier(st) != g.identifier(tt):
            out.append(Difference(kind="field_path", field=old, new_field=name,
                                  before=f.identifier(st), after=g.identifier(tt)))

    si, ti = source.index, target.index
    if si.name != ti.name:
        out.append(Difference(kind="index_name", before=si.name, after=ti.name))
    if si.prefix != ti.prefix:
        out.append(Difference(kind="index_prefix", before=list(si.prefix),
                              after=list(ti.prefix)))
    b, a = index_to_dict(si), index_to_dict(ti)
    for k in dict.fromkeys([*b, *a]):
        if k not in ("name", "prefix") and b.get(k) != a.get(k):
            out.append(Difference(kind="index_option", key=k, before=b.get(k), after=a.get(k)))
    return out


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
        # What rename_fields alone gives (see rvlm.core.schema.patch.renamed).
        moved = IndexSchema(index=target.index, fields=[renamed(f, new_name, tt)])
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
