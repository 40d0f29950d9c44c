"""rename_field: a field gets a new name.

* Hash, field without ``AS``: the hash field is renamed in every document.
* JSON, or hash with ``AS``: when the path stays, only the attribute is renamed (no document
  work); when the patch also moves the path, the value moves to the new path.

A rename onto a name that documents already hold would overwrite their data: the planner
checks a sample, and the executor checks every document before the drop (``creates``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rvlm.plugin import (
    MISSING,
    NO_CHANGE,
    ApplyContext,
    Change,
    ChangeType,
    Classification,
    Difference,
    Document,
    DocumentOperation,
    DocumentUpdate,
    PlanContext,
    hookimpl,
)

NAME = "rename_field"
SIMPLE_PATH = re.compile(r"^\$(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    return [ChangeType(name=NAME, description="Rename a field (and its hash field or JSON path).")]


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
        return Classification(summary=f"rename attribute {label} (documents unchanged: the "
                                      f"value stays at {old_id})")
    storage = context.source.storage_type
    if storage == "json" and not SIMPLE_PATH.match(new_id):
        return Classification.blocked(
            f"the new path {new_id!r} is not a plain $.a.b path; rvlm can only move values to "
            "plain paths")
    held = [d.key for d in context.sample([new_id]) if d.get(new_id) is not MISSING]
    if held:
        examples = ", ".join(k.decode(errors="replace") for k in held[:3])
        return Classification.blocked(
            f"{len(held)} sampled documents already hold {new_id!r} (e.g. {examples}); the "
            f"rename would overwrite it. Pick another name or clear {new_id!r} first")
    kind = "move_json_path" if storage == "json" else "rename_hash_field"
    what = "JSON value moved" if storage == "json" else "hash field renamed"
    return Classification(
        summary=f"rename {label}: {what} from {old_id} to {new_id} in every document",
        operations=(DocumentOperation(plugin=NAME, kind=kind, reads=(old_id,),
                                      writes=(old_id, new_id), creates=(new_id,),
                                      params={"old": old_id, "new": new_id}),),
    )


@hookimpl
def transform_documents(operation: DocumentOperation, documents: Sequence[Document],
                        context: ApplyContext) -> list[DocumentUpdate]:
    old, new = operation.params["old"], operation.params["new"]
    out = []
    for doc in documents:
        value = doc.get(old)
        out.append(NO_CHANGE if value is MISSING else DocumentUpdate(set={new: value},
                                                                     delete=(old,)))
    return out
