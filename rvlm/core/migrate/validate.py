"""Post-migration validation (used by ``rvlm apply`` and ``rvlm validate --plan F``).

Checks, each a :class:`~rvlm.core.plugins.checks.CheckResult`:

* ``schema_match``: the live target schema equals the plan's target (index and field options
  included; values FT.INFO cannot report are compared as the plan has them).
* ``doc_count_match``: indexed documents plus indexing failures equal the source's count over
  the *index* at apply time (not every key under the prefix: an unrelated key must not fail a
  correct migration); not compared when the plan changes the FILTER, which selects other
  documents.
* ``key_sample_exists``: the plan's sampled keys exist, mapped through prefix renames.
* ``vector_bytes:<field>``: a sampled document's vector has the target's length.
* ``indexing_failures``: indexing failures did not grow.
* ``query:*`` / ``query:knn:<field>``: queries return results.
* ``recall:<field>`` and the user's query checks, when a quality gate is given
  (:mod:`rvlm.core.migrate.quality_gate`).
* every plugin's ``validate`` results.

:func:`validate_source` checks the other side, after a rollback: the source index is back
with the plan's source schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import redis

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.quality_gate import QualityGate
from rvlm.core.migrate.report import ValidationResult
from rvlm.core.migrate.verify import DocumentsVerified, verifies, verify_documents
from rvlm.core.plugins.checks import CheckResult
from rvlm.core.plugins.context import ApplyContext
from rvlm.core.plugins.host import PluginHost
from rvlm.core.redis.connection import read_index
from rvlm.core.redis.resp import to_int, to_list, to_map, to_str
from rvlm.core.schema.model import Field, IndexSchema


def comparable(live: IndexSchema, expected: IndexSchema) -> IndexSchema:
    """``live`` with what the server cannot report taken from ``expected``: the key separator
    and each field's ``unknown_attrs`` values; then ``without_unknowns()``."""
    fields: list[Field] = []
    for f in live.fields:
        want = expected.field(f.name)
        if f.unknown_attrs and want is not None and type(want.attrs) is type(f.attrs):
            fill = {k: getattr(want.attrs, k) for k in f.unknown_attrs}
            f = f.evolve(attrs=attrs.evolve(f.attrs, **fill))
        fields.append(f)
    out = live.with_fields(fields).with_index(key_separator=expected.index.key_separator)
    return out.without_unknowns()


def _show(value: Any) -> str:
    """A model value as a user wrote it in YAML (no Python reprs)."""
    if value is None:
        return "none (server default)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value) if value == "" or value.strip() != value else value
    return str(value)


def schema_diff(live: IndexSchema, want: IndexSchema) -> str:
    """The first difference between two schemas, in words: ``field emb: datatype is float32
    on the server, float16 in the plan``."""
    if live.index != want.index:
        for a in attrs.fields(type(live.index)):
            got, exp = getattr(live.index, a.name), getattr(want.index, a.name)
            if got != exp:
                return (f"index {a.name} is {_show(got)} on the server, {_show(exp)} in the "
                        "plan")
    if live.field_names() != want.field_names():
        return (f"fields are {', '.join(live.field_names()) or 'none'} on the server, "
                f"{', '.join(want.field_names()) or 'none'} in the plan")
    for lf, wf in zip(live.fields, want.fields, strict=True):
        if lf == wf:
            continue
        for name in ("type", "path"):
            if getattr(lf, name) != getattr(wf, name):
                return (f"field {lf.name}: {name} is {_show(getattr(lf, name))} on the server, "
                        f"{_show(getattr(wf, name))} in the plan")
        if type(lf.attrs) is type(wf.attrs):
            for a in attrs.fields(type(lf.attrs)):
                got, exp = getattr(lf.attrs, a.name), getattr(wf.attrs, a.name)
                if got != exp:
                    return (f"field {lf.name}: {a.name} is {_show(got)} on the server, "
                            f"{_show(exp)} in the plan")
        return f"field {lf.name} differs"
    return "the schemas differ"


