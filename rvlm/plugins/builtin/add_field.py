"""add_field: a new field in the index. Documents are not touched; those that hold a value
under the new field's name or path are indexed by the rebuilt index.

A new vector field is supported once the documents hold vectors of its size (write them
first, or compute them with a plugin such as examples/plugins/computed_vector): the sample
must show at least one vector and none of the wrong size, because a document whose vector the
index cannot read drops out of the index entirely (an indexing failure); before the drop,
every document is checked again (``pre_drop``: byte lengths, or JSON array lengths).

Validation asks the new index, for each added field, about the sampled documents that hold a
value for it (``FT.SEARCH ... INKEYS``, a query built from the document's own value): a field
that finds none of them indexes nothing, whatever else passed (for example an attribute that
reads a hash field no document has).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from rvlm.plugin import (
    DATATYPE_WIDTH,
    MISSING,
    ApplyContext,
    Change,
    ChangeType,
    CheckResult,
    Classification,
    Difference,
    Field,
    Plan,
    PlanContext,
    TagAttrs,
    VectorAttrs,
    hookimpl,
    scan_keys,
    to_list,
    to_map,
)

NAME = "add_field"
#: Sampled documents holding a value that validation asks the new index about, per field.
PROBES = 5
#: Keys named as examples in a message.
MAX_EXAMPLES = 3
_WORD = re.compile(r"[^\W_]+")
_PLAIN = re.compile(r"[A-Za-z0-9_]")


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    return [ChangeType(name=NAME, description="Add a field to the index (no document rewrite).")]


@hookimpl
def detect_changes(differences: Sequence[Difference]) -> list[Change]:
    """One change per field the target adds."""
    return [Change(type=NAME, new_field=d.new_field, details={"after": d.after}, claims=(d,))
            for d in differences if d.kind == "field_added"]


def _examples(keys: Sequence[bytes]) -> str:
    return ", ".join(k.decode(errors="replace") for k in keys[:MAX_EXAMPLES])


def vector_problem(value: Any, attrs: VectorAttrs, storage_type: str) -> str | None:
    """Why the index could not read ``value`` as a vector of ``attrs``, or None."""
    if storage_type == "json":
        if not isinstance(value, list):
            return f"a {type(value).__name__}, not a list of numbers"
        if len(value) != attrs.dims:
            return f"{len(value)} numbers, not {attrs.dims}"
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            return "not only numbers"
        return None
    size = attrs.dims * DATATYPE_WIDTH[attrs.datatype]
    if not isinstance(value, bytes) or len(value) != size:
        length = len(value) if isinstance(value, bytes) else 0
        return f"{length} bytes, not {attrs.dims} x {DATATYPE_WIDTH[attrs.datatype]} = {size}"
    return None


def _classify_vector(field: Field, context: PlanContext) -> Classification:
    assert isinstance(field.attrs, VectorAttrs)
    storage = context.target.storage_type
    where = field.identifier(storage)
    what = f"{field.attrs.dims}-dim {field.attrs.datatype} vector"
    sample = context.sample([where])
    summary = (f"add vector field {field.name!r} ({where}, {what}); documents that hold a "
               "vector there are indexed")
    if not sample:
        return Classification(summary=summary + " (the index has no documents now)")
    holders = [d for d in sample if d.get(where) is not MISSING]
    if not holders:
        return Classification.blocked(
            f"adding vector field {field.name!r}: none of {len(sample)} sampled documents holds "
            f"a vector at {where}, and rvlm cannot invent one; write a {what} into every "
            "document first and plan again, or compute them with a plugin (see "
            "examples/plugins/computed_vector)")
    bad = [(d.key, p) for d in holders
           if (p := vector_problem(d.get(where), field.attrs, storage)) is not None]
    if bad:
        return Classification.blocked(
            f"adding vector field {field.name!r}: {len(bad)} of {len(sample)} sampled documents "
            f"hold at {where} something that is not a {what} (e.g. {_examples([k for k, _ in bad])}"
            f": {bad[0][1]}); the new index could not index them, and they would drop out of it "
            "entirely; fix or remove those values first")
    warnings = []
    if len(holders) < len(sample):
        warnings.append(
            f"{len(sample) - len(holders)} of {len(sample)} sampled documents have no vector at "
            f"{where}: they stay indexed, but KNN queries on @{field.name} never return them")
    return Classification(summary=summary, warnings=tuple(warnings))


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification:
    field = context.target.field(change.new_field or "")
    assert field is not None
    if field.type == "vector":
        return _classify_vector(field, context)
    where = field.identifier(context.target.storage_type)
    return Classification(summary=f"add {field.type} field {field.name!r} ({where}); documents "
                                  "that hold it are indexed")


def _sizes(client: Any, storage: str, keys: Sequence[bytes], where: str) -> list[int | None]:
    """Per key: the byte length (hash) or element count (JSON array) of the value at
    ``where``, 0 when absent, None when it is not an array (JSON)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        if storage == "json":
            pipe.execute_command("JSON.ARRLEN", key, where)
        else:
            pipe.execute_command("HSTRLEN", key, where)
    out: list[int | None] = []
    for reply in pipe.execute():
        if storage != "json":
            out.append(int(reply or 0))
            continue
        found = to_list(reply) if reply is not None else []
        out.append(0 if not found else (None if found[0] is None else int(found[0])))
    return out


