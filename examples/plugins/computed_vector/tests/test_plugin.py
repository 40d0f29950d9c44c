"""computed_vector on the real server: discovered, planned, computed, indexed and queried.

Only rvlm's public faces are used: :mod:`rvlm` (plan, apply, validate, roll back) and the
plugin module itself; the documents are checked with plain redis-py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest
import redis
from rvlm_computed_vector import plugin
from rvlm_computed_vector.demo import DIMS, hashing_embedder

import rvlm
from rvlm import MigrationExecutor, MigrationPlanner, Plan, RvlmError

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
    return MigrationPlanner().create_plan(
        "docs", redis_client=client,
        schema_patch={"version": 1, "changes": {"computed_vector": section}})


SECTION = {"name": "title_vec", "source": "title", "embedder": EMBEDDER,
           "distance_metric": "cosine", "algorithm": "hnsw", "attrs": {"m": 8}}


def test_demo_embedder_is_deterministic() -> None:
    a = hashing_embedder(["hello world", "space"])
    assert a.shape == (2, DIMS) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert (hashing_embedder(["hello world"]) == a[:1]).all()


def test_discovered_through_the_entry_point() -> None:
    done = subprocess.run([sys.executable, "-m", "rvlm", "plugins", "--json"],
                          capture_output=True, text=True, timeout=60, check=True)
    info = {p["name"]: p for p in json.loads(done.stdout)["plugins"]}
    assert info["computed_vector"]["change_types"] == ["computed_vector"]
    assert not info["computed_vector"]["builtin"]


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


def knn(client: redis.Redis, text: str, k: int = 3) -> list[bytes]:
    q = hashing_embedder([text])[0].tobytes()
    reply = client.execute_command("FT.SEARCH", "docs", f"*=>[KNN {k} @title_vec $q AS d]",
                                   "PARAMS", "2", "q", q, "SORTBY", "d", "NOCONTENT",
                                   "DIALECT", "2")
    return list(reply[1:])


def vector_of(client: redis.Redis, key: str, storage: str) -> Any:
    """The stored ``title_vec`` of a document (bytes, a list of numbers), or None."""
    if storage == "hash":
        return client.hget(key, "title_vec")
    found = json.loads(client.execute_command("JSON.GET", key, "$.title_vec") or "[]")
    return found[0] if found else None


def check_migrated(client: redis.Redis, redis_url: str, plan: Plan, storage: str) -> None:
    value = vector_of(client, "doc:4", storage)
    if client.exists("doc:99"):
        assert vector_of(client, "doc:99", storage) is None  # no title, no vector
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
    # the plugin's own validate check (a KNN query finds sampled documents by their text)
    checks = rvlm.validate(plan, redis_url=redis_url).validation.checks
    mine = [c for c in checks if c.name == "computed_vector:title_vec"]
    assert mine and all(c.passed for c in mine), checks


def test_pre_drop_passes_with_the_same_embedder(r2: redis.Redis) -> None:
    make_index(r2, "hash")
    plan = plan_for(r2, SECTION)
    assert plugin.pre_drop(plan) == []


def test_pre_drop_notices_a_changed_embedder(r2: redis.Redis,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    make_index(r2, "hash")
    plan = plan_for(r2, SECTION)
    monkeypatch.setattr("rvlm_computed_vector.demo.hashing_embedder",
                        lambda texts: -hashing_embedder(texts))
    plugin.load_embedder.cache_clear()
    try:
        problems = plugin.pre_drop(plan)
    finally:
        monkeypatch.undo()
        plugin.load_embedder.cache_clear()
    assert problems and "other vectors" in problems[0]


@pytest.mark.parametrize(("storage", "missing"), [
    ("hash", False), ("json", False), ("hash", True),
])
def test_through_the_executor_with_rollback(r2: redis.Redis, redis_url: str, storage: str,
                                           missing: bool, tmp_path: Any) -> None:
    make_index(r2, storage, missing)
    before = {k: (r2.hgetall(k) if storage == "hash" else r2.execute_command("JSON.GET", k))
              for k in r2.scan_iter(match="doc:*")}
    plan = plan_for(r2, SECTION)
    backup = str(tmp_path / "backup")
    report = MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=backup)
    assert report.result == "succeeded", report.to_yaml()
    check_migrated(r2, redis_url, plan, storage)
    assert rvlm.rollback(backup, redis_url=redis_url).succeeded
    after = {k: (r2.hgetall(k) if storage == "hash" else r2.execute_command("JSON.GET", k))
             for k in r2.scan_iter(match="doc:*")}
    assert after == before
