"""Everything a plugin needs, from one module: ``from rvlm.plugin import ...``.

rvlm has three public faces, and everything else is internal:

* :mod:`rvlm.plugin` (this module): what plugin authors import: the ``hookimpl`` marker, the
  difference, change and document types hooks take and return, the plan and apply contexts,
  the schema model, errors, and the helpers the built-in changes themselves use (vector codecs
  and quantization, RESP2/RESP3 reply helpers);
* :mod:`rvlm` itself: the Python API (``MigrationPlanner``, ``MigrationExecutor``, ``Plan``,
  ``rollback``, ``validate``, ...);
* :mod:`rvlm.testing`: the pytest fixtures (``redis_url``, ``redis_client``, ``rvlm_plugin``).

``rvlm.core`` is internal, like ``_pytest`` behind ``pytest``: its modules may move or change
between releases without notice. The names below stay; what they are defined in does not
matter to a plugin. The built-in changes (``rvlm.plugins.builtin``) and both example plugins
import only this module, which is how we know it is enough.

The hooks themselves are documented in :mod:`rvlm.hookspecs` (and ``docs/hooks.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rvlm.core.errors import PluginError, RvlmError
from rvlm.core.migrate.plan import Plan
from rvlm.core.plugins.changes import Change, ChangeType, Classification, Difference
from rvlm.core.plugins.checks import CheckResult
from rvlm.core.plugins.context import ApplyContext, PlanContext
from rvlm.core.plugins.documents import (
    MISSING,
    NO_CHANGE,
    Document,
    DocumentOperation,
    DocumentUpdate,
    OperationCost,
)
from rvlm.core.redis.docio.keys import scan_keys
from rvlm.core.redis.resp import to_list, to_map, to_str
from rvlm.core.schema.model import (
    DATATYPE_WIDTH,
    Field,
    GeoAttrs,
    GeoshapeAttrs,
    IndexDefinition,
    IndexSchema,
    NumericAttrs,
    TagAttrs,
    TextAttrs,
    VectorAttrs,
)
from rvlm.hookspecs import hookimpl

if TYPE_CHECKING:
    from rvlm.core.vectors import (
        QuantizationScheme,
        VectorError,
        choose_scheme,
        convert_bytes_batch,
        convert_values_batch,
        decode_batch,
        encode_batch,
        is_lossy,
        measure_error,
    )

#: The vector helpers (:mod:`rvlm.core.vectors`) need numpy: they are imported on first use
#: (``from rvlm.plugin import convert_bytes_batch`` works as for any other name), so a run
#: whose plugins convert no vector does not pay for loading numpy.
_VECTOR_NAMES = frozenset({
    "QuantizationScheme", "VectorError", "choose_scheme", "convert_bytes_batch",
    "convert_values_batch", "decode_batch", "encode_batch", "is_lossy", "measure_error",
})


def __getattr__(name: str) -> Any:
    if name not in _VECTOR_NAMES:
        raise AttributeError(f"module 'rvlm.plugin' has no attribute {name!r}")
    from rvlm.core import vectors

    value = getattr(vectors, name)
    globals()[name] = value
    return value

__all__ = [
    "DATATYPE_WIDTH",
    "MISSING",
    "NO_CHANGE",
    "ApplyContext",
    "Change",
    "ChangeType",
    "CheckResult",
    "Classification",
    "Difference",
    "Document",
    "DocumentOperation",
    "DocumentUpdate",
    "Field",
    "GeoAttrs",
    "GeoshapeAttrs",
    "IndexDefinition",
    "IndexSchema",
    "NumericAttrs",
    "OperationCost",
    "Plan",
    "PlanContext",
    "PluginError",
    "QuantizationScheme",
    "RvlmError",
    "TagAttrs",
    "TextAttrs",
    "VectorAttrs",
    "VectorError",
    "choose_scheme",
    "convert_bytes_batch",
    "convert_values_batch",
    "decode_batch",
    "encode_batch",
    "hookimpl",
    "is_lossy",
    "measure_error",
    "scan_keys",
    "to_list",
    "to_map",
    "to_str",
]
