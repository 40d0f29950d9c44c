"""Read a live index (FT.INFO) into the lossless schema model, under RESP2 and RESP3.

RESP2 sends each attribute as a flat token list where key/value pairs and bare flags are mixed
(``identifier title attribute t type TEXT WEIGHT 2 SORTABLE UNF``); RESP3 sends a map with a
``flags`` list. Both go through :func:`_attribute_map` into one shape.

FT.INFO prints ``default_score`` only when it is not zero (the default, 1, is always printed),
so an index definition without it has ``SCORE 0``.

What FT.INFO does not report is recorded, never invented: ``ef_runtime``, ``epsilon``,
``block_size``, ``initial_cap`` and ``phonetic_matcher`` are ``None`` in the model and named in
the field's ``unknown_attrs`` (the planner warns, and a patch can set them explicitly).
"""

from __future__ import annotations

from typing import Any

import attrs

from rvlm.core.errors import RvlmError
from rvlm.core.redis.resp import to_float, to_int, to_list, to_map, to_str
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

#: Tokens FT.INFO prints on their own (no value follows).
FLAGS = frozenset(
    {
        "SORTABLE", "UNF", "NOSTEM", "NOINDEX", "CASESENSITIVE", "WITHSUFFIXTRIE",
        "INDEXEMPTY", "INDEXMISSING", "PHONETIC",
    }
)
#: Flags each field type's model understands; others land in ``IndexInfo.unparsed`` (the server
#: also prints UNF after SORTABLE on NUMERIC and GEO fields, where it means nothing).
_FLAGS_BY_TYPE = {
    "text": frozenset({"SORTABLE", "UNF", "NOSTEM", "NOINDEX", "WITHSUFFIXTRIE", "INDEXEMPTY",
                       "INDEXMISSING"}),
    "tag": frozenset({"SORTABLE", "UNF", "NOINDEX", "CASESENSITIVE", "WITHSUFFIXTRIE",
                      "INDEXEMPTY", "INDEXMISSING"}),
    "numeric": frozenset({"SORTABLE", "UNF", "NOINDEX", "INDEXMISSING"}),
    "geo": frozenset({"SORTABLE", "UNF", "NOINDEX", "INDEXMISSING"}),
    "geoshape": frozenset({"SORTABLE", "NOINDEX", "INDEXMISSING"}),
    "vector": frozenset({"INDEXMISSING"}),
}
#: Attrs that FT.INFO (RediSearch 2.10 to 8.2) does not report for a field type.
UNREPORTED = {
    "text": ("phonetic_matcher",),
    "vector": ("initial_cap", "block_size", "ef_runtime", "epsilon"),
}


@attrs.frozen(kw_only=True)
class IndexStats:
    """The numbers from FT.INFO that plans and validation use."""

    num_docs: int = 0
    max_doc_id: int = 0
    num_records: int = 0
    indexing_failures: int = 0
    indexing: bool = False
    percent_indexed: float = 1.0
    vector_index_sz_mb: float = 0.0
    total_index_memory_sz_mb: float = 0.0
    total_indexing_time_ms: float = 0.0


@attrs.frozen(kw_only=True)
class IndexInfo:
    """A live index: its schema, its stats, and the raw attribute extras nobody understood."""

    schema: IndexSchema
    stats: IndexStats
    unparsed: dict[str, Any] = attrs.field(factory=dict)


def _attribute_map(raw: Any) -> tuple[dict[str, Any], set[str]]:
    """One attribute's reply as (key -> value with lower-case keys, set of upper-case flags)."""
    flags: set[str] = set()
    if isinstance(raw, dict):
        m = to_map(raw)
        flags = {to_str(f).upper() for f in to_list(m.pop("flags", []))}
        return {k.lower(): v for k, v in m.items()}, flags
    tokens = to_list(raw)
    values: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = to_str(tokens[i])
        if token.upper() in FLAGS and token.upper() == token:
            flags.add(token)
            i += 1
            continue
        values[token.lower()] = tokens[i + 1] if i + 1 < len(tokens) else None
        i += 2
    return values, flags


