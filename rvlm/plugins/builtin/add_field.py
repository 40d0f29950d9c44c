"""add_field: a new field in the index. Documents are not touched; those that hold a value
under the new field's name or path are indexed by the rebuilt index."""

from __future__ import annotations

from collections.abc import Sequence

from rvlm.plugin import Change, ChangeType, Classification, Difference, PlanContext, hookimpl

NAME = "add_field"


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    return [ChangeType(name=NAME, description="Add a field to the index (no document rewrite).")]


@hookimpl
def detect_changes(differences: Sequence[Difference]) -> list[Change]:
    """One change per field the target adds."""
    return [Change(type=NAME, new_field=d.new_field, details={"after": d.after}, claims=(d,))
            for d in differences if d.kind == "field_added"]


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification:
    field = context.target.field(change.new_field or "")
    assert field is not None
    if field.type == "vector":
        return Classification.blocked(
            f"adding vector field {field.name!r} needs a vector in every document, which rvlm "
            "cannot invent; compute it with a plugin (see examples/plugins/computed_vector) or "
            "write the vectors first and then add the field"
        )
    where = field.identifier(context.target.storage_type)
    return Classification(summary=f"add {field.type} field {field.name!r} ({where}); documents "
                                  "that hold it are indexed")
