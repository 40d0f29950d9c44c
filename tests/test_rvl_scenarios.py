"""RedisVL's migrator test scenarios, run through rvlm on the real server (issue #11).

redisvl 0.28's integration tests migrate one small index through every change it supports
(index rename and prefix, add/remove/rename of each field type, base, text, tag, numeric and
vector attributes, JSON, sources with indexing failures, backup dirs). The same scenarios run
here with RedisVL's call shapes (``MigrationPlanner().create_plan(name, redis_url=,
schema_patch_path=)``, the plan written and loaded back, ``MigrationExecutor().apply(plan,
redis_url=, backup_dir=)``), checked as RedisVL checks them (plan supported, result succeeded,
``validation.doc_count_match``, ``schema_match``, ``key_sample_exists``) and as a user would:
the documents and the answers of a query on the changed field.

The data is this file's own: three products, the third with empty strings (for
``index_empty``), a GEO location, and a 4-dimensional float32 vector.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from rvlm import MigrationExecutor, MigrationPlanner, Plan, RvlmError
from rvlm.core.migrate.indexes import create_index
from rvlm.core.redis.connection import read_index
from rvlm.core.schema.yaml_format import schema_from_dict

NAME = "rs_idx"
PREFIX = "rs"
VECTORS = {"1": [0.1, 0.2, 0.3, 0.4], "2": [0.4, 0.1, 0.0, 0.2], "3": [0.0, 0.5, 0.1, 0.0]}
DOCS: dict[str, dict[str, Any]] = {
    "1": {"doc_id": "1", "title": "Alpha Products", "description": "the first one",
          "category": "electronics", "price": 99.99, "location": "-122.4194,37.7749"},
    "2": {"doc_id": "2", "title": "Beta Service", "description": "the second one",
          "category": "software", "price": 149.99, "location": "-73.9857,40.7484"},
    "3": {"doc_id": "3", "title": "Gamma Item", "description": "", "category": "",
          "price": 0, "location": "-118.2437,34.0522"},
}
VECTOR_FIELD: dict[str, Any] = {"name": "embedding", "type": "vector", "attrs": {
    "algorithm": "hnsw", "dims": 4, "distance_metric": "cosine", "datatype": "float32"}}
ALL_FIELDS: list[dict[str, Any]] = [
    {"name": "doc_id", "type": "tag"}, {"name": "title", "type": "text"},
    {"name": "description", "type": "text"}, {"name": "category", "type": "tag"},
    {"name": "price", "type": "numeric"}, {"name": "location", "type": "geo"}, VECTOR_FIELD]
ONLY_ID: list[dict[str, Any]] = [{"name": "doc_id", "type": "tag"}]


def key(doc: str, prefix: str = PREFIX) -> bytes:
    return f"{prefix}:{doc}".encode()


def vector(doc: str, dtype: str = "float32") -> bytes:
    return np.asarray(VECTORS[doc], dtype=dtype).tobytes()


def wait_indexed(client: Any, index: str) -> None:
    for _ in range(500):
        info = client.execute_command("FT.INFO", index)
        d = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2], strict=True))
        if not int(d.get(b"indexing", d.get("indexing", 0))):
            return
        time.sleep(0.01)


def search(client: Any, index: str, query: str, *args: Any) -> list[bytes]:
    """The keys a query finds, in the server's order when ``args`` sort them."""
    reply = client.execute_command("FT.SEARCH", index, query, *args, "NOCONTENT", "LIMIT", "0",
                                   "100", "DIALECT", "2")
    keys = [r[b"id"] for r in reply[b"results"]] if isinstance(reply, dict) else reply[1:]
    return keys if args else sorted(keys)


def knn(client: Any, index: str, field: str, query: bytes) -> list[bytes]:
    """The nearest document first."""
    reply = client.execute_command(
        "FT.SEARCH", index, f"*=>[KNN 3 @{field} $v AS d]", "PARAMS", "2", "v", query,
        "SORTBY", "d", "NOCONTENT", "DIALECT", "2")
    return [r[b"id"] for r in reply[b"results"]] if isinstance(reply, dict) else reply[1:]


def attribute_names(client: Any, index: str) -> list[str]:
    return [f.name for f in read_index(client, index).schema.fields]


def setup_hash(client: Any, fields: list[dict[str, Any]], *, name: str = NAME) -> None:
    """The index (from a RedisVL IndexSchema dict) and the three documents."""
    create_index(client, schema_from_dict({
        "index": {"name": name, "prefix": PREFIX, "storage_type": "hash"}, "fields": fields}))
    for doc, values in DOCS.items():
        client.hset(key(doc), mapping={**values, "embedding": vector(doc)})
    wait_indexed(client, name)


