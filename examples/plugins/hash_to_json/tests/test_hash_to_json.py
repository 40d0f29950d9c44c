"""The plugin on the real server: discovered through its entry point, planned, converted,
indexed and queried."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import redis
from conftest import COUNT, INDEX, PREFIX, knn, search, source_doc, vector, wait_indexed
from rvlm_hash_to_json import plugin
from rvlm_hash_to_json.convert import Options

from rvlm import RvlmError
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.planner import make_plan
from rvlm.core.plugins.documents import Document
from rvlm.core.plugins.host import PluginHost
from rvlm.core.schema.ftcreate import create_arguments
from rvlm.core.schema.patch import patch_from_dict

SECTIONS = ("hash_to_json",)


def plan_for(client: redis.Redis, section: object, **changes: object) -> Plan:
    patch = patch_from_dict({"version": 1, "changes": {"hash_to_json": section, **changes}},
                            plugin_sections=SECTIONS)
    return make_plan(client, INDEX, patch=patch)


def test_discovered_through_the_entry_point() -> None:
    host = PluginHost()
    info = {p.name: p for p in host.plugins()}
    assert "hash_to_json" in info and not info["hash_to_json"].builtin
    assert info["hash_to_json"].change_types == ("hash_to_json",)
    assert host.patch_sections()["hash_to_json"] == "hash_to_json"


def test_plan_target_schema(movies: dict, r2: redis.Redis) -> None:
    plan = plan_for(r2, {"paths": {"embedding": "$.vectors.embedding"}})
    target = plan.target_schema
    assert target.storage_type == "json" and target.index.prefix == (PREFIX,)
    paths = {f.name: f.path for f in target.fields}
    assert paths == {"title": "$.title", "genre": "$.genre", "year": "$.year",
                     "rating": "$.rating", "embedding": "$.vectors.embedding",
                     "location": "$.location", "description": "$.desc"}
    assert target.field("genre").attrs.separator == ","
    [change] = [c for c in plan.changes if c.type == "hash_to_json"]
    assert change.plugin == "hash_to_json"
    if plugin.core_supports_conversion():
        assert change.supported, change.blocked_reasons
        [op] = plan.operations
        assert op.plugin == "hash_to_json" and op.rename_prefix is None
    else:
        assert not change.supported
        assert "converts_to" in change.blocked_reasons[0]
    # The plan file round-trips (the section is recorded as the user wrote it).
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.requested_changes["hash_to_json"] == {
        "paths": {"embedding": "$.vectors.embedding"}}


def test_plan_refusals(movies: dict, r2: redis.Redis) -> None:
    with pytest.raises(RvlmError, match="unknown key 'prefx'"):
        plan_for(r2, {"prefx": "m2:"})
    with pytest.raises(RvlmError, match="set the new prefix in one place"):
        plan_for(r2, {"prefix": "m2:"}, index={"prefix": "m3:"})
    with pytest.raises(RvlmError, match="overlapping"):
        plan_for(r2, {"paths": {"year": "$.title.year"}})
    # A vector the source could not index (wrong length) blocks the plan, naming the key.
    r2.hset(f"{PREFIX}7", "embedding", b"\x00" * 3)
    plan = plan_for(r2, {})
    [change] = [c for c in plan.changes if c.type == "hash_to_json"]
    assert not change.supported
    if plugin.core_supports_conversion():
        assert "movie:7" in change.blocked_reasons[0]


def test_new_prefix_collision_blocks(movies: dict, r2: redis.Redis) -> None:
    if not plugin.core_supports_conversion():
        pytest.skip("this rvlm core has no DocumentOperation.converts_to")
    r2.set("film:0", "taken")
    plan = plan_for(r2, {"prefix": "film:"})
    [change] = [c for c in plan.changes if c.type == "hash_to_json"]
    assert not change.supported and "film:0" in change.blocked_reasons[0]


def _operation(plan: Plan) -> object:
    """The plan's operation, or (on a core without converts_to) the same one built directly."""
    if plan.operations:
        return plan.operations[0]
    options = Options.parse(plan.requested_changes["hash_to_json"])
    prefixes = (plan.source_schema.index.prefix[0], plan.target_schema.index.prefix[0])
    rename = prefixes if prefixes[0] != prefixes[1] else None
    return plugin.build_operation(plugin.rules_for(plan.target_schema, options), options,
                                  rename, converts=False)


