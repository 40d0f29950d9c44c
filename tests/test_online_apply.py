"""Online migrations that rewrite documents, end to end on the real server: the copy to a
target prefix, change capture, the cut-over, forwarding, finalize and rollback, with reader
and writer threads."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from online_helpers import (
    RENAME_QUANTIZE,
    Reader,
    Writer,
    contents,
    copy_plan,
    dumps,
    points_at,
    renamed_quantized,
)
from test_apply_helpers import make_hash_index, make_json_index

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.online.control import read_status, send
from rvlm.core.migrate.online.finalize import finalize_migration
from rvlm.core.migrate.online.options import OnlineOptions
from rvlm.core.migrate.rollback import rollback
from rvlm.core.redis.capture import CLIENT_NAME
from rvlm.core.redis.connection import read_index
from rvlm.core.redis.notify import read_setting
from rvlm.core.storage.journal import RunState


def fields_of(client, index: str) -> list[str]:
    return read_index(client, index).schema.field_names()


def test_reader_sees_every_answer_through_an_online_rename_and_quantize(
        redis_client, redis_url, tmp_path, notify):
    n, dims = 20_000, 16
    make_hash_index(redis_client, n=n, dims=dims, ttl_every=50)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    source = dumps(redis_client, "doc:*")
    plan = copy_plan(redis_client)
    assert plan.supported, plan.blocked_reasons
    warnings = plan.all_warnings()
    assert any(w.startswith("downtime: none (online)") for w in warnings)
    assert any(w.startswith("extra memory until finalize") for w in warnings)
    assert any("apply turns on the keyspace notification classes 'Kg$hxe'" in w
               for w in warnings)
    assert any(w.startswith("clients: the vector datatype changes (v: float32 -> float16)")
               for w in warnings)
    reader = Reader(redis_url, dims)
    reader.start()
    try:
        while len(reader.totals) < 5 and not reader.errors:
            time.sleep(0.01)
        report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=1000,
                            accept_data_loss=True)
        seen = len(reader.totals)
        while len(reader.totals) < seen + 5 and not reader.errors:
            time.sleep(0.01)
    finally:
        reader.stop.set()
        reader.join(10)
    assert report.succeeded, report.to_yaml()
    # every answer: complete, and from the whole source or the whole target
    assert reader.errors == []
    assert len(reader.totals) > 50 and set(reader.totals) == {n}
    assert set(reader.knn) == {5}
    swap = reader.served_by.index(b"new")
    assert set(reader.served_by[:swap]) == {b"doc"} and set(reader.served_by[swap:]) == {b"new"}
    assert reader.retries == 1  # float32 queries before, float16 after the swap
    assert report.downtime_duration_seconds == 0
    assert report.to_dict()["timings"]["downtime_duration_seconds"] == 0
    assert report.documents == n and report.online["copied"] == n
    # the target: every document renamed and quantized, with its expiry; the source untouched
    assert points_at(redis_client, "live") == "idx_v2"
    assert "title" in fields_of(redis_client, "live")
    assert dumps(redis_client, "doc:*") == source
    for i in range(0, n, 997):
        src = redis_client.hgetall(f"doc:{i}")
        assert redis_client.hgetall(f"new:{i}") == renamed_quantized(src)
        assert (redis_client.execute_command("PEXPIRETIME", f"new:{i}")
                == redis_client.execute_command("PEXPIRETIME", f"doc:{i}"))
    assert set(redis_client.execute_command("FT._LIST")) == {b"idx_v2"}
    assert read_setting(redis_client) == ""  # the notification classes were taken off
    state = RunState.load(tmp_path / "b")
    assert state.phase == "done"


def test_writes_during_the_copy_reach_their_targets_and_the_lag_is_reported(
        redis_client, redis_url, tmp_path, notify):
    n, dims = 3000, 8
    make_hash_index(redis_client, n=n, dims=dims, ttl_every=11)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    plan = copy_plan(redis_client)
    writer = Writer(redis_url, n, dims)
    stop = threading.Event()
    options = OnlineOptions(follow=True, should_stop=lambda: "the test" if stop.is_set()
                            else None)

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "transform" and done and not writer.is_alive() and not writer.stop.is_set():
            writer.start()  # writes begin once the copy is under way

    out: dict[str, object] = {}
    apply = threading.Thread(target=lambda: out.setdefault("report", apply_plan(
        redis_url, plan, backup_dir=tmp_path / "b", batch_size=100, accept_data_loss=True,
        progress=progress, online=options)))
    apply.start()
    deadline = time.monotonic() + 120
    while points_at(redis_client, "live") != "idx_v2":
        assert time.monotonic() < deadline and apply.is_alive()
        time.sleep(0.05)
    time.sleep(0.5)  # writes after the cut-over are carried over too (--follow)
    writer.stop.set()
    writer.join()
    stop.set()
    apply.join(60)
    report = out["report"]
    assert report.succeeded, report.to_yaml()  # type: ignore[union-attr]
    assert writer.ops > 200
    # every target is the transform of its source's final state; deleted keys are gone
    for key, model in writer.model.items():
        target = b"new:" + key[4:]
        if model is None:
            assert not redis_client.exists(target), key
        else:
            assert redis_client.hgetall(key) == model
            assert redis_client.hgetall(target) == renamed_quantized(model), key
    sources = contents(redis_client, "doc:*")
    targets = contents(redis_client, "new:*")
    assert {b"new:" + k[4:] for k in sources} == set(targets)
    for k, (fields, expiry) in sources.items():
        assert targets[b"new:" + k[4:]] == (renamed_quantized(fields), expiry)
    lag = report.forward_lag_ms  # type: ignore[union-attr]
    assert lag["count"] > 0 and 0 < lag["p50"] <= lag["p99"] <= lag["max"]
    assert report.to_dict()["rvlm"]["forward_lag_ms"] == lag  # type: ignore[union-attr]
    assert report.online["forwarding_stopped"] == "the test"  # type: ignore[union-attr]


def test_finalize_from_another_shell_loses_no_write_made_after_the_cut_over(
        redis_client, redis_url, tmp_path, notify):
    n, dims = 1500, 8
    make_hash_index(redis_client, n=n, dims=dims, ttl_every=13)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    plan = copy_plan(redis_client)
    out: dict[str, object] = {}
    apply = threading.Thread(target=lambda: out.setdefault("report", apply_plan(
        redis_url, plan, backup_dir=tmp_path / "b", batch_size=100, accept_data_loss=True,
        online=OnlineOptions(follow=True))))
    apply.start()
    deadline = time.monotonic() + 120
    while points_at(redis_client, "live") != "idx_v2":
        assert time.monotonic() < deadline and apply.is_alive()
        time.sleep(0.05)
    writer = Writer(redis_url, n, dims, pause=0.001)  # clients still write the old keys
    writer.start()
    deadline = time.monotonic() + 60
    while writer.ops < 150:  # writes after the cut-over, however loaded the machine is
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # finalize while the writer still writes; it stops a moment later
    called = time.time()
    threading.Timer(0.4, writer.stop.set).start()
    report = finalize_migration(redis_url, tmp_path / "b",
                                options=OnlineOptions(backlog_memory_keys=5))
    # the running apply finalizes with its own backlog: the call's options are said unused
    assert any("this call's are not used" in w for w in report.warnings), report.warnings
    writer.join()
    apply.join(60)
    applied = out["report"]
    assert writer.ops > 100
    why_not = ("still being written", "kept changing", "after finalize's last check")
    for r in (applied, report):
        # finished, or says why not: the writer outlasted finalize's passes (a loaded machine)
        # or wrote the source prefix after finalize's last check (then this call, which saw
        # it, carried those writes over itself, or failed saying so)
        said = [*r.manual_actions, r.error or ""]  # type: ignore[union-attr]
        assert r.succeeded or any(w in a for w in why_not for a in said), r.to_yaml()  # type: ignore[union-attr]

    def check_targets(before: float, late_deletes_from: float = math.inf) -> int:
        """Every key whose last write was acknowledged before ``before``: its source key is
        gone and its target holds that write (or is gone too; not checked for a delete
        acknowledged after ``late_deletes_from``). Returns how many targets were checked."""
        last: dict[bytes, float] = {}
        for at, key in writer.times:
            last[key] = at
        checked = 0
        for key, at in last.items():
            if at >= before:
                continue
            assert not redis_client.exists(key), key
            target = b"new:" + key[4:]
            if key not in writer.model:  # only writes that changed nothing (or a PEXPIRE)
                continue
            if writer.model[key] is None:
                if at >= late_deletes_from:
                    continue
                assert not redis_client.exists(target), key
            else:
                assert redis_client.hgetall(target) == renamed_quantized(
                    writer.model[key]), key  # type: ignore[arg-type]
            checked += 1
        return checked

    cutoff = called
    if report.succeeded:
        # every write acknowledged before finalize's last check reached its target
        cutoff = report.online["source_empty_at"]  # type: ignore[assignment]
        assert isinstance(cutoff, float) and cutoff > called, report.online
        assert check_targets(cutoff) > 50
    if not report.succeeded or list(redis_client.scan_iter(match="doc:*")):
        # once no client writes them, the same command finishes: it carries over what was
        # written after the last check, except a key created and deleted again while no
        # change capture ran (its target stays as it was)
        report = finalize_migration(redis_url, tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    # no source key is left, and the target holds the last write of every key
    assert list(redis_client.scan_iter(match="doc:*")) == []
    assert check_targets(math.inf, late_deletes_from=cutoff) > 50
    assert RunState.load(tmp_path / "b").phase == "finalized"
    assert read_setting(redis_client) == ""


def test_a_killed_capture_connection_stops_the_run_and_the_same_command_resumes(
        redis_client, redis_url, tmp_path, notify):
    n, dims = 2000, 8
    make_hash_index(redis_client, n=n, dims=dims)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    source = dumps(redis_client, "doc:*")
    plan = copy_plan(redis_client)
    killed: list[str] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "transform" and done >= 400 and not killed:
            for c in redis_client.client_list():
                if c.get("name") == CLIENT_NAME:
                    redis_client.client_kill_filter(_id=c["id"])
                    killed.append(c["id"])
            time.sleep(0.2)
            redis_client.hset("doc:7", "t", "hello changed while nobody listened")

    first = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=100,
                       accept_data_loss=True, progress=progress)
    assert killed and not first.succeeded
    assert "lost its subscription" in first.error
    assert any("keeps serving and was not modified" in a for a in first.manual_actions)
    assert points_at(redis_client, "live") == "idx"  # the source kept serving
    source[b"doc:7"] = (redis_client.dump("doc:7"), -1)
    assert dumps(redis_client, "doc:*") == source  # and was not modified by rvlm
    second = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=100,
                        accept_data_loss=True)
    assert second.succeeded and second.resumed, second.to_yaml()
    assert second.online["unchanged_skipped"] >= 300  # copies already right: not rewritten
    assert points_at(redis_client, "live") == "idx_v2"
    assert redis_client.hget("new:7", "title") == b"hello changed while nobody listened"
    for k, (fields, _expiry) in contents(redis_client, "doc:*").items():
        assert redis_client.hgetall(b"new:" + k[4:]) == renamed_quantized(fields)


def test_rollback_before_finalize_restores_the_source_exactly(redis_client, redis_url,
                                                              tmp_path, notify):
    make_hash_index(redis_client, n=500, dims=8, ttl_every=7)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    redis_client.set("new:mine", "a key rvlm did not write")  # refused: the prefix is taken
    plan = copy_plan(redis_client)
    assert any("keys already exist under the target prefix 'new:'" in r
               for r in plan.blocked_reasons), plan.blocked_reasons
    redis_client.delete("new:mine")
    plan = copy_plan(redis_client)
    source = dumps(redis_client, "doc:*")
    schema = read_index(redis_client, "idx").schema
    assert apply_plan(redis_url, plan, backup_dir=tmp_path / "b",
                      accept_data_loss=True).succeeded
    redis_client.set("new:theirs", "written under the new prefix after the cut-over")
    report = rollback(redis_url, tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert report.online["copies_deleted"] == 500
    assert any("1 keys under the target prefix" in w for w in report.warnings)
    assert dumps(redis_client, "doc:*") == source  # bytes and expiry times
    assert list(redis_client.scan_iter(match="new:*")) == [b"new:theirs"]
    assert points_at(redis_client, "live") == "idx"
    assert read_index(redis_client, "idx").schema == schema
    assert set(redis_client.execute_command("FT._LIST")) == {b"idx"}
    assert read_setting(redis_client) == ""
    with pytest.raises(RvlmError, match="rolled back"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "b", accept_data_loss=True)


def test_rollback_after_finalize_restores_the_source_exactly(redis_client, redis_url,
                                                             tmp_path, notify):
    make_hash_index(redis_client, n=400, dims=8, ttl_every=5)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    source = dumps(redis_client, "doc:*")
    schema = read_index(redis_client, "idx").schema
    plan = copy_plan(redis_client)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", accept_data_loss=True,
                        online=OnlineOptions(finalize=True))
    assert report.succeeded, report.to_yaml()
    assert report.online["finalize"]["deleted"] == 400
    assert list(redis_client.scan_iter(match="doc:*")) == []
    assert RunState.load(tmp_path / "b").phase == "finalized"
    assert finalize_migration(redis_url, tmp_path / "b").succeeded  # again: nothing to do
    time.sleep(0.05)
    back = rollback(redis_url, tmp_path / "b")
    assert back.succeeded, back.to_yaml()
    assert back.restored_records == 400
    assert dumps(redis_client, "doc:*") == source  # DUMP bytes and absolute expiry
    assert list(redis_client.scan_iter(match="new:*")) == []
    assert points_at(redis_client, "live") == "idx"
    assert read_index(redis_client, "idx").schema == schema
    assert read_index(redis_client, "idx").stats.num_docs == 400


def test_postponed_cut_over_waits_for_the_flag_file_or_a_command(redis_client, redis_url,
                                                                 tmp_path, notify):
    make_hash_index(redis_client, n=300, dims=8)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    plan = copy_plan(redis_client)
    flag = tmp_path / "postpone"
    flag.write_text("")
    out: dict[str, object] = {}
    apply = threading.Thread(target=lambda: out.setdefault("report", apply_plan(
        redis_url, plan, backup_dir=tmp_path / "b", accept_data_loss=True,
        online=OnlineOptions(postpone_flag_file=flag))))
    apply.start()
    deadline = time.monotonic() + 60
    while (status := read_status(tmp_path / "b")) is None or status.phase != "postponed":
        assert time.monotonic() < deadline and apply.is_alive()
        time.sleep(0.05)
    assert "State: cut-over postponed, delete" in send(tmp_path / "b", "status")
    redis_client.hset("doc:3", "t", "hello while postponed")  # forwarding goes on meanwhile
    time.sleep(0.5)
    assert points_at(redis_client, "live") == "idx"
    assert redis_client.hget("new:3", "title") == b"hello while postponed"
    assert send(tmp_path / "b", "cut-over").startswith("the cut-over goes ahead")
    apply.join(60)
    assert out["report"].succeeded  # type: ignore[union-attr]
    assert points_at(redis_client, "live") == "idx_v2" and flag.exists()


def test_json_documents_written_with_json_set_during_the_copy(redis_client, redis_url,
                                                              tmp_path, notify):
    make_json_index(redis_client, n=800)
    redis_client.execute_command("FT.ALIASADD", "live", "jidx")
    plan = copy_plan(redis_client, {"index": {"name": "jidx_v2"},
                                    "rename_fields": [{"old_name": "g", "new_name": "group"}],
                                    "update_fields": [{"name": "group", "path": "$.group"}]},
                     index="jidx", target_prefix="k:")
    assert plan.supported, plan.blocked_reasons
    assert any("apply turns on the keyspace notification classes 'Kg$hxed'" in w
               for w in plan.all_warnings())
    written: dict[str, dict | None] = {}
    rng = np.random.default_rng(3)

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "transform" and len(written) < 60:
            for _ in range(6):  # writes while the copy runs: JSON.SET, JSON.DEL, DEL
                i = int(rng.integers(0, 820))
                key = f"j:{i}"
                if rng.random() < 0.7:
                    doc = {"t": f"hello json {i} again", "g": "w", "v": [0.5] * 4}
                    redis_client.execute_command("JSON.SET", key, "$", json.dumps(doc))
                    written[key] = doc
                elif written.get(key) is not None or redis_client.exists(key):
                    redis_client.delete(key)
                    written[key] = None

    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=50,
                        accept_data_loss=True, progress=progress)
    assert report.succeeded, report.to_yaml()
    assert len(written) >= 30
    for key, doc in written.items():
        target = "k:" + key[2:]
        if doc is None:
            assert not redis_client.exists(target)
            continue
        want = dict(doc)
        want["group"] = want.pop("g")
        assert json.loads(redis_client.execute_command("JSON.GET", target, "$"))[0] == want


def test_a_third_party_plugin_runs_online_unchanged(redis_client, redis_url, tmp_path, notify):
    pytest.importorskip("rvlm_hash_to_json")
    make_hash_index(redis_client, n=200, dims=8, ttl_every=4)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    source = dumps(redis_client, "doc:*")
    plan = copy_plan(redis_client, {"hash_to_json": {}, "index": {"name": "idx_json"}},
                     target_prefix="js:")
    assert plan.supported, plan.blocked_reasons
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", accept_data_loss=True)
    assert report.succeeded, report.to_yaml()
    assert points_at(redis_client, "live") == "idx_json"
    assert dumps(redis_client, "doc:*") == source
    doc = json.loads(redis_client.execute_command("JSON.GET", "js:5", "$"))[0]
    assert doc["t"] == redis_client.hget("doc:5", "t").decode()
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert list(redis_client.scan_iter(match="js:*")) == []
    assert dumps(redis_client, "doc:*") == source


def test_status_file_and_the_control_channel_after_the_run(redis_client, redis_url, tmp_path,
                                                           notify):
    make_hash_index(redis_client, n=100, dims=8)
    plan = copy_plan(redis_client)
    lines: list[str] = []
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", accept_data_loss=True,
                        online=OnlineOptions(status_every=0, on_status=lambda s: lines.append(
                            s.line())))
    assert report.succeeded, report.to_yaml()
    assert any(line.startswith("Copy: 100/100 100.0%;") for line in lines)
    status = read_status(tmp_path / "b")
    assert status is not None and status.state == "succeeded"
    with pytest.raises(RvlmError, match="no online apply is running"):
        send(Path(tmp_path / "b"), "status")


def test_many_indexes_online_with_one_patch(redis_client, redis_url, tmp_path, notify):
    from rvlm.core.multi.executor import BatchMigrationExecutor
    from rvlm.core.multi.planner import BatchMigrationPlanner

    make_hash_index(redis_client, name="docs_idx", prefix="doc:", n=120, dims=8)
    make_hash_index(redis_client, name="items_idx", prefix="item:", n=80, dims=8)
    for name in ("docs_idx", "items_idx"):
        redis_client.execute_command("FT.ALIASADD", f"{name}_live", name)
    patch = tmp_path / "patch.yaml"
    patch.write_text("version: 1\nchanges:\n  rename_fields: [{old_name: t, new_name: title}]\n")
    planner = BatchMigrationPlanner(mode="online", alias="{index}_live",
                                    target_prefix="{prefix}_v2:")
    batch = planner.create_batch_plan(redis_url=redis_url, schema_patch_path=patch,
                                      pattern="*_idx")
    assert [e.name for e in batch.applicable] == ["docs_idx", "items_idx"], batch.indexes
    plan = batch.plans["items_idx"]
    assert plan.target_index == "items_idx_v2" and plan.alias == "items_idx_live"
    assert plan.target_schema.index.prefix == ("item_v2:",)
    report = BatchMigrationExecutor(online=OnlineOptions()).apply(
        batch, redis_url=redis_url, state_path=tmp_path / "state.yaml",
        backup_dir=tmp_path / "b")
    assert report.succeeded, report.to_dict()
    assert points_at(redis_client, "docs_idx_live") == "docs_idx_v2"
    assert points_at(redis_client, "items_idx_live") == "items_idx_v2"
    assert redis_client.hget("item_v2:7", "title") == redis_client.hget("item:7", "t")
    assert len(list(redis_client.scan_iter(match="doc_v2:*"))) == 120
    done = finalize_migration(redis_url, tmp_path / "b" / "items_idx")
    assert done.succeeded, done.to_yaml()
    assert list(redis_client.scan_iter(match="item:*")) == []
    assert read_setting(redis_client) == ""


async def test_the_async_api_runs_an_online_copy(redis_client, redis_url, tmp_path, notify):
    from rvlm.aio import AsyncMigrationExecutor, AsyncMigrationPlanner

    make_hash_index(redis_client, n=150, dims=8, ttl_every=5)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    source = contents(redis_client, "doc:*")
    plan = await AsyncMigrationPlanner(mode="online", alias="live", target_prefix="new:"
                                       ).create_plan(
        "idx", redis_url=redis_url, schema_patch={"version": 1, "changes": RENAME_QUANTIZE})
    assert plan.supported, plan.blocked_reasons
    executor = AsyncMigrationExecutor()
    report = await executor.apply(plan, redis_url=redis_url, backup_dir=tmp_path / "b",
                                  online=OnlineOptions(finalize=True))
    assert report.succeeded, report.to_yaml()
    assert points_at(redis_client, "live") == "idx_v2"
    assert list(redis_client.scan_iter(match="doc:*")) == []
    assert redis_client.hgetall("new:3") == renamed_quantized(source[b"doc:3"][0])
    back = await executor.rollback(tmp_path / "b", redis_url=redis_url)
    assert back.succeeded, back.to_yaml()
    assert contents(redis_client, "doc:*") == source
    assert points_at(redis_client, "live") == "idx"