def migrate(redis_url: str, tmp_path: Path, changes: dict[str, Any],
            name: str = NAME) -> tuple[Plan, Any]:
    """RedisVL's way: a patch file, a plan written and loaded back, apply with a backup dir."""
    patch = tmp_path / "patch.yaml"
    patch.write_text(yaml.safe_dump({"version": 1, "changes": changes}, sort_keys=False))
    planner = MigrationPlanner()
    plan = planner.create_plan(name, redis_url=redis_url, schema_patch_path=str(patch))
    planner.write_plan(plan, str(tmp_path / "plan.yaml"))
    loaded = Plan.load(tmp_path / "plan.yaml")
    report = MigrationExecutor().apply(loaded, redis_url=redis_url,
                                       backup_dir=str(tmp_path / "migration_backups"))
    return plan, report


def succeeded(plan: Plan, report: Any) -> None:
    """What RedisVL's scenarios assert, all of it."""
    assert plan.supported, plan.blocked_reasons
    assert report.result == "succeeded", report.validation.errors
    v = report.validation
    assert v.doc_count_match and v.schema_match and v.key_sample_exists, v.errors


# -- the scenarios: (id, fields of the source index, changes, what a user checks after) ------

Check = Callable[[Any], None]


def _renamed_index(c: Any) -> None:
    names = [n.decode() if isinstance(n, bytes) else n for n in c.execute_command("FT._LIST")]
    assert names == [f"{NAME}_renamed"]
    assert search(c, f"{NAME}_renamed", "@title:alpha") == [key("1")]


def _new_prefix(c: Any) -> None:
    assert sorted(c.keys("*")) == sorted(key(d, "rs_new") for d in DOCS)
    assert c.hget(key("2", "rs_new"), "title") == b"Beta Service"
    assert c.hget(key("2", "rs_new"), "embedding") == vector("2")
    assert search(c, NAME, "@price:[100 200]") == [key("2", "rs_new")]


def _removed(field: str, query: str, found: list[str]) -> Check:
    def check(c: Any) -> None:
        assert field not in attribute_names(c, NAME)
        assert c.hexists(key("1"), field)  # removing a field from the index keeps the values
        assert search(c, NAME, query) == [key(d) for d in found]
    return check


def _renamed(old: str, new: str, query: str, found: list[str]) -> Check:
    def check(c: Any) -> None:
        assert new in attribute_names(c, NAME) and old not in attribute_names(c, NAME)
        for doc in DOCS:  # the value moved to the new hash field in every document
            assert not c.hexists(key(doc), old)
        assert c.hget(key("2"), new) == (vector("2") if old == "embedding" else
                                         str(DOCS["2"][old]).encode())
        if query.startswith("knn:"):
            assert knn(c, NAME, new, vector("2"))[0] == key("2")
        else:
            assert search(c, NAME, query) == [key(d) for d in found]
    return check


def _query(query: str, found: list[str], *args: Any) -> Check:
    def check(c: Any) -> None:
        assert search(c, NAME, query, *args) == [key(d) for d in found]
    return check


def _both(*checks: Check) -> Check:
    def check(c: Any) -> None:
        for one in checks:
            one(c)
    return check


def _index_missing(c: Any) -> None:
    c.hdel(key("3"), "title")
    wait_indexed(c, NAME)
    assert search(c, NAME, "ismissing(@title)") == [key("3")]


def _not_searchable_but_sortable(c: Any) -> None:
    assert search(c, NAME, "@title:alpha") == []
    assert search(c, NAME, "*", "SORTBY", "title", "DESC") == [key("3"), key("2"), key("1")]


def _phonetic_as_created(c: Any) -> None:
    """FT.INFO does not report PHONETIC, so validation cannot see it: the migrated index must
    answer a phonetic query as the same schema created directly does. (RediSearch 2.10 finds
    no phonetic match on a TEXT field that follows a TAG field, either way.)"""
    fields = [dict(f, attrs={"phonetic_matcher": "dm:en"}) if f["name"] == "title" else f
              for f in ALL_FIELDS]
    create_index(c, schema_from_dict({"index": {"name": "fresh", "prefix": PREFIX,
                                                "storage_type": "hash"}, "fields": fields}))
    wait_indexed(c, "fresh")
    for query in ("@title:alfa", "@title:alpha", "@title:gama"):
        assert search(c, NAME, query) == search(c, "fresh", query), query
    assert search(c, NAME, "@title:alpha") == [key("1")]


def _vector_kept(dtype: str) -> Check:
    def check(c: Any) -> None:
        assert c.hget(key("2"), "embedding") == vector("2", dtype)
        assert knn(c, NAME, "embedding", vector("2", dtype))[0] == key("2")
    return check


def _sortable(field: str, ids: list[str]) -> Check:
    return _query("*", ids, "SORTBY", field, "ASC")


SORTABLE_TITLE = [{"name": "doc_id", "type": "tag"},
                  {"name": "title", "type": "text", "attrs": {"sortable": True}}]
TITLE_FIRST = [{"name": "title", "type": "text"}, {"name": "doc_id", "type": "tag"}]
SORTABLE_PRICE = [{"name": "doc_id", "type": "tag"},
                  {"name": "price", "type": "numeric", "attrs": {"sortable": True}}]

