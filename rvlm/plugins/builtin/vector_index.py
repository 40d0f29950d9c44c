"""vector_index: a vector field's algorithm, distance metric or index parameters change.

The stored vectors stay as they are (index-side only). A change of ``dims`` is blocked: the
stored vectors have the old dimension, and only new embeddings can fix that.
"""

from __future__ import annotations

from rvlm.core.changes import Change, ChangeType, Classification
from rvlm.core.context import PlanContext
from rvlm.hookspecs import hookimpl

NAME = "vector_index"


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    return [ChangeType(name=NAME,
                       description="Change a vector field's algorithm, metric or parameters.")]


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification | None:
    if change.type != NAME:
        return None
    attrs = change.details["attrs"]
    field = context.target.field(change.new_field or "")
    assert field is not None and field.type == "vector"
    reasons = []
    if "dims" in attrs:
        reasons.append(
            f"changing dims of {change.field!r} from {attrs['dims']['before']} to "
            f"{attrs['dims']['after']} needs new embeddings for every document; re-embed into a "
            "new field or index instead")
    algorithm = attrs.get("algorithm", {}).get("after")
    if algorithm and algorithm not in context.capabilities.algorithms:
        reasons.append(
            f"this server (search {context.capabilities.to_dict()['search_version']}) has no "
            f"{algorithm.upper()} algorithm (SVS-VAMANA needs Redis 8.2); nothing was changed")
    if reasons:
        return Classification.blocked(*reasons)
    parts = [f"{k} {v['before']} -> {v['after']}" for k, v in attrs.items()]
    warnings = []
    if "distance_metric" in attrs:
        warnings.append(f"{change.field!r}: the distance metric changes, so KNN scores and "
                        "rankings change for every query")
    return Classification(summary=f"vector index of {change.field!r}: {', '.join(parts)} "
                                  "(vectors unchanged)", warnings=tuple(warnings))
