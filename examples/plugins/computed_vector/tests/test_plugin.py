"""computed_vector on the real server: discovered, planned, computed, indexed and queried."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
import redis
from rvlm_computed_vector import plugin
from rvlm_computed_vector.demo import DIMS, hashing_embedder

from rvlm import RvlmError
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.planner import make_plan, read_documents
from rvlm.core.plugins.context import ApplyContext
from rvlm.core.plugins.host import PluginHost, get_host
from rvlm.core.redis.capabilities import detect
from rvlm.core.schema.ftcreate import create_arguments
from rvlm.core.schema.patch import patch_from_dict

EMBEDDER = "rvlm_computed_vector.demo:hashing_embedder"
TITLES = ["red apples and green pears", "a story about space travel", "space ships and stars",
          "cooking with green apples", "the history of red wine", "travel guide to the stars"]
COUNT = 30


def title(i: int) -> str:
    return f"{TITLES[i % len(TITLES)]} {i}"


@pytest.fixture
def r2(redis_client: redis.Redis, redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url, protocol=2)
    yield client
    client.close()


def wait_indexed(client: redis.Redis, index: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        info = client.execute_command("FT.INFO", index)
        d = dict(zip(info[::2], info[1::2], strict=True))
        if int(d[b"num_docs"]) >= count and d[b"indexing"] in (b"0", 0, "0"):
            return
        time.sleep(0.05)


def make_index(client: redis.Redis, storage: str, missing: bool = True) -> None:
    """``docs`` with COUNT titled documents, plus ``doc:99`` without a title if ``missing``."""
    if storage == "hash":
        client.execute_command("FT.CREATE", "docs", "ON", "HASH", "PREFIX", "1", "doc:",
                               "SCHEMA", "title", "TEXT", "n", "NUMERIC")
        for i in range(COUNT):
            client.hset(f"doc:{i}", mapping={"title": title(i), "n": i})
        if missing:
            client.hset("doc:99", mapping={"n": 99})  # no title: gets no vector
    else:
        client.execute_command("FT.CREATE", "docs", "ON", "JSON", "PREFIX", "1", "doc:",
                               "SCHEMA", "$.title", "AS", "title", "TEXT", "$.n", "AS", "n",
                               "NUMERIC")
        for i in range(COUNT):
            client.execute_command("JSON.SET", f"doc:{i}", "$",
                                   json.dumps({"title": title(i), "n": i}))
        if missing:
            client.execute_command("JSON.SET", "doc:99", "$", json.dumps({"n": 99}))
    wait_indexed(client, "docs", COUNT + missing)


def plan_for(client: redis.Redis, section: Any) -> Plan:
    patch = patch_from_dict({"version": 1, "changes": {"computed_vector": section}},
                            plugin_sections=("computed_vector",))
    return make_plan(client, "docs", patch=patch)


SECTION = {"name": "title_vec", "source": "title", "embedder": EMBEDDER,
           "distance_metric": "cosine", "algorithm": "hnsw", "attrs": {"m": 8}}


def test_demo_embedder_is_deterministic() -> None:
    a = hashing_embedder(["hello world", "space"])
    assert a.shape == (2, DIMS) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert (hashing_embedder(["hello world"]) == a[:1]).all()


def test_discovered_through_the_entry_point() -> None:
    info = {p.name: p for p in PluginHost().plugins()}
    assert info["computed_vector"].change_types == ("computed_vector",)


def test_section_is_validated(redis_client: redis.Redis, r2: redis.Redis) -> None:
    make_index(r2, "hash")
    for bad, msg in [({"name": "v", "source": "title"}, "embedder must be"),
                     ({**SECTION, "embedder": "nope"}, "module:function"),
                     ({**SECTION, "datatype": "int8"}, "quantize in a second"),
                     ({**SECTION, "name": "title"}, "already has a field"),
                     ({**SECTION, "embedder": "no_such_module:f"}, "cannot load the embedder"),
                     ({**SECTION, "colour": 1}, "unknown key 'colour'")]:
        with pytest.raises(RvlmError, match=msg):
            plan_for(r2, bad)


def test_plan(r2: redis.Redis) -> None:
    make_index(r2, "hash")
    plan = plan_for(r2, SECTION)
    assert plan.supported, plan.blocked_reasons
    field = plan.target_schema.field("title_vec")
    assert field is not None and field.attrs.dims == DIMS and field.attrs.m == 8
    [op] = plan.operations
    assert (op.plugin, op.reads, op.writes, op.creates) == (
        "computed_vector", ("title",), ("title_vec",), ("title_vec",))
    assert any("have no 'title'" in w for w in plan.all_warnings()) or len(plan.key_sample) < 31
    # wrong dims and a field some documents already hold are blocked
    bad = plan_for(r2, {**SECTION, "dims": 8})
    assert not bad.supported and "returned 16 dims, expected 8" in bad.blocked_reasons[0]
    r2.hset("doc:3", "title_vec", b"x")
    held = plan_for(r2, SECTION)
    assert not held.supported and "doc:3" in held.blocked_reasons[0]


def reference_apply(client: redis.Redis, plan: Plan) -> None:
    """The executor's work for these operations, in a few lines (drop, transform, write,
    create, wait), for when the core executor is not there."""
    host = get_host()
    storage = plan.source_schema.storage_type
    context = ApplyContext(plan=plan, capabilities=detect(client), client=client)
    client.execute_command("FT.DROPINDEX", plan.source_index)
    keys = sorted(client.scan_iter(match="doc:*"))
    for op in plan.operations:
        docs = read_documents(client, storage, keys, [*op.reads, *op.writes])
        for doc, update in zip(docs, host.transform(op, docs, context), strict=True):
            for path, value in update.set.items():
                if storage == "json":
                    client.execute_command("JSON.SET", doc.key, path, json.dumps(value))
                else:
                    client.hset(doc.key, path, value)
    client.execute_command(*create_arguments(plan.target_schema))
    wait_indexed(client, plan.target_index, len(keys))


def knn(client: redis.Redis, text: str, k: int = 3) -> list[bytes]:
    q = hashing_embedder([text])[0].tobytes()
    reply = client.execute_command("FT.SEARCH", "docs", f"*=>[KNN {k} @title_vec $q AS d]",
                                   "PARAMS", "2", "q", q, "SORTBY", "d", "NOCONTENT",
                                   "DIALECT", "2")
    return list(reply[1:])


def check_migrated(client: redis.Redis, plan: Plan, storage: str) -> None:
    docs = read_documents(client, storage, [b"doc:4", b"doc:99"], ["title_vec" if storage ==
                                                                   "hash" else "$.title_vec"])
    value = next(iter(docs[0].values.values()))
    if client.exists("doc:99"):
        assert not next(iter(docs[1].values.values()))  # no title, no vector
    want = hashing_embedder([title(4)])[0]
    if storage == "hash":
        assert value == want.tobytes()
    else:
        assert np.array(value, dtype=np.float32).tobytes() == want.tobytes()
    assert knn(client, title(7))[0] == b"doc:7"
    assert set(knn(client, "space travel stars", 3)) <= {
        f"doc:{i}".encode() for i in range(COUNT) if "sta" in title(i) or "space" in title(i)}
    # the text field still answers as before
    assert len(client.execute_command("FT.SEARCH", "docs", "@title:apples", "NOCONTENT")) > 1
    checks = plugin.validate(plan, ApplyContext(plan=plan, capabilities=detect(client),
                                                client=client))
    assert checks and all(c.passed for c in checks), checks


@pytest.mark.parametrize("storage", ["hash", "json"])
def test_reference_apply(r2: redis.Redis, storage: str) -> None:
    make_index(r2, storage)
    plan = plan_for(r2, SECTION)
    assert plan.supported, plan.blocked_reasons
    assert plugin.pre_drop(plan, ApplyContext(plan=plan, capabilities=detect(r2))) == []
    reference_apply(r2, plan)
    check_migrated(r2, plan, storage)


def test_pre_drop_notices_a_changed_embedder(r2: redis.Redis,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    make_index(r2, "hash")
    plan = plan_for(r2, SECTION)
    monkeypatch.setattr("rvlm_computed_vector.demo.hashing_embedder",
                        lambda texts: -hashing_embedder(texts))
    plugin.load_embedder.cache_clear()
    try:
        problems = plugin.pre_drop(plan, ApplyContext(plan=plan, capabilities=detect(r2)))
    finally:
        monkeypatch.undo()
        plugin.load_embedder.cache_clear()
    assert problems and "other vectors" in problems[0]


@pytest.mark.parametrize(("storage", "missing"), [
    ("hash", False), ("json", False), ("hash", True),
])
def test_through_the_executor_with_rollback(r2: redis.Redis, redis_url: str, storage: str,
                                           missing: bool, tmp_path: Any) -> None:
    from rvlm.core.migrate import executor
    make_index(r2, storage, missing)
    before = {k: (r2.hgetall(k) if storage == "hash" else r2.execute_command("JSON.GET", k))
              for k in r2.scan_iter(match="doc:*")}
    plan = plan_for(r2, SECTION)
    backup = str(tmp_path / "backup")
    report = executor.apply_plan(redis_url, plan, backup_dir=backup)
    assert getattr(report, "result", "succeeded") == "succeeded"
    check_migrated(r2, plan, storage)
    from rvlm.core.migrate.rollback import rollback

    rollback(redis_url, backup)
    after = {k: (r2.hgetall(k) if storage == "hash" else r2.execute_command("JSON.GET", k))
             for k in r2.scan_iter(match="doc:*")}
    assert after == before