@hookimpl
def pre_drop(plan: Plan, context: ApplyContext) -> list[str]:
    """Every document, before the drop: a value where a new vector field reads is a vector
    of its size (the plan checked a sample; one outside it would drop out of the index)."""
    source, target = plan.source_schema, plan.target_schema
    if context.client is None or source.storage_type != target.storage_type:
        return []
    fields = [f for c in plan.changes if c.type == NAME
              if (f := target.field(c.new_field or "")) is not None
              and isinstance(f.attrs, VectorAttrs)]
    problems = []
    for field in fields:
        assert isinstance(field.attrs, VectorAttrs)
        where = field.identifier(target.storage_type)
        want = field.attrs.dims * (1 if target.storage_type == "json"
                                   else DATATYPE_WIDTH[field.attrs.datatype])
        bad: list[bytes] = []
        for keys in scan_keys(context.client, source):
            sizes = _sizes(context.client, target.storage_type, keys, where)
            bad += [k for k, n in zip(keys, sizes, strict=True) if n != 0 and n != want]
        if bad:
            unit = "numbers" if target.storage_type == "json" else "bytes"
            problems.append(f"add_field {field.name!r}: {len(bad)} documents hold at {where} "
                            f"something other than {want} {unit} (e.g. {_examples(bad)}); the "
                            "new index could not index them: fix or remove those values")
    return problems


# -- validation: does the new field index the documents that hold it? ----------------------

def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def _escape(text: str) -> str:
    """Every character but letters, digits and ``_`` backslashed (attribute names, tags)."""
    return "".join(c if _PLAIN.fullmatch(c) else "\\" + c for c in text)


