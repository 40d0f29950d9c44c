"""rename_field: a field gets a new attribute name (what queries write after ``@``).

The value moves with the name when it lives under the old name: a hash field without ``AS``
is renamed in every document, and a JSON value at ``$.<old name>`` moves to ``$.<new name>``
(RedisVL's guide: renaming updates the documents). That move is a ``move_path`` change of its
own, listed right after this one, with move_path's checks (a document already holding the new
name, another field reading the old place, missing JSON parents). A hash ``AS`` name or any
other JSON path stays where it is; ``update_fields: [{name: <new>, path: ...}]`` in the same
patch decides instead (``path: $.<old name>`` renames the attribute only).
"""

from __future__ import annotations

from collections.abc import Sequence

from rvlm.plugin import Change, ChangeType, Classification, Difference, PlanContext, hookimpl

NAME = "rename_field"


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    return [ChangeType(name=NAME, description="Rename a field (its value moves with it when it "
                                              "lives under the old name).")]


@hookimpl
def detect_changes(differences: Sequence[Difference]) -> list[Change]:
    """One change per rename in the patch."""
    return [Change(type=NAME, field=d.field, new_field=d.new_field,
                   details={"old_identifier": d.before, "new_identifier": d.after}, claims=(d,))
            for d in differences if d.kind == "field_renamed"]


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification:
    old_id = change.details["old_identifier"]
    new_id = change.details["new_identifier"]
    label = f"{change.field!r} -> {change.new_field!r}"
    if old_id == new_id:
        documents = f"documents unchanged: the value stays at {old_id}"
    else:
        documents = f"the value moves from {old_id} to {new_id}: see move_path"
    return Classification(
        summary=f"rename attribute {label} ({documents})",
        warnings=(f"queries that use @{change.field} must use @{change.new_field} after the "
                  "migration",),
    )