SCENARIOS: list[tuple[str, list[dict[str, Any]], dict[str, Any], Check]] = [
    # 1. the index
    ("rename_index", ALL_FIELDS, {"index": {"name": f"{NAME}_renamed"}}, _renamed_index),
    ("change_prefix", ALL_FIELDS, {"index": {"prefix": "rs_new"}}, _new_prefix),
    # 2. add a field of each type (the documents already hold the values)
    ("add_text", ONLY_ID, {"add_fields": [{"name": "title", "type": "text"}]},
     _query("@title:alpha", ["1"])),
    ("add_tag", ONLY_ID, {"add_fields": [{"name": "category", "type": "tag",
                                          "attrs": {"separator": ","}}]},
     _query("@category:{software}", ["2"])),
    ("add_numeric", ONLY_ID, {"add_fields": [{"name": "price", "type": "numeric"}]},
     _query("@price:[100 200]", ["2"])),
    ("add_geo", ONLY_ID, {"add_fields": [{"name": "location", "type": "geo"}]},
     _query("@location:[-122.42 37.77 50 km]", ["1"])),
    # 3. remove a field of each type
    ("remove_text", ALL_FIELDS, {"remove_fields": ["description"]},
     _removed("description", "@title:alpha", ["1"])),
    ("remove_tag", ALL_FIELDS, {"remove_fields": ["category"]},
     _removed("category", "@price:[100 200]", ["2"])),
    ("remove_numeric", ALL_FIELDS, {"remove_fields": ["price"]},
     _removed("price", "@category:{software}", ["2"])),
    ("remove_geo", ALL_FIELDS, {"remove_fields": ["location"]},
     _removed("location", "@title:beta", ["2"])),
    ("remove_vector", ALL_FIELDS, {"remove_fields": ["embedding"]},
     _removed("embedding", "@title:gamma", ["3"])),
    # 4. rename a field of each type (hash: the value moves to the new field)
    ("rename_text", ALL_FIELDS, {"rename_fields": [{"old_name": "title",
                                                    "new_name": "headline"}]},
     _renamed("title", "headline", "@headline:beta", ["2"])),
    ("rename_tag", ALL_FIELDS, {"rename_fields": [{"old_name": "category",
                                                   "new_name": "tags"}]},
     _renamed("category", "tags", "@tags:{software}", ["2"])),
    ("rename_numeric", ALL_FIELDS, {"rename_fields": [{"old_name": "price",
                                                       "new_name": "cost"}]},
     _renamed("price", "cost", "@cost:[100 200]", ["2"])),
    ("rename_geo", ALL_FIELDS, {"rename_fields": [{"old_name": "location",
                                                   "new_name": "coordinates"}]},
     _renamed("location", "coordinates", "@coordinates:[-74 40.75 10 km]", ["2"])),
    ("rename_vector", ALL_FIELDS, {"rename_fields": [{"old_name": "embedding",
                                                      "new_name": "vector"}]},
     _renamed("embedding", "vector", "knn:", [])),
    # 5. base attributes
    ("add_sortable", ALL_FIELDS, {"update_fields": [{"name": "title",
                                                     "attrs": {"sortable": True}}]},
     _sortable("title", ["1", "2", "3"])),
    ("add_no_index", SORTABLE_TITLE, {"update_fields": [{"name": "title",
                                                         "attrs": {"no_index": True}}]},
     _not_searchable_but_sortable),
    ("add_index_missing", ALL_FIELDS, {"update_fields": [{"name": "title",
                                                          "attrs": {"index_missing": True}}]},
     _index_missing),
    # 6. text attributes
    ("text_weight", ALL_FIELDS, {"update_fields": [{"name": "title", "attrs": {"weight": 2.0}}]},
     _query("@title:alpha", ["1"])),
    ("text_no_stem", ALL_FIELDS, {"update_fields": [{"name": "title",
                                                     "attrs": {"no_stem": True}}]},
     _both(_query("@title:product", []), _query("@title:products", ["1"]))),
    ("text_phonetic_matcher", ALL_FIELDS, {"update_fields": [{
        "name": "title", "attrs": {"phonetic_matcher": "dm:en"}}]}, _phonetic_as_created),
    ("text_phonetic_matcher_first", TITLE_FIRST, {"update_fields": [{
        "name": "title", "attrs": {"phonetic_matcher": "dm:en"}}]},
     _both(_query("@title:alfa", ["1"]), _query("@title:gama", ["3"]))),
    ("text_index_empty", ALL_FIELDS, {"update_fields": [{"name": "description",
                                                         "attrs": {"index_empty": True}}]},
     _query('@description:""', ["3"])),
    ("text_unf", SORTABLE_TITLE, {"update_fields": [{"name": "title", "attrs": {"unf": True}}]},
     _sortable("title", ["1", "2", "3"])),
    # 7. tag attributes
    ("tag_separator", ALL_FIELDS, {"update_fields": [{"name": "category",
                                                      "attrs": {"separator": "|"}}]},
     _query("@category:{software}", ["2"])),
    ("tag_case_sensitive", ALL_FIELDS, {"update_fields": [{
        "name": "category", "attrs": {"case_sensitive": True}}]},
     _both(_query("@category:{Software}", []), _query("@category:{software}", ["2"]))),
    ("tag_index_empty", ALL_FIELDS, {"update_fields": [{"name": "category",
                                                        "attrs": {"index_empty": True}}]},
     _query('@category:{""}', ["3"])),
    # 8. numeric attributes (unf is inert on NUMERIC: RedisVL writes it, the server has none)
    ("numeric_unf", SORTABLE_PRICE, {"update_fields": [{"name": "price",
                                                        "attrs": {"unf": True}}]},
     _sortable("price", ["3", "1", "2"])),
    # 9. vector attributes: index-only, the stored vectors untouched
    ("vector_hnsw_to_flat", ALL_FIELDS, {"update_fields": [{
        "name": "embedding", "attrs": {"algorithm": "flat"}}]}, _vector_kept("float32")),
    ("vector_distance_metric", ALL_FIELDS, {"update_fields": [{
        "name": "embedding", "attrs": {"distance_metric": "l2"}}]}, _vector_kept("float32")),
    ("vector_initial_cap", ALL_FIELDS, {"update_fields": [{
        "name": "embedding", "attrs": {"initial_cap": 1000}}]}, _vector_kept("float32")),
    ("vector_hnsw_m", ALL_FIELDS, {"update_fields": [{"name": "embedding", "attrs": {"m": 32}}]},
     _vector_kept("float32")),
    ("vector_ef_construction", ALL_FIELDS, {"update_fields": [{
        "name": "embedding", "attrs": {"ef_construction": 400}}]}, _vector_kept("float32")),
    ("vector_ef_runtime", ALL_FIELDS, {"update_fields": [{
        "name": "embedding", "attrs": {"ef_runtime": 20}}]}, _vector_kept("float32")),
    ("vector_epsilon", ALL_FIELDS, {"update_fields": [{
        "name": "embedding", "attrs": {"epsilon": 0.05}}]}, _vector_kept("float32")),
    # ... and the one that rewrites every vector (lossy: the library applies what it is handed)
    ("vector_datatype_float16", ALL_FIELDS, {"update_fields": [{
        "name": "embedding", "attrs": {"datatype": "float16"}}]}, _vector_kept("float16")),
]


