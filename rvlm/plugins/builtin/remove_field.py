"""remove_field: the index stops indexing a field. Documents keep their values."""

from __future__ import annotations

from collections.abc import Sequence

from rvlm.plugin import Change, ChangeType, Classification, Difference, PlanContext, hookimpl

NAME = "remove_field"


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    return [ChangeType(name=NAME, description="Remove a field from the index (values are kept).")]


@hookimpl
def detect_changes(differences: Sequence[Difference]) -> list[Change]:
    """One change per source field the target no longer has."""
    return [Change(type=NAME, field=d.field, details={"before": d.before}, claims=(d,))
            for d in differences if d.kind == "field_removed"]


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification:
    return Classification(
        summary=f"remove field {change.field!r} from the index (documents keep the value)",
        warnings=(f"queries that use @{change.field} stop matching after the migration",),
    )