def _field(raw: Any, storage_type: str, unparsed: dict[str, Any]) -> Field:
    values, flags = _attribute_map(raw)
    identifier = to_str(values.pop("identifier"))
    name = to_str(values.pop("attribute", identifier))
    ftype = to_str(values.pop("type")).lower()
    sortable = "SORTABLE" in flags
    common: dict[str, Any] = {
        "index_missing": "INDEXMISSING" in flags,
    }
    a: Any
    if ftype == "text":
        a = TextAttrs(
            weight=to_float(values.pop("weight", 1.0), 1.0),
            no_stem="NOSTEM" in flags,
            withsuffixtrie="WITHSUFFIXTRIE" in flags,
            phonetic_matcher=None,
            sortable=sortable,
            unf="UNF" in flags,
            no_index="NOINDEX" in flags,
            index_empty="INDEXEMPTY" in flags,
            **common,
        )
    elif ftype == "tag":
        sep = values.pop("separator", None)
        sep_text = None if sep is None else to_str(sep)
        if sep_text == "" or (sep_text == "," and storage_type == "hash"):
            sep_text = None
        a = TagAttrs(
            separator=sep_text,
            case_sensitive="CASESENSITIVE" in flags,
            withsuffixtrie="WITHSUFFIXTRIE" in flags,
            sortable=sortable,
            unf="UNF" in flags,
            no_index="NOINDEX" in flags,
            index_empty="INDEXEMPTY" in flags,
            **common,
        )
    elif ftype == "numeric":
        a = NumericAttrs(sortable=sortable, no_index="NOINDEX" in flags, **common)
    elif ftype == "geo":
        a = GeoAttrs(sortable=sortable, no_index="NOINDEX" in flags, **common)
    elif ftype == "geoshape":
        a = GeoshapeAttrs(
            coord_system=to_str(values.pop("coord_system", "spherical")).lower(),
            sortable=sortable,
            no_index="NOINDEX" in flags,
            **common,
        )
    elif ftype == "vector":
        def opt_int(key: str) -> int | None:
            return to_int(values.pop(key)) if key in values else None

        a = VectorAttrs(
            dims=to_int(values.pop("dim")),
            algorithm=to_str(values.pop("algorithm")).lower().replace("_", "-"),
            datatype=to_str(values.pop("data_type")).lower(),
            distance_metric=to_str(values.pop("distance_metric")).lower(),
            m=opt_int("m"),
            ef_construction=opt_int("ef_construction"),
            ef_runtime=opt_int("ef_runtime"),
            epsilon=to_float(values.pop("epsilon")) if "epsilon" in values else None,
            block_size=opt_int("block_size"),
            initial_cap=opt_int("initial_cap"),
            graph_max_degree=opt_int("graph_max_degree"),
            construction_window_size=opt_int("construction_window_size"),
            search_window_size=opt_int("search_window_size"),
            compression=to_str(values.pop("compression")) if "compression" in values else None,
            reduce=opt_int("reduce"),
            training_threshold=opt_int("training_threshold"),
            **common,
        )
    else:
        raise RvlmError(f"field {name!r} has a type rvlm does not know: {ftype}")
    leftover_flags = sorted(flags - _FLAGS_BY_TYPE.get(ftype, frozenset()))
    if leftover_flags:
        values["flags"] = leftover_flags
    if values:
        unparsed[name] = {k: to_str(v) if isinstance(v, bytes) else v for k, v in values.items()}
    unknown = [k for k in UNREPORTED.get(ftype, ()) if getattr(a, k) is None]
    if ftype == "vector" and a.algorithm != "hnsw":
        unknown = [k for k in unknown if k not in ("ef_runtime", "epsilon")]
    if ftype == "vector" and a.algorithm != "flat":
        unknown = [k for k in unknown if k != "block_size"]
    path: str | None = identifier
    if storage_type == "hash" and identifier == name:
        path = None
    return Field(name=name, type=ftype, path=path, attrs=a, unknown_attrs=tuple(unknown))


def parse_ft_info(reply: Any) -> IndexInfo:
    """Turn an FT.INFO reply (RESP2 list or RESP3 map, bytes or str) into an IndexInfo."""
    info = to_map(reply)
    definition = to_map(info.get("index_definition"))
    storage_type = to_str(definition.get("key_type", "HASH")).lower()
    options = {to_str(o).upper() for o in to_list(info.get("index_options"))}
    stopwords_raw = info.get("stopwords_list")

    def text(key: str) -> str | None:
        return to_str(definition[key]) if key in definition else None

    index = IndexDefinition(
        name=to_str(info["index_name"]),
        prefix=tuple(to_str(p) for p in to_list(definition.get("prefixes"))) or ("",),
        storage_type=storage_type,
        stopwords=None if stopwords_raw is None else [to_str(s) for s in to_list(stopwords_raw)],
        filter=text("filter"),
        language=text("default_language"),
        language_field=text("language_field"),
        score=to_float(definition["default_score"]) if "default_score" in definition else 0.0,
        score_field=text("score_field"),
        payload_field=text("payload_field"),
        maxtextfields="MAXTEXTFIELDS" in options,
        nooffsets="NOOFFSETS" in options,
        nohl="NOHL" in options,
        nofields="NOFIELDS" in options,
        nofreqs="NOFREQS" in options,
    )
    unparsed: dict[str, Any] = {}
    fields = [_field(raw, storage_type, unparsed) for raw in to_list(info.get("attributes"))]
    errors = to_map(info.get("Index Errors")) if "Index Errors" in info else {}
    failures = to_int(info.get("hash_indexing_failures", errors.get("indexing failures", 0)))
    stats = IndexStats(
        num_docs=to_int(info.get("num_docs")),
        max_doc_id=to_int(info.get("max_doc_id")),
        num_records=to_int(info.get("num_records")),
        indexing_failures=failures,
        indexing=bool(to_int(info.get("indexing"))),
        percent_indexed=to_float(info.get("percent_indexed"), 1.0),
        vector_index_sz_mb=to_float(info.get("vector_index_sz_mb")),
        total_index_memory_sz_mb=to_float(info.get("total_index_memory_sz_mb")),
        total_indexing_time_ms=to_float(info.get("total_indexing_time")),
    )
    return IndexInfo(schema=IndexSchema(index=index, fields=fields), stats=stats, unparsed=unparsed)
