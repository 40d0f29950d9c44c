"""quantize: a vector field's datatype changes (float64/32/16, bfloat16, int8, uint8).

On a JSON index a change between float datatypes is index-only: a JSON document holds its
vector as plain numbers, and the index converts them to its datatype when it indexes them, so
no document is rewritten and nothing is lost (RedisVL does the same).

Every stored vector is converted with numpy, a whole batch at a time, using a scheme the plan
records (``QuantizationScheme`` in :mod:`rvlm.plugin`): casts between floats (bfloat16 rounds
to nearest even), per-vector max-abs scaling to int8 for COSINE, a global scale (and offset
for uint8 under L2) calibrated on a sample for L2 and IP, so rankings survive. The planner
measures the error on the sampled vectors and blocks what the server cannot index before
anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rvlm.plugin import (
    DATATYPE_WIDTH,
    MISSING,
    NO_CHANGE,
    ApplyContext,
    Change,
    ChangeType,
    CheckResult,
    Classification,
    Difference,
    Document,
    DocumentOperation,
    DocumentUpdate,
    IndexSchema,
    OperationCost,
    PlanContext,
    VectorAttrs,
    hookimpl,
)

if TYPE_CHECKING:
    import numpy as np

# The vector helpers (numpy) are imported inside the hooks that convert vectors, so that a
# run without a quantize change does not load numpy.

NAME = "quantize"
SVS_DATATYPES = ("float16", "float32")
#: On a JSON index a change between these is index-only (the documents hold numbers).
FLOAT_DATATYPES = ("float64", "float32", "float16", "bfloat16")


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    return [ChangeType(name=NAME, description="Convert stored vectors to another datatype.")]


@hookimpl
def detect_changes(differences: Sequence[Difference], source: IndexSchema,
                   target: IndexSchema) -> list[Change]:
    """One change per vector field whose datatype changes."""
    out = []
    for d in differences:
        if d.kind != "field_attr" or d.key != "datatype":
            continue
        before, after = source.field(d.field or ""), target.field(d.new_field or "")
        if not (before is not None and after is not None
                and isinstance(before.attrs, VectorAttrs) and isinstance(after.attrs, VectorAttrs)):
            continue
        out.append(Change(type=NAME, field=d.field, new_field=d.new_field, claims=(d,), details={
            "datatype": {"before": before.attrs.datatype, "after": after.attrs.datatype},
            "dims": after.attrs.dims, "distance_metric": after.attrs.distance_metric,
        }))
    return out


def _sample_matrix(docs: Sequence[Document], path: str, storage: str, datatype: str,
                   dims: int) -> np.ndarray:
    import numpy as np

    from rvlm.plugin import decode_batch

    values = [d.get(path) for d in docs]
    if storage == "json":
        rows = [v for v in values if isinstance(v, list) and len(v) == dims]
        return np.asarray(rows, dtype=np.float64).reshape(-1, dims)
    width = DATATYPE_WIDTH[datatype]
    raws = [v for v in values if isinstance(v, bytes) and len(v) == dims * width]
    if not raws:
        return np.zeros((0, dims))
    return decode_batch(raws, datatype, dims)


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification:
    from rvlm.plugin import VectorError, choose_scheme, is_lossy, measure_error

    source = context.source.field(change.field or "")
    target = context.target.field(change.new_field or "")
    assert source is not None and target is not None
    assert isinstance(source.attrs, VectorAttrs) and isinstance(target.attrs, VectorAttrs)
    src_dt, dst_dt = source.attrs.datatype, target.attrs.datatype
    caps = context.capabilities
    label = f"{change.field!r} {src_dt} -> {dst_dt}"
    if dst_dt not in caps.datatypes:
        gate = ("the Redis 8.0 query engine" if dst_dt in ("int8", "uint8")
                else "RediSearch 2.10")
        return Classification.blocked(
            f"{label}: this server (Redis {caps.redis_version}, search "
            f"{caps.to_dict()['search_version']}) cannot index {dst_dt.upper()} vectors, which "
            f"need {gate}; upgrade the server first, or pick a datatype it has "
            f"({', '.join(caps.datatypes)})")
    if target.attrs.algorithm == "svs-vamana" and dst_dt not in SVS_DATATYPES:
        return Classification.blocked(
            f"{label}: SVS-VAMANA indexes only float16 and float32 vectors; pick one of those, "
            "or keep the HNSW or FLAT algorithm")
    storage = context.source.storage_type
    if storage == "json" and src_dt in FLOAT_DATATYPES and dst_dt in FLOAT_DATATYPES:
        return Classification(
            summary=f"vector index of {change.field!r}: datatype {src_dt} -> {dst_dt}, index "
                    "only: JSON documents store plain numbers, which the index converts when "
                    "it indexes them; no document is rewritten",
            details={"index_only": True},
            warnings=(f"{change.field!r}: the index keeps {dst_dt} vectors, so KNN scores "
                      f"carry {dst_dt} precision; the documents keep every digit",)
            if DATATYPE_WIDTH[dst_dt] < DATATYPE_WIDTH[src_dt] else ())
    read_path = source.identifier(storage)
    write_path = target.identifier(context.target.storage_type)
    dims = target.attrs.dims
    sample = _sample_matrix(context.sample([read_path]), read_path, storage, src_dt, dims)
    try:
        scheme = choose_scheme(src_dt, dst_dt, target.attrs.distance_metric, sample)
    except VectorError as exc:
        return Classification.blocked(f"{label}: {exc}")
    lossy = is_lossy(scheme)
    details: dict[str, object] = {"scheme": scheme.to_dict()}
    warnings = []
    if len(sample):
        try:
            err = measure_error(sample, scheme)
        except VectorError as exc:
            return Classification.blocked(f"{label}: {exc}")
        details["error_on_sample"] = err.to_dict()
        if lossy:
            warnings.append(
                f"{label} is lossy: on {err.sample_size} sampled vectors max abs error "
                f"{err.max_abs_error:.3g}, mean abs error {err.mean_abs_error:.3g}, mean cosine "
                f"similarity to the original {err.mean_cosine_similarity:.6f} (min "
                f"{err.min_cosine_similarity:.6f}); originals are kept in the backup for rollback")
    elif lossy:
        warnings.append(f"{label} is lossy; no sampled vectors to measure the error on")
    if scheme.overflow == "clip":
        fraction = err.clip_fraction if len(sample) else 0.0
        beyond = round(fraction * len(sample) * dims) if fraction == fraction else 0
        warnings.append(
            f"{label}: a value beyond {dst_dt}'s range (largest finite {_largest(dst_dt)}) is "
            f"clipped to it, with its sign, and counted in the apply report "
            f"({beyond} of {len(sample) * dims} sampled components are); the originals stay "
            "in the backup")
    width_note = f"{DATATYPE_WIDTH[src_dt] * dims} -> {DATATYPE_WIDTH[dst_dt] * dims} bytes"
    return Classification(
        summary=f"quantize {label} ({scheme.kind}; {width_note} per vector)",
        lossy=lossy,
        warnings=tuple(warnings),
        details=details,
        operations=(DocumentOperation(
            plugin=NAME, kind="convert_vector", reads=(write_path,), writes=(write_path,),
            lossy=lossy,
            params={"field": target.name, "path": write_path, "storage_type": storage,
                    "dims": dims, "scheme": scheme.to_dict()},
        ),),
    )


def _largest(datatype: str) -> str:
    import numpy as np

    return f"{float(np.finfo(np.float16).max):g}" if datatype == "float16" else (
        "3.39e+38" if datatype == "bfloat16" else f"{float(np.finfo(datatype).max):.3g}")


@hookimpl
def estimate_operation(operation: DocumentOperation) -> OperationCost:
    """Exact: every vector is rewritten at the new width, its original backed up."""
    dims = int(operation.params["dims"])
    scheme = operation.params["scheme"]
    return OperationCost(bytes_rewritten=dims * DATATYPE_WIDTH[scheme["target_datatype"]],
                         backup_bytes=dims * DATATYPE_WIDTH[scheme["source_datatype"]])


@hookimpl
def transform_documents(operation: DocumentOperation, documents: Sequence[Document],
                        context: ApplyContext) -> list[DocumentUpdate]:
    path = operation.params["path"]
    converted = _converted(operation, [d.get(path) for d in documents], context)
    return [NO_CHANGE if new is NO_CHANGE else DocumentUpdate(set={path: new})
            for new in converted]


@hookimpl
def transform_columns(operation: DocumentOperation, columns: Mapping[str, Sequence[object]],
                      context: ApplyContext) -> dict[str, list[object]]:
    """The same conversion on a batch held as columns (one numpy call per batch)."""
    path = operation.params["path"]
    return {path: _converted(operation, columns[path], context)}


def _converted(operation: DocumentOperation, values: Sequence[object],
               context: ApplyContext) -> list[object]:
    """Each document's converted vector, or NO_CHANGE (no vector, or one of the wrong size,
    which never indexed: an indexing failure is left as it is)."""
    from rvlm.plugin import QuantizationScheme, convert_bytes_batch, convert_values_batch

    p = operation.params
    dims = int(p["dims"])
    scheme = QuantizationScheme.from_dict(p["scheme"])
    out: list[object] = [NO_CHANGE] * len(values)
    if scheme.source_datatype == scheme.target_datatype or not values:
        return out
    what = (f"components of {p['field']!r} beyond the {scheme.target_datatype} range, clipped "
            "to its largest value" if scheme.kind == "cast" else
            f"components of {p['field']!r} outside the calibrated {scheme.target_datatype} "
            "range, clipped")

    def on_clip(n: int) -> None:
        context.tally(what, n)

    if p["storage_type"] == "json":
        picked = [i for i, v in enumerate(values) if isinstance(v, list) and len(v) == dims]
        vectors = [values[i] for i in picked]
        converted: Sequence[object] = convert_values_batch(
            vectors, dims, scheme, on_clip=on_clip) if vectors else []  # type: ignore[arg-type]
    else:
        size = dims * DATATYPE_WIDTH[scheme.source_datatype]
        if all(type(v) is bytes and len(v) == size for v in values):
            return list(convert_bytes_batch(values, dims, scheme,  # type: ignore[arg-type]
                                            on_clip=on_clip))
        picked = [i for i, v in enumerate(values) if isinstance(v, bytes) and len(v) == size]
        raws = [values[i] for i in picked]
        converted = convert_bytes_batch(raws, dims, scheme,  # type: ignore[arg-type]
                                        on_clip=on_clip) if raws else []
    for i, new in zip(picked, converted, strict=True):
        out[i] = new
    return out


@hookimpl
def validate(plan: object, context: ApplyContext) -> list[CheckResult] | None:
    """Sampled documents hold vectors of the target datatype's size."""
    checks: list[CheckResult] = []
    client = context.client
    if client is None:
        return None
    for op in context.plan.operations:
        if op.plugin != NAME:
            continue
        from rvlm.plugin import QuantizationScheme

        p = op.params
        scheme = QuantizationScheme.from_dict(p["scheme"])
        keys = context.plan.key_sample_after()
        docs = context.read_documents(keys, [p["path"]], storage_type=p["storage_type"])
        bad = []
        for d in docs:
            v = d.get(p["path"])
            if v is MISSING:
                continue
            if p["storage_type"] == "json":
                ok = isinstance(v, list) and len(v) == p["dims"]
            else:
                ok = isinstance(v, bytes) and len(v) == p["dims"] * DATATYPE_WIDTH[
                    scheme.target_datatype]
            if not ok:
                bad.append(d.key.decode(errors="replace"))
        checks.append(CheckResult(
            name=f"quantize:{p['field']}", passed=not bad,
            details=(f"sampled vectors are {scheme.target_datatype}" if not bad else
                     f"{len(bad)} sampled documents have a vector of the wrong size, e.g. "
                     f"{bad[0]}")))
    return checks

