"""What hooks receive besides their own change or operation.

:class:`PlanContext` is handed to ``merge_patch_section`` and ``classify_change``: the
source and target schemas, server capabilities, and read-only access to documents, which the
planner reads for the plugin (plugins never query Redis themselves for document data).
:class:`ApplyContext` is handed to ``pre_drop``, ``transform_documents``, ``post_create`` and
``validate`` while a plan runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from rvlm.core.errors import RvlmError
from rvlm.core.plugins.documents import Document
from rvlm.core.redis.capabilities import Capabilities
from rvlm.core.redis.docio.sample import read_documents
from rvlm.core.schema.model import IndexSchema

if TYPE_CHECKING:
    from rvlm.core.migrate.plan import Plan
    from rvlm.core.schema.ftinfo import IndexStats

#: ``reader(keys, names)``: the documents of ``keys`` with ``names`` read (MISSING if absent).
Reader = Callable[[Sequence[bytes], Sequence[str]], list[Document]]


@attrs.frozen(kw_only=True)
class PlanContext:
    """Everything a plugin may look at while a plan is made.

    ``sample(names)`` returns up to ``sample_size`` documents of the source index with the
    given hash fields or JSON paths read (the planner does the reading and caches it), plus,
    when the index has indexing failures, the last document it failed to index (FT.INFO's
    ``last indexing error key``), which a query never returns.
    :meth:`read_documents` reads given keys of the source (read-only).
    ``other_indexes`` maps every other index on the server to its schema (for overlap checks).
    ``options`` carries planner options a user set (``allow_shared_keys``, ...).
    """

    source: IndexSchema
    target: IndexSchema
    stats: IndexStats
    capabilities: Capabilities
    sample: Callable[[Sequence[str]], list[Document]]
    key_sample: tuple[bytes, ...] = ()
    other_indexes: dict[str, IndexSchema] = attrs.field(factory=dict)
    index_names: tuple[str, ...] = ()
    keys_exist: Callable[[Sequence[bytes]], list[bool]] | None = None
    options: dict[str, Any] = attrs.field(factory=dict)
    reader: Reader | None = None

    def read_documents(self, keys: Sequence[bytes], names: Sequence[str]) -> list[Document]:
        """The source documents of ``keys`` with the hash fields or JSON paths ``names`` read:
        one :class:`~rvlm.core.plugins.documents.Document` per key (an absent key too), each
        value MISSING where the document lacks it. Read-only."""
        if self.reader is None:
            raise RvlmError("this plan context has no server to read documents from")
        return self.reader(keys, names)


@attrs.frozen(kw_only=True)
class ApplyContext:
    """Everything a plugin may look at while a plan runs.

    ``client`` is for read-only checks in ``pre_drop``/``post_create``/``validate``; document
    writes go through ``transform_documents`` and the executor, never through the client.
    :meth:`read_documents` reads documents through it.
    """

    plan: Plan
    capabilities: Capabilities
    client: Any = None
    backup_dir: str | None = None
    #: what :meth:`tally` counted (the executor sums every batch and worker into the report)
    tallies: dict[str, int] = attrs.field(factory=dict)

    def tally(self, what: str, count: int = 1) -> None:
        """Count something the user should hear about, e.g. ``tally("components of 'emb'
        clipped to float16's largest value", 3)``: the report says ``3 components of ...``.
        ``transform_documents`` may call it (it is not I/O)."""
        if count:
            self.tallies[what] = self.tallies.get(what, 0) + int(count)

    def read_documents(self, keys: Sequence[bytes], names: Sequence[str], *,
                       storage_type: str | None = None) -> list[Document]:
        """The documents of ``keys`` with the hash fields or JSON paths ``names`` read: one
        :class:`~rvlm.core.plugins.documents.Document` per key (an absent key too), each value
        MISSING where the document lacks it. Read-only.

        ``storage_type`` defaults to the target index's (what ``validate`` sees after the
        migration); pass ``plan.source_schema.storage_type`` to read before it (``pre_drop``).
        Use ``plan.key_sample_after()`` for the sampled keys where they live after the plan.
        """
        if self.client is None:
            raise RvlmError("this apply context has no server to read documents from")
        storage = storage_type or self.plan.target_schema.storage_type
        return read_documents(self.client, storage, keys, names)
