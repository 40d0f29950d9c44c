"""Restore never deletes a key it cannot prove is the migration's own.

When a moved document's original key *and* its new key both exist, restore deletes the new key
only if it is an exact copy of the original (what an interrupted DUMP/RESTORE move leaves);
otherwise it leaves both, counts a conflict, names both keys in ``manual_actions`` and fails
(rollback: exit code 1; resume: stops before redoing anything). Real server, hash and JSON,
RESP2 and RESP3.
"""

from __future__ import annotations

import json

import pytest
from test_apply_helpers import (
    all_plugins,
    build_plan,
    f16_target,
    half_op,
    make_hash_index,
    make_json_index,
    prefix_op,
    reset,
    snapshot,
)
from test_crash_resume import BATCH, _run, _setup

from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.rollback import rollback
from rvlm.core.redis.connection import connect, read_index
from rvlm.core.redis.docio.restore import RestoreConflict, restore_records
from rvlm.core.storage.backup.records import BackupRecord, FieldOriginal
from rvlm.core.storage.keyfile import KeyFileReader


def _migrate(client, url, backup, storage):
    """doc: -> item: (hash, plus float32 -> float16) or j: -> k: (JSON), batch 7."""
    if storage == "hash":
        make_hash_index(client, n=30)
        src = read_index(client, "idx").schema
        target = f16_target(src).with_index(name="idx2", prefix=("item:",))
        plan = build_plan(client, "idx", target, [half_op(), prefix_op()], lossy=True)
    else:
        make_json_index(client, n=30)
        src = read_index(client, "jidx").schema
        target = src.with_index(name="jidx2", prefix=("k:",))
        plan = build_plan(client, "jidx", target, [prefix_op("j:", "k:")])
    report = apply_plan(url, plan, backup_dir=backup, batch_size=7, accept_data_loss=True,
                        plugins=all_plugins())
    assert report.succeeded, report.to_yaml()


def _migrated(client, url, backup, storage):
    """The documents as they were before :func:`_migrate` (made, snapshot, wiped), then
    migrated from a fresh server."""
    if storage == "hash":
        make_hash_index(client, n=30)
    else:
        make_json_index(client, n=30)
    before = snapshot(client)
    reset(client)
    _migrate(client, url, backup, storage)
    return before


def _foreign(client, key, storage):
    if storage == "hash":
        client.hset(key, mapping={"someone": b"else"})
    else:
        client.execute_command("JSON.SET", key, "$", json.dumps({"someone": "else"}))


@pytest.mark.parametrize("storage", ["hash", "json"])
def test_rollback_leaves_both_keys_when_one_is_foreign(redis_client, redis_url, tmp_path,
                                                       protocol, storage):
    old, new = (b"doc:", b"item:") if storage == "hash" else (b"j:", b"k:")
    before = _migrated(redis_client, redis_url, tmp_path / "b", storage)
    # someone creates a key under an old name after the migration moved that document
    _foreign(redis_client, old + b"3", storage)
    foreign = snapshot(redis_client, (old + b"3").decode())
    migrated = snapshot(redis_client, (new + b"3").decode())

    report = rollback(redis_url, tmp_path / "b")
    assert not report.succeeded
    assert report.restore_conflicts == 1
    assert report.restored_records == 29
    text = "\n".join(report.manual_actions)
    assert repr((old + b"3").decode()) in text and repr((new + b"3").decode()) in text
    assert "doc" in (report.error or "") or "j:" in (report.error or "")
    # neither key was touched; every other document is back under its old name
    assert snapshot(redis_client, (old + b"3").decode()) == foreign
    assert snapshot(redis_client, (new + b"3").decode()) == migrated
    after = snapshot(redis_client)
    for k, v in before.items():
        if k != old + b"3":
            assert after.get(k) == v, k
    assert not [k for k in after if k.startswith(new) and k != new + b"3"]

    # the person resolves it (the foreign key goes elsewhere), then a re-run finishes
    redis_client.rename(old + b"3", b"elsewhere")
    again = rollback(redis_url, tmp_path / "b")
    assert again.succeeded, again.to_yaml()
    assert again.restore_conflicts == 0
    after = snapshot(redis_client)
    assert after.pop(b"elsewhere") == foreign[old + b"3"]
    assert after == before


def test_rollback_cli_exit_code_on_conflict(redis_client, redis_url, tmp_path, protocol):
    from typer.testing import CliRunner

    from rvlm.cli.main import app

    _migrate(redis_client, redis_url, tmp_path / "b", "hash")
    _foreign(redis_client, b"doc:5", "hash")
    result = CliRunner().invoke(app, ["rollback", "--backup-dir", str(tmp_path / "b"),
                                      "--url", redis_url, "--yes"])
    assert result.exit_code == 1, result.output
    assert "doc:5" in result.output and "item:5" in result.output
    assert redis_client.hgetall(b"doc:5") == {b"someone": b"else"}
    assert redis_client.exists(b"item:5")


