"""The schema model, the FT.CREATE renderer and the FT.INFO reader agree, on a real server.

Property, for any schema the server accepts (hash and JSON, every index option, every field
type with every flag):

* create it, read it back under RESP2 and RESP3: both readers give the same model, and it is the
  schema that was created, except for the values FT.INFO cannot report (those are ``None`` and
  named in ``unknown_attrs``);
* render what was read, create that under another name, read it back: the same model again;
* the YAML form round-trips exactly, through real YAML text.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import redis
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rvlm.core.redis.capabilities import Capabilities, detect
from rvlm.core.redis.connection import connect, read_index
from rvlm.core.schema.ftcreate import create_arguments
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
from rvlm.core.schema.yaml_format import dump_schema, schema_from_dict, schema_to_dict

#: RVLM_ROUNDTRIP_EXAMPLES=2000 runs a deeper search than the default CI budget.
EXAMPLES = int(os.environ.get("RVLM_ROUNDTRIP_EXAMPLES", "150"))
SOURCE = "rt_src"
COPY = "rt_copy"

PLAIN_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
#: Hash field names that look like FT.CREATE keywords or need quoting in a query.
TRICKY_NAMES = st.sampled_from(["TEXT", "SORTABLE", "AS", "SCHEMA", "weight", "x-y", "a b", "é"])
PHONETIC = st.sampled_from(["dm:en", "dm:fr", "dm:pt", "dm:es"])
LANGUAGES = st.sampled_from(["english", "german", "french", "spanish", "chinese", "russian",
                             "ITALIAN", "dutch"])
FILTERS = st.sampled_from(["@n > 0", "startswith(@__key, \"doc:\")", "@kind == \"a\"", "1"])
PREFIXES = st.sampled_from(["", "doc:", "a:", "user:1:", "x", "doc:"])  # duplicates allowed
STOPWORDS = st.sampled_from(["the", "a", "foo", "Bar", "und", "x"])
WEIGHTS = st.one_of(
    st.sampled_from([1.0, 0.5, 2.0, 3.25, 10.0]),
    st.floats(min_value=0.01, max_value=100.0, allow_nan=False, allow_infinity=False),
)


def _flags(draw: Any, *, unf: bool = True) -> dict[str, bool]:
    """sortable / unf / no_index / index_missing, in combinations the server accepts."""
    sortable = draw(st.booleans())
    no_index = draw(st.booleans())
    out = {
        "sortable": sortable,
        "no_index": no_index,
        # NOINDEX with INDEXMISSING is refused by the server
        "index_missing": False if no_index else draw(st.booleans()),
    }
    if unf:
        out["unf"] = sortable and draw(st.booleans())  # UNF only after SORTABLE
    return out


@st.composite
def vector_attrs(draw: Any, caps: Capabilities) -> VectorAttrs:
    algorithm = draw(st.sampled_from(caps.algorithms))
    values: dict[str, Any] = {
        "dims": draw(st.integers(min_value=1, max_value=32)),
        "algorithm": algorithm,
        "datatype": draw(st.sampled_from(caps.datatypes)),
        "distance_metric": draw(st.sampled_from(["cosine", "l2", "ip"])),
        "index_missing": draw(st.booleans()),
    }
    maybe = lambda s: draw(st.none() | s)  # noqa: E731
    if algorithm in ("flat", "hnsw"):
        values["initial_cap"] = maybe(st.integers(min_value=0, max_value=1000))
    if algorithm == "flat":
        values["block_size"] = maybe(st.integers(min_value=1, max_value=2048))
    if algorithm == "hnsw":
        values["m"] = maybe(st.integers(min_value=2, max_value=64))
        values["ef_construction"] = maybe(st.integers(min_value=1, max_value=500))
        values["ef_runtime"] = maybe(st.integers(min_value=1, max_value=500))
        values["epsilon"] = maybe(st.sampled_from([0.01, 0.001, 0.05, 0.5, 1.0]))
    if algorithm == "svs-vamana":
        values["graph_max_degree"] = maybe(st.integers(min_value=8, max_value=64))
        values["construction_window_size"] = maybe(st.integers(min_value=16, max_value=400))
        values["search_window_size"] = maybe(st.integers(min_value=8, max_value=100))
    return VectorAttrs(**values)


@st.composite
def field_attrs(draw: Any, ftype: str, caps: Capabilities) -> Any:
    if ftype == "text":
        return TextAttrs(
            weight=draw(WEIGHTS),
            no_stem=draw(st.booleans()),
            withsuffixtrie=draw(st.booleans()),
            phonetic_matcher=draw(st.none() | PHONETIC),
            index_empty=draw(st.booleans()),
            **_flags(draw),
        )
    if ftype == "tag":
        return TagAttrs(
            separator=draw(st.none() | st.sampled_from([",", ";", "|", ":", " ", "a"])),
            case_sensitive=draw(st.booleans()),
            withsuffixtrie=draw(st.booleans()),
            index_empty=draw(st.booleans()),
            **_flags(draw),
        )
    if ftype == "numeric":
        return NumericAttrs(**_flags(draw, unf=False))
    if ftype == "geo":
        return GeoAttrs(**_flags(draw, unf=False))
    if ftype == "geoshape":
        return GeoshapeAttrs(coord_system=draw(st.sampled_from(["spherical", "flat"])),
                             **_flags(draw, unf=False))
    return draw(vector_attrs(caps))


@st.composite
def schemas(draw: Any, caps: Capabilities) -> IndexSchema:
    storage = draw(st.sampled_from(["hash", "json"]))
    types = ["text", "tag", "numeric", "geo", "geoshape", "vector"]
    name_strategy = PLAIN_NAMES | TRICKY_NAMES if storage == "hash" else PLAIN_NAMES
    names = draw(st.lists(name_strategy, min_size=1, max_size=6, unique=True))
    fields = []
    for name in names:
        ftype = draw(st.sampled_from(types))
        if storage == "hash":
            # the plain form, "name AS name", or "other AS name"
            path = draw(st.sampled_from([None, name, f"h_{name}"]))
        else:
            path = draw(st.sampled_from(
                [None, f"$.{name}", f"$.doc.{name}", f"$['{name} x']", f"$.{name}_list[*]"]
                if ftype != "vector" else [None, f"$.{name}", f"$.doc.{name}"]
            ))
            if draw(st.integers(0, 9)) == 0:
                path = name = f"$.{name}"  # no AS: the attribute is called by its path
        fields.append(Field(name=name, type=ftype, path=path,
                            attrs=draw(field_attrs(ftype, caps))))
    assume(len({f.name for f in fields}) == len(fields))

    opt = lambda s: draw(st.none() | s)  # noqa: E731
    index = IndexDefinition(
        name=SOURCE,
        prefix=tuple(draw(st.lists(PREFIXES, min_size=1, max_size=3))),
        storage_type=storage,
        key_separator=draw(st.sampled_from([":", "-", "|"])),
        stopwords=opt(st.lists(STOPWORDS, max_size=4)),
        filter=opt(FILTERS),
        language=opt(LANGUAGES),
        language_field=opt(st.sampled_from(["lang", "$.lang"])),
        score=opt(st.sampled_from([0.0, 0.5, 1.0]) | st.floats(min_value=0.0, max_value=1.0)),
        score_field=opt(st.sampled_from(["score", "$.score"])),
        payload_field=opt(st.sampled_from(["payload", "$.payload"])),
        maxtextfields=draw(st.booleans()),
        nooffsets=draw(st.booleans()),
        nohl=draw(st.booleans()),
        nofields=draw(st.booleans()),
        nofreqs=draw(st.booleans()),
    )
    return IndexSchema(index=index, fields=fields)


#: Values FT.INFO cannot report, by field type (the reader sets them None and lists them).
UNREPORTED = {
    "text": ("phonetic_matcher",),
    "vector": ("initial_cap", "block_size", "ef_runtime", "epsilon"),
}


def reportable(schema: IndexSchema) -> IndexSchema:
    """``schema`` without the values the server cannot tell back."""
    fields = []
    for f in schema.fields:
        erase = {k: None for k in UNREPORTED.get(f.type, ())}
        fields.append(f.evolve(attrs=attrs.evolve(f.attrs, **erase), unknown_attrs=()))
    # key_separator is RedisVL's, not the server's: the reader reports the default
    return schema.with_fields(fields).with_index(key_separator=":")


def _create(client: redis.Redis, args: list[str]) -> str | None:
    """None when the server created the index, else its error."""
    try:
        client.execute_command(*args)
    except redis.ResponseError as exc:
        return str(exc)
    return None


def _drop(client: redis.Redis, *names: str) -> None:
    for name in names:
        with contextlib.suppress(redis.ResponseError):
            client.execute_command("FT.DROPINDEX", name)


@pytest.fixture(scope="module")
def clients(redis_url: str) -> Iterator[dict[int, redis.Redis]]:
    by_protocol = {2: connect(redis_url, protocol=2), 3: connect(redis_url, protocol=3)}
    by_protocol[2].flushall()
    _drop(by_protocol[2], SOURCE, COPY)
    yield by_protocol
    _drop(by_protocol[2], SOURCE, COPY)
    for c in by_protocol.values():
        c.close()


@pytest.fixture(scope="module")
def caps(clients: dict[int, redis.Redis]) -> Capabilities:
    return detect(clients[2])


def test_property_holds_on_the_server(clients: dict[int, redis.Redis], caps: Capabilities) -> None:
    c2, c3 = clients[2], clients[3]
    stats = {"accepted": 0, "refused": 0}
    refusals: set[str] = set()

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(schema=schemas(caps))
    def check(schema: IndexSchema) -> None:
        _drop(c2, SOURCE, COPY)
        try:
            error = _create(c2, create_arguments(schema))
            if error is not None:
                stats["refused"] += 1
                refusals.add(error)
                assume(False)
            stats["accepted"] += 1
            first = read_index(c2, SOURCE).schema
            assert read_index(c3, SOURCE).schema == first, "RESP2 and RESP3 readers disagree"
            # what was created is what was read, apart from the values FT.INFO cannot report
            assert first.without_unknowns() == reportable(schema)
            for f, g in zip(schema.fields, first.fields, strict=True):
                lost = [k for k in UNREPORTED.get(f.type, ())
                        if getattr(f.attrs, k) is not None]
                assert set(lost) <= set(g.unknown_attrs), (f.name, lost, g.unknown_attrs)
            # render what was read, create it again, read it again
            assert _create(c2, create_arguments(first, COPY)) is None, create_arguments(first, COPY)
            second = read_index(c3, COPY).schema
            assert second.with_index(name=SOURCE) == first
            assert read_index(c2, COPY).schema == second
            # YAML, through real text, for the generated and the read schema
            for s in (schema, first):
                assert schema_from_dict(schema_to_dict(s)) == s
                assert schema_from_dict(yaml.safe_load(dump_schema(s))) == s
        finally:
            _drop(c2, SOURCE, COPY)

    check()
    print(f"round trip: {stats['accepted']} schemas accepted, {stats['refused']} refused:",
          *sorted(refusals)[:10], sep="\n  ")
    # the strategy must mostly generate schemas the server accepts
    assert stats["accepted"] >= 3 * stats["refused"], stats


def test_yaml_round_trip_of_every_generated_schema(caps: Capabilities) -> None:
    @settings(max_examples=150, deadline=None)
    @given(schema=schemas(caps))
    def check(schema: IndexSchema) -> None:
        data = schema_to_dict(schema)
        assert schema_from_dict(data) == schema
        assert schema_to_dict(schema_from_dict(data)) == data

    check()


def test_canonical_forms_compare_equal() -> None:
    """Two spellings of the same server definition are one model."""
    a = IndexSchema(
        index=IndexDefinition(name="i", storage_type="json", stopwords=["The", "a", "a"],
                              nooffsets=True, language="English", score=1),
        fields=[Field(name="t", type="text", attrs=TextAttrs()),
                Field(name="v", type="vector",
                      attrs=VectorAttrs(dims=4, algorithm="hnsw", m=16, ef_construction=200))],
    )
    b = IndexSchema(
        index=IndexDefinition(name="i", storage_type="json", stopwords=("a", "the"),
                              nooffsets=True, nohl=True),
        fields=[Field(name="t", type="text", path="$.t", attrs=TextAttrs()),
                Field(name="v", type="vector", path="$.v",
                      attrs=VectorAttrs(dims=4, algorithm="hnsw"))],
    )
    assert a == b
    assert a.index.stopwords == ("a", "the")
    h = IndexSchema(index=IndexDefinition(name="h"),
                    fields=[Field(name="t", type="text", path="t", attrs=TextAttrs())])
    assert h.fields[0].path is None