def reference_apply(client: redis.Redis, plan: Plan) -> None:
    """What the executor does for a converting operation (PROPOSAL.md), in a few lines:
    drop, read whole hashes, transform, replace each key atomically, create, wait."""
    op = _operation(plan)
    client.execute_command("FT.DROPINDEX", plan.source_index)
    keys = sorted(client.scan_iter(match=f"{plan.source_schema.index.prefix[0]}*",
                                   _type="hash"))
    docs = [Document(k, {n.decode(): v for n, v in client.hgetall(k).items()}) for k in keys]
    for doc, (new, new_key) in zip(docs, plugin.convert_documents(op, docs), strict=True):
        pttl = client.pttl(doc.key)
        final = new_key or doc.key
        pipe = client.pipeline(transaction=True)
        pipe.delete(doc.key)
        pipe.execute_command("JSON.SET", final, "$", json.dumps(new))
        if pttl > 0:
            pipe.pexpire(final, pttl)
        pipe.execute()
    client.execute_command(*create_arguments(plan.target_schema))
    wait_indexed(client, plan.target_index, len(keys))


def test_converted_documents_answer_the_same_queries(movies: dict, r2: redis.Redis) -> None:
    before = {q: search(r2, INDEX, q) for q in QUERIES}
    knn_before = knn(r2, INDEX, vector(3))
    plan = plan_for(r2, {"prefix": "film:"}, index={"name": "films"})
    reference_apply(r2, plan)
    assert r2.exists(f"{PREFIX}0") == 0 and r2.type("film:0") == b"ReJSON-RL"
    assert 0 < r2.pttl("film:0") <= 3_600_000
    doc = json.loads(r2.execute_command("JSON.GET", "film:5", "$"))[0]
    src = source_doc(5)
    # RedisJSON prints doubles in its own way: compare the vector as the float32 it indexes.
    embedding = doc.pop("embedding")
    assert np.array(embedding, dtype=np.float32).tobytes() == src[b"embedding"]
    assert doc == {
        "title": "Movie 5 about space", "genre": ["comedy", "sci fi"], "year": 1995,
        "rating": 0.625,
        "location": src[b"location"].decode(), "desc": "a film with the number 5",
        "notes": "internal note 5"}
    rename = {k: k.replace(PREFIX.encode(), b"film:") for k in movies}
    for q, keys in before.items():
        assert sorted(search(r2, "films", q)) == sorted(rename[k] for k in keys), q
    assert knn(r2, "films", vector(3)) == [rename[k] for k in knn_before]
    info = r2.execute_command("FT.INFO", "films")
    d = dict(zip(info[::2], info[1::2], strict=True))
    assert int(d[b"num_docs"]) == COUNT and int(d[b"hash_indexing_failures"]) == 0


QUERIES = ["@title:space", "@genre:{sci fi}", "@genre:{drama}", "@year:[2000 2010]",
           "@rating:[1 2]", "@description:number", "@location:[-0.1 51.5 20 km]"]


def test_pre_drop_reads_every_document(movies: dict, r2: redis.Redis) -> None:
    plan = plan_for(r2, {})
    op = _operation(plan)
    rules, options, _ = plugin._operation_parts(op)
    seen, errors = plugin.check_all(r2, [PREFIX], rules, options)
    assert (seen, errors) == (COUNT, [])
    # an unindexed binary field is invisible to the plan's sample, but not to pre_drop
    r2.hset(f"{PREFIX}9", "thumbnail", b"\x89PNG\xff")
    seen, errors = plugin.check_all(r2, [PREFIX], rules, options)
    assert len(errors) == 1 and "movie:9" in str(errors[0]) and "thumbnail" in str(errors[0])
    seen, errors = plugin.check_all(r2, [PREFIX], rules, Options(binary="base64"))
    assert errors == []