def _vector_bytes(client: redis.Redis, schema: IndexSchema, field: Field,
                  key: bytes) -> tuple[Any, str]:
    """(value usable as a KNN query vector or None, problem or '')."""
    a = field.attrs
    dims, dtype = a.dims, a.datatype  # type: ignore[union-attr]
    ident = field.identifier(schema.storage_type)
    if schema.storage_type == "json":
        raw = client.execute_command("JSON.GET", key, ident)
        matches = json.loads(raw) if raw is not None else []
        if not matches:
            return None, ""  # a document may lack the field; not a problem
        vec = matches[0]
        if not isinstance(vec, list) or len(vec) != dims:
            n = len(vec) if isinstance(vec, list) else type(vec).__name__
            return None, f"{to_str(key)!r}: {ident} has {n} values, expected {dims}"
        import numpy as np

        from rvlm.core.vectors import encode_batch

        return encode_batch(np.asarray([vec], dtype=np.float64), dtype)[0], ""
    value: Any = client.hget(key, ident)
    if value is None:
        return None, ""  # a document may lack the field; not a problem
    width = a.width  # type: ignore[union-attr]
    if len(value) != dims * width:
        return None, (f"{to_str(key)!r}: {ident} is {len(value)} bytes, expected {dims} x "
                      f"{width} = {dims * width}")
    return bytes(value), ""


