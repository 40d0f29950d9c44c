"""vector_index: a vector field's algorithm, distance metric or index parameters change.

The stored vectors stay as they are (index-side only). A change of ``dims`` is blocked: the
stored vectors have the old dimension, and only new embeddings can fix that.
"""

from __future__ import annotations

from collections.abc import Sequence

from rvlm.plugin import (
    Change,
    ChangeType,
    Classification,
    Difference,
    IndexSchema,
    PlanContext,
    VectorAttrs,
    hookimpl,
)

NAME = "vector_index"
#: A vector field's attributes that are not its index parameters (quantize and update_field
#: own those).
NOT_INDEX_PARAMETERS = ("datatype", "index_missing")


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    return [ChangeType(name=NAME,
                       description="Change a vector field's algorithm, metric or parameters.")]


@hookimpl
def detect_changes(differences: Sequence[Difference], target: IndexSchema) -> list[Change]:
    """One change per vector field whose index parameters change (algorithm, metric, dims,
    HNSW/SVS parameters)."""
    by_field: dict[tuple[str | None, str | None], list[Difference]] = {}
    for d in differences:
        field = target.field(d.new_field or "")
        if (d.kind == "field_attr" and field is not None and field.type == "vector"
                and d.key not in NOT_INDEX_PARAMETERS):
            by_field.setdefault((d.field, d.new_field), []).append(d)
    return [Change(type=NAME, field=old, new_field=new, claims=ds, details={
                "attrs": {d.key: {"before": d.before, "after": d.after} for d in ds}})
            for (old, new), ds in by_field.items()]


def _show(value: object) -> str:
    return value.upper() if isinstance(value, str) and value != "unknown" else str(value)


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification:
    attrs = change.details["attrs"]
    field = context.target.field(change.new_field or "")
    assert field is not None and isinstance(field.attrs, VectorAttrs)
    reasons = []
    if "dims" in attrs:
        reasons.append(
            f"changing dims of {change.field!r} from {attrs['dims']['before']} to "
            f"{attrs['dims']['after']} needs new embeddings for every document; re-embed into a "
            "new field or index instead")
    algorithm = attrs.get("algorithm", {}).get("after")
    caps = context.capabilities
    if algorithm and algorithm not in caps.algorithms:
        reasons.append(
            f"{change.field!r}: this server (Redis {caps.redis_version}, search "
            f"{caps.to_dict()['search_version']}) has no {algorithm.upper()} algorithm, which "
            f"needs the Redis 8.2 query engine; upgrade the server first, or keep one it has "
            f"({', '.join(a.upper() for a in caps.algorithms)})")
    datatype = field.attrs.datatype
    if (algorithm == "svs-vamana" and algorithm in caps.algorithms
            and datatype not in ("float16", "float32")):
        reasons.append(
            f"{change.field!r}: SVS-VAMANA indexes only float16 and float32 vectors, not "
            f"{datatype}; convert the vectors too (update_fields datatype: float32 or float16)")
    if reasons:
        return Classification.blocked(*reasons)
    parts = [f"{k} {_show(v['before'])} -> {_show(v['after'])}" for k, v in attrs.items()]
    warnings = []
    if "distance_metric" in attrs:
        warnings.append(f"{change.field!r}: the distance metric changes, so KNN scores and "
                        "rankings change for every query")
    return Classification(summary=f"vector index of {change.field!r}: {', '.join(parts)} "
                                  "(vectors unchanged)", warnings=tuple(warnings))