def test_through_the_executor_with_rollback(movies: dict, r2: redis.Redis, redis_url: str,
                                           tmp_path: object) -> None:
    executor = pytest.importorskip("rvlm.core.migrate.executor")
    if not plugin.core_supports_conversion():
        pytest.skip("this rvlm core has no DocumentOperation.converts_to (see PROPOSAL.md)")
    plan = plan_for(r2, {"prefix": "film:"})
    assert plan.supported, plan.blocked_reasons
    backup = str(tmp_path / "backup")  # type: ignore[operator]
    report = executor.apply_plan(redis_url, plan, backup_dir=backup)
    assert getattr(report, "result", "succeeded") == "succeeded"
    assert r2.exists(f"{PREFIX}1") == 0
    doc = json.loads(r2.execute_command("JSON.GET", "film:1", "$"))[0]
    assert doc["year"] == 1991 and doc["genre"] == ["comedy", "sci fi"]
    assert sorted(search(r2, INDEX, "@genre:{horror}")) == sorted(
        f"film:{i}".encode() for i in range(COUNT) if "horror" in source_doc(i)[b"genre"].decode())
    from rvlm.core.migrate.rollback import rollback

    assert 0 < r2.pttl("film:0") <= 3_600_000  # the TTL moved with the document
    rollback(redis_url, backup)
    time.sleep(0.2)
    for key, original in movies.items():
        assert r2.type(key) == b"hash"
        assert r2.hgetall(key) == original
    assert r2.exists("film:1") == 0
    assert 3_500_000 < r2.pttl(f"{PREFIX}0") <= 3_600_000
    assert all(r2.pttl(k) == -1 for k in movies if k != f"{PREFIX}0".encode())


def _state(client: redis.Redis) -> dict[bytes, object]:
    """Every key (the lock left out) with its type, content and whether it has a TTL."""
    out: dict[bytes, object] = {}
    for k in client.scan_iter(count=1000):
        if k.startswith(b"rvlm:lock:"):
            continue
        kind = client.type(k)
        body = (client.hgetall(k) if kind == b"hash"
                else client.execute_command("JSON.GET", k, "$"))
        out[k] = (kind, body, client.pttl(k) > 0)
    return out


@pytest.mark.parametrize("new_prefix", [None, "film:"])
def test_executor_conversion_answers_the_same_queries(movies: dict, r2: redis.Redis,
                                                     redis_url: str, tmp_path: object,
                                                     new_prefix: str | None) -> None:
    """apply_plan itself (not the reference): every query answers with the same documents,
    every unindexed field and TTL is kept; rollback gives back every hash byte for byte."""
    from rvlm.core.migrate.executor import apply_plan
    from rvlm.core.migrate.rollback import rollback

    before = {q: search(r2, INDEX, q) for q in QUERIES}
    knn_before = knn(r2, INDEX, vector(3))
    original = _state(r2)
    section = {"prefix": new_prefix} if new_prefix else {}
    plan = plan_for(r2, section, index={"name": "films"})
    assert plan.supported, plan.blocked_reasons
    backup = tmp_path / "backup"  # type: ignore[operator]
    report = apply_plan(redis_url, plan, backup_dir=backup, batch_size=7)
    assert report.succeeded, report.to_yaml()
    rename = {k: (k.replace(PREFIX.encode(), new_prefix.encode()) if new_prefix else k)
              for k in movies}
    for q, keys in before.items():
        assert sorted(search(r2, "films", q)) == sorted(rename[k] for k in keys), q
    assert knn(r2, "films", vector(3)) == [rename[k] for k in knn_before]
    for k, new in rename.items():
        assert r2.type(new) == b"ReJSON-RL"
        doc = json.loads(r2.execute_command("JSON.GET", new, "$"))[0]
        assert doc["notes"] == movies[k][b"notes"].decode()  # unindexed fields kept
    assert 0 < r2.pttl(rename[f"{PREFIX}0".encode()]) <= 3_600_000
    assert rollback(redis_url, backup).succeeded
    assert _state(r2) == original
    assert {q: sorted(search(r2, INDEX, q)) for q in QUERIES} == {
        q: sorted(keys) for q, keys in before.items()}
    assert knn(r2, INDEX, vector(3)) == knn_before


