"""FT.INFO -> model on a hand-written index with every option, under RESP2 and RESP3."""

from __future__ import annotations

import time
from typing import Any

import pytest

from rvlm.core.errors import RvlmError
from rvlm.core.redis.connection import connect, read_index
from rvlm.core.schema.ftinfo import IndexInfo
from rvlm.core.schema.model import (
    GeoAttrs,
    GeoshapeAttrs,
    NumericAttrs,
    TagAttrs,
    TextAttrs,
    VectorAttrs,
)

EVERYTHING = [
    "FT.CREATE", "everything", "ON", "HASH", "PREFIX", "2", "doc:", "item:",
    "FILTER", "@n > 0", "LANGUAGE", "German", "LANGUAGE_FIELD", "lang",
    "SCORE", "0.5", "SCORE_FIELD", "rank", "PAYLOAD_FIELD", "pl",
    "MAXTEXTFIELDS", "NOOFFSETS", "NOFIELDS", "NOFREQS",
    "STOPWORDS", "3", "Foo", "bar", "foo",
    "SCHEMA",
    "t", "AS", "title", "TEXT", "NOSTEM", "WEIGHT", "2.5", "PHONETIC", "dm:en",
    "WITHSUFFIXTRIE", "INDEXEMPTY", "INDEXMISSING", "SORTABLE", "UNF",
    "g", "TAG", "SEPARATOR", ";", "CASESENSITIVE", "WITHSUFFIXTRIE", "INDEXEMPTY",
    "SORTABLE", "UNF", "NOINDEX",
    "n", "NUMERIC", "INDEXMISSING", "SORTABLE",
    "loc", "GEO", "SORTABLE", "NOINDEX",
    "shape", "GEOSHAPE", "FLAT", "INDEXMISSING", "SORTABLE",
    "v", "VECTOR", "HNSW", "14", "TYPE", "FLOAT16", "DIM", "4", "DISTANCE_METRIC", "IP",
    "M", "8", "EF_CONSTRUCTION", "100", "EF_RUNTIME", "20", "EPSILON", "0.02",
    "w", "VECTOR", "FLAT", "10", "TYPE", "FLOAT32", "DIM", "3", "DISTANCE_METRIC", "L2",
    "INITIAL_CAP", "10", "BLOCK_SIZE", "100", "INDEXMISSING",
]


def _read_both(redis_url: str, name: str) -> IndexInfo:
    """Read ``name`` under RESP2 and RESP3; they must agree; return the RESP2 reading."""
    infos = {}
    for protocol in (2, 3):
        client = connect(redis_url, protocol=protocol)
        try:
            infos[protocol] = read_index(client, name)
        finally:
            client.close()
    assert infos[2].schema == infos[3].schema
    assert infos[2].stats == infos[3].stats
    assert infos[2].unparsed == infos[3].unparsed == {}
    return infos[2]


@pytest.fixture
def everything(redis_client: Any, redis_url: str) -> IndexInfo:
    redis_client.execute_command(*EVERYTHING)
    return _read_both(redis_url, "everything")


def test_index_options(everything: IndexInfo) -> None:
    index = everything.schema.index
    assert index.name == "everything"
    assert index.storage_type == "hash"
    assert index.prefix == ("doc:", "item:")
    assert index.filter == "@n > 0"
    assert index.language == "german"
    assert index.language_field == "lang"
    assert index.score == 0.5
    assert index.score_field == "rank"
    assert index.payload_field == "pl"
    assert index.stopwords == ("bar", "foo")
    assert (index.maxtextfields, index.nooffsets, index.nofields, index.nofreqs) == (
        True, True, True, True)
    assert index.nohl is True  # NOOFFSETS implies NOHL


def test_text_and_tag(everything: IndexInfo) -> None:
    schema = everything.schema
    assert schema.field_names() == ["title", "g", "n", "loc", "shape", "v", "w"]
    title = schema.field("title")
    assert title is not None and title.path == "t" and title.type == "text"
    assert title.attrs == TextAttrs(weight=2.5, no_stem=True, withsuffixtrie=True,
                                    index_empty=True, index_missing=True, sortable=True,
                                    unf=True)
    # PHONETIC is not in FT.INFO: None, and said so
    assert title.unknown_attrs == ("phonetic_matcher",)
    g = schema.field("g")
    assert g is not None and g.path is None
    assert g.attrs == TagAttrs(separator=";", case_sensitive=True, withsuffixtrie=True,
                               index_empty=True, sortable=True, unf=True, no_index=True)
    assert g.unknown_attrs == ()


