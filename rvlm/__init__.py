"""rvlm: change the schema of a Redis search index without losing a document."""

from __future__ import annotations

__version__ = "0.1.0"

from rvlm.core.errors import MigrationFailed, RvlmError  # noqa: E402
from rvlm.hookspecs import hookimpl  # noqa: E402

__all__ = ["MigrationFailed", "RvlmError", "__version__", "hookimpl"]