@pytest.mark.parametrize(("fields", "changes", "check"),
                         [pytest.param(f, ch, ck, id=i) for i, f, ch, ck in SCENARIOS])
def test_redisvls_scenario(redis_client: Any, redis_url: str, tmp_path: Path, protocol: int,
                           fields: list[dict[str, Any]], changes: dict[str, Any],
                           check: Check) -> None:
    setup_hash(redis_client, fields)
    plan, report = migrate(redis_url, tmp_path, changes,)
    succeeded(plan, report)
    name = changes.get("index", {}).get("name", NAME)
    wait_indexed(redis_client, name)
    found = read_index(redis_client, name)
    assert found.stats.num_docs == len(DOCS) and found.stats.indexing_failures == 0
    check(redis_client)


# -- JSON storage ------------------------------------------------------------------------------

def setup_json(client: Any) -> None:
    create_index(client, schema_from_dict({
        "index": {"name": NAME, "prefix": PREFIX, "storage_type": "json"},
        "fields": [{"name": "doc_id", "type": "tag", "path": "$.doc_id"},
                   {"name": "title", "type": "text", "path": "$.title"},
                   {"name": "category", "type": "tag", "path": "$.category"},
                   {"name": "price", "type": "numeric", "path": "$.price"},
                   {**VECTOR_FIELD, "path": "$.embedding"}]}))
    for doc in ("1", "2"):
        values = {k: DOCS[doc][k] for k in ("doc_id", "title", "category", "price")}
        client.execute_command("JSON.SET", key(doc), "$", json.dumps(
            {**values, "embedding": VECTORS[doc], "status": "new" if doc == "1" else "old"}))
    wait_indexed(client, NAME)