def _apply_in_subprocess(url: str, plan_path: object, backup: object,
                         fault: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RVLM_FAULT"}
    if fault:
        env["RVLM_FAULT"] = fault
    code = ("import sys; from rvlm.core.migrate.executor import apply_plan; "
            "from rvlm.core.migrate.plan import Plan; "
            "r = apply_plan(sys.argv[1], Plan.load(sys.argv[2]), backup_dir=sys.argv[3], "
            "batch_size=7); print(r.result, r.error or ''); sys.exit(0 if r.succeeded else 1)")
    return subprocess.run([sys.executable, "-c", code, url, str(plan_path), str(backup)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("fault", ["after_backup:1", "mid_write:1", "mid_write:3"])
def test_crash_resume_and_rollback(movies: dict, r2: redis.Redis, redis_url: str,
                                   tmp_path: object, fault: str) -> None:
    """Killed mid-conversion (RVLM_FAULT), re-run: the documents equal an uninterrupted
    run's; rolled back: they equal the originals."""
    from rvlm.core.migrate.rollback import rollback

    original = _state(r2)
    plan = plan_for(r2, {"prefix": "film:"}, index={"name": "films"})
    plan_path = tmp_path / "plan.yaml"  # type: ignore[operator]
    plan.write(plan_path)
    done = _apply_in_subprocess(redis_url, plan_path, tmp_path / "control", None)  # type: ignore[operator]
    assert done.returncode == 0, done.stdout + done.stderr
    control = _state(r2)
    assert rollback(redis_url, tmp_path / "control").succeeded  # type: ignore[operator]
    assert _state(r2) == original

    backup = tmp_path / "backup"  # type: ignore[operator]
    first = _apply_in_subprocess(redis_url, plan_path, backup, fault)
    assert first.returncode == 137, first.stdout + first.stderr
    second = _apply_in_subprocess(redis_url, plan_path, backup, None)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _state(r2) == control
    assert rollback(redis_url, backup).succeeded
    assert _state(r2) == original


def test_a_field_rename_in_the_same_patch_runs_before_the_conversion(
        movies: dict, r2: redis.Redis, redis_url: str, tmp_path: object) -> None:
    from rvlm.core.migrate.executor import apply_plan
    from rvlm.core.migrate.rollback import rollback

    original = _state(r2)
    before = sorted(search(r2, INDEX, "@title:space"))
    plan = plan_for(r2, {}, rename_fields=[{"old_name": "title", "new_name": "headline"}])
    assert plan.supported, plan.blocked_reasons
    assert [op.plugin for op in plan.operations][-1] == "hash_to_json"
    assert plan.operations[-1].converts_to == "json" and len(plan.operations) == 2
    backup = tmp_path / "backup"  # type: ignore[operator]
    report = apply_plan(redis_url, plan, backup_dir=backup)
    assert report.succeeded, report.to_yaml()
    doc = json.loads(r2.execute_command("JSON.GET", f"{PREFIX}1", "$"))[0]
    assert doc["headline"] == "Movie 1 about space" and "title" not in doc
    assert sorted(search(r2, INDEX, "@headline:space")) == before
    assert rollback(redis_url, backup).succeeded
    assert _state(r2) == original


def test_a_json_index_over_the_same_keys_blocks_the_plan(movies: dict, r2: redis.Redis) -> None:
    """It does not index the hashes now, but it would index every converted document."""
    r2.execute_command("FT.CREATE", "watcher", "ON", "JSON", "PREFIX", "1", PREFIX,
                       "SCHEMA", "$.title", "AS", "title", "TEXT")
    plan = plan_for(r2, {})
    assert not plan.supported
    assert any("watcher" in r and "cover the same keys" in r for r in plan.blocked_reasons)
