"""change_prefix: every document key moves from the old prefix to the new one.

Keys are renamed by the executor (RENAME on one node; DUMP/PTTL/RESTORE/DEL across cluster
hash slots), TTLs kept, with the original names in the backup. A new key that already exists
is refused: on a sample at plan time, and over every key before the drop.
"""

from __future__ import annotations

from collections.abc import Sequence

from rvlm.plugin import (
    NO_CHANGE,
    ApplyContext,
    Change,
    ChangeType,
    Classification,
    Difference,
    Document,
    DocumentOperation,
    DocumentUpdate,
    OperationCost,
    Plan,
    PlanContext,
    hookimpl,
)

NAME = "change_prefix"


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    return [ChangeType(name=NAME, description="Move every document to a new key prefix.")]


@hookimpl
def detect_changes(differences: Sequence[Difference]) -> list[Change]:
    """The index's prefixes change."""
    return [Change(type=NAME, details={"before": d.before, "after": d.after}, claims=(d,))
            for d in differences if d.kind == "index_prefix"]


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification:
    before, after = change.details["before"], change.details["after"]
    if len(before) != 1 or len(after) != 1:
        return Classification.blocked(
            f"the index has prefixes {before} -> {after}: only a change from one prefix to "
            "one prefix is supported (keys under several prefixes cannot be mapped safely); "
            "keep the prefixes, or split the index into one index per prefix first")
    old, new = before[0], after[0]
    if old.startswith(new) and old != new:
        return Classification.blocked(
            f"the new prefix {new!r} is a prefix of the old one {old!r}: renamed keys would "
            "still match the old prefix; choose a prefix that does not contain the old one")
    # The calibration sample (up to --sample-size keys) when the planner offers it, else the
    # plan's key sample; the executor checks every key again before the drop.
    keys = [d.key for d in context.sample(())] or list(context.key_sample)
    sample = [k for k in keys if k.startswith(old.encode())]
    new_keys = [new.encode() + k[len(old):] for k in sample]
    if new_keys and context.keys_exist is not None:
        taken = [k for k, e in zip(new_keys, context.keys_exist(new_keys), strict=True) if e]
        if taken:
            return Classification.blocked(
                f"{len(taken)} of {len(new_keys)} sampled keys already exist under the new "
                f"prefix {new!r} (e.g. {taken[0].decode(errors='replace')}); moving would "
                "overwrite them. Pick another prefix, or move or delete those keys first")
    return Classification(
        summary=f"move every key from prefix {old!r} to {new!r} (RENAME, TTLs kept)",
        operations=(DocumentOperation(plugin=NAME, kind="rename_keys",
                                      rename_prefix=(old, new)),),
        warnings=(f"applications that read keys under {old!r} must switch to {new!r}",),
    )


@hookimpl
def estimate_operation(plan: Plan) -> OperationCost:
    """No value is rewritten; the backup keeps each key's old and new name."""
    key_len = sum(len(k) for k in plan.key_sample) / max(len(plan.key_sample), 1)
    return OperationCost(bytes_rewritten=0, backup_bytes=key_len * 2)


@hookimpl
def transform_documents(operation: DocumentOperation, documents: Sequence[Document],
                        context: ApplyContext) -> list[DocumentUpdate]:
    # The executor moves keys itself from the operation's rename_prefix.
    return [NO_CHANGE] * len(documents)
