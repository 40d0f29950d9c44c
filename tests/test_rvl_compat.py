"""Switching from ``rvl migrate`` without surprises (issue #11): RedisVL's files and the
examples of its guide do what an rvl user expects, on the real server, under RESP2 and RESP3.

Each test is one item of the issue, checked the way a user would: the plan's verdict, the
documents after the apply, the answers of queries, and what RedisVL's own files look like
(``tests/data/redisvl`` holds files written by redisvl 0.28.0).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import rvlm
from rvlm import MigrationExecutor, MigrationPlanner
from rvlm.cli.main import app
from rvlm.core.redis.connection import read_index
from rvlm.core.schema.yaml_format import load_schema, schema_from_dict

DATA = Path(__file__).parent / "data" / "redisvl"
COUNT = 12
runner = CliRunner()


def wait_indexed(client: Any, index: str) -> None:
    for _ in range(500):
        info = client.execute_command("FT.INFO", index)
        d = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2], strict=True))
        if not int(d.get(b"indexing", d.get("indexing", 0))):
            return
        time.sleep(0.01)


def search(client: Any, index: str, query: str, *params: Any) -> list[bytes]:
    extra = ["PARAMS", len(params), *params] if params else []
    reply = client.execute_command("FT.SEARCH", index, query, *extra, "NOCONTENT", "LIMIT", "0",
                                   "100", "DIALECT", "2")
    if isinstance(reply, dict):
        return sorted(r[b"id"] for r in reply[b"results"])
    return sorted(reply[1:])


def json_doc(client: Any, key: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(client.execute_command("JSON.GET", key, "$"))[0]
    return found


def make_shop(client: Any, storage: str) -> None:
    """The index RedisVL's shop schema describes, without its category field."""
    if storage == "hash":
        client.execute_command("FT.CREATE", "shop", "ON", "HASH", "PREFIX", "1", "shop:",
                               "SCHEMA", "title", "TEXT", "price", "NUMERIC", "SORTABLE")
        for i in range(COUNT):
            client.hset(f"shop:{i}", mapping={"title": f"item {i}", "price": i,
                                              "category": "even" if i % 2 else "odd"})
    else:
        client.execute_command("FT.CREATE", "shop", "ON", "JSON", "PREFIX", "1", "shop:",
                               "SCHEMA", "$.title", "AS", "title", "TEXT",
                               "$.price", "AS", "price", "NUMERIC", "SORTABLE")
        for i in range(COUNT):
            client.execute_command("JSON.SET", f"shop:{i}", "$", json.dumps(
                {"title": f"item {i}", "price": i, "category": "even" if i % 2 else "odd"}))
    wait_indexed(client, "shop")


# -- unf on NUMERIC ---------------------------------------------------------------------------

@pytest.mark.parametrize("storage", ["hash", "json"])
def test_a_redisvl_exported_target_schema_with_numeric_unf_plans_and_applies(
        redis_client: Any, redis_url: str, tmp_path: Path, protocol: int, storage: str) -> None:
    """RedisVL's IndexSchema.to_yaml() writes ``unf: false`` on every numeric field."""
    target_file = DATA / f"shop_{storage}.yaml"
    assert "unf: false" in target_file.read_text().split("name: price")[1].split("- name")[0]
    make_shop(redis_client, storage)
    before = search(redis_client, "shop", "@price:[3 7]")
    plan = MigrationPlanner().create_plan("shop", redis_url=redis_url,
                                          target_schema_path=target_file)
    assert plan.supported, plan.blocked_reasons
    # the only difference is the new field: price's unf changes nothing
    assert [(c.type, c.new_field) for c in plan.changes] == [("add_field", "category")]
    report = MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert search(redis_client, "shop", "@price:[3 7]") == before
    assert search(redis_client, "shop", "@category:{even}") == sorted(
        f"shop:{i}".encode() for i in range(COUNT) if i % 2)
    # and in a patch, either way
    for unf in (False, True):
        p = MigrationPlanner().create_plan("shop", redis_url=redis_url, schema_patch={
            "version": 1, "changes": {
                "update_fields": [{"name": "price", "attrs": {"unf": unf}}],
                "add_fields": [{"name": "qty", "type": "numeric",
                                "attrs": {"sortable": True, "unf": unf}}]}})
        assert p.supported and [c.type for c in p.changes] == ["add_field"], p.changes