def validate_migration(
    client: redis.Redis,
    plan: Plan,
    *,
    expected_docs: int | None = None,
    source_failures: int | None = None,
    host: PluginHost | None = None,
    context: ApplyContext | None = None,
    gate: QualityGate | None = None,
    live_source: bool = False,
    backup_dir: Path | None = None,
    documents: DocumentsVerified | None = None,
) -> ValidationResult:
    """Run every check against the live target index and return the result.

    ``expected_docs`` is the source's ``num_docs + indexing_failures`` counted over the index
    at apply time (from the journal); None falls back to the plan's stats snapshot.
    ``source_failures`` likewise. ``gate`` adds the quality gate's checks (``recall:<field>``
    and the query checks, see :mod:`rvlm.core.migrate.quality_gate`) and the measured
    ``quality``. ``live_source``: the source keys still exist and take writes (online
    copies): a sampled key whose source is gone must be gone from the target too.
    ``documents`` (the verification pass the executor ran), or ``backup_dir`` (the apply's:
    the pass runs here) give the ``documents`` check: every document the plan rewrote still
    holds what was written. Never raises for a failed check; raises :class:`RvlmError` only
    for a bad plan.
    """
    result = ValidationResult()
    stats_src = plan.source_stats
    if expected_docs is None:
        expected_docs = stats_src.num_docs + stats_src.indexing_failures
    if source_failures is None:
        source_failures = stats_src.indexing_failures
    target = plan.target_schema
    try:
        info = read_index(client, plan.target_index)
    except RvlmError as exc:
        result.add(CheckResult(name="schema_match", passed=False, details=str(exc)))
        return result
    live = comparable(info.schema, target)
    want = target.without_unknowns()
    result.schema_match = live == want
    details = ""
    if not result.schema_match:
        details = schema_diff(live, want)
        source = plan.source_schema
        if (plan.source_index == plan.target_index
                and comparable(info.schema, source) == source.without_unknowns()):
            details = (f"{plan.target_index!r} still has the plan's source schema: the plan "
                       f"has not been applied (or was rolled back); {details}")
    result.add(CheckResult(name="schema_match", passed=result.schema_match, details=details))

    got = info.stats.num_docs + info.stats.indexing_failures
    counted = (f"indexed {info.stats.num_docs:,} + failures {info.stats.indexing_failures:,} = "
               f"{got:,}, source had {expected_docs:,}")
    if target.index.filter != plan.source_schema.index.filter:
        # a new FILTER selects other documents: no count to compare with (the plan said so)
        result.doc_count_match = True
        result.add(CheckResult(name="doc_count_match", passed=True,
                               details=f"{counted}; not compared: the FILTER changed"))
    else:
        result.doc_count_match = got == expected_docs
        result.add(CheckResult(name="doc_count_match", passed=result.doc_count_match,
                               details=counted))

    sample = plan.key_sample_after()
    existing: list[bytes] = []
    if sample:
        pipe = client.pipeline(transaction=False)
        for k in sample:
            pipe.exists(k)
        flags = [bool(to_int(x)) for x in pipe.execute()]
        wanted = [True] * len(sample)
        if live_source:  # a source deleted meanwhile has (and must have) no copy
            pipe = client.pipeline(transaction=False)
            for name in plan.key_sample:
                pipe.exists(name.encode("utf-8", "surrogateescape"))
            wanted = [bool(to_int(x)) for x in pipe.execute()]
        existing = [k for k, ok in zip(sample, flags, strict=True) if ok]
        missing = [k for k, ok, want in zip(sample, flags, wanted, strict=True)
                   if want and not ok]
        result.key_sample_exists = not missing
        result.add(CheckResult(
            name="key_sample_exists", passed=not missing,
            details=f"{len(existing)}/{len(sample)} sampled keys exist"
            + (f"; missing: {', '.join(repr(m) for m in missing[:5])}" if missing else "")))
    else:
        result.key_sample_exists = True
        result.add(CheckResult(name="key_sample_exists", passed=True, details="no key sample"))

    for field in target.vector_fields():
        if not existing:
            break
        vec, problem, holder = None, "", None
        for key in existing:
            vec, problem = _vector_bytes(client, target, field, key)
            if vec is not None or problem:
                holder = key
                break
        if holder is None:
            result.add(CheckResult(name=f"vector_bytes:{field.name}", passed=True,
                                   details="no sampled document holds a vector"))
            continue
        result.add(CheckResult(name=f"vector_bytes:{field.name}", passed=not problem,
                               details=problem or f"{to_str(holder)!r} has the target length"))
        if vec is None:
            continue
        try:
            reply = client.execute_command(
                "FT.SEARCH", plan.target_index, f"*=>[KNN 3 @{field.name} $vec]",
                "PARAMS", "2", "vec", vec, "NOCONTENT", "DIALECT", "2")
            total = _total(reply)
        except redis.ResponseError as exc:
            total, problem = 0, str(exc)
        ok = total > 0
        result.query_checks.append({"name": f"knn:{field.name}", "passed": ok,
                                    "results": total})
        result.add(CheckResult(name=f"query:knn:{field.name}", passed=ok,
                               details=problem if not ok and problem else f"{total} results"))

    delta = info.stats.indexing_failures - source_failures
    result.indexing_failures_delta = delta
    result.index_sizes_mb = (stats_src.total_index_memory_sz_mb,
                             info.stats.total_index_memory_sz_mb)
    result.add(CheckResult(name="indexing_failures", passed=delta <= 0,
                           details=f"{info.stats.indexing_failures} now, {source_failures} "
                                   "before"))
    try:
        total = _total(client.execute_command("FT.SEARCH", plan.target_index, "*",
                                              "LIMIT", "0", "0"))
        ok = total == info.stats.num_docs
        result.query_checks.append({"name": "*", "passed": ok, "results": total})
        result.add(CheckResult(name="query:*", passed=ok,
                               details=f"{total:,} results, {info.stats.num_docs:,} indexed"))
    except redis.ResponseError as exc:
        result.add(CheckResult(name="query:*", passed=False, details=str(exc)))

    if documents is None and backup_dir is not None and verifies(plan):
        documents = verify_documents(client, plan, backup_dir)
    if documents is not None:
        result.add(documents.check())
    if gate is not None:
        measured = gate.measure(client)
        result.quality = measured.to_dict()
        for check in measured.checks:
            result.add(check)
            if not check.name.startswith("recall:"):
                result.query_checks.append(check.to_dict())
    if host is not None and context is not None:
        for check in host.validate(plan, context):
            result.add(check)
    return result


def _total(reply: Any) -> int:
    """The total count of an FT.SEARCH reply under RESP2 (list) or RESP3 (map)."""
    if isinstance(reply, dict):
        return to_int(to_map(reply).get("total_results"))
    return to_int(to_list(reply)[0])


def validate_source(client: redis.Redis, plan: Plan) -> ValidationResult:
    """The source index exists with the plan's source schema (after a rollback). The
    document count is informational: documents may have been added or deleted since the plan
    was made."""
    result = ValidationResult()
    try:
        info = read_index(client, plan.source_index)
    except RvlmError as exc:
        result.add(CheckResult(name="schema_match", passed=False, details=str(exc)))
        return result
    result.schema_match = (comparable(info.schema, plan.source_schema)
                           == plan.source_schema.without_unknowns())
    result.add(CheckResult(name="schema_match", passed=result.schema_match))
    got = info.stats.num_docs + info.stats.indexing_failures
    want = plan.source_stats.num_docs + plan.source_stats.indexing_failures
    result.doc_count_match = got == want
    result.checks.append(CheckResult(name="doc_count_match", passed=True,
                                     details=f"{got:,} indexed + failures, plan saw {want:,}"))
    result.key_sample_exists = True
    return result
