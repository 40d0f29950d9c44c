"""The planner against the real server: what is supported, what is blocked and why, and the
plan YAML a user reviews. Server-dependent gates are asserted for whatever the server can do
(``capabilities.detect``), so the same tests hold on RediSearch 2.10 and on Redis 8.x."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.planner import PlanOptions, make_plan
from rvlm.core.redis.capabilities import Capabilities, detect
from rvlm.core.schema.patch import patch_from_dict

DIMS = 4


def vec(rng: np.random.Generator, dtype: str = "float32") -> bytes:
    return rng.normal(size=DIMS).astype(dtype).tobytes()


def make_hash_index(client, name: str = "docs", prefix: str = "doc:", n: int = 25,
                    algorithm: str = "HNSW", metric: str = "COSINE", extra: tuple = ()) -> None:
    params = ["TYPE", "FLOAT32", "DIM", str(DIMS), "DISTANCE_METRIC", metric]
    if algorithm == "HNSW":
        params += ["M", "8"]
    client.execute_command(
        "FT.CREATE", name, "ON", "HASH", "PREFIX", "1", prefix, "SCHEMA",
        "title", "TEXT", "SORTABLE", "tags", "TAG", "price", "NUMERIC",
        "emb", "VECTOR", algorithm, str(len(params)), *params, *extra)
    rng = np.random.default_rng(7)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.hset(f"{prefix}{i}", mapping={"title": f"title {i}", "tags": "a,b", "price": i,
                                           "emb": vec(rng)})
    pipe.execute()
    wait_indexed(client, name)


def make_json_index(client, name: str = "jdocs", prefix: str = "j:", n: int = 25) -> None:
    client.execute_command(
        "FT.CREATE", name, "ON", "JSON", "PREFIX", "1", prefix, "SCHEMA",
        "$.title", "AS", "title", "TEXT", "$.emb", "AS", "emb", "VECTOR", "FLAT", "6",
        "TYPE", "FLOAT32", "DIM", str(DIMS), "DISTANCE_METRIC", "L2")
    rng = np.random.default_rng(3)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.execute_command("JSON.SET", f"{prefix}{i}", "$", json.dumps(
            {"title": f"t{i}", "emb": [float(x) for x in rng.normal(size=DIMS)]}))
    pipe.execute()
    wait_indexed(client, name)


def wait_indexed(client, name: str) -> None:
    import time

    for _ in range(200):
        info = client.execute_command("FT.INFO", name)
        d = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2], strict=True))
        indexing = d.get(b"indexing", d.get("indexing"))
        if not int(indexing):
            return
        time.sleep(0.01)


def plan(client, changes: dict, index: str = "docs", **kw) -> Plan:
    p = patch_from_dict({"version": 1, "changes": changes}, "patch.yaml")
    return make_plan(client, index, patch=p, **kw)


def blocked(p: Plan, change_type: str) -> str:
    reasons = [r for c in p.changes if c.type == change_type for r in c.blocked_reasons]
    assert reasons, f"{change_type} is not blocked: {[c.to_dict() for c in p.changes]}"
    assert not p.supported
    assert p.to_dict()["diff_classification"]["supported"] is False
    assert any(change_type in r for r in p.to_dict()["diff_classification"]["blocked_reasons"])
    return " ".join(reasons)


FAKE_82 = Capabilities(redis_version="8.2.0", search_version=80200, json_version=80200)
OLD_SEARCH = Capabilities(redis_version="7.2.4", search_version=20810, json_version=20606)


# -- the plan YAML ---------------------------------------------------------------------------

def test_plan_yaml_keeps_redisvl_keys_and_adds_rvlm(redis_client):
    make_hash_index(redis_client)
    p = plan(redis_client, {
        "rename_fields": [{"old_name": "title", "new_name": "headline"}],
        "update_fields": [{"name": "emb", "attrs": {"datatype": "float16", "m": 16}}],
        "add_fields": [{"name": "category", "type": "tag"}],
    })
    d = yaml.safe_load(p.to_yaml())
    assert list(d)[:8] == ["version", "mode", "source", "requested_changes",
                           "merged_target_schema", "diff_classification", "rename_operations",
                           "warnings"]
    assert d["version"] == 1 and d["mode"] == "drop_recreate"
    assert d["source"]["index_name"] == "docs"
    assert d["source"]["keyspace"]["prefixes"] == ["doc:"]
    assert d["source"]["keyspace"]["key_sample"][:2] == ["doc:0", "doc:1"]
    assert d["source"]["stats_snapshot"]["num_docs"] == 25
    assert d["requested_changes"]["rename_fields"] == [{"old_name": "title",
                                                        "new_name": "headline"}]
    assert [f["name"] for f in d["merged_target_schema"]["fields"]] == [
        "headline", "tags", "price", "emb", "category"]
    assert d["diff_classification"] == {"supported": True, "blocked_reasons": []}
    assert d["rename_operations"]["rename_fields"] == [{"old_name": "title",
                                                        "new_name": "headline"}]
    rv = d["rvlm"]
    assert rv["server"]["redis_version"] and "float16" in rv["server"]["datatypes"]
    types = {c["type"]: c for c in rv["changes"]}
    # the rename's value move is a move_path change of its own
    assert set(types) == {"rename_field", "move_path", "vector_index", "quantize", "add_field"}
    for c in rv["changes"]:
        assert c["plugin"] == c["type"] and c["plugin_version"]
    # effective values, never "None"
    assert types["vector_index"]["summary"].endswith("m 8 -> 16 (vectors unchanged)")
    assert [o["kind"] for o in rv["operations"]] == ["rename_hash_field", "convert_vector"]
    assert rv["operations"][1]["params"]["scheme"] == {
        "kind": "cast", "source_datatype": "float32", "target_datatype": "float16",
        "overflow": "clip"}
    assert rv["lossy"] is True and rv["fingerprint"]
    # every warning once at the top level (RedisVL's key); no second plan-level copy
    assert "plan_warnings" not in rv
    assert len(d["warnings"]) == len(set(d["warnings"]))
    assert any(w.startswith("downtime: ") and "25 documents" in w for w in d["warnings"])
    # the plan reads back identically
    again = Plan.from_dict(yaml.safe_load(p.to_yaml()))
    assert again.to_yaml() == p.to_yaml() and again.warnings == p.warnings


def test_plans_are_deterministic(redis_client):
    make_hash_index(redis_client)
    changes = {"update_fields": [{"name": "emb", "attrs": {"datatype": "bfloat16"}}],
               "remove_fields": ["tags"], "index": {"name": "docs_v2"}}
    first, second = plan(redis_client, changes), plan(redis_client, changes)
    assert first.to_yaml() == second.to_yaml()
    assert first.fingerprint == second.fingerprint


def test_index_side_changes_rewrite_nothing(redis_client):
    make_hash_index(redis_client)
    p = plan(redis_client, {"update_fields": [{"name": "title", "attrs": {"weight": 2}},
                                              {"name": "emb", "attrs": {"algorithm": "flat"}}],
                            "remove_fields": ["price"]})
    assert p.supported and not p.operations and not p.lossy
    assert any("@price" in w for w in p.all_warnings())


def test_no_change_says_so(redis_client):
    make_hash_index(redis_client)
    p = plan(redis_client, {})
    assert p.supported and not p.changes
    assert any("changes nothing" in w for w in p.warnings)
    assert not any(w.startswith("downtime") for w in p.warnings)


# -- blocked, with why and what to do instead ------------------------------------------------

def test_dims_change_is_blocked(redis_client):
    make_hash_index(redis_client)
    text = blocked(plan(redis_client, {"update_fields": [{"name": "emb",
                                                          "attrs": {"dims": 8}}]}),
                   "vector_index")
    assert "dims" in text and "4" in text and "8" in text
    assert "re-embed" in text


def test_storage_type_change_is_blocked(redis_client):
    make_hash_index(redis_client)
    text = blocked(plan(redis_client, {"index": {"storage_type": "json"}}), "update_index")
    assert "hash to json" in text and "plugin" in text


def test_key_separator_change_is_blocked(redis_client):
    make_hash_index(redis_client)
    text = blocked(plan(redis_client, {"index": {"key_separator": "_"}}), "update_index")
    assert "separator" in text and "change the prefix instead" in text


def test_new_vector_field_is_blocked(redis_client):
    make_hash_index(redis_client)
    text = blocked(plan(redis_client, {"add_fields": [{
        "name": "emb2", "type": "vector",
        "attrs": {"dims": 4, "algorithm": "flat", "datatype": "float32",
                  "distance_metric": "cosine"}}]}), "add_field")
    assert "emb2" in text and "none of 25 sampled documents holds a vector" in text
    assert "write a 4-dim float32 vector into every document first" in text


def test_field_type_change_is_blocked(redis_client):
    make_hash_index(redis_client)
    text = blocked(plan(redis_client, {"update_fields": [{"name": "tags", "type": "text"}]}),
                   "update_field")
    assert "tag to text" in text and "add a new field" in text


@pytest.mark.parametrize("storage", ["hash", "json"])
def test_field_path_change_is_a_move(redis_client, storage):
    if storage == "hash":
        make_hash_index(redis_client)
        index, old, path = "docs", "title", "other_title"
    else:
        make_json_index(redis_client)
        index, old, path = "jdocs", "$.title", "$.other_title"
    p = plan(redis_client, {"update_fields": [{"name": "title", "path": path}]}, index=index)
    assert p.supported, p.blocked_reasons
    [change] = p.changes
    assert (change.type, change.field, change.details["path"]) == (
        "move_path", "title", {"before": old, "after": path})
    [op] = p.operations
    assert (op.plugin, op.reads, op.writes, op.creates) == (
        "move_path", (old,), (old, path), (path,))


def test_multi_prefix_prefix_change_is_blocked(redis_client):
    redis_client.execute_command("FT.CREATE", "multi", "ON", "HASH", "PREFIX", "2", "a:", "b:",
                                 "SCHEMA", "t", "TEXT")
    redis_client.hset("a:1", "t", "x")
    text = blocked(plan(redis_client, {"index": {"prefix": "c:"}}, index="multi"),
                   "change_prefix")
    assert "one prefix" in text and "several prefixes" in text


def test_prefix_change_onto_existing_keys_is_blocked(redis_client):
    make_hash_index(redis_client, n=10)
    redis_client.hset("new:3", "title", "squatter")
    text = blocked(plan(redis_client, {"index": {"prefix": "new:"}}), "change_prefix")
    assert "new:3" in text and "already exist" in text and "Pick another prefix" in text
    redis_client.delete("new:3")
    p = plan(redis_client, {"index": {"prefix": "new:"}})
    assert p.supported
    assert p.operations[0].rename_prefix == ("doc:", "new:")
    assert p.rename_operations()["change_prefix"] == "new:"


def test_index_rename_onto_existing_index_or_alias_is_blocked(redis_client):
    make_hash_index(redis_client)
    redis_client.execute_command("FT.CREATE", "taken", "ON", "HASH", "PREFIX", "1", "zzz:",
                                 "SCHEMA", "t", "TEXT")
    text = blocked(plan(redis_client, {"index": {"name": "taken"}}), "rename_index")
    assert "'taken' already exists" in text and "pick another name" in text
    redis_client.execute_command("FT.ALIASADD", "nick", "taken")
    text = blocked(plan(redis_client, {"index": {"name": "nick"}}), "rename_index")
    assert "alias named 'nick'" in text
    p = plan(redis_client, {"index": {"name": "free_name"}})
    assert p.supported and p.rename_operations()["rename_index"] == "free_name"


@pytest.mark.parametrize("storage", ["hash", "json"])
def test_field_rename_onto_held_name_is_blocked(redis_client, storage):
    """The rename's value move (move_path) refuses to overwrite what a document holds."""
    if storage == "hash":
        make_hash_index(redis_client, n=10)
        redis_client.hset("doc:4", "headline", "already here")
        index, held = "docs", "headline"
    else:
        make_json_index(redis_client, n=10)
        redis_client.execute_command("JSON.SET", "j:4", "$.headline", '"already here"')
        index, held = "jdocs", "$.headline"
    changes = {"rename_fields": [{"old_name": "title", "new_name": "headline"}]}
    text = blocked(plan(redis_client, changes, index=index), "move_path")
    assert f"already hold {held}" in text and "overwrite" in text and "Pick another" in text
    assert ("doc:4" if storage == "hash" else "j:4") in text