def json_doc(client: Any, doc: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(client.execute_command("JSON.GET", key(doc), "$"))[0]
    return found


def test_json_add_field(redis_client: Any, redis_url: str, tmp_path: Path,
                        protocol: int) -> None:
    setup_json(redis_client)
    plan, report = migrate(redis_url, tmp_path, {"add_fields": [
        {"name": "status", "type": "tag", "path": "$.status"}]})
    succeeded(plan, report)
    assert search(redis_client, NAME, "@status:{old}") == [key("2")]


def test_json_rename_field(redis_client: Any, redis_url: str, tmp_path: Path,
                           protocol: int) -> None:
    """The value moves to $.headline (RedisVL's guide: renaming updates the documents)."""
    setup_json(redis_client)
    plan, report = migrate(redis_url, tmp_path, {"rename_fields": [
        {"old_name": "title", "new_name": "headline"}]})
    succeeded(plan, report)
    doc = json_doc(redis_client, "2")
    assert doc["headline"] == "Beta Service" and "title" not in doc
    assert search(redis_client, NAME, "@headline:beta") == [key("2")]


# -- a source index with indexing failures -----------------------------------------------------

FAILING_FIELDS = [{"name": "title", "type": "text"}, VECTOR_FIELD]


def setup_with_failures(client: Any, bad: bytes) -> None:
    """Three documents the index takes, two it fails (a vector of the wrong byte length)."""
    setup_hash(client, FAILING_FIELDS)
    for n in (1, 2):
        client.hset(f"{PREFIX}:bad{n}", mapping={"title": f"Bad doc {n}", "embedding": bad})
    wait_indexed(client, NAME)
    found = read_index(client, NAME).stats
    assert (found.num_docs, found.indexing_failures) == (3, 2)


def test_migration_with_indexing_failures_passes_validation(
        redis_client: Any, redis_url: str, tmp_path: Path, protocol: int) -> None:
    setup_with_failures(redis_client, np.arange(8, dtype="float32").tobytes())
    plan, report = migrate(redis_url, tmp_path, {"add_fields": [
        {"name": "category", "type": "tag"}]})
    assert plan.supported and report.result == "succeeded", report.validation.errors
    assert report.validation.doc_count_match
    # the documents that failed are still there, untouched
    assert redis_client.hget(f"{PREFIX}:bad1", "title") == b"Bad doc 1"
    assert search(redis_client, NAME, "@category:{software}") == [key("2")]


def test_quantization_that_resolves_indexing_failures(
        redis_client: Any, redis_url: str, tmp_path: Path, protocol: int) -> None:
    """Two documents hold float16 vectors under a float32 index (indexing failures): after the
    change to float16 every document is indexed. The three float32 vectors were converted; the
    two of the wrong length for float32 were left as they are (never read as float32)."""
    f16 = np.asarray([0.4, 0.5, 0.6, 0.7], dtype="float16").tobytes()
    setup_with_failures(redis_client, f16)
    plan, report = migrate(redis_url, tmp_path, {"update_fields": [
        {"name": "embedding", "attrs": {"datatype": "float16"}}]})
    assert plan.supported, plan.blocked_reasons
    assert report.result == "succeeded", report.validation.errors
    assert report.validation.doc_count_match
    found = read_index(redis_client, NAME).stats
    assert (found.num_docs, found.indexing_failures) == (5, 0)
    assert redis_client.hget(key("2"), "embedding") == vector("2", "float16")
    assert redis_client.hget(f"{PREFIX}:bad1", "embedding") == f16


def test_planner_warns_about_indexing_failures(redis_client: Any, redis_url: str,
                                               tmp_path: Path) -> None:
    setup_with_failures(redis_client, np.arange(2, dtype="float32").tobytes())
    plan = MigrationPlanner().create_plan(NAME, redis_url=redis_url, schema_patch={
        "version": 1, "changes": {"add_fields": [{"name": "status", "type": "tag"}]}})
    warned = [w for w in plan.warnings if "indexing failure" in w]
    assert len(warned) == 1, plan.warnings


# -- backup dirs ---------------------------------------------------------------------------------

QUANTIZE = {"update_fields": [{"name": "embedding", "attrs": {"datatype": "float16"}}]}
ADD_FIELD = {"add_fields": [{"name": "new_tag", "type": "tag"}]}


@pytest.mark.parametrize("changes", [QUANTIZE, ADD_FIELD], ids=["quantize", "add_field"])
def test_a_missing_nested_backup_dir_is_created(redis_client: Any, redis_url: str,
                                                tmp_path: Path, changes: dict[str, Any]) -> None:
    setup_hash(redis_client, ALL_FIELDS)
    plan = MigrationPlanner().create_plan(NAME, redis_url=redis_url,
                                          schema_patch={"version": 1, "changes": changes})
    backup_dir = tmp_path / "nested" / "backups"
    report = MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=str(backup_dir))
    assert report.result == "succeeded", report.validation.errors
    assert backup_dir.is_dir()
    data = list(backup_dir.glob("data-*.rvb"))
    # a quantization backs up every original vector; an index-only change has none to keep
    assert bool(data) == (changes is QUANTIZE)
    assert all(str(p) in report.backup_paths for p in data)


@pytest.mark.parametrize("changes", [QUANTIZE, ADD_FIELD], ids=["quantize", "add_field"])
def test_a_backup_dir_that_cannot_be_created_fails_before_the_index_is_touched(
        redis_client: Any, redis_url: str, tmp_path: Path, changes: dict[str, Any]) -> None:
    setup_hash(redis_client, ALL_FIELDS)
    plan = MigrationPlanner().create_plan(NAME, redis_url=redis_url,
                                          schema_patch={"version": 1, "changes": changes})
    (tmp_path / "blocker").write_text("not a directory")
    with pytest.raises(RvlmError, match="backup dir"):
        MigrationExecutor().apply(plan, redis_url=redis_url,
                                  backup_dir=str(tmp_path / "blocker" / "sub"))
    found = read_index(redis_client, NAME)
    assert found.stats.num_docs == len(DOCS)
    assert found.schema == read_index(redis_client, NAME).schema
    assert redis_client.hget(key("1"), "embedding") == vector("1")
    # and without one at all, nothing runs either (RedisVL: "backup directory is required")
    with pytest.raises(TypeError, match="backup_dir"):
        MigrationExecutor().apply(plan, redis_url=redis_url)  # type: ignore[call-arg]
    assert read_index(redis_client, NAME).stats.num_docs == len(DOCS)


