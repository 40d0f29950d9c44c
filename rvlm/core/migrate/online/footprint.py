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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import redis

from rvlm.core.migrate.estimate import estimate_plan
from rvlm.core.migrate.plan import Plan
from rvlm.core.redis import wire
from rvlm.core.redis.resp import to_int
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
    info = client.info("memory")
    return Footprint(documents=docs, document_bytes=document_bytes, index_bytes=index_bytes,
                     used_memory=int(info.get("used_memory", 0)),
                     maxmemory=int(info.get("maxmemory", 0)), sampled=len(sizes))
