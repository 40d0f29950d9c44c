"""update_field: a field's options change (weight, sortable, separator, ...).

Options are index-side only: no document is rewritten. A change of a field's type would need
every value rewritten, and is blocked with what to do instead. (A new path is the move_path
change.)
"""

from __future__ import annotations

from collections.abc import Sequence

from rvlm.plugin import (
    Change,
    ChangeType,
    Classification,
    Difference,
    IndexSchema,
    PlanContext,
    hookimpl,
)

NAME = "update_field"
#: The attributes of a vector field that this change type owns (vector_index owns its index
#: parameters, quantize its datatype).
VECTOR_ATTRS = ("index_missing",)


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    return [ChangeType(name=NAME, description="Change a field's index options.")]


@hookimpl
def detect_changes(differences: Sequence[Difference], target: IndexSchema) -> list[Change]:
    """A field's type change is one change; its other attribute changes are one change per
    field (a vector field's: only ``index_missing``)."""
    out: list[Change] = []
    fields: dict[tuple[str | None, str | None], list[Difference]] = {}
    for d in differences:
        if d.kind == "field_type":
            out.append(Change(type=NAME, field=d.field, new_field=d.new_field, claims=(d,),
                              details={"type": {"before": d.before, "after": d.after}}))
            continue
        field = target.field(d.new_field or "")
        if d.kind == "field_attr" and field is not None and (
                field.type != "vector" or d.key in VECTOR_ATTRS):
            fields.setdefault((d.field, d.new_field), []).append(d)
    for (old, new), ds in fields.items():
        out.append(Change(type=NAME, field=old, new_field=new, claims=ds, details={
            "attrs": {d.key: {"before": d.before, "after": d.after} for d in ds}}))
    return out


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification:
    d = change.details
    if "type" in d:
        return Classification.blocked(
            f"changing the type of {change.field!r} from {d['type']['before']} to "
            f"{d['type']['after']} is not supported: add a new field of the new type under "
            "another name and remove the old one")
    parts = [f"{k} {v['before']!r} -> {v['after']!r}" for k, v in d.get("attrs", {}).items()]
    return Classification(summary=f"update {change.field!r}: {', '.join(parts)}")
