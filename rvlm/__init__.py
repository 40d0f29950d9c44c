"""rvlm: change the schema of a Redis search index without losing a document.

The public API is imported lazily (``import rvlm`` and ``rvlm --help`` stay fast; pluggy loads
with ``rvlm.hookimpl``)::

    from rvlm import MigrationPlanner, MigrationExecutor
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from rvlm.core.errors import MigrationFailed, RvlmError

if TYPE_CHECKING:
    from rvlm.aio import AsyncMigrationExecutor, AsyncMigrationPlanner
    from rvlm.api import MigrationExecutor, MigrationPlanner, finalize, rollback, validate
    from rvlm.core.migrate.online.options import OnlineOptions
    from rvlm.core.migrate.plan import Plan
    from rvlm.core.migrate.report import MigrationReport
    from rvlm.core.multi.executor import BatchMigrationExecutor
    from rvlm.core.multi.plan import BatchPlan
    from rvlm.core.multi.planner import BatchMigrationPlanner
    from rvlm.core.multi.report import BatchReport
    from rvlm.core.multi.state import BatchState
    from rvlm.core.schema.model import IndexSchema
    from rvlm.core.schema.patch import SchemaPatch
    from rvlm.hookspecs import hookimpl

#: public name -> module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    "hookimpl": "rvlm.hookspecs",
    "MigrationPlanner": "rvlm.api",
    "rollback": "rvlm.api",
    "validate": "rvlm.api",
    "finalize": "rvlm.api",
    "OnlineOptions": "rvlm.core.migrate.online.options",
    "MigrationExecutor": "rvlm.api",
    "BatchMigrationPlanner": "rvlm.core.multi.planner",
    "BatchMigrationExecutor": "rvlm.core.multi.executor",
    "BatchPlan": "rvlm.core.multi.plan",
    "BatchState": "rvlm.core.multi.state",
    "BatchReport": "rvlm.core.multi.report",
    "AsyncMigrationPlanner": "rvlm.aio",
    "AsyncMigrationExecutor": "rvlm.aio",
    "Plan": "rvlm.core.migrate.plan",
    "MigrationReport": "rvlm.core.migrate.report",
    "SchemaPatch": "rvlm.core.schema.patch",
    "IndexSchema": "rvlm.core.schema.model",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rvlm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AsyncMigrationExecutor",
    "AsyncMigrationPlanner",
    "BatchMigrationExecutor",
    "BatchMigrationPlanner",
    "BatchPlan",
    "BatchReport",
    "BatchState",
    "IndexSchema",
    "MigrationExecutor",
    "MigrationFailed",
    "MigrationPlanner",
    "MigrationReport",
    "OnlineOptions",
    "Plan",
    "RvlmError",
    "SchemaPatch",
    "__version__",
    "finalize",
    "hookimpl",
    "rollback",
    "validate",
]
