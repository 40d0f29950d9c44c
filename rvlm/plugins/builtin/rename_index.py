"""rename_index: the rebuilt index gets a new name. Documents are not touched.

Renaming onto a name that already exists is blocked at plan time (the peer drops the source
and silently creates nothing); the executor checks again before the drop.
"""

from __future__ import annotations

from collections.abc import Sequence

from rvlm.plugin import Change, ChangeType, Classification, Difference, PlanContext, hookimpl

NAME = "rename_index"


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    return [ChangeType(name=NAME, description="Give the rebuilt index a new name.")]


@hookimpl
def detect_changes(differences: Sequence[Difference]) -> list[Change]:
    """The index name changes."""
    return [Change(type=NAME, details={"before": d.before, "after": d.after}, claims=(d,))
            for d in differences if d.kind == "index_name"]


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification:
    before, after = change.details["before"], change.details["after"]
    if after in context.index_names:
        return Classification.blocked(
            f"an index or alias named {after!r} already exists, and a rename onto it would "
            "leave two things answering to that name; pick another name, or drop it (or "
            "FT.ALIASDEL it) first")
    alias = context.options.get("alias")
    if alias or context.options.get("mode") == "online":
        via = f"the alias {alias!r}" if alias else "the alias"
        warning = (f"clients that query {before!r} by its name must switch to {after!r} or to "
                   f"{via}, which apply points at {after!r}")
    else:
        warning = (f"clients that query {before!r} must switch to {after!r} (or point an "
                   f"alias at it: FT.ALIASADD {before} {after})")
    return Classification(summary=f"rename index {before!r} -> {after!r}",
                          warnings=(warning,))
