"""The plan's ``rvlm.quality`` section: per vector field whose KNN answers may change, an
estimate from the sample or a note that apply measures it.

A field is in the section when its datatype, distance metric, algorithm or a parameter that
decides which neighbours the index finds (``m``, ``ef_construction``, ``ef_runtime``,
``epsilon``, the SVS-VAMANA ones) changes; ``block_size`` and ``initial_cap`` change memory
layout, not answers. Each entry::

    emb:
      estimated_recall_at_k: 0.9315   # null when only the index side changes
      k: 10
      sample: 1000                    # sampled vectors the estimate used
      queries: 200
      recall_on_sample: 0.95          # when the index has more documents than the sample
      documents: 50000
      measured_at_apply: "algorithm flat -> hnsw"   # what the estimate does not cover
      min_recall: 0.9                 # the floor asked for with --min-recall

A datatype or metric change is estimated by :func:`~rvlm.core.quality.estimate.estimate_recall`
(exact KNN, source against target). An algorithm or graph parameter change is not estimated from
the sample: an approximate index's recall depends on the graph built over every document, so
apply measures it on the live indexes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rvlm.core.plugins.documents import Document
from rvlm.core.quality.defaults import DEFAULT_K
from rvlm.core.schema.model import Field, IndexSchema, VectorAttrs

if TYPE_CHECKING:  # numpy loads only when an estimate is made
    from rvlm.core import vectors

#: Index-side parameters that change which neighbours an approximate index finds.
SEARCH_PARAMS = ("algorithm", "m", "ef_construction", "ef_runtime", "epsilon",
                 "graph_max_degree", "construction_window_size", "search_window_size",
                 "compression", "reduce", "training_threshold")

SampleFn = Callable[[Sequence[str]], list[Document]]


def _show(value: object) -> str:
    return "default" if value is None else str(value)


def changed_vector_fields(source: IndexSchema, target: IndexSchema,
                          renames: Mapping[str, str]) -> list[tuple[Field, Field]]:
    """(source field, target field) for every vector field in both schemas (``renames`` maps
    source names to target names) whose datatype, metric or search parameters differ."""
    pairs = []
    for s in source.vector_fields():
        t = target.field(renames.get(s.name, s.name))
        if t is None or not isinstance(t.attrs, VectorAttrs):
            continue
        a, b = s.attrs, t.attrs
        assert isinstance(a, VectorAttrs)
        if a.dims != b.dims:
            continue  # blocked by the planner: nothing to estimate
        keys = ("datatype", "distance_metric", *SEARCH_PARAMS)
        if any(getattr(a, key) != getattr(b, key) for key in keys):
            pairs.append((s, t))
    return pairs


def field_quality(source: IndexSchema, s: Field, t: Field, *,
                  scheme: vectors.QuantizationScheme | None, sample: SampleFn,
                  documents: int, k: int = DEFAULT_K,
                  min_recall: float | None = None) -> dict[str, Any]:
    """The ``rvlm.quality`` entry of one changed vector field (see the module docstring)."""
    a, b = s.attrs, t.attrs
    assert isinstance(a, VectorAttrs) and isinstance(b, VectorAttrs)
    entry: dict[str, Any] = {"estimated_recall_at_k": None, "k": k}
    if a.datatype != b.datatype and scheme is None:
        entry["note"] = "the datatype conversion is not recorded in the plan"
    elif a.datatype != b.datatype or a.distance_metric != b.distance_metric:
        from rvlm.core.quality.estimate import estimate_recall, vector_matrix

        path = s.identifier(source.storage_type)
        values = vector_matrix(sample([path]), path, source.storage_type, a.datatype, a.dims)
        est = estimate_recall(values, source_datatype=a.datatype,
                              source_metric=a.distance_metric, target_datatype=b.datatype,
                              target_metric=b.distance_metric, scheme=scheme, k=k,
                              documents=documents)
        if est is None:
            entry["note"] = "fewer than two sampled vectors: nothing to estimate from"
        else:
            entry.update(est.to_dict())
    index_side = [f"{key} {_show(getattr(a, key))} -> {_show(getattr(b, key))}"
                  for key in SEARCH_PARAMS if getattr(a, key) != getattr(b, key)]
    if index_side:
        entry["measured_at_apply"] = ", ".join(index_side)
    if min_recall is not None:
        entry["min_recall"] = min_recall
    return entry


def below_floor(entry: Mapping[str, Any]) -> bool:
    """The estimate is under the entry's ``min_recall`` (never for an unestimated field)."""
    est, floor = entry.get("estimated_recall_at_k"), entry.get("min_recall")
    return est is not None and floor is not None and est < floor


def plan_quality(source: IndexSchema, target: IndexSchema, *, renames: Mapping[str, str],
                 schemes: Mapping[str, vectors.QuantizationScheme], sample: SampleFn,
                 documents: int, k: int = DEFAULT_K,
                 min_recall: float | None = None) -> dict[str, dict[str, Any]]:
    """The whole ``rvlm.quality`` section: target field name -> entry. ``schemes`` maps a
    target field name to the conversion the plan records for it."""
    return {t.name: field_quality(source, s, t, scheme=schemes.get(t.name), sample=sample,
                                  documents=documents, k=k, min_recall=min_recall)
            for s, t in changed_vector_fields(source, target, renames)}


def describe(field: str, entry: Mapping[str, Any]) -> str:
    """One line for the plan display: the estimate (or why there is none) and the floor."""
    est = entry.get("estimated_recall_at_k")
    k = entry.get("k", DEFAULT_K)
    if est is None:
        text = f"{field}: recall@{k} not estimated from the sample"
    else:
        text = f"{field}: estimated recall@{k} {est:.4f} on {entry.get('sample')} sampled vectors"
        if "documents" in entry:
            text += (f" ({entry['recall_on_sample']:.4f} among them, extrapolated to "
                     f"{entry['documents']} documents)")
    if entry.get("measured_at_apply"):
        text += f"; {entry['measured_at_apply']}: measured at apply (--min-recall)"
    if entry.get("note"):
        text += f"; {entry['note']}"
    if entry.get("min_recall") is not None:
        text += (f"; under --min-recall {entry['min_recall']}" if below_floor(entry)
                 else f"; floor {entry['min_recall']}")
    return text