def _query(field: Field, value: Any, storage_type: str) -> tuple[str, list[Any], int] | None:
    """(query, params, dialect) that finds a document holding ``value`` in ``field``, or None
    when no query can be built from the value."""
    attr = "@" + _escape(field.name)
    a = field.attrs
    if field.type == "text":
        words = _WORD.findall(_text(value))
        return (f"{attr}:({max(words, key=len)})", [], 2) if words else None
    if field.type == "tag":
        assert isinstance(a, TagAttrs)
        separator = a.separator if a.separator is not None else (
            "," if storage_type == "hash" else None)
        raw = value if isinstance(value, list) else [_text(value)]
        tags = [t.strip() for v in raw
                for t in (_text(v).split(separator) if separator else [_text(v)]) if t.strip()]
        if not tags:
            return None
        tag = tags[0] if a.case_sensitive else tags[0].lower()
        return f"{attr}:{{{_escape(tag)}}}", [], 2
    if field.type == "numeric":
        try:
            number = float(_text(value))
        except ValueError:
            return None
        return (f"{attr}:[{number!r} {number!r}]", [], 2) if math.isfinite(number) else None
    if field.type == "geo":
        parts = _text(value).split(",")
        if len(parts) != 2:
            return None
        return f"{attr}:[{parts[0].strip()} {parts[1].strip()} 1 km]", [], 2
    if field.type == "geoshape":
        return f"{attr}:[INTERSECTS $shape]", ["shape", _text(value)], 3
    if field.type == "vector":
        assert isinstance(a, VectorAttrs)
        if vector_problem(value, a, storage_type) is not None:
            return None
        if isinstance(value, bytes):
            vector = value
        else:
            import numpy as np  # only for a JSON array (numpy loads when a plan needs it)

            from rvlm.plugin import encode_batch

            vector = encode_batch(np.asarray([value], dtype=np.float64), a.datatype)[0]
        return f"*=>[KNN 1 {attr} $vector]", ["vector", vector], 2
    return None


def _found(client: Any, index: str, key: bytes, query: tuple[str, list[Any], int]) -> bool:
    text, params, dialect = query
    args: list[Any] = ["FT.SEARCH", index, text]
    if params:
        args += ["PARAMS", len(params), *params]
    reply = client.execute_command(*args, "INKEYS", 1, key, "NOCONTENT", "DIALECT", dialect)
    if isinstance(reply, dict):
        return int(to_map(reply).get("total_results") or 0) > 0
    items = to_list(reply)
    return bool(items) and int(items[0]) > 0


def _check(plan: Plan, context: ApplyContext, field: Field) -> CheckResult:
    name = f"add_field:{field.name}"
    storage = plan.target_schema.storage_type
    where = field.identifier(storage)
    # a JSON path on a hash index reads a hash field nobody has: look under the name too
    names = [where, field.name] if storage == "hash" and where.startswith("$") else [where]
    docs = context.read_documents(plan.key_sample_after(), names)
    holders = [d for d in docs if d.get(where) is not MISSING]
    if not holders:
        elsewhere = [d.key for d in docs if len(names) > 1 and d.get(field.name) is not MISSING]
        if elsewhere:
            return CheckResult(name=name, passed=False, details=(
                f"{len(elsewhere)} sampled documents hold {field.name!r}, but the field reads "
                f"{where!r}, which none of them has: it indexes nothing (e.g. "
                f"{_examples(elsewhere)})"))
        return CheckResult(name=name, passed=True,
                           details=f"no sampled document holds a value at {where}")
    asked, found, errors = 0, 0, []
    for doc in holders[:PROBES]:
        query = _query(field, doc.get(where), storage)
        if query is None:
            continue
        asked += 1
        try:
            found += _found(context.client, plan.target_index, doc.key, query)
        except Exception as exc:  # the server refused the query: say so, do not crash
            errors.append(f"{doc.key.decode(errors='replace')}: {exc}")
    if not asked:
        return CheckResult(name=name, passed=True, details=(
            f"{len(holders)} sampled documents hold a value at {where}; none gives a query to "
            "check it with"))
    details = (f"@{field.name} finds {found} of {asked} sampled documents that hold a value at "
               f"{where}")
    if errors:
        details += f" ({len(errors)} queries failed, e.g. {errors[0]})"
    return CheckResult(name=name, passed=found > 0, details=details + (
        "" if found else ": the new field indexes none of them"))


@hookimpl
def validate(plan: Plan, context: ApplyContext) -> list[CheckResult]:
    """Each added field finds at least one of the sampled documents that hold a value for it."""
    if context.client is None:
        return []
    checks = []
    for change in plan.changes:
        if change.type != NAME:
            continue
        field = plan.target_schema.field(change.new_field or "")
        if field is None or getattr(field.attrs, "no_index", False):
            continue
        checks.append(_check(plan, context, field))
    return checks