@pytest.mark.parametrize("storage", ["hash", "json"])
def test_interrupted_dump_restore_copy_is_removed(redis_client, redis_url, tmp_path, protocol,
                                                  storage):
    """Both keys exist and are identical (a DUMP/RESTORE move whose DEL never ran): the copy
    under the new name is deleted and the original restored."""
    old, new = (b"doc:", b"item:") if storage == "hash" else (b"j:", b"k:")
    before = _migrated(redis_client, redis_url, tmp_path / "b", storage)
    redis_client.restore(old + b"4", 0, redis_client.dump(new + b"4"))  # the copy
    report = rollback(redis_url, tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert report.restore_conflicts == 0
    assert snapshot(redis_client) == before


@pytest.mark.parametrize("storage", ["hash", "json"])
def test_restore_records_refuses_to_destroy(redis_client, redis_url, protocol, storage):
    """Direct: the original key (migrated) and a different foreign new key; with and without a
    conflicts list; replaced (converts_to) records too."""
    client = connect(redis_url)
    try:
        if storage == "hash":
            redis_client.hset(b"a:1", mapping={b"v": b"new", b"x": b"1"})
            field = FieldOriginal(b"v", b"orig")
        else:
            redis_client.execute_command("JSON.SET", b"a:1", "$", '{"v":"new"}')
            field = FieldOriginal(b"$", b'{"v":"orig"}')
        _foreign(redis_client, b"b:1", storage)
        redis_client.hset(b"a:2", mapping={b"v": b"new"}) if storage == "hash" else \
            redis_client.execute_command("JSON.SET", b"a:2", "$", '{"v":"new"}')
        keep = snapshot(redis_client)
        records = [BackupRecord(b"a:1", b"b:1", (field,)),
                   BackupRecord(b"a:2", b"b:2", (field,)),
                   BackupRecord(b"a:1", b"b:1", (field,), replaced=True)]
        with pytest.raises(RestoreConflict, match="a:1") as info:
            restore_records(client, storage, records[:1])
        assert info.value.pairs == [(b"a:1", b"b:1")]
        assert snapshot(redis_client) == keep
        conflicts: list[tuple[bytes, bytes]] = []
        assert restore_records(client, storage, records[2:], conflicts=conflicts) == []
        assert conflicts == [(b"a:1", b"b:1")]
        assert snapshot(redis_client) == keep
        # the other record is restored; the conflicting one is not, and is reported
        conflicts.clear()
        restore_records(client, storage, records[:2], conflicts=conflicts)
        assert conflicts == [(b"a:1", b"b:1")]
        now = snapshot(redis_client)
        assert now[b"a:1"] == keep[b"a:1"] and now[b"b:1"] == keep[b"b:1"]
        if storage == "hash":
            assert redis_client.hget(b"a:2", b"v") == b"orig"
        else:
            assert json.loads(redis_client.execute_command("JSON.GET", b"a:2", "$")) == [
                {"v": "orig"}]
    finally:
        client.close()


def test_resume_stops_on_conflict(redis_client, redis_url, tmp_path, protocol):
    """Crash after batch 2's values were written, before its keys moved; someone then creates
    one of its new keys. Resume must not restore over or delete either key, nor redo the
    batch: it fails naming both; once resolved, it finishes."""
    plan = _setup(redis_client)
    plan_path = tmp_path / "plan.yaml"
    plan.write(plan_path)
    backup = tmp_path / "backup"
    first = _run(redis_url, plan_path, backup, fault="mid_write:2")
    assert first.returncode == 137, first.stdout + first.stderr
    with KeyFileReader(backup / "keys.rvk") as reader:
        key = reader.batch(2, BATCH)[0]
    new = b"item:" + key[len(b"doc:"):]
    redis_client.hset(new, mapping={b"someone": b"else"})
    ours = snapshot(redis_client, key.decode())
    second = _run(redis_url, plan_path, backup)
    assert second.returncode == 1, second.stdout + second.stderr
    assert key.decode() in second.stdout and new.decode() in second.stdout
    assert redis_client.hgetall(new) == {b"someone": b"else"}
    assert snapshot(redis_client, key.decode()) == ours
    redis_client.rename(new, b"elsewhere")
    third = _run(redis_url, plan_path, backup)
    assert third.returncode == 0, third.stdout + third.stderr
    assert redis_client.hgetall(b"elsewhere") == {b"someone": b"else"}
    assert redis_client.exists(new) and not redis_client.exists(key)
