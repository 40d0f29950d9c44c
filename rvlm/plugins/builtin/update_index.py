"""update_index: index-level options change (stopwords, filter, language, score, ...).

Index-side only. A storage type change (hash <-> JSON) rewrites every document and is blocked
here (a storage-conversion plugin can own it through its own patch section); a key separator
change is blocked because the separator is part of every existing key.
"""

from __future__ import annotations

from collections.abc import Sequence

from rvlm.plugin import Change, ChangeType, Classification, Difference, PlanContext, hookimpl

NAME = "update_index"


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    return [ChangeType(name=NAME, description="Change index options (stopwords, filter, ...).")]


@hookimpl
def detect_changes(differences: Sequence[Difference]) -> list[Change]:
    """One change for every other index option that changes."""
    options = [d for d in differences if d.kind == "index_option"]
    if not options:
        return []
    return [Change(type=NAME, claims=options, details={
        "options": {d.key: {"before": d.before, "after": d.after} for d in options}})]


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification:
    options = change.details["options"]
    reasons = []
    if "storage_type" in options:
        o = options["storage_type"]
        reasons.append(
            f"changing storage from {o['before']} to {o['after']} rewrites every document; "
            "install a storage-conversion plugin (examples/plugins/hash_to_json) and use its "
            "patch section")
    if "key_separator" in options:
        o = options["key_separator"]
        reasons.append(
            f"changing the key separator from {o['before']!r} to {o['after']!r} is not "
            "supported: the separator is part of every existing key; change the prefix instead")
    if reasons:
        return Classification.blocked(*reasons)
    warnings = []
    if "filter" in options:
        warnings.append("FILTER changes which documents are indexed: the document count after "
                        "the migration may differ from the source's")
    parts = [f"{k} {v['before']!r} -> {v['after']!r}" for k, v in options.items()]
    return Classification(summary=f"index options: {', '.join(parts)}",
                          warnings=tuple(warnings),
                          details={"doc_count_may_change": "filter" in options})
