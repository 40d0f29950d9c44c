"""The query check file: both formats, one-line errors for bad input, and the checks asked of a
source and a target index on the real server (RESP2 and RESP3)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from test_apply_helpers import wait_indexed
from test_quality_helpers import load, random_vectors, vector_index

from rvlm.core import vectors
from rvlm.core.errors import RvlmError
from rvlm.core.quality.checks import (
    compare_checks,
    id_key,
    load_query_checks,
    parse_query_checks,
    run_checks,
    source_problems,
)
from rvlm.core.redis.connection import connect, read_index
from rvlm.core.schema.model import IndexDefinition, IndexSchema

DIMS = 8
VEC = [round(float(x), 3) for x in np.linspace(-1, 1, DIMS)]

CHECKS = {
    "queries": [
        {"name": "red_cheap", "query": "@category:{red} @price:[0 50]"},
        {"name": "red_near", "query": "(@category:{red})=>[KNN 5 @embedding $vec]",
         "params": {"vec": VEC}, "order": True},
        {"name": "words", "query": "@title:(item)", "limit": 20},
    ],
    "fetch_ids": ["3", 4],
    "keys_exist": ["p:5"],
}


def write(tmp_path, data, name="checks.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# -------------------------------------------------------------------------- loading


def test_both_formats_load(tmp_path):
    checks = load_query_checks(write(tmp_path, CHECKS))
    assert [q.name for q in checks.queries] == ["red_cheap", "red_near", "words"]
    near = checks.queries[1]
    assert near.params["vec"] == tuple(VEC) and near.order and near.limit == 1000
    assert near.vector_fields() == {"vec": "embedding"}
    assert near.sort_by() == "__embedding_score"
    assert checks.queries[0].sort_by() is None
    assert checks.names() == ["red_cheap", "red_near", "words", "fetch:3", "fetch:4",
                              "key:p:5"]
    rvl = load_query_checks(write(tmp_path, "fetch_ids: [a, b]\nkeys_exist: ['doc:1']\n"))
    assert rvl.fetch_ids == ("a", "b") and rvl.keys_exist == ("doc:1",) and not rvl.queries


def test_knn_alias_and_vector_range_params():
    [q] = parse_query_checks({"queries": [{
        "name": "n", "query": "*=>[KNN 3 @vec\\-1 $v EF_RUNTIME 50 AS dist]",
        "params": {"v": [1, 2]}}]}).queries
    assert q.vector_fields() == {"v": "vec-1"} and q.sort_by() == "dist"
    [r] = parse_query_checks({"queries": [{
        "name": "r", "query": "@emb:[VECTOR_RANGE 0.2 $b]", "params": {"b": [1.0]}}]}).queries
    assert r.vector_fields() == {"b": "emb"} and r.sort_by() is None


@pytest.mark.parametrize("text, message", [
    ("queries: [\n  {name: a, query: x\n", "not valid YAML (line"),
    ("", "got an empty file"),
    ("- a\n", "expected a mapping with queries, fetch_ids or keys_exist, got list"),
    ("fetch_id: [1]\n", "unknown key 'fetch_id'"),
    ("{}\n", "no checks"),
    ("queries: {a: 1}\n", "queries: expected a list, got dict"),
    ("queries: [x]\n", "queries[0]: expected a mapping with name and query"),
    ("queries: [{query: '*'}]\n", "queries[0]: name: expected a non-empty string"),
    ("queries: [{name: a}]\n", "queries[0] (a): query: expected a non-empty query string"),
    ("queries: [{name: a, query: '*', sort: x}]\n", "unknown key 'sort'"),
    ("queries: [{name: a, query: '*', order: 'yes'}]\n", "order: expected true or false"),
    ("queries: [{name: a, query: '*', limit: 0}]\n", "limit: expected an integer from 1"),
    ("queries: [{name: a, query: '*', params: [1]}]\n", "params: expected a mapping"),
    ("queries: [{name: a, query: '*', params: {v: []}}]\n", "params.v: an empty list"),
    ("queries: [{name: a, query: '*', params: {v: [1, x]}}]\n",
     "params.v: expected a list of finite numbers, found 'x'"),
    ("queries: [{name: a, query: '*', params: {v: [1, .nan]}}]\n",
     "expected a list of finite numbers, found nan"),
    ("queries: [{name: a, query: '*', params: {v: {x: 1}}}]\n",
     "params.v: expected a string, a number or a list of numbers, got dict"),
    ("queries: [{name: a, query: '@t:{x}', params: {v: [1, 2]}}]\n",
     "params.v is a list of numbers, but no KNN or VECTOR_RANGE clause of the query uses $v"),
    ("queries: [{name: a, query: '*=>[KNN 3 @e $v]'}]\n",
     "the query uses $v, which params does not give"),
    ("queries: [{name: a, query: '*'}, {name: a, query: '*'}]\n", "two checks are named 'a'"),
    ("fetch_ids: 3\n", "fetch_ids: expected a list of ids, got int"),
    ("keys_exist: [[1]]\n", "keys_exist[0]: expected a non-empty string or an integer"),
])
def test_bad_files_get_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(RvlmError) as err:
        load_query_checks(path)
    line = str(err.value)
    assert message in line and "\n" not in line and line.startswith(str(path))


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(RvlmError, match=r"nope.yaml: query check file not found"):
        load_query_checks(tmp_path / "nope.yaml")


def test_fetch_ids_build_keys_like_rvl():
    def schema(prefix, sep=":"):
        return IndexSchema(index=IndexDefinition(name="i", prefix=prefix, key_separator=sep),
                           fields=())
    assert id_key(schema("doc"), "7") == "doc:7"
    assert id_key(schema("doc:"), "7") == "doc:7"
    assert id_key(schema(""), "7") == "7"
    assert id_key(schema("doc", "-"), "7") == "doc-7"


# -------------------------------------------------------------------------- real server


@pytest.fixture
def client(redis_client, redis_url, protocol):
    c = connect(redis_url)
    yield c
    c.close()


EXTRA = ["title", "TEXT", "category", "TAG", "price", "NUMERIC"]


def shop(client) -> np.ndarray:
    data = random_vectors(60, DIMS)
    vector_index(client, "src", "p:", DIMS, metric="L2", extra=EXTRA, field="embedding")
    load(client, "p:", data, field="embedding", fields=lambda i: {
        "title": f"item {i}" if i % 3 else f"thing {i}",
        "category": "red" if i % 2 else "blue", "price": i})
    wait_indexed(client, "src")
    return data


def test_checks_pass_an_index_only_change_and_fail_when_a_filtered_field_goes(client, tmp_path):
    data = shop(client)
    checks = load_query_checks(write(tmp_path, CHECKS))
    source_schema = read_index(client, "src").schema
    before = run_checks(client, source_schema, checks)
    assert not source_problems(checks, before)
    assert before["red_cheap"].total == 25
    near = before["red_near"]
    dist = ((data - np.asarray(VEC, dtype=np.float32)) ** 2).sum(axis=1)
    red = [i for i in np.argsort(dist) if i % 2][:5]
    assert list(near.keys) == [f"p:{i}" for i in red]  # sorted by distance
    assert before["words"].total == 40 and len(before["words"].keys) == 20
    assert before["fetch:3"].total == 1 and before["key:p:5"].total == 1

    # an index-only change: a sortable price and an HNSW graph, over the same documents
    vector_index(client, "same", "p:", DIMS, metric="L2", field="embedding",
                 extra=["title", "TEXT", "category", "TAG", "price", "NUMERIC", "SORTABLE"])
    wait_indexed(client, "same")
    after = run_checks(client, read_index(client, "same").schema, checks)
    results = compare_checks(checks, before, after)
    assert [r.name for r in results] == ["query_check:red_cheap", "query_check:red_near",
                                        "query_check:words", "fetch:3", "fetch:4", "key:p:5"]
    assert all(r.passed for r in results), results
    assert "compared by count" in results[2].details

    # the category field removed: both queries that filter on it now find nothing
    vector_index(client, "less", "p:", DIMS, metric="L2", field="embedding",
                 extra=["title", "TEXT", "price", "NUMERIC"])
    wait_indexed(client, "less")
    after = run_checks(client, read_index(client, "less").schema, checks)
    results = {r.name: r for r in compare_checks(checks, before, after)}
    assert not results["query_check:red_cheap"].passed
    assert results["query_check:red_cheap"].details == "the source found 25, the target 0"
    assert not results["query_check:red_near"].passed
    assert results["query_check:words"].passed and results["fetch:3"].passed


def test_vector_params_are_encoded_to_each_index_datatype(client, tmp_path):
    data = shop(client)
    half = vectors.encode_batch(data, "float16")
    vector_index(client, "half", "h:", DIMS, datatype="FLOAT16", metric="L2", extra=EXTRA,
                 field="embedding")
    load(client, "h:", half, field="embedding", fields=lambda i: {
        "title": f"item {i}", "category": "red" if i % 2 else "blue", "price": i})
    wait_indexed(client, "half")
    checks = parse_query_checks({"queries": [CHECKS["queries"][1]]})
    answers = run_checks(client, read_index(client, "half").schema, checks)
    assert answers["red_near"].error is None and answers["red_near"].total == 5
    # a float32 vector against the float16 index is what clients get wrong: the server refuses
    src = read_index(client, "src").schema
    wrong = run_checks(client, read_index(client, "half").schema, checks,
                       encode=lambda f, v: vectors.encode_batch(np.asarray([v]), "float32")[0])
    assert wrong["red_near"].error
    moved = compare_checks(checks, run_checks(client, src, checks), answers,
                           key_map=lambda k: "h:" + k[2:])
    assert moved[0].passed, moved


def test_a_query_the_source_refuses_is_named(client):
    shop(client)
    checks = parse_query_checks({"queries": [
        {"name": "broken", "query": "@price:[abc"},
        {"name": "far", "query": "*=>[KNN 3 @embedding $v]", "params": {"v": [1.0, 2.0]}}]})
    answers = run_checks(client, read_index(client, "src").schema, checks)
    problems = source_problems(checks, answers)
    assert len(problems) == 2
    assert problems[0].startswith("query check 'broken' fails on the source index: ")
    assert "has 8 dims, the parameter gives 2 numbers" in problems[1]
