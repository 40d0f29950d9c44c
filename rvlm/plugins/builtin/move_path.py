"""move_path: a field's value moves to another JSON path (or hash field).

``update_fields: [{name: title, path: $.meta.title}]`` on a JSON index: every document's value
moves from the old path to the new one while no index covers the documents, and the new index
reads it there. Parent objects the new path needs are created (``$.meta`` becomes
``{"title": ...}`` in a document that has no ``$.meta``); empty objects the move leaves at the
old place stay. On a hash index the same entry (``path: headline``) renames the hash field,
and the index reads it as ``headline AS title``.

A rename moves the value too when it lives under the old name (a hash field without ``AS``,
a JSON value at ``$.<old name>``, or wherever ``update_fields`` puts it): ``rename_field``
renames the attribute and this change moves the value, with every check below.

Refused before anything changes: a new path that is not a plain ``$.a.b`` path, a path inside
the other, another field still reading the old path, a document that already holds the new
path (a sample at plan time, every document before the drop through ``creates``), a parent of
the new path that is not an object (a sample at plan time, every document in ``pre_drop``),
and a storage type change (every path moves: that is a storage conversion).

This file is the whole change type: detection (it claims the ``field_path`` differences),
classification, estimate, pre-drop check, transform and validation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rvlm.plugin import (
    MISSING,
    NO_CHANGE,
    ApplyContext,
    Change,
    ChangeType,
    CheckResult,
    Classification,
    Difference,
    Document,
    DocumentOperation,
    DocumentUpdate,
    IndexSchema,
    OperationCost,
    Plan,
    PlanContext,
    hookimpl,
    scan_keys,
)

NAME = "move_path"
SIMPLE_PATH = re.compile(r"^\$(\.[A-Za-z_][A-Za-z0-9_]*)+$")
#: Keys named as examples in a refusal.
MAX_EXAMPLES = 3


def parents(path: str) -> tuple[str, ...]:
    """The objects a JSON path needs, outermost first: ``$.a.b.c`` -> ``($.a, $.a.b)``."""
    keys = path[2:].split(".")
    return tuple("$." + ".".join(keys[:i]) for i in range(1, len(keys)))


def _not_objects(doc: Document, names: Sequence[str]) -> str | None:
    """The first of ``names`` the document holds as something other than an object."""
    for name in names:
        value = doc.get(name)
        if value is not MISSING and not isinstance(value, dict):
            return name
    return None


def _keys(docs: Sequence[bytes]) -> str:
    return ", ".join(k.decode(errors="replace") for k in docs[:MAX_EXAMPLES])


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    return [ChangeType(name=NAME, description="Move a field's value to another JSON path or "
                                              "hash field (a renamed field's too).")]


@hookimpl
def detect_changes(differences: Sequence[Difference], source: IndexSchema,
                   target: IndexSchema) -> list[Change]:
    """One change per field whose value lives elsewhere in the target (a renamed field's
    too: ``rename_field`` renames the attribute, this change moves the value)."""
    storage = {"before": source.storage_type, "after": target.storage_type}
    return [Change(type=NAME, field=d.field, new_field=d.new_field, claims=(d,),
                   details={"path": {"before": d.before, "after": d.after}, "storage": storage})
            for d in differences if d.kind == "field_path"]


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification:
    old, new = change.details["path"]["before"], change.details["path"]["after"]
    label = f"{old} -> {new}"
    storage = context.source.storage_type
    # the storage type the patch's built-in sections give; a conversion plugin's own section
    # (hash_to_json) runs its operation after this one, on the moved values
    after = change.details.get("storage", {}).get("after", context.target.storage_type)
    if after != storage:
        return Classification.blocked(
            f"{label}: the index also changes storage type, which moves every value; convert "
            "the storage with a storage-conversion plugin (examples/plugins/hash_to_json)")
    sharing = [f.name for f in context.target.fields
               if f.name != change.new_field and f.identifier(storage) == old]
    if sharing:
        return Classification.blocked(
            f"{label}: field {sharing[0]!r} also reads {old}, and would lose its value; move "
            "it too, or give the moved value a field of its own")
    needed: tuple[str, ...] = ()
    if storage == "json":
        for path, which in ((old, "old"), (new, "new")):
            if not SIMPLE_PATH.match(path):
                return Classification.blocked(
                    f"{label}: the {which} path {path!r} is not a plain $.a.b path; rvlm only "
                    "moves values between plain paths (one value each)")
        if new.startswith(old + ".") or old.startswith(new + "."):
            return Classification.blocked(
                f"{label}: one path is inside the other, so the move would overwrite the "
                "value it moves; move it somewhere else first")
        needed = parents(new)
    sample = context.sample([old, new, *needed])
    held = [d.key for d in sample if d.get(new) is not MISSING]
    if held:
        return Classification.blocked(
            f"{label}: {len(held)} sampled documents already hold {new} (e.g. {_keys(held)}); "
            f"the move would overwrite it. Pick another path or clear {new} first")
    blocked = [d.key for d in sample if _not_objects(d, needed)]
    if blocked:
        where = _not_objects(next(d for d in sample if d.key == blocked[0]), needed)
        return Classification.blocked(
            f"{label}: {where} is not an object in {len(blocked)} sampled documents (e.g. "
            f"{_keys(blocked)}), so {new} cannot be placed under it; pick another path")
    what = "JSON value moved" if storage == "json" else "hash field renamed"
    if change.field == change.new_field:
        whose, queries = (f"{change.field!r}", f"queries on @{change.new_field} are unchanged")
    else:
        whose = f"{change.new_field!r} (renamed from {change.field!r})"
        queries = f"queries use @{change.new_field}"
    return Classification(
        summary=f"move {whose} from {old} to {new}: {what} in every document",
        warnings=(f"applications that read {old} in the documents must read {new} after the "
                  f"migration ({queries})",),
        operations=(DocumentOperation(
            plugin=NAME, kind="move_json_path" if storage == "json" else "rename_hash_field",
            reads=(old, *needed), writes=(old, new, *needed), creates=(new,),
            params={"field": change.new_field, "old": old, "new": new,
                    "parents": list(needed)}),),
    )


@hookimpl
def estimate_operation(operation: DocumentOperation,
                       sample: Sequence[Document] | None) -> OperationCost:
    """The moved value is written once and backed up once (measured on the sample)."""
    if sample is None:
        return OperationCost(bytes_rewritten=None, backup_bytes=None)
    old = operation.params["old"]
    total = 0
    for doc in sample:
        value = doc.get(old)
        if value is not MISSING:
            total += len(value) if isinstance(value, bytes) else len(json.dumps(value))
    size = total / max(len(sample), 1)
    return OperationCost(bytes_rewritten=size, backup_bytes=size)


@hookimpl
def pre_drop(plan: Plan, context: ApplyContext) -> list[str]:
    """Every JSON document: the parents of each new path are objects or absent."""
    ops = [o for o in plan.operations if o.plugin == NAME and o.params.get("parents")]
    if not ops or context.client is None:
        return []
    problems = []
    storage = plan.source_schema.storage_type
    for op in ops:
        needed = op.params["parents"]
        bad: list[bytes] = []
        for keys in scan_keys(context.client, plan.source_schema):
            docs = context.read_documents(keys, needed, storage_type=storage)
            bad += [d.key for d in docs if _not_objects(d, needed)]
        if bad:
            problems.append(f"move_path {op.params['field']!r}: {len(bad)} documents hold "
                            f"something other than an object where {op.params['new']} needs "
                            f"one (e.g. {_keys(bad)}); fix them or pick another path")
    return problems


@hookimpl
def transform_documents(operation: DocumentOperation,
                        documents: Sequence[Document]) -> list[DocumentUpdate]:
    """Set the value at the new path (or the first missing parent, holding it), delete it at
    the old one; documents without the value are left alone."""
    p = operation.params
    old, new, needed = p["old"], p["new"], p["parents"]
    out: list[DocumentUpdate] = []
    for doc in documents:
        value = doc.get(old)
        if value is MISSING:
            out.append(NO_CHANGE)
            continue
        where, placed = new, value
        for parent in needed:
            held = doc.get(parent)
            if held is MISSING:  # build the missing objects around the value
                for key in reversed(new[len(parent) + 1:].split(".")):
                    placed = {key: placed}
                where = parent
                break
            if not isinstance(held, dict):
                raise ValueError(f"{doc.key.decode(errors='replace')}: {parent} is not an "
                                 f"object, so {new} cannot be placed under it")
        out.append(DocumentUpdate(set={where: placed}, delete=(old,)))
    return out


@hookimpl
def transform_columns(operation: DocumentOperation,
                      columns: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]] | None:
    """The same move on a batch held as columns: the value goes to the new name and leaves
    the old one. A JSON path under parents that may be missing is left to
    ``transform_documents`` (None)."""
    p = operation.params
    if p["parents"]:
        return None
    values = columns[p["old"]]
    return {p["new"]: [NO_CHANGE if v is MISSING else v for v in values],
            p["old"]: [NO_CHANGE if v is MISSING else MISSING for v in values]}


@hookimpl
def validate(plan: Plan, context: ApplyContext) -> list[CheckResult]:
    """Sampled documents hold no value at the old path any more."""
    checks = []
    keys = plan.key_sample_after()
    for op in plan.operations:
        if op.plugin != NAME or context.client is None:
            continue
        storage = "json" if op.kind == "move_json_path" else "hash"
        if plan.target_schema.storage_type != storage:
            continue  # a conversion replaced the documents after the move; it checks them
        old, new = op.params["old"], op.params["new"]
        left = [d.key for d in context.read_documents(keys, [old]) if d.get(old) is not MISSING]
        checks.append(CheckResult(
            name=f"move_path:{op.params['field']}", passed=not left,
            details=(f"sampled documents hold the value at {new}" if not left else
                     f"{len(left)} sampled documents still hold {old}, e.g. {_keys(left)}")))
    return checks
