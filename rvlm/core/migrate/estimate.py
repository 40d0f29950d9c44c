"""``rvlm estimate``: what a plan will cost, from the plan's own numbers.

Vector memory is exact (dims x datatype width). What each document operation rewrites and
backs up is its plugin's answer (``estimate_operation``: quantize knows its vector widths, a
prefix change its key lengths); without one, the sampled values of the operation's ``reads``
are measured when a server is given (written once, backed up once), else reported as unknown.
Downtime comes from the source index's measured indexing rate (FT.INFO
``total_indexing_time``).

Disk, as RedisVL's guide lists it: the backup dir (rvlm keeps the original of every value it
rewrites), an RDB snapshot (a ``BGSAVE`` writes the whole dataset to a temporary file before it
replaces the old one: about ``used_memory_dataset`` more disk, with the vectors at their new
size; needs a server), and, when AOF is on (``--aof-enabled``, or ``aof_enabled`` of the
server), AOF growth: every rewritten document's write is appended to the AOF until its next
rewrite, so it grows by about the bytes rewritten plus each command's framing, key and field
names.
"""

from __future__ import annotations

from typing import Any

from rvlm.core.migrate.plan import Plan
from rvlm.core.plugins.documents import Document, DocumentOperation, OperationCost
from rvlm.core.plugins.host import PluginHost, get_host
from rvlm.core.redis.docio.sample import read_documents
from rvlm.core.schema.ftinfo import IndexStats
from rvlm.core.schema.model import DATATYPE_WIDTH, VectorAttrs

#: Bytes a backup record costs beyond the values themselves (frame, key, field names).
RECORD_OVERHEAD = 48
MB = 1024 * 1024
#: Documents per second the executor rewrites (pipelined read, transform, backup, write),
#: measured on a laptop against a local server; a network hop lowers it.
REWRITE_RATE = 50_000
#: RESP framing of one logged write (array header, command name, length lines).
AOF_COMMAND_OVERHEAD = 32
#: framing of one field-value pair of a logged write (two length lines)
AOF_FIELD_OVERHEAD = 16


def downtime_seconds(stats: IndexStats, rewrites: bool) -> tuple[float | None, float | None]:
    """(indexing, document rewrite) seconds of a drop-and-recreate migration.

    Indexing comes from the source's measured ``total_indexing_time`` (None when the source
    reports none); the rewrite from :data:`REWRITE_RATE` (None when nothing is rewritten).
    """
    docs = stats.num_docs + stats.indexing_failures
    indexing = stats.total_indexing_time_ms / 1000.0 if docs and stats.total_indexing_time_ms \
        else None
    rewrite = docs / REWRITE_RATE if rewrites and docs else None
    return indexing, rewrite


def estimate_plan(plan: Plan, client: Any = None, host: PluginHost | None = None, *,
                  aof_enabled: bool | None = None) -> dict[str, Any]:
    """A YAML/JSON-safe mapping of sizes and times (None where unknown).

    ``aof_enabled``: include the AOF growth (True), count none (False), or ask the server
    (None: ``INFO persistence`` when a client is given; without one it is not estimated)."""
    host = host or get_host()
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
    rewritten: float = 0.0
    backup: float = 0.0
    unknown_sizes = False
    docs_rewritten = docs if plan.operations else 0
    for op in plan.operations:
        sample = _sample(plan, op, client)
        cost = host.estimate(op, plan, sample) or measured_cost(op, sample)
        if cost.bytes_rewritten is None or cost.backup_bytes is None:
            unknown_sizes = True
            notes.append(f"{op.kind}: value sizes unknown (give --url to measure a sample)")
        else:
            rewritten += cost.bytes_rewritten * docs
            backup += cost.backup_bytes * docs
    if docs_rewritten:
        backup += RECORD_OVERHEAD * docs_rewritten
    vector_index = stats.vector_index_sz_mb * MB
    total = stats.total_index_memory_sz_mb * MB
    # RediSearch 2.x leaves the vector index out of total_index_memory_sz_mb; Redis 8's
    # engine counts it in. Either way: the rest of the index, plus the vector index.
    includes_vectors = _search_major(plan) >= 8 and total >= vector_index
    rest = total - vector_index if includes_vectors else total
    ratio = (after / before) if before else 1.0
    index_before = rest + vector_index
    index_after = rest + vector_index * ratio
    indexing_s, rewrite_s = downtime_seconds(stats, bool(plan.operations))
    downtime: float | None = None
    if not docs or plan.online:
        downtime = 0.0
        if plan.online:
            notes.append("online: queries keep being served through the alias; both indexes "
                         "exist while the new one builds (index memory before is the extra "
                         "memory needed meanwhile)")
    elif indexing_s is None:
        notes.append("the source index reports no indexing time; downtime unknown")
    else:
        downtime = indexing_s + (rewrite_s or 0.0)
    disk = _disk(plan, client, aof_enabled, docs_rewritten,
                 None if unknown_sizes else rewritten, None if unknown_sizes else backup,
                 after - before, notes)
    return {
        "index": plan.source_index,
        "documents": docs,
        "documents_rewritten": docs_rewritten,
        "bytes_rewritten": None if unknown_sizes else rewritten,
        "backup_bytes": None if unknown_sizes else backup,
        "vector_bytes_before": before,
        "vector_bytes_after": after,
        "index_memory_before_bytes": index_before,
        "index_memory_after_bytes": index_after,
        "memory_before_bytes": before + index_before,
        "memory_after_bytes": after + index_after,
        "memory_savings_bytes": (before + index_before) - (after + index_after),
        **disk,
        "expected_downtime_seconds": downtime,
        "notes": notes,
    }