def test_json_rename_moves_the_value_unless_the_patch_keeps_the_path(redis_client):
    make_json_index(redis_client)
    rename = {"rename_fields": [{"old_name": "title", "new_name": "headline"}]}
    moved = plan(redis_client, rename, index="jdocs")
    assert moved.supported, moved.blocked_reasons
    assert moved.target_schema.field("headline").path == "$.headline"
    assert [(c.type, c.field, c.new_field) for c in moved.changes] == [
        ("rename_field", "title", "headline"), ("move_path", "title", "headline")]
    [op] = moved.operations
    assert (op.plugin, op.kind, op.params["old"], op.params["new"]) == (
        "move_path", "move_json_path", "$.title", "$.headline")
    # the attribute alone: the patch keeps the path
    p = plan(redis_client, {**rename, "update_fields": [{"name": "headline",
                                                         "path": "$.title"}]}, index="jdocs")
    assert p.supported and not p.operations
    assert p.target_schema.field("headline").path == "$.title"
    assert [c.type for c in p.changes] == ["rename_field"]
    assert "the value stays at $.title" in p.changes[0].summary


# -- server capability gates -----------------------------------------------------------------

@pytest.mark.parametrize("datatype", ["int8", "uint8"])
def test_int8_gate_follows_the_server(redis_client, datatype):
    make_hash_index(redis_client)
    caps = detect(redis_client)
    p = plan(redis_client, {"update_fields": [{"name": "emb",
                                               "attrs": {"datatype": datatype}}]})
    if caps.int8:
        # uint8 cannot keep cosine for negative components: blocked with "use int8"
        if datatype == "uint8":
            assert "use int8" in blocked(p, "quantize")
        else:
            assert p.supported
    else:
        text = blocked(p, "quantize")
        assert datatype.upper() in text and "Redis 8.0" in text and "upgrade" in text
        assert not p.operations


