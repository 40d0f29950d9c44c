"""The extra memory an online copy needs, and whether the server can hold it.

Until finalize, an online migration that rewrites documents keeps two copies of every
document and two indexes. The extra memory is

* the copies: the average ``MEMORY USAGE`` of sampled source documents (``SAMPLES 0``: every
  field counted), plus what the plan changes in each document's vectors (dims x datatype
  width, before and after), times the number of documents;
* the target index: the source index's measured size with its vector part scaled to the new
  datatypes (:func:`rvlm.core.migrate.estimate.estimate_plan`).

A server with ``maxmemory`` set that cannot hold ``used_memory`` plus that is refused at plan
and again at apply time (past ``maxmemory`` the server evicts keys or refuses writes, the
applications' included).

On a Redis Cluster the memory is that of the primary owning the target prefix's hash tag
(every copy lands there), or, for a prefix without a tag, the sums over every primary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import redis

from rvlm.core.migrate.estimate import estimate_plan
from rvlm.core.migrate.plan import Plan
from rvlm.core.redis import routing, wire
from rvlm.core.redis.resp import to_int, to_str
from rvlm.core.redis.topology import prefix_slot
from rvlm.core.units import human_bytes


@attrs.frozen
class Footprint:
    """Extra bytes of the copies and of the target index, against the server's memory."""

    documents: int
    document_bytes: int
    index_bytes: int
    used_memory: int
    maxmemory: int
    sampled: int

    @property
    def extra_bytes(self) -> int:
        return self.document_bytes + self.index_bytes

    @property
    def fits(self) -> bool:
        return self.maxmemory <= 0 or self.used_memory + self.extra_bytes <= self.maxmemory

    def describe(self) -> str:
        """One sentence for the plan."""
        used = human_bytes(self.used_memory)
        limit = (f"maxmemory {human_bytes(self.maxmemory)}, {used} used"
                 if self.maxmemory > 0 else f"no maxmemory set, {used} used")
        return (f"extra memory until finalize: about {human_bytes(self.extra_bytes)} "
                f"({human_bytes(self.document_bytes)} for the {self.documents} document "
                f"copies, measured on {self.sampled} sampled documents, and "
                f"{human_bytes(self.index_bytes)} for the target index; {limit})")

    def problem(self) -> str | None:
        """Why the server cannot hold the copy (None: it can)."""
        if self.fits:
            return None
        free = human_bytes(max(0, self.maxmemory - self.used_memory))
        return (f"the server cannot hold the online copy: it needs about "
                f"{human_bytes(self.extra_bytes)} more and maxmemory "
                f"{human_bytes(self.maxmemory)} leaves {free}; raise maxmemory, free "
                "memory, or use mode drop_recreate (documents rewritten in place)")

    def to_dict(self) -> dict[str, Any]:
        return {"documents": self.documents, "document_bytes": self.document_bytes,
                "index_bytes": self.index_bytes, "extra_bytes": self.extra_bytes,
                "used_memory": self.used_memory, "maxmemory": self.maxmemory,
                "sampled_documents": self.sampled}


def copy_footprint(client: redis.Redis, plan: Plan, sample: Sequence[bytes]) -> Footprint:
    """Measure the footprint of copying ``plan``'s documents (see the module docstring);
    ``sample`` are source keys to measure (a few dozen are plenty)."""
    stats = plan.source_stats
    docs = stats.num_docs + stats.indexing_failures
    replies = wire.execute(client, [(b"MEMORY", b"USAGE", k, b"SAMPLES", b"0") for k in sample])
    sizes = [to_int(r) for r in replies if r is not None and not isinstance(r, Exception)]
    per_doc = sum(sizes) / len(sizes) if sizes else 0.0
    est = estimate_plan(plan)
    vector_delta = ((est["vector_bytes_after"] - est["vector_bytes_before"]) / docs
                    if docs else 0.0)
    document_bytes = int(max(0.0, per_doc + vector_delta) * docs)
    index_bytes = int(est["index_memory_after_bytes"])
    used, limit = _memory(client, plan)
    return Footprint(documents=docs, document_bytes=document_bytes, index_bytes=index_bytes,
                     used_memory=used, maxmemory=limit, sampled=len(sizes))


def _info_memory(node: Any) -> dict[str, Any]:
    if isinstance(node, redis.Redis):
        return dict(node.info("memory"))
    text = to_str(wire.send(node, [(b"INFO", b"memory")])[0])
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _memory(client: Any, plan: Plan) -> tuple[int, int]:
    """(used_memory, maxmemory) of the server, or of the primaries that receive the copies on
    a cluster (see the module docstring; 0: no limit)."""
    nodes = routing.node_map(client)
    if nodes is None:
        info = client.info("memory")
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    slot = prefix_slot(plan.target_schema.index.prefix[0])
    if slot is not None:
        targets = [nodes.node_client(nodes.owner(slot))]
    else:
        targets = [c for _name, c in nodes.primaries()]
    infos = [_info_memory(c) for c in targets]
    used = sum(to_int(i.get("used_memory", 0)) for i in infos)
    limits = [to_int(i.get("maxmemory", 0)) for i in infos]
    return used, (0 if 0 in limits else sum(limits))
