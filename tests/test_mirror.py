"""Online copies on the real server: each source document read whole, run through the plan's
operations (the executor's transform, real plugins), written to its key under the target
prefix with the same absolute expiry, read back and compared. The source is never written."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from test_apply_helpers import make_hash_index, make_json_index

from rvlm.core.migrate.online.mirror import Mirror
from rvlm.core.migrate.planner import PlanOptions, make_plan
from rvlm.core.migrate.transform import transform_batch
from rvlm.core.plugins.context import ApplyContext
from rvlm.core.plugins.host import host_with
from rvlm.core.redis.capabilities import detect
from rvlm.core.redis.copyio import (
    TargetDoc,
    apply_json,
    read_targets,
    same,
    server_time_ms,
    write_targets,
)
from rvlm.core.schema.patch import patch_from_dict


def dumps(client: Any, pattern: str) -> dict[bytes, tuple[bytes, int]]:
    """Every key matching ``pattern``: its exact serialized value and absolute expiry."""
    return {k: (client.dump(k), client.execute_command("PEXPIRETIME", k))
            for k in client.scan_iter(match=pattern, count=1000)}


def plan_for(client: Any, index: str, changes: dict[str, Any]):
    patch = patch_from_dict({"version": 1, "changes": changes}, "patch.yaml",
                            plugin_sections=("hash_to_json",))
    return make_plan(client, index, patch=patch, options=PlanOptions())


def mirror_of(client: Any, plan) -> Mirror:
    host = host_with(())
    ctx = ApplyContext(plan=plan, capabilities=detect(client), client=client, backup_dir="")
    return Mirror(plan, host, ctx, transform_batch)


def copy_all(client: Any, mirror: Mirror, keys: list[bytes], atomic: bool) -> list[TargetDoc]:
    sources = mirror.read(client, keys, server_time_ms(client))
    docs, deletes = mirror.targets(sources)
    write_targets(client, docs, deletes, atomic=atomic)
    return docs


@pytest.mark.parametrize("atomic", [False, True])
def test_hash_rename_and_quantize_copied_under_the_new_prefix(redis_client, protocol, atomic):
    make_hash_index(redis_client, n=40, dims=8, ttl_every=4)
    redis_client.hset("doc:extra", mapping={"t": "no vector", "other": b"\x00\xff"})
    redis_client.set("doc:string", "not a document")
    before = dumps(redis_client, "doc:*")
    plan = plan_for(redis_client, "idx", {
        "index": {"name": "idx_v2", "prefix": "new:"},
        "rename_fields": [{"old_name": "t", "new_name": "title"}],
        "update_fields": [{"name": "v", "attrs": {"datatype": "float16"}}]})
    mirror = mirror_of(redis_client, plan)
    keys = sorted(k for k in redis_client.scan_iter(match="doc:*"))
    docs = copy_all(redis_client, mirror, keys, atomic)
    assert {d.key for d in docs} == {b"new:" + k[4:] for k in keys if k != b"doc:string"}
    # the source is untouched
    assert dumps(redis_client, "doc:*") == before
    for k in keys:
        if k == b"doc:string":
            assert not redis_client.exists(b"new:string")
            continue
        src = redis_client.hgetall(k)
        dst = redis_client.hgetall(b"new:" + k[4:])
        want = {(b"title" if n == b"t" else n): v for n, v in src.items()}
        if b"v" in src:
            want[b"v"] = np.frombuffer(src[b"v"], np.float32).astype(np.float16).tobytes()
        assert dst == want, k
        assert (redis_client.execute_command("PEXPIRETIME", b"new:" + k[4:])
                == redis_client.execute_command("PEXPIRETIME", k))
    assert sum(1 for k in keys if redis_client.pttl(k) > 0) == 10
    # read back: the same; a changed copy is not
    back = read_targets(redis_client, "hash", [d.key for d in docs])
    assert all(same(d, b) for d, b in zip(docs, back, strict=True))
    redis_client.hset(docs[0].key, "title", "changed")
    redis_client.persist(docs[1].key) if docs[1].expire_at >= 0 else redis_client.pexpire(
        docs[1].key, 99_000)
    back = read_targets(redis_client, "hash", [d.key for d in docs[:3]])
    assert [same(d, b) for d, b in zip(docs[:3], back, strict=True)] == [False, False, True]


def test_gone_and_retyped_sources_delete_their_copies(redis_client, protocol):
    make_hash_index(redis_client, n=5)
    plan = plan_for(redis_client, "idx", {"index": {"name": "idx_v2", "prefix": "new:"}})
    mirror = mirror_of(redis_client, plan)
    keys = [b"doc:%d" % i for i in range(5)]
    copy_all(redis_client, mirror, keys, atomic=True)
    assert all(redis_client.exists(b"new:%d" % i) for i in range(5))
    redis_client.delete("doc:0")
    redis_client.set("doc:1", "now a string")
    redis_client.hdel("doc:2", "t", "g", "v")  # the last fields: the key goes
    copy_all(redis_client, mirror, keys, atomic=True)
    assert [redis_client.exists(b"new:%d" % i) for i in range(5)] == [0, 0, 0, 1, 1]


def test_json_path_move_copied(redis_client, protocol):
    make_json_index(redis_client, n=20)
    redis_client.execute_command("PEXPIRE", "j:3", 500_000)
    plan = plan_for(redis_client, "jidx", {
        "index": {"name": "jidx_v2", "prefix": "k:"},
        "rename_fields": [{"old_name": "t", "new_name": "title"}],
        "update_fields": [{"name": "title", "path": "$.title"}]})
    assert [o.kind for o in plan.operations] == ["move_json_path", "rename_keys"]
    mirror = mirror_of(redis_client, plan)
    keys = [b"j:%d" % i for i in range(20)]
    docs = copy_all(redis_client, mirror, keys, atomic=True)
    for i in range(20):
        src = json.loads(redis_client.execute_command("JSON.GET", f"j:{i}", "$"))[0]
        dst = json.loads(redis_client.execute_command("JSON.GET", f"k:{i}", "$"))[0]
        want = dict(src)
        want["title"] = want.pop("t")
        assert dst == want
    assert (redis_client.execute_command("PEXPIRETIME", "k:3")
            == redis_client.execute_command("PEXPIRETIME", "j:3") > 0)
    back = read_targets(redis_client, "json", [d.key for d in docs])
    assert all(same(d, b) for d, b in zip(docs, back, strict=True))


def test_whole_document_conversion_hash_to_json(redis_client, protocol):
    pytest.importorskip("rvlm_hash_to_json")
    make_hash_index(redis_client, n=12, ttl_every=3)
    plan = plan_for(redis_client, "idx", {"hash_to_json": {"prefix": "js:"},
                                          "index": {"name": "idx_json"}})
    assert plan.operations[-1].converts_to == "json"
    mirror = mirror_of(redis_client, plan)
    keys = [b"doc:%d" % i for i in range(12)]
    docs = copy_all(redis_client, mirror, keys, atomic=True)
    assert {d.storage for d in docs} == {"json"}
    for i in range(12):
        src = redis_client.hgetall(f"doc:{i}")
        dst = json.loads(redis_client.execute_command("JSON.GET", f"js:{i}", "$"))[0]
        assert dst["t"] == src[b"t"].decode()
        assert np.allclose(dst["v"], np.frombuffer(src[b"v"], np.float32))
        assert (redis_client.execute_command("PEXPIRETIME", f"js:{i}")
                == redis_client.execute_command("PEXPIRETIME", f"doc:{i}"))
    assert redis_client.type("doc:0") == b"hash"  # the source stays a hash


def test_json_edits_of_other_paths_go_to_the_server():
    root = {"a": {"b": 1}, "c": 2}
    doc, later = apply_json(root, {"$.a.x": 5, "$.d": [1]}, ("$.c",), b"k")
    assert doc == {"a": {"b": 1, "x": 5}, "d": [1]} and later == ()
    assert root == {"a": {"b": 1}, "c": 2}  # not modified
    doc, later = apply_json(root, {"$['odd key']": 1}, ("$..b",), b"k")
    assert doc == root and later == (("del", "$..b", None), ("set", "$['odd key']", 1))
    with pytest.raises(Exception, match=r"cannot set \$.q.r in 'k'"):
        apply_json(root, {"$.q.r": 1}, (), b"k")


def test_server_side_json_edits_are_applied_in_the_transaction(redis_client, protocol):
    doc = TargetDoc(key=b"t:1", storage="json", document={"a": {"b": 1}},
                    edits=(("set", "$['odd key']", 3), ("del", "$..b", None)), expire_at=-1)
    write_targets(redis_client, [doc], [], atomic=True)
    assert json.loads(redis_client.execute_command("JSON.GET", "t:1", "$")) == [
        {"a": {}, "odd key": 3}]
    assert not same(doc, read_targets(redis_client, "json", [b"t:1"])[0])  # always rewritten


def test_footprint_measures_copies_and_index_and_refuses_what_maxmemory_cannot_hold(
        redis_client):
    from rvlm.core.migrate.online.footprint import copy_footprint

    make_hash_index(redis_client, n=300, dims=64)
    plan = plan_for(redis_client, "idx", {
        "index": {"name": "idx_v2", "prefix": "new:"},
        "update_fields": [{"name": "v", "attrs": {"datatype": "float16"}}]})
    sample = [b"doc:%d" % i for i in range(0, 300, 10)]
    fp = copy_footprint(redis_client, plan, sample)
    usage = redis_client.memory_usage("doc:0", samples=0)
    assert fp.sampled == 30 and fp.documents == 300
    # each copy: the document, 128 bytes lighter (64 dims at 2 bytes instead of 4)
    assert abs(fp.document_bytes - 300 * (usage - 128)) < 300 * 64
    assert fp.index_bytes > 0 and fp.fits and fp.problem() is None
    assert "extra memory until finalize: about" in fp.describe()
    used = int(redis_client.info("memory")["used_memory"])
    try:
        redis_client.config_set("maxmemory", used + fp.extra_bytes // 2)
        tight = copy_footprint(redis_client, plan, sample)
    finally:
        redis_client.config_set("maxmemory", 0)
    assert not tight.fits
    assert "the server cannot hold the online copy" in tight.problem()