def test_int8_gate_unit(redis_client):
    make_hash_index(redis_client)
    changes = {"update_fields": [{"name": "emb", "attrs": {"datatype": "int8"}}]}
    assert plan(redis_client, changes, capabilities=FAKE_82).supported
    text = blocked(plan(redis_client, changes, capabilities=OLD_SEARCH), "quantize")
    assert "INT8" in text and "Redis 8.0" in text and "7.2.4" in text


def test_float16_gate_unit(redis_client):
    make_hash_index(redis_client)
    for dt in ("float16", "bfloat16"):
        changes = {"update_fields": [{"name": "emb", "attrs": {"datatype": dt}}]}
        text = blocked(plan(redis_client, changes, capabilities=OLD_SEARCH), "quantize")
        assert dt.upper() in text and "RediSearch 2.10" in text
        assert plan(redis_client, changes).supported  # the real server has 2.10+


def test_svs_vamana_gate_follows_the_server(redis_client):
    make_hash_index(redis_client)
    changes = {"update_fields": [{"name": "emb", "attrs": {"algorithm": "svs-vamana"}}]}
    caps = detect(redis_client)
    p = plan(redis_client, changes)
    if caps.svs_vamana:
        assert p.supported
    else:
        text = blocked(p, "vector_index")
        assert "SVS-VAMANA" in text and "Redis 8.2" in text and "upgrade" in text


