"""The ``computed_vector`` change: a new vector field computed from an existing field.

The user names the new field, the source field and an embedder as ``module:function`` (it takes
a list of strings and returns an array of shape ``(n, dims)``). The target index gains the
vector field; the plan gets one document operation per new field; the executor hands each
batch to :func:`transform_documents`, which calls the embedder once per batch and returns the
vectors (bytes of the field's datatype for hash, arrays of numbers for JSON). Backup, journal,
resume and rollback are the executor's, as for every change.

Hooks: ``rvlm_change_types``, ``merge_patch_section``, ``classify_change``, ``pre_drop`` (the
embedder still gives the vectors it gave at plan time), ``transform_documents``, ``validate``
(a nearest-neighbour query finds sampled documents by their own text).
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from rvlm.plugin import (
    MISSING,
    NO_CHANGE,
    ApplyContext,
    Change,
    ChangeType,
    CheckResult,
    Classification,
    Document,
    DocumentOperation,
    DocumentUpdate,
    Field,
    IndexSchema,
    Plan,
    PlanContext,
    RvlmError,
    VectorAttrs,
    hookimpl,
    to_list,
    to_map,
)

if TYPE_CHECKING:
    import numpy as np

#: The plugin's name: entry point name, change type, patch section, operations' ``plugin``.
NAME = "computed_vector"
#: Datatypes an embedder's floats can be stored as without a calibration step.
FLOAT_DATATYPES = ("float32", "float64", "float16", "bfloat16")
#: The text embedded at plan time and again before the drop, to detect a changed embedder.
PROBE = "rvlm computed_vector probe: the quick brown fox"
PROBE_VALUES = 8
PROBE_TOLERANCE = 1e-4
#: Sampled documents embedded at plan time to check the embedder's output.
CHECK_SAMPLE = 64
SPEC_KEYS = ("name", "source", "embedder", "dims", "datatype", "distance_metric", "algorithm",
             "attrs", "path")

Embedder = Callable[[Sequence[str]], Any]


@attrs.frozen(kw_only=True)
class Spec:
    """One new vector field, as the patch section names it."""

    name: str
    source: str
    embedder: str
    dims: int | None = None
    datatype: str = "float32"
    distance_metric: str = "cosine"
    algorithm: str = "flat"
    attrs: dict[str, Any] = attrs.field(factory=dict)
    path: str | None = None


def parse_specs(value: Any, where: str = f"changes.{NAME}") -> list[Spec]:
    """The section's YAML value (one mapping or a list of them) as specs; RvlmError on bad input."""
    items = value if isinstance(value, list) else [value]
    specs = []
    for i, item in enumerate(items):
        w = where if not isinstance(value, list) else f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise RvlmError(f"{w} must be a mapping with name, source and embedder")
        extra = sorted(set(map(str, item)) - set(SPEC_KEYS))
        if extra:
            raise RvlmError(f"{w}: unknown key {extra[0]!r} (expected {', '.join(SPEC_KEYS)})")
        for key in ("name", "source", "embedder"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise RvlmError(f"{w}.{key} must be a non-empty string")
        if ":" not in item["embedder"]:
            raise RvlmError(f"{w}.embedder must be 'module:function', not {item['embedder']!r}")
        datatype = str(item.get("datatype", "float32")).lower()
        if datatype not in FLOAT_DATATYPES:
            raise RvlmError(f"{w}.datatype must be one of {', '.join(FLOAT_DATATYPES)} (compute "
                            "floats, then quantize in a second migration)")
        extra_attrs = item.get("attrs") or {}
        if not isinstance(extra_attrs, Mapping):
            raise RvlmError(f"{w}.attrs must be a mapping of vector attrs")
        dims = item.get("dims")
        if dims is not None and (not isinstance(dims, int) or dims <= 0):
            raise RvlmError(f"{w}.dims must be a positive integer")
        specs.append(Spec(name=item["name"], source=item["source"], embedder=item["embedder"],
                          dims=dims, datatype=datatype,
                          distance_metric=str(item.get("distance_metric", "cosine")).lower(),
                          algorithm=str(item.get("algorithm", "flat")).lower(),
                          attrs=dict(extra_attrs), path=item.get("path")))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise RvlmError(f"{where}: a field name appears twice")
    return specs


@functools.lru_cache(maxsize=16)
def load_embedder(spec: str) -> Embedder:
    """Import ``module:function`` (cached); RvlmError saying what failed."""
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except Exception as exc:
        raise RvlmError(f"cannot load the embedder {spec!r}: {type(exc).__name__}: {exc}") from None
    if not callable(target):
        raise RvlmError(f"the embedder {spec!r} is not callable")
    embedder: Embedder = target
    return embedder


def embed(spec: str, texts: Sequence[str], dims: int | None = None) -> np.ndarray:
    """Run the embedder on ``texts``; a float64 ``(n, dims)`` array of finite values."""
    import numpy as np  # here, not at import: a run that embeds nothing does not load numpy

    try:
        out = np.asarray(load_embedder(spec)(list(texts)), dtype=np.float64)
    except RvlmError:
        raise
    except Exception as exc:
        raise RvlmError(f"the embedder {spec!r} failed: {type(exc).__name__}: {exc}") from None
    if out.ndim != 2 or out.shape[0] != len(texts):
        raise RvlmError(f"the embedder {spec!r} returned shape {out.shape} for {len(texts)} "
                        f"texts; expected ({len(texts)}, dims)")
    if dims is not None and out.shape[1] != dims:
        raise RvlmError(f"the embedder {spec!r} returned {out.shape[1]} dims, expected {dims}")
    if not np.isfinite(out).all():
        raise RvlmError(f"the embedder {spec!r} returned NaN or infinite values")
    return out


def _source_identifier(schema: IndexSchema, source: str) -> str:
    field = schema.field(source)
    if field is not None:
        return field.identifier(schema.storage_type)
    if schema.storage_type == "json" and not source.startswith("$"):
        return f"$.{source}"
    return source


def _target_field(spec: Spec, schema: IndexSchema, dims: int, where: str) -> Field:
    try:
        vattrs = VectorAttrs(dims=dims, algorithm=spec.algorithm, datatype=spec.datatype,
                             distance_metric=spec.distance_metric, **spec.attrs)
    except (TypeError, ValueError) as exc:
        raise RvlmError(f"{where}: {exc}") from None
    path = spec.path
    if path is None and schema.storage_type == "json":
        path = f"$.{spec.name}"
    return Field(name=spec.name, type="vector", path=path, attrs=vattrs)


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    """One change type, owning the ``computed_vector`` patch section."""
    return [ChangeType(name=NAME, patch_section=NAME,
                       description="Add a vector field computed from an existing field by an "
                                   "embedder (module:function).")]


@hookimpl
def merge_patch_section(value: Any, target: IndexSchema) -> IndexSchema:
    """The target gains one vector field per spec (dims from the embedder if not given)."""
    where = f"changes.{NAME}"
    fields = list(target.fields)
    for spec in parse_specs(value, where):
        if target.field(spec.name) is not None:
            raise RvlmError(f"{where}.name: the index already has a field named {spec.name!r}")
        dims = spec.dims or embed(spec.embedder, [PROBE]).shape[1]
        fields.append(_target_field(spec, target, dims, where))
    return target.with_fields(fields)


def _texts(values: Sequence[Any]) -> list[str | None]:
    """The text of each source value (None when absent or empty)."""
    out: list[str | None] = []
    for v in values:
        if v is MISSING or v is None:
            out.append(None)
        elif isinstance(v, (bytes, bytearray)):
            out.append(bytes(v).decode("utf-8", "replace") or None)
        elif isinstance(v, list):
            out.append(" ".join(str(x) for x in v) or None)
        else:
            out.append(str(v) or None)
    return out


def _probe(spec: str) -> list[float]:
    import numpy as np

    row = embed(spec, [PROBE])[0]
    return [round(float(x), 6) for x in row[:PROBE_VALUES]] + [round(float(np.linalg.norm(row)), 6)]


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification:
    """Supported when the embedder loads, gives finite vectors of the right shape on sampled
    texts, the datatype is indexable and no document holds the new field yet."""
    target = context.target
    storage = target.storage_type
    operations = []
    warnings: list[str] = []
    summaries = []
    for spec in parse_specs(change.details.get("value")):
        field = target.field(spec.name)
        assert field is not None and isinstance(field.attrs, VectorAttrs)
        dims = field.attrs.dims
        if spec.datatype not in context.capabilities.datatypes:
            return Classification.blocked(f"{spec.name!r}: this server cannot index "
                                          f"{spec.datatype} vectors")
        src = _source_identifier(target, spec.source)
        dst = field.identifier(storage)
        try:
            sample = context.sample([src, dst])
            held = [d.key for d in sample if d.get(dst) is not MISSING]
            if held:
                return Classification.blocked(
                    f"{len(held)} sampled documents already hold {dst!r} (e.g. "
                    f"{held[0].decode(errors='replace')}); computing {spec.name!r} would "
                    "overwrite it: choose another name or path")
            texts = [t for t in _texts([d.get(src) for d in sample]) if t is not None]
            if texts:
                embed(spec.embedder, texts[:CHECK_SAMPLE], dims)
            probe = _probe(spec.embedder)
        except RvlmError as exc:
            return Classification.blocked(f"{spec.name!r}: {exc}")
        missing = len(sample) - len(texts)
        if missing:
            warnings.append(
                f"{missing} of {len(sample)} sampled documents have no {spec.source!r}: they "
                f"get no {spec.name!r} vector and vector queries will not find them")
        summaries.append(f"{spec.name!r} = {spec.embedder}({spec.source!r}) "
                         f"[{dims} x {spec.datatype}, {spec.distance_metric}]")
        operations.append(DocumentOperation(
            plugin=NAME, kind="compute_vector", reads=(src,), writes=(dst,), creates=(dst,),
            params={"field": spec.name, "source": src, "path": dst, "embedder": spec.embedder,
                    "dims": dims, "datatype": spec.datatype, "storage_type": storage,
                    "probe": probe}))
    warnings.append("the plan names the embedder(s) by module:function; 'rvlm apply' imports "
                    "and runs them: apply only plans you trust, in an environment where the "
                    "same embedder is installed")
    return Classification(summary="compute " + "; ".join(summaries), warnings=tuple(warnings),
                          operations=tuple(operations))


@hookimpl
def pre_drop(plan: Plan) -> list[str] | None:
    """The embedder loads and still gives the probe vector recorded in the plan."""
    problems = []
    for op in plan.operations:
        if op.plugin != NAME:
            continue
        p = op.params
        try:
            now = _probe(p["embedder"])
        except RvlmError as exc:
            problems.append(f"computed_vector {p['field']!r}: {exc}")
            continue
        if len(now) != len(p["probe"]) or any(
                not math.isclose(a, b, abs_tol=PROBE_TOLERANCE) for a, b in
                zip(now, p["probe"], strict=True)):
            problems.append(f"computed_vector {p['field']!r}: the embedder {p['embedder']!r} "
                            "gives other vectors than when the plan was made; make a new plan")
    return problems


def encode(values: np.ndarray, datatype: str, storage_type: str) -> list[Any]:
    """Vectors as the executor writes them: bytes (hash) or lists of numbers (JSON), both
    rounded to ``datatype`` so the JSON value is exactly what the index holds."""
    from rvlm.plugin import decode_batch, encode_batch

    raws = encode_batch(values, datatype)
    if storage_type != "json":
        return raws
    dims = values.shape[1]
    return decode_batch(raws, datatype, dims).tolist() if raws else []


@hookimpl
def transform_documents(operation: DocumentOperation,
                        documents: Sequence[Document]) -> list[DocumentUpdate]:
    """One embedder call per batch; documents without the source field are left alone."""
    p = operation.params
    texts = _texts([d.get(p["source"]) for d in documents])
    picked = [(i, t) for i, t in enumerate(texts) if t is not None]
    updates: list[DocumentUpdate] = [NO_CHANGE] * len(documents)
    if not picked:
        return updates
    matrix = embed(p["embedder"], [t for _i, t in picked], int(p["dims"]))
    values = encode(matrix, p["datatype"], p["storage_type"])
    for (i, _t), value in zip(picked, values, strict=True):
        updates[i] = DocumentUpdate(set={p["path"]: value})
    return updates


def search_keys(reply: Any) -> list[bytes]:
    """Document ids of an FT.SEARCH NOCONTENT reply, under RESP2 or RESP3."""
    if isinstance(reply, (list, tuple)):
        return [k if isinstance(k, bytes) else str(k).encode() for k in list(reply)[1:]]
    results = to_list(to_map(reply).get("results", []))
    out = []
    for r in results:
        key = to_map(r).get("id")
        out.append(key if isinstance(key, bytes) else str(key).encode())
    return out


@hookimpl
def validate(plan: Plan, context: ApplyContext) -> list[CheckResult] | None:
    """For a few sampled documents, a KNN query with the embedding of their own text finds
    them among the ten nearest: the new field is filled, indexed and searchable."""
    client = context.client
    if client is None:
        return None
    from rvlm.plugin import encode_batch

    checks = []
    for op in plan.operations:
        if op.plugin != NAME:
            continue
        p = op.params
        keys = plan.key_sample_after()[:5]
        docs = context.read_documents(keys, [p["source"]])
        found, missed = 0, []
        for doc, text in zip(docs, _texts([d.get(p["source"]) for d in docs]), strict=True):
            if text is None:
                continue
            blob = encode_batch(embed(p["embedder"], [text]), p["datatype"])[0]
            reply = client.execute_command(
                "FT.SEARCH", plan.target_index, f"*=>[KNN 10 @{p['field']} $q]", "PARAMS", "2",
                "q", blob, "NOCONTENT", "LIMIT", "0", "10", "DIALECT", "2")
            if doc.key in search_keys(reply):
                found += 1
            else:
                missed.append(doc.key.decode(errors="replace"))
        checks.append(CheckResult(
            name=f"computed_vector:{p['field']}", passed=not missed,
            details=(f"{found} sampled documents found by their own {p['field']!r}" if not missed
                     else f"KNN on {p['field']!r} misses sampled documents, e.g. {missed[0]}")))
    return checks
