"""What hooks receive besides their own change or operation.

:class:`PlanContext` is handed to ``classify_change`` and ``merge_patch_section``: the source
and target schemas, server capabilities, and read-only access to a sample of documents that the
planner fetched (plugins never query Redis themselves for document data).
:class:`ApplyContext` is handed to ``pre_drop``, ``transform_documents``, ``post_create`` and
``validate`` while a plan runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from rvlm.core.plugins.documents import Document
from rvlm.core.redis.capabilities import Capabilities
from rvlm.core.schema.model import IndexSchema

if TYPE_CHECKING:
    from rvlm.core.migrate.plan import Plan
    from rvlm.core.schema.ftinfo import IndexStats


@attrs.frozen(kw_only=True)
class PlanContext:
    """Everything a plugin may look at while a plan is made.

    ``sample(names)`` returns up to ``sample_size`` documents of the source index with the
    given hash fields or JSON paths read (the planner does the reading and caches it), plus,
    when the index has indexing failures, the last document it failed to index (FT.INFO's
    ``last indexing error key``), which a query never returns.
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


@attrs.frozen(kw_only=True)
class ApplyContext:
    """Everything a plugin may look at while a plan runs.

    ``client`` is for read-only checks in ``pre_drop``/``post_create``/``validate``; document
    writes go through ``transform_documents`` and the executor, never through the client.
    """

    plan: Plan
    capabilities: Capabilities
    client: Any = None
    backup_dir: str | None = None