# -- RedisVL's plan / apply / validate flow, every attribute its test reads ----------------------

def test_plan_apply_validate_flow(redis_client: Any, redis_url: str, tmp_path: Path,
                                  protocol: int) -> None:
    """Add, remove and update in one patch; rvl's query check file (``fetch_ids``); the
    report's validation, benchmark_summary and backup attributes; then validation again."""
    import rvlm

    setup_hash(redis_client, [{"name": "doc_id", "type": "tag"}, {"name": "title", "type": "text"},
                              {"name": "price", "type": "numeric"}, VECTOR_FIELD])
    checks = tmp_path / "query_checks.yaml"
    checks.write_text(yaml.safe_dump({"fetch_ids": ["1", "2"]}))
    patch = tmp_path / "schema_patch.yaml"
    patch.write_text(yaml.safe_dump({"version": 1, "changes": {
        "add_fields": [{"name": "category", "type": "tag", "attrs": {"separator": ","}}],
        "remove_fields": ["price"],
        "update_fields": [{"name": "title", "attrs": {"sortable": True}}]}}, sort_keys=False))
    planner = MigrationPlanner()
    plan = planner.create_plan(NAME, redis_url=redis_url, schema_patch_path=str(patch))
    assert plan.supported is True
    planner.write_plan(plan, str(tmp_path / "migration_plan.yaml"))
    report = MigrationExecutor().apply(Plan.load(tmp_path / "migration_plan.yaml"),
                                       redis_url=redis_url, backup_dir=str(tmp_path / "b"),
                                       query_check_file=str(checks))
    assert report.result == "succeeded"
    v = report.validation
    assert v.schema_match and v.doc_count_match and v.key_sample_exists
    assert v.indexing_failures_delta == 0 and not v.errors
    assert [(c["name"], c["passed"]) for c in v.query_checks if "fetch" in c["name"]] == [
        ("fetch:1", True), ("fetch:2", True)], v.query_checks
    summary = report.benchmark_summary
    assert summary.documents_indexed_per_second is not None
    assert summary.source_index_size_mb is not None and summary.target_index_size_mb is not None
    assert summary.index_size_delta_mb == pytest.approx(
        summary.target_index_size_mb - summary.source_index_size_mb, abs=1e-6)
    assert report.to_dict()["benchmark_summary"]["documents_indexed_per_second"] == \
        summary.documents_indexed_per_second
    assert report.backup.backup_dir == str(tmp_path / "b")
    assert read_index(redis_client, NAME).schema == plan.target_schema
    assert search(redis_client, NAME, "@category:{software}") == [key("2")]
    # the query checks compare with the source's answers the apply kept: name its backup dir
    again = rvlm.validate(tmp_path / "migration_plan.yaml", redis_url=redis_url,
                          query_check_file=str(checks), backup_dir=tmp_path / "b")
    assert again.result == "succeeded", again.validation.errors
    assert again.validation.schema_match and again.validation.doc_count_match


# -- RedisVL's batch scenarios ---------------------------------------------------------------------

TITLE_SORTABLE = {"version": 1, "changes": {
    "update_fields": [{"name": "title", "attrs": {"sortable": True}}]}}
EMBEDDING_FLOAT16 = {"version": 1, "changes": {
    "update_fields": [{"name": "embedding", "attrs": {"datatype": "float16"}}],
    "add_fields": [], "remove_fields": [], "index": {}}}


def batch_index(client: Any, name: str, prefix: str, fields: list[dict[str, Any]]) -> None:
    create_index(client, schema_from_dict({
        "index": {"name": name, "prefix": prefix, "storage_type": "hash"}, "fields": fields}))
    for doc in ("1", "2"):
        client.hset(f"{prefix}:{doc}", mapping={"doc_id": doc, "title": DOCS[doc]["title"],
                                                "embedding": vector(doc)})
    wait_indexed(client, name)


def patch_file(tmp_path: Path, patch: dict[str, Any]) -> str:
    path = tmp_path / "patch.yaml"
    path.write_text(yaml.safe_dump(patch, sort_keys=False))
    return str(path)


BATCH_FIELDS = [{"name": "doc_id", "type": "tag"}, {"name": "title", "type": "text"},
                VECTOR_FIELD]


