"""The plugin on the real server: discovered through its entry point, planned, converted,
indexed and queried. Only rvlm's public faces are used (:mod:`rvlm` to plan, apply and roll
back; the plugin module itself); documents are checked with plain redis-py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest
import redis
from conftest import COUNT, INDEX, PREFIX, knn, search, source_doc, vector
from rvlm_hash_to_json import plugin
from rvlm_hash_to_json.convert import Options

import rvlm
from rvlm import MigrationExecutor, MigrationPlanner, Plan, RvlmError


def plan_for(client: redis.Redis, section: object, **changes: object) -> Plan:
    return MigrationPlanner().create_plan(
        INDEX, redis_client=client,
        schema_patch={"version": 1, "changes": {"hash_to_json": section, **changes}})


def apply(url: str, plan: Plan, backup: Any, **options: Any) -> Any:
    return MigrationExecutor().apply(plan, redis_url=url, backup_dir=backup, **options)


def test_discovered_through_the_entry_point() -> None:
    done = subprocess.run([sys.executable, "-m", "rvlm", "plugins", "--json"],
                          capture_output=True, text=True, timeout=60, check=True)
    info = {p["name"]: p for p in json.loads(done.stdout)["plugins"]}
    assert "hash_to_json" in info and not info["hash_to_json"]["builtin"]
    assert info["hash_to_json"]["change_types"] == ["hash_to_json"]


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


def test_converted_documents_answer_the_same_queries(movies: dict, r2: redis.Redis,
                                                     redis_url: str, tmp_path: object) -> None:
    before = {q: search(r2, INDEX, q) for q in QUERIES}
    knn_before = knn(r2, INDEX, vector(3))
    plan = plan_for(r2, {"prefix": "film:"}, index={"name": "films"})
    assert apply(redis_url, plan, tmp_path / "backup").succeeded  # type: ignore[operator]
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
    rules, options, _ = plugin._operation_parts(plan.operations[0])
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
    plan = plan_for(r2, {"prefix": "film:"})
    assert plan.supported, plan.blocked_reasons
    backup = str(tmp_path / "backup")  # type: ignore[operator]
    report = apply(redis_url, plan, backup)
    assert report.result == "succeeded", report.to_yaml()
    assert r2.exists(f"{PREFIX}1") == 0
    doc = json.loads(r2.execute_command("JSON.GET", "film:1", "$"))[0]
    assert doc["year"] == 1991 and doc["genre"] == ["comedy", "sci fi"]
    assert sorted(search(r2, INDEX, "@genre:{horror}")) == sorted(
        f"film:{i}".encode() for i in range(COUNT) if "horror" in source_doc(i)[b"genre"].decode())
    assert 0 < r2.pttl("film:0") <= 3_600_000  # the TTL moved with the document
    assert rvlm.rollback(backup, redis_url=redis_url).succeeded
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
    """Every query answers with the same documents, every unindexed field and TTL is kept;
    rollback gives back every hash byte for byte."""
    before = {q: search(r2, INDEX, q) for q in QUERIES}
    knn_before = knn(r2, INDEX, vector(3))
    original = _state(r2)
    section = {"prefix": new_prefix} if new_prefix else {}
    plan = plan_for(r2, section, index={"name": "films"})
    assert plan.supported, plan.blocked_reasons
    backup = tmp_path / "backup"  # type: ignore[operator]
    report = apply(redis_url, plan, backup, batch_size=7)
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
    assert rvlm.rollback(backup, redis_url=redis_url).succeeded
    assert _state(r2) == original
    assert {q: sorted(search(r2, INDEX, q)) for q in QUERIES} == {
        q: sorted(keys) for q, keys in before.items()}
    assert knn(r2, INDEX, vector(3)) == knn_before


def _apply_in_subprocess(url: str, plan_path: object, backup: object,
                         fault: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RVLM_FAULT"}
    if fault:
        env["RVLM_FAULT"] = fault
    code = ("import sys; from rvlm import MigrationExecutor, Plan; "
            "r = MigrationExecutor().apply(Plan.load(sys.argv[2]), redis_url=sys.argv[1], "
            "backup_dir=sys.argv[3], batch_size=7); print(r.result, r.error or ''); "
            "sys.exit(0 if r.succeeded else 1)")
    return subprocess.run([sys.executable, "-c", code, url, str(plan_path), str(backup)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("fault", ["after_backup:1", "mid_write:1", "mid_write:3"])
def test_crash_resume_and_rollback(movies: dict, r2: redis.Redis, redis_url: str,
                                   tmp_path: object, fault: str) -> None:
    """Killed mid-conversion (RVLM_FAULT), re-run: the documents equal an uninterrupted
    run's; rolled back: they equal the originals."""
    original = _state(r2)
    plan = plan_for(r2, {"prefix": "film:"}, index={"name": "films"})
    plan_path = tmp_path / "plan.yaml"  # type: ignore[operator]
    plan.write(plan_path)
    done = _apply_in_subprocess(redis_url, plan_path, tmp_path / "control", None)  # type: ignore[operator]
    assert done.returncode == 0, done.stdout + done.stderr
    control = _state(r2)
    assert rvlm.rollback(tmp_path / "control",  # type: ignore[operator]
                         redis_url=redis_url).succeeded
    assert _state(r2) == original

    backup = tmp_path / "backup"  # type: ignore[operator]
    first = _apply_in_subprocess(redis_url, plan_path, backup, fault)
    assert first.returncode == 137, first.stdout + first.stderr
    second = _apply_in_subprocess(redis_url, plan_path, backup, None)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _state(r2) == control
    assert rvlm.rollback(backup, redis_url=redis_url).succeeded
    assert _state(r2) == original


def test_a_field_rename_in_the_same_patch_runs_before_the_conversion(
        movies: dict, r2: redis.Redis, redis_url: str, tmp_path: object) -> None:
    original = _state(r2)
    before = sorted(search(r2, INDEX, "@title:space"))
    plan = plan_for(r2, {}, rename_fields=[{"old_name": "title", "new_name": "headline"}])
    assert plan.supported, plan.blocked_reasons
    assert [op.plugin for op in plan.operations][-1] == "hash_to_json"
    assert plan.operations[-1].converts_to == "json" and len(plan.operations) == 2
    backup = tmp_path / "backup"  # type: ignore[operator]
    report = apply(redis_url, plan, backup)
    assert report.succeeded, report.to_yaml()
    doc = json.loads(r2.execute_command("JSON.GET", f"{PREFIX}1", "$"))[0]
    assert doc["headline"] == "Movie 1 about space" and "title" not in doc
    assert sorted(search(r2, INDEX, "@headline:space")) == before
    assert rvlm.rollback(backup, redis_url=redis_url).succeeded
    assert _state(r2) == original


def test_a_json_index_over_the_same_keys_blocks_the_plan(movies: dict, r2: redis.Redis) -> None:
    """It does not index the hashes now, but it would index every converted document."""
    r2.execute_command("FT.CREATE", "watcher", "ON", "JSON", "PREFIX", "1", PREFIX,
                       "SCHEMA", "$.title", "AS", "title", "TEXT")
    plan = plan_for(r2, {})
    assert not plan.supported
    assert any("watcher" in r and "cover the same keys" in r for r in plan.blocked_reasons)
