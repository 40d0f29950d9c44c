"""apply_plan with hand-built plans and tiny test plugins, on a real server (RESP2 and RESP3)."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from test_apply_helpers import (
    DIMS,
    BadPlugin,
    HalfPlugin,
    RenamePlugin,
    all_plugins,
    build_plan,
    f16_target,
    half_op,
    make_hash_index,
    make_json_index,
    prefix_op,
    rename_field_target,
    rename_op,
    reset,
    search,
    snapshot,
)

from rvlm.api import MigrationExecutor
from rvlm.core.errors import RvlmError
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.rollback import rollback
from rvlm.core.redis.connection import read_index


def test_rename_and_quantize_hash(redis_client, redis_url, tmp_path, protocol):
    make_hash_index(redis_client, n=120, ttl_every=10)
    before = snapshot(redis_client)
    src = read_index(redis_client, "idx").schema
    target = f16_target(rename_field_target(src, "t", "title"))
    plan = build_plan(redis_client, "idx", target, [rename_op(), half_op()], lossy=True)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=16,
                        accept_data_loss=True, plugins=[RenamePlugin(), HalfPlugin()])
    assert report.succeeded, report.to_yaml()
    assert report.batches == 8 and report.documents_rewritten == 120
    assert report.validation.schema_match and report.validation.doc_count_match
    after = snapshot(redis_client)
    assert set(after) == set(before)
    for k, (h, ttl) in before.items():
        new, new_ttl = after[k]
        assert new_ttl == ttl
        assert b"t" not in new and new[b"title"] == h[b"t"] and new[b"g"] == h[b"g"]
        want = np.frombuffer(h[b"v"], np.float32).astype(np.float16).tobytes()
        assert new[b"v"] == want
    total, _rows = search(redis_client, "idx", "@title:hello")
    assert total == 120
    assert not redis_client.keys("rvlm:lock:*")
    text = report.to_yaml()
    assert "result: succeeded" in text and "downtime_duration_seconds" in text


def test_prefix_change_and_index_rename_with_rollback(redis_client, redis_url, tmp_path,
                                                      protocol, monkeypatch):
    make_hash_index(redis_client, n=60, ttl_every=7)
    before = snapshot(redis_client)
    q_before = search(redis_client, "idx")
    src = read_index(redis_client, "idx").schema
    target = src.with_index(name="idx2", prefix=("item:",))
    plan = build_plan(redis_client, "idx", target, [prefix_op()])
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=8,
                        plugins=all_plugins())
    assert report.succeeded, report.to_yaml()
    after = snapshot(redis_client)
    assert not [k for k in after if k.startswith(b"doc:")]
    assert {k.replace(b"doc:", b"item:"): v for k, v in before.items()} == after
    assert search(redis_client, "idx2")[0] == 60
    # roll back: same documents, same bytes, same query answers
    rb = rollback(redis_url, tmp_path / "b")
    assert rb.succeeded, rb.to_yaml()
    assert snapshot(redis_client) == before
    assert search(redis_client, "idx") == q_before
    assert b"idx2" not in redis_client.execute_command("FT._LIST")
    again = rollback(redis_url, tmp_path / "b")  # idempotent
    assert again.succeeded and snapshot(redis_client) == before


def test_json_quantize_and_rollback(redis_client, redis_url, tmp_path, protocol):
    make_json_index(redis_client, n=50)
    before = snapshot(redis_client)
    q_before = search(redis_client, "jidx")
    src = read_index(redis_client, "jidx").schema
    plan = build_plan(redis_client, "jidx", f16_target(src), [half_op("$.v")], lossy=True)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=7,
                        accept_data_loss=True, plugins=all_plugins())
    assert report.succeeded, report.to_yaml()
    import json

    doc = json.loads(redis_client.execute_command("JSON.GET", "j:3", "$"))[0]
    orig = json.loads(before[b"j:3"][0])[0]
    assert doc["v"] == [float(np.float16(x)) for x in orig["v"]] and doc["z"] == orig["z"]
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert snapshot(redis_client) == before  # byte for byte, key order included
    assert search(redis_client, "jidx") == q_before


def test_source_changed_since_plan_is_refused(redis_client, redis_url, tmp_path):
    make_hash_index(redis_client, n=20)
    src = read_index(redis_client, "idx").schema
    plan = build_plan(redis_client, "idx", rename_field_target(src, "t", "title"), [rename_op()])
    redis_client.execute_command("FT.ALTER", "idx", "SCHEMA", "ADD", "extra", "NUMERIC")
    before = snapshot(redis_client)
    with pytest.raises(RvlmError, match="source changed since the plan was made"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "b", plugins=all_plugins())
    assert snapshot(redis_client) == before
    assert read_index(redis_client, "idx").schema.field("extra") is not None


def test_refusals_before_any_change(redis_client, redis_url, tmp_path):
    make_hash_index(redis_client, n=30)
    src = read_index(redis_client, "idx").schema
    before = snapshot(redis_client)
    # lossy without accept_data_loss
    plan = build_plan(redis_client, "idx", f16_target(src), [half_op()], lossy=True)
    with pytest.raises(RvlmError, match="lossy"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "a", plugins=all_plugins())
    # a field the rename creates already exists in some documents
    redis_client.hset("doc:3", "title", "already")
    redis_client.hset("doc:9", "title", "already")
    plan = build_plan(redis_client, "idx", rename_field_target(src, "t", "title"), [rename_op()])
    with pytest.raises(RvlmError, match=r"2 document\(s\) already hold.*doc:3"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "c", plugins=all_plugins())
    redis_client.hdel("doc:3", "title")
    redis_client.hdel("doc:9", "title")
    # prefix collision
    redis_client.hset("item:5", "x", "1")
    plan = build_plan(redis_client, "idx", src.with_index(prefix=("item:",)), [prefix_op()])
    with pytest.raises(RvlmError, match="item:5"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "d", plugins=all_plugins())
    redis_client.delete("item:5")
    # renamed target exists
    redis_client.execute_command("FT.CREATE", "taken", "ON", "HASH", "PREFIX", "1", "zz:",
                                 "SCHEMA", "a", "TEXT")
    plan = build_plan(redis_client, "idx", src.with_index(name="taken"), [])
    with pytest.raises(RvlmError, match="already exists"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "e", plugins=all_plugins())
    # an alias is not an index
    redis_client.execute_command("FT.ALIASADD", "ali", "idx")
    plan = build_plan(redis_client, "idx", src, [])
    plan = attrs.evolve(plan, source_schema=plan.source_schema.with_index(name="ali"),
                        target_schema=plan.target_schema.with_index(name="ali"))
    with pytest.raises(RvlmError, match="alias of index 'idx'"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "h", plugins=all_plugins())
    # a plugin the plan needs is missing
    plan = build_plan(redis_client, "idx", rename_field_target(src, "t", "title"), [rename_op()])
    with pytest.raises(RvlmError, match="t_rename"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "f")
    # a backup dir made for another plan
    other = build_plan(redis_client, "idx", f16_target(src), [half_op()], lossy=True)
    (tmp_path / "g").mkdir()
    with pytest.raises(RvlmError, match="lossy"):
        apply_plan(redis_url, other, backup_dir=tmp_path / "g", plugins=all_plugins())
    with pytest.raises(RvlmError, match="another plan"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "g", plugins=all_plugins())
    assert snapshot(redis_client) == before
    assert b"idx" in redis_client.execute_command("FT._LIST")


def test_undeclared_write_fails_the_migration(redis_client, redis_url, tmp_path):
    make_hash_index(redis_client, n=20)
    src = read_index(redis_client, "idx").schema
    op = rename_op().__class__(plugin="t_bad", kind="x", reads=("t",), writes=("t",))
    plan = build_plan(redis_client, "idx", src, [op])
    before = snapshot(redis_client)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", plugins=[BadPlugin()])
    assert not report.succeeded and "outside its declared writes" in (report.error or "")
    assert snapshot(redis_client) == before  # no document was written
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert search(redis_client, "idx")[0] == 20


def test_two_applies_at_once_second_refused(redis_client, redis_url, tmp_path):
    from rvlm.core.redis.lock import IndexLock, LockHeld

    make_hash_index(redis_client, n=10)
    before = snapshot(redis_client)
    src = read_index(redis_client, "idx").schema
    plan = build_plan(redis_client, "idx", rename_field_target(src, "t", "title"), [rename_op()])
    with IndexLock(redis_client, "idx", owner="someone else"), \
            pytest.raises(LockHeld, match="being migrated by someone else"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "b", plugins=all_plugins())
    assert snapshot(redis_client) == before


def test_workers_two_same_as_one(redis_client, redis_url, tmp_path):
    results = []
    for workers in (1, 2):
        reset(redis_client)
        make_hash_index(redis_client, n=100)
        src = read_index(redis_client, "idx").schema
        target = f16_target(rename_field_target(src, "t", "title"))
        plan = build_plan(redis_client, "idx", target, [rename_op(), half_op()], lossy=True)
        report = MigrationExecutor().apply(plan, redis_url=redis_url,
                                           backup_dir=tmp_path / f"w{workers}", batch_size=9,
                                           num_workers=workers, plugins=all_plugins())
        assert report.result == "succeeded", report.to_yaml()
        assert report.documents_rewritten == 100
        results.append((snapshot(redis_client), search(redis_client, "idx", "@title:hello")))
    assert results[0] == results[1]
    assert len(list((tmp_path / "w2").glob("data-*.rvb"))) == 2


def test_vector_length_is_checked(redis_client, redis_url, tmp_path):
    """A target whose dims disagree with the stored vectors fails validation (not exit 0)."""
    make_hash_index(redis_client, n=10)
    src = read_index(redis_client, "idx").schema
    target = src.with_fields(f.evolve(attrs=attrs.evolve(f.attrs, dims=DIMS * 2))
                             if f.name == "v" else f for f in src.fields)
    plan = build_plan(redis_client, "idx", target, [])
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b")
    assert not report.succeeded
    assert any("vector_bytes" in e for e in report.validation.errors)


def test_index_only_change_touches_no_document(redis_client, redis_url, tmp_path, protocol):
    """A change without document operations (here: remove a field from the index) lists no
    key and rewrites nothing: same documents, new index, and rollback restores the old one."""
    make_hash_index(redis_client, n=50, ttl_every=5)
    before = snapshot(redis_client)
    q_before = search(redis_client, "idx", "@g:{g1}")
    src = read_index(redis_client, "idx").schema
    target = src.with_fields(f for f in src.fields if f.name != "g")
    plan = build_plan(redis_client, "idx", target, [])
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert report.documents == 50 and report.documents_rewritten == 0 and report.batches == 0
    assert snapshot(redis_client) == before
    assert [f.name for f in read_index(redis_client, "idx").schema.fields] == ["t", "v"]
    assert search(redis_client, "idx", "@t:hello")[0] == 50
    assert not (tmp_path / "b" / "keys.rvk").exists()
    assert not list((tmp_path / "b").glob("data-*.rvb"))
    rb = rollback(redis_url, tmp_path / "b")
    assert rb.succeeded, rb.to_yaml()
    assert snapshot(redis_client) == before
    assert search(redis_client, "idx", "@g:{g1}") == q_before


def test_workers_capped_at_cpus_and_batches(redis_client, redis_url, tmp_path, monkeypatch):
    """More worker processes than CPUs (or than batches to share) are not started: the
    report says how many ran and why, and the documents are the same."""
    import rvlm.core.migrate.drop_recreate as drop_recreate

    monkeypatch.setattr(drop_recreate, "usable_cpus", lambda: 2)
    for n, batch, asked, ran, why in ((100, 9, 8, 2, "2 CPU(s)"),
                                      (40, 9, 2, 1, "5 batch(es) to do")):
        reset(redis_client)
        make_hash_index(redis_client, n=n)
        src = read_index(redis_client, "idx").schema
        plan = build_plan(redis_client, "idx", f16_target(src), [half_op()], lossy=True)
        out = tmp_path / f"w{asked}"
        report = apply_plan(redis_url, plan, backup_dir=out, batch_size=batch, workers=asked,
                            accept_data_loss=True, plugins=all_plugins())
        assert report.succeeded, report.to_yaml()
        assert report.documents_rewritten == n and report.workers == ran
        assert any(f"--workers {asked} capped at {ran}" in w and why in w
                   for w in report.warnings), report.warnings
        assert len(list(out.glob("data-*.rvb"))) == ran