def test_batch_full_flow_with_a_skipped_index_and_rvls_progress_callback(
        redis_client: Any, redis_url: str, tmp_path: Path, protocol: int) -> None:
    from rvlm import BatchMigrationExecutor, BatchMigrationPlanner

    for i in range(3):
        batch_index(redis_client, f"apply_batch_{i}", f"ba{i}", BATCH_FIELDS)
    batch_index(redis_client, "apply_batch_plain", "bp", [{"name": "doc_id", "type": "tag"},
                                                          {"name": "content", "type": "text"}])
    planner = BatchMigrationPlanner()
    by_pattern = planner.create_batch_plan(pattern="apply_batch_*", redis_url=redis_url,
                                           schema_patch_path=patch_file(tmp_path, TITLE_SORTABLE))
    assert by_pattern.batch_id and len(by_pattern.indexes) == 4
    assert by_pattern.applicable_count == 3
    [skipped] = by_pattern.skipped
    assert skipped.name == "apply_batch_plain" and "title" in (skipped.skip_reason or "")
    names = [f"apply_batch_{i}" for i in range(3)]
    batch_plan = planner.create_batch_plan(indexes=names, redis_url=redis_url,
                                           schema_patch_path=patch_file(tmp_path,
                                                                        TITLE_SORTABLE))
    assert [i.applicable for i in batch_plan.indexes] == [True] * 3
    planner.write_batch_plan(batch_plan, str(tmp_path / "batch_plan.yaml"))
    calls: list[tuple[str, int, int, str]] = []
    report = BatchMigrationExecutor().apply(
        batch_plan, state_path=str(tmp_path / "batch_state.yaml"),
        report_dir=str(tmp_path / "reports"), redis_url=redis_url,
        backup_dir=str(tmp_path / "backups"),
        progress_callback=lambda name, pos, total, status: calls.append(
            (name, pos, total, status)))
    assert report.status == "completed"
    assert Path(report.backup_dir) == (tmp_path / "backups").resolve()
    s = report.summary
    assert (s.total_indexes, s.successful, s.failed) == (3, 3, 0)
    assert {c[0] for c in calls} == set(names) and all(c[2] == 3 for c in calls)
    for name in names:
        title = next(f for f in read_index(redis_client, name).schema.fields
                     if f.name == "title")
        assert title.attrs.sortable is True
        assert search(redis_client, name, "*", "SORTBY", "title", "DESC")[0].endswith(b":2")
    # resume with RedisVL's batch_plan_path: the same plan resumes (nothing left to do),
    # another is refused
    again = BatchMigrationExecutor().resume(str(tmp_path / "batch_state.yaml"),
                                            batch_plan_path=str(tmp_path / "batch_plan.yaml"),
                                            redis_url=redis_url)
    assert again.status == "completed" and again.summary.successful == 3
    other = planner.create_batch_plan(indexes=names[:2], redis_url=redis_url,
                                      schema_patch_path=patch_file(tmp_path, TITLE_SORTABLE))
    planner.write_batch_plan(other, tmp_path / "other.yaml")
    with pytest.raises(RvlmError, match="is not the batch plan"):
        BatchMigrationExecutor().resume(str(tmp_path / "batch_state.yaml"),
                                        batch_plan_path=str(tmp_path / "other.yaml"),
                                        redis_url=redis_url)