# -- a JSON vector datatype change between float types ----------------------------------------

@pytest.mark.parametrize(("before", "after"), [("float32", "float16"), ("float32", "bfloat16"),
                                               ("float32", "float64"), ("float16", "float32")])
def test_a_json_float_datatype_change_is_index_only_and_lossless(
        redis_client: Any, redis_url: str, tmp_path: Path, protocol: int, before: str,
        after: str) -> None:
    redis_client.execute_command(
        "FT.CREATE", "jv", "ON", "JSON", "PREFIX", "1", "jv:", "SCHEMA",
        "$.emb", "AS", "emb", "VECTOR", "FLAT", "6", "TYPE", before.upper(), "DIM", "4",
        "DISTANCE_METRIC", "COSINE")
    rng = np.random.default_rng(7)
    for i in range(COUNT):
        redis_client.execute_command("JSON.SET", f"jv:{i}", "$", json.dumps(
            {"emb": [float(x) for x in rng.normal(size=4)], "n": i}))
    wait_indexed(redis_client, "jv")
    originals = {i: redis_client.execute_command("JSON.GET", f"jv:{i}", "$")
                 for i in range(COUNT)}
    plan = MigrationPlanner().create_plan("jv", redis_url=redis_url, schema_patch={
        "version": 1, "changes": {"update_fields": [{"name": "emb",
                                                     "attrs": {"datatype": after}}]}})
    assert plan.supported and not plan.lossy and not plan.operations
    [change] = plan.changes
    assert "index only" in change.summary and "no document is rewritten" in change.summary
    assert not yaml.safe_load(plan.to_yaml())["rvlm"]["lossy"]
    report = MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert report.documents_rewritten == 0
    # every number exactly as it was; the index reads them in the new datatype
    assert {i: redis_client.execute_command("JSON.GET", f"jv:{i}", "$")
            for i in range(COUNT)} == originals
    info = rvlm.validate(plan, redis_url=redis_url)
    assert info.succeeded
    query = np.asarray(json_doc(redis_client, "jv:3")["emb"], dtype=np.float64)
    vec = query.astype({"float16": np.float16, "float32": np.float32,
                        "float64": np.float64}.get(after, np.float32)).tobytes()
    if after == "bfloat16":
        vec = (np.asarray(query, np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    assert search(redis_client, "jv", "*=>[KNN 1 @emb $v]", "v", vec) == [b"jv:3"]


# -- add_fields with a JSON path on a hash index ----------------------------------------------

def test_the_guides_add_field_with_a_json_path_on_hash_is_ignored_with_a_warning(
        redis_client: Any, redis_url: str, tmp_path: Path, protocol: int) -> None:
    """The guide's own patch: ``add_fields: [{name: category, type: tag, path: $.category}]``."""
    make_shop(redis_client, "hash")
    plan = MigrationPlanner().create_plan("shop", redis_url=redis_url, schema_patch={
        "version": 1, "changes": {"add_fields": [{"name": "category", "type": "tag",
                                                  "path": "$.category",
                                                  "attrs": {"separator": "|"}}]}})
    assert plan.supported, plan.blocked_reasons
    assert plan.target_schema.field("category").path is None
    [w] = [w for w in plan.warnings if "'$.category'" in w]
    assert "stores hashes" in w and "ignored (as RedisVL does)" in w
    report = MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert search(redis_client, "shop", "@category:{odd}") == sorted(
        f"shop:{i}".encode() for i in range(COUNT) if not i % 2)
    [check] = [c for c in report.validation.checks if c.name == "add_field:category"]
    assert check.passed and "finds" in check.details


def test_the_same_from_a_target_schema(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    make_shop(redis_client, "hash")
    target = tmp_path / "target.yaml"
    target.write_text((DATA / "shop_hash.yaml").read_text().replace(
        "- name: category\n  type: tag\n", "- name: category\n  type: tag\n  path: $.category\n"))
    plan = MigrationPlanner().create_plan("shop", redis_url=redis_url, target_schema_path=target)
    assert plan.supported and plan.target_schema.field("category").path is None
    assert any("'$.category' is a JSON path" in w for w in plan.warnings)
    assert "path" not in plan.requested_changes["add_fields"][0]


def test_validation_fails_a_new_field_that_indexes_none_of_the_documents_holding_it(
        redis_client: Any, redis_url: str, protocol: int) -> None:
    """What the guide's patch did before: an attribute reading a hash field called
    ``$.category`` indexes nothing, and validation said ``succeeded``."""
    make_shop(redis_client, "hash")
    plan = MigrationPlanner().create_plan("shop", redis_url=redis_url, schema_patch={
        "version": 1, "changes": {"add_fields": [{"name": "category", "type": "tag"}]}})
    broken = plan.target_schema.with_fields(
        f.evolve(path="$.category") if f.name == "category" else f
        for f in plan.target_schema.fields)
    plan = attrs.evolve(plan, target_schema=broken)
    redis_client.execute_command("FT.DROPINDEX", "shop")
    redis_client.execute_command("FT.CREATE", "shop", "ON", "HASH", "PREFIX", "1", "shop:",
                                 "SCHEMA", "title", "TEXT", "price", "NUMERIC", "SORTABLE",
                                 "$.category", "AS", "category", "TAG")
    wait_indexed(redis_client, "shop")
    assert search(redis_client, "shop", "@category:{odd}") == []
    report = rvlm.validate(plan, redis_url=redis_url)
    assert report.result == "failed"
    [check] = [c for c in report.validation.checks if c.name == "add_field:category"]
    assert not check.passed and "indexes nothing" in check.details
    # and a tag field that really indexes them passes
    good = MigrationPlanner().create_plan("shop", redis_url=redis_url, schema_patch={
        "version": 1, "changes": {"add_fields": [{"name": "title2", "type": "text",
                                                  "path": "title"}]}})
    redis_client.execute_command("FT.ALTER", "shop", "SCHEMA", "ADD", "title", "AS", "title2",
                                 "TEXT")
    wait_indexed(redis_client, "shop")
    checks = {c.name: c for c in rvlm.validate(good, redis_url=redis_url).validation.checks}
    assert checks["add_field:title2"].passed, checks["add_field:title2"].details


# -- a JSON field rename moves the value -----------------------------------------------------

def make_articles(client: Any) -> dict[str, dict[str, Any]]:
    client.execute_command("FT.CREATE", "articles", "ON", "JSON", "PREFIX", "1", "a:", "SCHEMA",
                           "$.title", "AS", "title", "TEXT", "$.year", "AS", "year", "NUMERIC")
    docs = {}
    for i in range(COUNT):
        d: dict[str, Any] = {"title": f"story {i} {'moon' if i % 3 else 'sun'}", "year": 2000 + i}
        if i == 5:
            del d["title"]
        docs[f"a:{i}"] = d
        client.execute_command("JSON.SET", f"a:{i}", "$", json.dumps(d))
    wait_indexed(client, "articles")
    return docs


@pytest.mark.parametrize("path", [None, "$.meta.headline"])
def test_a_json_rename_moves_the_value(redis_client: Any, redis_url: str, tmp_path: Path,
                                       protocol: int, path: str | None) -> None:
    """The guide: renaming updates the documents. By default the value moves to
    ``$.<new name>``; a path in update_fields puts it there, creating missing parents."""
    docs = make_articles(redis_client)
    moon = search(redis_client, "articles", "@title:moon")
    changes: dict[str, Any] = {"rename_fields": [{"old_name": "title", "new_name": "headline"}]}
    if path:
        changes["update_fields"] = [{"name": "headline", "path": path}]
    plan = MigrationPlanner().create_plan("articles", redis_url=redis_url,
                                          schema_patch={"version": 1, "changes": changes})
    assert plan.supported, plan.blocked_reasons
    assert yaml.safe_load(plan.to_yaml())["rename_operations"]["rename_fields"] == [
        {"old_name": "title", "new_name": "headline"}]
    report = MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert report.documents_rewritten == COUNT - 1   # a:5 has no title
    for key, d in docs.items():
        want = dict(d)
        title = want.pop("title", None)
        if title is not None:
            if path:
                want["meta"] = {"headline": title}
            else:
                want["headline"] = title
        assert json_doc(redis_client, key) == want, key
    assert search(redis_client, "articles", "@headline:moon") == moon
    assert rvlm.rollback(tmp_path / "b", redis_url=redis_url).succeeded
    assert {k: json_doc(redis_client, k) for k in docs} == docs


def test_a_json_rename_of_the_attribute_only_keeps_the_value(
        redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    docs = make_articles(redis_client)
    plan = MigrationPlanner().create_plan("articles", redis_url=redis_url, schema_patch={
        "version": 1, "changes": {
            "rename_fields": [{"old_name": "title", "new_name": "headline"}],
            "update_fields": [{"name": "headline", "path": "$.title"}]}})
    assert plan.supported and not plan.operations
    report = MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=tmp_path / "b")
    assert report.succeeded and report.documents_rewritten == 0
    assert {k: json_doc(redis_client, k) for k in docs} == docs
    assert search(redis_client, "articles", "@headline:sun")


# -- adding a vector field once the vectors are written ---------------------------------------

@pytest.mark.parametrize("storage", ["hash", "json"])
def test_a_vector_field_can_be_added_once_the_documents_hold_vectors(
        redis_client: Any, redis_url: str, tmp_path: Path, protocol: int, storage: str) -> None:
    make_shop(redis_client, storage)
    add = {"version": 1, "changes": {"add_fields": [{
        "name": "emb", "type": "vector",
        "attrs": {"dims": 4, "algorithm": "hnsw", "datatype": "float32"}}]}}
    plan = MigrationPlanner().create_plan("shop", redis_url=redis_url, schema_patch=add)
    assert not plan.supported
    assert any("none of" in r and "write a 4-dim float32 vector" in r
               for r in plan.blocked_reasons), plan.blocked_reasons
    # the way the reason names: write the vectors first
    rng = np.random.default_rng(1)
    vectors = {i: rng.normal(size=4).astype(np.float32) for i in range(COUNT)}
    for i, v in vectors.items():
        if storage == "hash":
            redis_client.hset(f"shop:{i}", "emb", v.tobytes())
        else:
            redis_client.execute_command("JSON.SET", f"shop:{i}", "$.emb",
                                         json.dumps([float(x) for x in v]))
    plan = MigrationPlanner().create_plan("shop", redis_url=redis_url, schema_patch=add)
    assert plan.supported, plan.blocked_reasons
    report = MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert search(redis_client, "shop", "*=>[KNN 1 @emb $v]", "v",
                  vectors[4].tobytes()) == [b"shop:4"]


def test_a_vector_field_over_vectors_of_the_wrong_size_stays_blocked(
        redis_client: Any, redis_url: str) -> None:
    make_shop(redis_client, "hash")
    for i in range(COUNT):
        redis_client.hset(f"shop:{i}", "emb", np.zeros(4 if i != 3 else 3, np.float32).tobytes())
    redis_client.hdel("shop:7", "emb")
    plan = MigrationPlanner().create_plan("shop", redis_url=redis_url, schema_patch={
        "version": 1, "changes": {"add_fields": [{"name": "emb", "type": "vector",
                                                  "attrs": {"dims": 4}}]}})
    assert not plan.supported
    [reason] = plan.blocked_reasons
    assert "shop:3" in reason and "12 bytes, not 4 x 4 = 16" in reason
    redis_client.hset("shop:3", "emb", np.zeros(4, np.float32).tobytes())
    plan = MigrationPlanner().create_plan("shop", redis_url=redis_url, schema_patch={
        "version": 1, "changes": {"add_fields": [{"name": "emb", "type": "vector",
                                                  "attrs": {"dims": 4}}]}})
    assert plan.supported
    assert any("1 of 12 sampled documents have no vector" in w for w in plan.all_warnings())


# -- rvlm index info --yaml is a schema RedisVL loads -----------------------------------------

#: What RedisVL 0.28's IndexSchema takes on a field (any other key refuses the whole file),
#: and its top-level keys (others are ignored): recorded from redisvl 0.28.0.
REDISVL_FIELD_KEYS = {"name", "type", "path", "attrs"}
REDISVL_TOP_KEYS = {"index", "fields", "version"}


def test_index_info_yaml_loads_in_redisvl_and_round_trips_in_rvlm(
        redis_client: Any, redis_url: str, protocol: int) -> None:
    redis_client.execute_command(
        "FT.CREATE", "cat", "ON", "HASH", "PREFIX", "1", "cat:", "LANGUAGE", "german",
        "SCHEMA", "title", "TEXT", "PHONETIC", "dm:en", "n", "NUMERIC", "SORTABLE",
        "emb", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", "2", "DISTANCE_METRIC", "L2")
    result = runner.invoke(app, ["index", "info", "-i", "cat", "--url", redis_url, "--yaml"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    data = yaml.safe_load(text)
    assert set(data) - {"rvlm"} <= REDISVL_TOP_KEYS
    for field in data["fields"]:
        assert set(field) <= REDISVL_FIELD_KEYS, field
    # what FT.INFO cannot report sits under the key RedisVL ignores, and rvlm reads it back
    assert data["rvlm"]["unknown_attrs"] == {"title": ["phonetic_matcher"],
                                             "emb": ["ef_runtime", "epsilon", "initial_cap"]}
    assert schema_from_dict(data) == read_index(redis_client, "cat").schema
    # and the comments say what RedisVL would not keep
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert any("RedisVL ignores the index options language" in c for c in comments), comments


def test_redisvl_exported_schemas_load_in_rvlm() -> None:
    for storage in ("hash", "json"):
        schema = load_schema(DATA / f"shop_{storage}.yaml")
        assert [f.name for f in schema.fields] == ["title", "price", "category"]
        assert schema.field("price").attrs.sortable  # type: ignore[union-attr]


@pytest.mark.parametrize("storage", ["hash", "json"])
def test_a_wrong_vector_outside_the_sample_is_refused_before_the_drop(
        redis_client: Any, redis_url: str, tmp_path: Path, protocol: int, storage: str) -> None:
    make_shop(redis_client, storage)
    for i in range(COUNT):
        size = 3 if i == COUNT - 1 else 4      # the last document, outside a 5-key sample
        if storage == "hash":
            redis_client.hset(f"shop:{i}", "emb", np.zeros(size, np.float32).tobytes())
        else:
            redis_client.execute_command("JSON.SET", f"shop:{i}", "$.emb",
                                         json.dumps([0.5] * size))
    plan = MigrationPlanner(sample_size=5).create_plan("shop", redis_url=redis_url, schema_patch={
        "version": 1, "changes": {"add_fields": [{"name": "emb", "type": "vector",
                                                  "attrs": {"dims": 4}}]}})
    assert plan.supported, plan.blocked_reasons
    before = read_index(redis_client, "shop").schema
    refusal = rf"add_field 'emb': 1 documents hold .*shop:{COUNT - 1}"
    with pytest.raises(rvlm.RvlmError, match=refusal):
        MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=tmp_path / "b")
    assert read_index(redis_client, "shop").schema == before   # never dropped