def _server_info(client: Any, section: str) -> dict[str, Any]:
    """``INFO section`` as a dict, or {} when the server does not answer it."""
    if client is None:
        return {}
    try:
        info = client.info(section)
    except Exception:  # a proxy or an ACL may refuse INFO: the figure stays unknown
        return {}
    return {str(k.decode() if isinstance(k, bytes) else k): v for k, v in info.items()}


def _aof_overhead(plan: Plan) -> float:
    """Bytes one rewritten document's logged writes add beyond the values: each operation's
    command with the key, and its written field names."""
    keys = plan.key_sample
    key_len = sum(len(k) for k in keys) / len(keys) if keys else 16
    total = 0.0
    for op in plan.operations:
        total += AOF_COMMAND_OVERHEAD + key_len
        total += sum(len(name) + AOF_FIELD_OVERHEAD for name in op.writes)
    return total


def _disk(plan: Plan, client: Any, aof_enabled: bool | None, docs_rewritten: int,
          rewritten: float | None, backup: float | None, vector_change: int,
          notes: list[str]) -> dict[str, Any]:
    """The disk a migration needs: backup dir, RDB snapshot, AOF growth, and their total."""
    dataset = _server_info(client, "memory").get("used_memory_dataset")
    rdb = None if dataset is None else max(0, int(dataset) + vector_change)
    if rdb is None:
        notes.append("RDB snapshot size unknown (give --url to read the server's dataset size)")
    if aof_enabled is None:
        found = _server_info(client, "persistence").get("aof_enabled")
        aof_enabled = None if found is None else bool(int(found))
    aof: float | None = None
    if aof_enabled is None:
        notes.append("AOF growth not estimated (pass --aof-enabled if the server appends to "
                     "an AOF)")
    elif aof_enabled and rewritten is not None:
        aof = rewritten + docs_rewritten * _aof_overhead(plan)
    elif aof_enabled:
        notes.append("AOF growth unknown: value sizes unknown")
    counted = (backup, rdb, aof if aof_enabled else 0.0)
    total = None if any(p is None for p in counted) else sum(p or 0 for p in counted)
    return {"rdb_snapshot_bytes": rdb, "aof_enabled": aof_enabled, "aof_growth_bytes": aof,
            "total_new_disk_bytes": total}


def _search_major(plan: Plan) -> int:
    text = str(plan.server.get("search_version", ""))
    head = text.split(".")[0]
    return int(head) if head.isdigit() else 0


def _sample(plan: Plan, op: DocumentOperation, client: Any) -> list[Document] | None:
    """The plan's sampled documents with ``op.reads`` read, or None without a server."""
    if client is None or not plan.key_sample:
        return None
    keys = [k.encode() for k in plan.key_sample]
    return read_documents(client, plan.source_schema.storage_type, keys, list(op.reads))


def measured_cost(op: DocumentOperation, sample: list[Document] | None) -> OperationCost:
    """The estimate of an operation whose plugin gives none: the sampled values of its
    ``reads``, written once and backed up once (nothing to measure: nothing rewritten)."""
    if not op.reads:
        return OperationCost(bytes_rewritten=0, backup_bytes=0)
    if sample is None:
        return OperationCost(bytes_rewritten=None, backup_bytes=None)
    total = 0
    for d in sample:
        for n in op.reads:
            v = d.get(n)
            if isinstance(v, bytes):
                total += len(v)
            elif v:
                total += len(str(v))
    size = total / max(len(sample), 1)
    return OperationCost(bytes_rewritten=size, backup_bytes=size)