def test_batch_quantize_skips_the_index_without_the_field(
        redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    from rvlm import BatchMigrationExecutor, BatchMigrationPlanner

    batch_index(redis_client, "with_emb", "we", BATCH_FIELDS)
    batch_index(redis_client, "no_emb", "ne", [{"name": "doc_id", "type": "tag"},
                                               {"name": "content", "type": "text"}])
    batch_plan = BatchMigrationPlanner().create_batch_plan(
        indexes=["with_emb", "no_emb"], redis_url=redis_url,
        schema_patch_path=patch_file(tmp_path, EMBEDDING_FLOAT16))
    [skipped] = batch_plan.skipped
    assert skipped.name == "no_emb" and "embedding" in (skipped.skip_reason or "").lower()
    assert batch_plan.requires_quantization is True
    report = BatchMigrationExecutor().apply(
        batch_plan, state_path=str(tmp_path / "state.yaml"),
        report_dir=str(tmp_path / "reports"), redis_url=redis_url,
        backup_dir=str(tmp_path / "backups"))
    assert (report.summary.successful, report.summary.skipped) == (1, 1)
    assert redis_client.hget("we:2", "embedding") == vector("2", "float16")


@pytest.mark.parametrize(("prefixes", "refused"), [
    (("ov_same", "ov_same"), True), (("nest", "nest:premium"), True),
    (("dj_p0", "dj_p1"), False)], ids=["identical", "nested", "disjoint"])
def test_batch_indexes_over_overlapping_prefixes_are_refused(
        redis_client: Any, redis_url: str, tmp_path: Path, prefixes: tuple[str, str],
        refused: bool) -> None:
    """RedisVL refuses at plan time; rvlm writes the plan with its conflicts (for review) and
    refuses to run it, naming both indexes; nothing is changed."""
    from rvlm import BatchMigrationExecutor, BatchMigrationPlanner

    names = ["ov_a", "ov_b"]
    for name, prefix in zip(names, prefixes, strict=True):
        batch_index(redis_client, name, prefix, BATCH_FIELDS)
    before = {k: redis_client.hget(k, "embedding") for k in redis_client.keys("*")}
    batch_plan = BatchMigrationPlanner().create_batch_plan(
        indexes=names, redis_url=redis_url,
        schema_patch_path=patch_file(tmp_path, EMBEDDING_FLOAT16))
    assert batch_plan.refused is refused
    if not refused:
        assert batch_plan.applicable_count == 2 and batch_plan.requires_quantization is True
        return
    assert "ov_a" in batch_plan.conflict_message() and "ov_b" in batch_plan.conflict_message()
    with pytest.raises(RvlmError, match="refused"):
        BatchMigrationExecutor().apply(batch_plan, redis_url=redis_url,
                                       state_path=str(tmp_path / "state.yaml"),
                                       report_dir=str(tmp_path / "reports"),
                                       backup_dir=str(tmp_path / "backups"))
    assert {k: redis_client.hget(k, "embedding") for k in redis_client.keys("*")} == before


def test_resume_from_a_redisvl_checkpoint_says_what_it_is(
        redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    """RedisVL's resume scenario hands its executor a state it wrote (``status: success``);
    rvlm's executor names the file and what to do, and changes nothing."""
    from rvlm import BatchMigrationExecutor, BatchMigrationPlanner

    names = [f"resume_batch_{i}" for i in range(3)]
    for i, name in enumerate(names):
        batch_index(redis_client, name, f"rb{i}", BATCH_FIELDS)
    planner = BatchMigrationPlanner()
    batch_plan = planner.create_batch_plan(indexes=names, redis_url=redis_url,
                                           schema_patch_path=patch_file(tmp_path,
                                                                        TITLE_SORTABLE))
    plan_path = planner.write_batch_plan(batch_plan, tmp_path / "batch_plan.yaml")
    state = tmp_path / "batch_state.yaml"
    state.write_text(yaml.safe_dump({
        "batch_id": batch_plan.batch_id, "plan_path": str(plan_path),
        "started_at": "2026-03-20T10:00:00Z", "updated_at": "2026-03-20T10:01:00Z",
        "completed": [{"name": names[0], "status": "success",
                       "completed_at": "2026-03-20T10:00:30Z"}],
        "remaining": names[1:], "current_index": None}, sort_keys=False))
    with pytest.raises(RvlmError, match="is a RedisVL batch state"):
        BatchMigrationExecutor().resume(state_path=str(state), batch_plan_path=str(plan_path),
                                        report_dir=str(tmp_path / "reports"),
                                        redis_url=redis_url,
                                        backup_dir=str(tmp_path / "backups"))
    for name in names:  # nothing ran
        title = next(f for f in read_index(redis_client, name).schema.fields
                     if f.name == "title")
        assert title.attrs.sortable is False


# -- RedisVL's recovery scenarios that a user runs (its internal checkpoint ones have rvlm's
# -- crash tests as counterparts: fault points in the executor) ------------------------------------

PREFIX_AND_FLOAT16 = {"index": {"prefix": "rs_new"},
                      "update_fields": [{"name": "embedding", "attrs": {"datatype": "float16"}}]}


def test_prefix_change_and_quantization_then_cli_rollback_with_index(
        redis_client: Any, redis_url: str, tmp_path: Path, protocol: int) -> None:
    """rvlm's rollback restores the source: the old keys with their original bytes, and the
    source index (RedisVL's restores the original bytes under the new keys)."""
    from typer.testing import CliRunner

    from rvlm.cli.main import app

    setup_hash(redis_client, ALL_FIELDS)
    plan, report = migrate(redis_url, tmp_path, PREFIX_AND_FLOAT16)
    succeeded(plan, report)
    for doc in DOCS:
        assert not redis_client.exists(key(doc))
        assert redis_client.hget(key(doc, "rs_new"), "embedding") == vector(doc, "float16")
    assert report.backup.backup_paths
    undone = CliRunner().invoke(app, ["rollback", "--backup-dir",
                                      str(tmp_path / "migration_backups"), "--index", NAME,
                                      "--yes", "--url", redis_url])
    assert undone.exit_code == 0, undone.output
    for doc in DOCS:
        assert not redis_client.exists(key(doc, "rs_new"))
        assert redis_client.hget(key(doc), "embedding") == vector(doc)
    wait_indexed(redis_client, NAME)
    assert read_index(redis_client, NAME).schema.index.prefix == (PREFIX,)
    assert knn(redis_client, NAME, "embedding", vector("2"))[0] == key("2")


def test_async_prefix_change_and_quantization_leaves_no_old_keys(
        redis_client: Any, redis_url: str, tmp_path: Path, protocol: int) -> None:
    import asyncio

    from rvlm import AsyncMigrationExecutor, AsyncMigrationPlanner

    setup_hash(redis_client, ALL_FIELDS)
    patch = tmp_path / "patch.yaml"
    patch.write_text(yaml.safe_dump({"version": 1, "changes": PREFIX_AND_FLOAT16}))

    async def run() -> Any:
        plan = await AsyncMigrationPlanner().create_plan(NAME, redis_url=redis_url,
                                                         schema_patch_path=str(patch))
        return await AsyncMigrationExecutor().apply(plan, redis_url=redis_url,
                                                    backup_dir=str(tmp_path / "backups"))

    report = asyncio.run(run())
    assert report.result == "succeeded", report.validation.errors
    for doc in DOCS:
        assert not redis_client.exists(key(doc))
        assert len(redis_client.hget(key(doc, "rs_new"), "embedding")) == 4 * 2
