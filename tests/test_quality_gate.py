"""The quality gate over two live indexes (a source and a converted copy): source answers kept in
the backup dir and re-used, recall under a floor, query checks with vector parameters encoded
for each side, and what happens when something was not stored."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from test_apply_helpers import wait_indexed
from test_quality_helpers import cone, converted_index, load, prefix_map, vector_index

from rvlm.core import vectors
from rvlm.core.errors import RvlmError
from rvlm.core.plugins.documents import Document
from rvlm.core.quality.answers import ANSWERS_NAME, read_answers
from rvlm.core.quality.checks import parse_query_checks
from rvlm.core.quality.estimate import vector_matrix
from rvlm.core.quality.gate import measure, take_source_answers
from rvlm.core.quality.model import QualityOptions, Sides
from rvlm.core.quality.planning import plan_quality
from rvlm.core.redis.connection import read_index

DIMS = 32
EXTRA = ["category", "TAG"]
CHECKS = {"queries": [
    {"name": "red", "query": "@category:{red}", "limit": 500},
    {"name": "near", "query": "(@category:{red})=>[KNN 5 @emb $v]",
     "params": {"v": [0.1] * DIMS}, "order": True}],
    "fetch_ids": ["1"]}


def two_sides(client, datatype="bfloat16") -> Sides:
    data = cone(600, DIMS, 0.1)
    vector_index(client, "src", "s:", DIMS, extra=EXTRA)
    load(client, "s:", data, fields=lambda i: {"category": "red" if i % 2 else "blue"})
    wait_indexed(client, "src")
    scheme = converted_index(client, "dst", "d:", data, datatype)
    pipe = client.pipeline(transaction=False)
    for i in range(600):  # the converted copy keeps the other fields, like a migration
        pipe.hset(f"d:{i}", "category", "red" if i % 2 else "blue")
    pipe.execute()
    client.execute_command("FT.DROPINDEX", "dst")
    vector_index(client, "dst", "d:", DIMS, datatype=datatype.upper(), extra=EXTRA)
    wait_indexed(client, "dst")
    return Sides(fingerprint="a" * 32, source=read_index(client, "src").schema,
                 target=read_index(client, "dst").schema, schemes={"emb": scheme},
                 key_map=prefix_map("s:", "d:"))


def test_bfloat16_on_a_narrow_cone_is_measured_under_the_floor(redis_client, tmp_path):
    sides = two_sides(redis_client)
    assert sides.fields() == [("emb", "emb")]
    options = QualityOptions(min_recall=0.9, recall_queries=40,
                             query_checks=parse_query_checks(CHECKS))
    answers = take_source_answers(redis_client, sides, tmp_path, options)
    assert (tmp_path / ANSWERS_NAME).exists()
    assert len(answers.field("emb").probes) == 40
    assert [c.name for c in answers.checks] == ["red", "near", "fetch:1"]
    result = measure(redis_client, sides, answers, options)
    [emb] = result.fields
    assert emb.queries == 40 and emb.recall_at_k < 0.9 and result.below_floor == [emb]
    by_name = {c.name: c for c in result.checks}
    assert not by_name["recall:emb"].passed
    assert "under --min-recall 0.9" in by_name["recall:emb"].details
    # the same ids for a filter; the vector parameter is encoded as float32 for the source and
    # converted to bfloat16 for the target, so the target accepts it
    assert by_name["query_check:red"].passed, by_name["query_check:red"]
    assert "refused" not in by_name["query_check:near"].details
    assert by_name["fetch:1"].passed
    assert result.to_dict()["emb"]["passed"] is False


def test_stored_answers_are_reused_and_the_gone_source_is_not_asked(redis_client, tmp_path):
    sides = two_sides(redis_client, "float16")
    options = QualityOptions(recall_queries=30)
    first = take_source_answers(redis_client, sides, tmp_path, options)
    stamp = (tmp_path / ANSWERS_NAME).stat().st_mtime_ns
    again = take_source_answers(redis_client, sides, tmp_path, QualityOptions(recall_queries=5))
    assert again == first and (tmp_path / ANSWERS_NAME).stat().st_mtime_ns == stamp
    redis_client.execute_command("FT.DROPINDEX", "src")  # as a drop_recreate apply does
    checks = parse_query_checks(CHECKS)
    later = take_source_answers(redis_client, sides, tmp_path,
                                QualityOptions(query_checks=checks))
    assert later == first  # nothing asked of a source that is gone
    result = measure(redis_client, sides, later,
                     QualityOptions(min_recall=0.5, query_checks=checks), directory=tmp_path)
    names = {c.name: c for c in result.checks}
    assert names["recall:emb"].passed
    for name in ("query_check:red", "query_check:near", "fetch:1"):
        assert not names[name].passed and "no source answer stored" in names[name].details


@pytest.mark.parametrize(("given", "expected"), [
    ({}, 33),  # 100 x 200 / 600 documents: sized to the source
    ({"min_recall": 0.1}, 100),  # a floor decides on the result: the full number
    ({"recall_queries": 50}, 50),  # the user's number
])
def test_recall_queries_are_sized_to_a_large_source_unless_given_or_decided_on(
        redis_client, tmp_path, monkeypatch, given, expected):
    """Without --recall-queries and --min-recall, a source over SIZED_FROM documents gets
    100 x SIZED_FROM / documents queries (at 1M x 128-d FLAT: 20, each query reading every
    vector); here SIZED_FROM is 200 and the source holds 600."""
    from rvlm.core.quality import defaults

    monkeypatch.setattr(defaults, "SIZED_FROM", 200)
    sides = two_sides(redis_client, "float16")
    answers = take_source_answers(redis_client, sides, tmp_path, QualityOptions(**given))
    assert len(answers.field("emb").probes) == expected
    result = measure(redis_client, sides, answers, QualityOptions(**given))
    assert result.fields[0].queries == expected


def test_sized_queries():
    from rvlm.core.quality.defaults import sized_queries

    assert sized_queries(50_000) == sized_queries(200_000) == 100
    assert sized_queries(400_000) == 50
    assert sized_queries(1_000_000) == 20 == sized_queries(10_000_000)


def test_a_check_the_source_refuses_stops_before_anything(redis_client, tmp_path):
    sides = two_sides(redis_client, "float16")
    bad = parse_query_checks({"queries": [{"name": "oops", "query": "@category:{red"}]})
    with pytest.raises(RvlmError, match="query check 'oops' fails on the source index"):
        take_source_answers(redis_client, sides, tmp_path, QualityOptions(query_checks=bad))
    assert read_answers(tmp_path, sides.fingerprint) is None


@pytest.mark.parametrize("value, message", [
    (1.5, "--min-recall must be a number from 0 to 1"),
    (float("nan"), "--min-recall must be a number from 0 to 1"),
])
def test_options_are_checked(value, message):
    with pytest.raises(RvlmError, match=message):
        QualityOptions(min_recall=value)
    with pytest.raises(RvlmError, match="--recall-queries must be a positive integer"):
        QualityOptions(recall_queries=0)
    with pytest.raises(RvlmError, match="--recall-k must be a positive integer"):
        QualityOptions(recall_k=0)


def test_plan_section_estimates_datatype_and_defers_the_graph(redis_client):
    data = cone(400, DIMS, 0.1)
    vector_index(redis_client, "src", "s:", DIMS)
    load(redis_client, "s:", data)
    wait_indexed(redis_client, "src")
    source = read_index(redis_client, "src").schema
    emb = source.field("emb")
    half = emb.evolve(attrs=attrs.evolve(emb.attrs, datatype="float16"))
    graph = emb.evolve(attrs=attrs.evolve(emb.attrs, algorithm="hnsw", m=4))
    both = emb.evolve(attrs=attrs.evolve(emb.attrs, algorithm="hnsw",
                                                       datatype="bfloat16"))

    def sample(names):
        return [Document(f"s:{i}".encode(), {"emb": data[i].tobytes()}) for i in range(400)]

    values = vector_matrix(sample(["emb"]), "emb", "hash", "float32", DIMS)
    schemes = {"emb": vectors.choose_scheme("float32", "bfloat16", "COSINE", values)}
    q = plan_quality(source, source.with_fields([half]), renames={}, schemes={
        "emb": vectors.choose_scheme("float32", "float16", "COSINE", values)}, sample=sample,
        documents=400, min_recall=0.99)
    assert q["emb"]["k"] == 10 and q["emb"]["sample"] == 400
    assert 0.5 < q["emb"]["estimated_recall_at_k"] < 0.99 and q["emb"]["min_recall"] == 0.99
    g = plan_quality(source, source.with_fields([graph]), renames={}, schemes={},
                     sample=sample, documents=400)
    assert g == {"emb": {"estimated_recall_at_k": None, "k": 10,
                         "measured_at_apply": "algorithm flat -> hnsw, m default -> 4"}}
    b = plan_quality(source, source.with_fields([both]), renames={}, schemes=schemes,
                     sample=sample, documents=400)
    assert b["emb"]["estimated_recall_at_k"] < q["emb"]["estimated_recall_at_k"]
    assert b["emb"]["measured_at_apply"] == "algorithm flat -> hnsw"
    assert plan_quality(source, source, renames={}, schemes={}, sample=sample,
                        documents=400) == {}
    assert np.isfinite(b["emb"]["estimated_recall_at_k"])