def test_svs_vamana_gate_unit(redis_client):
    make_hash_index(redis_client)
    ok = {"update_fields": [{"name": "emb", "attrs": {"algorithm": "svs-vamana"}}]}
    assert plan(redis_client, ok, capabilities=FAKE_82).supported
    assert "Redis 8.2" in blocked(plan(redis_client, ok, capabilities=OLD_SEARCH),
                                  "vector_index")
    # SVS-VAMANA holds float16/float32 only: int8 under it is refused with what to pick
    bad = {"update_fields": [{"name": "emb", "attrs": {"algorithm": "svs-vamana",
                                                       "datatype": "int8"}}]}
    text = blocked(plan(redis_client, bad, capabilities=FAKE_82), "quantize")
    assert "float16 and float32" in text


# -- other live indexes over the same keys ---------------------------------------------------

def test_shared_keys_block_rewrites_and_the_override_is_recorded(redis_client):
    make_hash_index(redis_client)
    redis_client.execute_command("FT.CREATE", "overlap", "ON", "HASH", "PREFIX", "1", "do",
                                 "SCHEMA", "title", "TEXT")
    redis_client.execute_command("FT.CREATE", "jsonidx", "ON", "JSON", "PREFIX", "1", "doc:",
                                 "SCHEMA", "$.t", "AS", "t", "TEXT")
    changes = {"update_fields": [{"name": "emb", "attrs": {"datatype": "float16"}}]}
    text = blocked(plan(redis_client, changes), "shared_keys")
    assert "overlap" in text and "jsonidx" not in text  # JSON index never sees hash keys
    assert "--allow-shared-keys" in text and "rvlm batch" in text
    p = plan(redis_client, changes, options=PlanOptions(allow_shared_keys=True))
    assert p.supported
    d = p.to_dict()
    assert d["rvlm"]["overrides"] == {"allow_shared_keys": ["overlap"]}
    assert any("allowed by --allow-shared-keys" in w for w in d["warnings"])
    # index-side only: nothing is rewritten, nothing to block
    assert plan(redis_client, {"update_fields": [{"name": "title",
                                                  "attrs": {"weight": 3}}]}).supported
