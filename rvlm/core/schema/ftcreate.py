"""Render an :class:`~rvlm.core.schema.model.IndexSchema` as FT.CREATE arguments.

The inverse of :mod:`rvlm.core.schema.ftinfo`: for any schema the server accepts, create -> read
back -> render -> create again gives an index that behaves the same (a property test checks it).
Values that are ``None`` are left out so the server applies its own default.
"""

from __future__ import annotations

from rvlm.core.schema.model import (
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


def _num(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def index_arguments(index: IndexDefinition) -> list[str]:
    """Everything between the index name and SCHEMA."""
    args = ["ON", index.storage_type.upper(), "PREFIX", str(len(index.prefix)), *index.prefix]
    if index.filter is not None:
        args += ["FILTER", index.filter]
    if index.language is not None:
        args += ["LANGUAGE", index.language]
    if index.language_field is not None:
        args += ["LANGUAGE_FIELD", index.language_field]
    if index.score is not None:
        args += ["SCORE", _num(index.score)]
    if index.score_field is not None:
        args += ["SCORE_FIELD", index.score_field]
    if index.payload_field is not None:
        args += ["PAYLOAD_FIELD", index.payload_field]
    for flag, on in (
        ("MAXTEXTFIELDS", index.maxtextfields),
        ("NOOFFSETS", index.nooffsets),
        ("NOHL", index.nohl),
        ("NOFIELDS", index.nofields),
        ("NOFREQS", index.nofreqs),
    ):
        if on:
            args.append(flag)
    if index.stopwords is not None:
        args += ["STOPWORDS", str(len(index.stopwords)), *index.stopwords]
    return args


def _tail(
    *, sortable: bool, unf: bool = False, no_index: bool = False,
    index_missing: bool = False, index_empty: bool = False,
) -> list[str]:
    out: list[str] = []
    if index_empty:
        out.append("INDEXEMPTY")
    if index_missing:
        out.append("INDEXMISSING")
    if sortable:
        out.append("SORTABLE")
        if unf:
            out.append("UNF")
    if no_index:
        out.append("NOINDEX")
    return out


def _vector_params(a: VectorAttrs) -> list[str]:
    params = ["TYPE", a.datatype.upper(), "DIM", str(a.dims), "DISTANCE_METRIC",
              a.distance_metric.upper()]
    optional: list[tuple[str, object]] = [
        ("INITIAL_CAP", a.initial_cap),
        ("BLOCK_SIZE", a.block_size),
        ("M", a.m),
        ("EF_CONSTRUCTION", a.ef_construction),
        ("EF_RUNTIME", a.ef_runtime),
        ("EPSILON", a.epsilon),
        ("GRAPH_MAX_DEGREE", a.graph_max_degree),
        ("CONSTRUCTION_WINDOW_SIZE", a.construction_window_size),
        ("SEARCH_WINDOW_SIZE", a.search_window_size),
        ("COMPRESSION", a.compression),
        ("REDUCE", a.reduce),
        ("TRAINING_THRESHOLD", a.training_threshold),
    ]
    for name, value in optional:
        if value is not None:
            params += [name, _num(value) if isinstance(value, float) else str(value)]
    return params


def field_arguments(field: Field, storage_type: str) -> list[str]:
    """One field's part of SCHEMA: identifier, AS name, type and options."""
    identifier = field.identifier(storage_type)
    args = [identifier]
    if identifier != field.name:
        args += ["AS", field.name]
    a = field.attrs
    if isinstance(a, TextAttrs):
        args.append("TEXT")
        if a.no_stem:
            args.append("NOSTEM")
        if a.weight != 1.0:
            args += ["WEIGHT", _num(a.weight)]
        if a.phonetic_matcher is not None:
            args += ["PHONETIC", a.phonetic_matcher]
        if a.withsuffixtrie:
            args.append("WITHSUFFIXTRIE")
        args += _tail(sortable=a.sortable, unf=a.unf, no_index=a.no_index,
                      index_missing=a.index_missing, index_empty=a.index_empty)
    elif isinstance(a, TagAttrs):
        args.append("TAG")
        if a.separator is not None:
            args += ["SEPARATOR", a.separator]
        if a.case_sensitive:
            args.append("CASESENSITIVE")
        if a.withsuffixtrie:
            args.append("WITHSUFFIXTRIE")
        args += _tail(sortable=a.sortable, unf=a.unf, no_index=a.no_index,
                      index_missing=a.index_missing, index_empty=a.index_empty)
    elif isinstance(a, NumericAttrs):
        args.append("NUMERIC")
        args += _tail(sortable=a.sortable, no_index=a.no_index, index_missing=a.index_missing)
    elif isinstance(a, GeoAttrs):
        args.append("GEO")
        args += _tail(sortable=a.sortable, no_index=a.no_index, index_missing=a.index_missing)
    elif isinstance(a, GeoshapeAttrs):
        args += ["GEOSHAPE", a.coord_system.upper()]
        args += _tail(sortable=a.sortable, no_index=a.no_index, index_missing=a.index_missing)
    elif isinstance(a, VectorAttrs):
        params = _vector_params(a)
        args += ["VECTOR", a.algorithm.upper(), str(len(params)), *params]
        if a.index_missing:
            args.append("INDEXMISSING")
    else:  # pragma: no cover - the model forbids it
        raise TypeError(f"unknown attrs type {type(a).__name__}")
    return args


def create_arguments(schema: IndexSchema, name: str | None = None) -> list[str]:
    """The whole FT.CREATE command, as a list of strings (command name included)."""
    args = ["FT.CREATE", name or schema.index.name, *index_arguments(schema.index), "SCHEMA"]
    for field in schema.fields:
        args += field_arguments(field, schema.index.storage_type)
    return args