def test_numeric_geo_geoshape(everything: IndexInfo) -> None:
    schema = everything.schema
    n, loc, shape = schema.field("n"), schema.field("loc"), schema.field("shape")
    assert n is not None and n.attrs == NumericAttrs(sortable=True, index_missing=True)
    assert loc is not None and loc.attrs == GeoAttrs(sortable=True, no_index=True)
    assert shape is not None and shape.attrs == GeoshapeAttrs(
        coord_system="flat", index_missing=True, sortable=True)


def test_vectors(everything: IndexInfo) -> None:
    v, w = everything.schema.field("v"), everything.schema.field("w")
    assert v is not None and w is not None
    assert v.attrs == VectorAttrs(dims=4, algorithm="hnsw", datatype="float16",
                                  distance_metric="ip", m=8, ef_construction=100)
    # EF_RUNTIME, EPSILON and INITIAL_CAP were given, but FT.INFO does not say them
    assert v.unknown_attrs == ("ef_runtime", "epsilon", "initial_cap")
    assert w.attrs == VectorAttrs(dims=3, algorithm="flat", datatype="float32",
                                  distance_metric="l2", index_missing=True)
    assert w.unknown_attrs == ("block_size", "initial_cap")
    assert everything.schema.unknown_attrs() == {
        "title": ("phonetic_matcher",),
        "v": ("ef_runtime", "epsilon", "initial_cap"),
        "w": ("block_size", "initial_cap"),
    }


def test_defaults_read_as_defaults(redis_client: Any, redis_url: str) -> None:
    redis_client.execute_command(
        "FT.CREATE", "plain", "ON", "JSON", "SCHEMA", "$.t", "AS", "t", "TEXT",
        "$.g", "AS", "g", "TAG", "$.v", "AS", "v", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32",
        "DIM", "2", "DISTANCE_METRIC", "COSINE")
    schema = _read_both(redis_url, "plain").schema
    index = schema.index
    assert (index.prefix, index.stopwords, index.language, index.score, index.filter) == (
        ("",), None, None, None, None)
    assert not (index.maxtextfields or index.nooffsets or index.nohl or index.nofields
                or index.nofreqs)
    t, g, v = schema.fields
    assert (t.path, t.attrs) == ("$.t", TextAttrs())
    assert (g.path, g.attrs) == ("$.g", TagAttrs())  # JSON: no separator
    # M 16 and EF_CONSTRUCTION 200 are reported, and are the defaults
    assert v.attrs == VectorAttrs(dims=2, algorithm="hnsw")


def test_score_zero_and_empty_stopwords(redis_client: Any, redis_url: str) -> None:
    """FT.INFO leaves out a zero default_score: that is SCORE 0, not the default 1."""
    redis_client.execute_command("FT.CREATE", "zero", "SCORE", "0", "STOPWORDS", "0",
                                 "SCHEMA", "t", "TEXT")
    index = _read_both(redis_url, "zero").schema.index
    assert index.score == 0.0
    assert index.stopwords == ()


def test_stats(redis_client: Any, redis_url: str) -> None:
    redis_client.execute_command("FT.CREATE", "s", "PREFIX", "1", "s:", "SCHEMA",
                                 "n", "NUMERIC", "t", "TEXT")
    redis_client.hset("s:1", mapping={"n": 1, "t": "one"})
    redis_client.hset("s:2", mapping={"n": 2, "t": "two"})
    redis_client.hset("s:3", mapping={"n": "not a number", "t": "three"})
    deadline = time.monotonic() + 5
    info = _read_both(redis_url, "s")
    while info.stats.indexing and time.monotonic() < deadline:
        time.sleep(0.05)
        info = _read_both(redis_url, "s")
    assert info.stats.num_docs == 2
    assert info.stats.indexing_failures == 1
    assert info.stats.indexing is False
    assert info.stats.percent_indexed == 1.0


def test_missing_index_is_one_clear_error(redis_client: Any) -> None:
    with pytest.raises(RvlmError, match="no index named 'nope'"):
        read_index(redis_client, "nope")
