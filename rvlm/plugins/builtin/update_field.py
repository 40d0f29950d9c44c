"""update_field: a field's options change (weight, sortable, separator, ...).

Options are index-side only: no document is rewritten. A change of a field's type or path
would need every value rewritten or moved, and is blocked with what to do instead.
"""

from __future__ import annotations

from rvlm.plugin import Change, ChangeType, Classification, PlanContext, hookimpl

NAME = "update_field"


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    return [ChangeType(name=NAME, description="Change a field's index options.")]


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification:
    d = change.details
    if "type" in d:
        return Classification.blocked(
            f"changing the type of {change.field!r} from {d['type']['before']} to "
            f"{d['type']['after']} is not supported: add a new field of the new type under "
            "another name and remove the old one")
    if "path" in d:
        return Classification.blocked(
            f"moving {change.field!r} from {d['path']['before']} to {d['path']['after']} "
            "without renaming it is not supported: use rename_fields with a new name and path")
    parts = [f"{k} {v['before']!r} -> {v['after']!r}" for k, v in d.get("attrs", {}).items()]
    return Classification(summary=f"update {change.field!r}: {', '.join(parts)}")
