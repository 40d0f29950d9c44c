"""``rvlm finalize`` against a client that is still writing at the worst moment: between
finalize's delete of a source key and the moment it forgets the events that delete caused
(a fault point in the test, not a sleep race)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from online_helpers import Writer, contents, copy_plan, points_at, renamed_quantized
from test_apply_helpers import make_hash_index

import rvlm.core.migrate.online.finalize as finalize_module
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.online.copier import OnlineCopy
from rvlm.core.migrate.online.finalize import finalize_migration
from rvlm.core.migrate.online.options import OnlineOptions
from rvlm.core.migrate.report import MigrationReport
from rvlm.core.migrate.rollback import rollback
from rvlm.core.storage.keylog import KeyLog


def applied_online(redis_client: redis.Redis, redis_url: str, backup: Path, n: int = 60,
                   dims: int = 8) -> None:
    """``n`` source hashes (doc:) under the alias 'live', applied online (copied to new:)."""
    make_hash_index(redis_client, n=n, dims=dims)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    report = apply_plan(redis_url, copy_plan(redis_client), backup_dir=backup,
                        accept_data_loss=True)
    assert report.succeeded, report.to_yaml()


def finalize_with_a_late_write(redis_url: str, backup: Path, monkeypatch: pytest.MonkeyPatch,
                               finalize: Callable[[], MigrationReport] | None = None
                               ) -> MigrationReport:
    """``rvlm finalize`` (or ``finalize()``) while a client writes doc:7 ('too late') once its
    last check found the source empty and quiet (its change capture about to stop): the
    command fails and says so. Returns its report."""
    client = redis.Redis.from_url(redis_url)
    real_fault = finalize_module.fault

    def late_write(point: str, batch: int | None = None) -> None:
        if point == "finalize_after_batches":
            client.hset("doc:7", mapping={"t": "too late", "g": "g7"})
        real_fault(point, batch)

    monkeypatch.setattr(finalize_module, "fault", late_write)
    try:
        first = finalize() if finalize else finalize_migration(redis_url, backup)
    finally:
        monkeypatch.setattr(finalize_module, "fault", real_fault)
        client.close()
    assert not first.succeeded
    assert "1 source keys were written after finalize's last check" in (first.error or "")
    return first


def test_a_key_recreated_right_after_finalize_deleted_it_reaches_its_target(
        redis_client, redis_url, tmp_path, notify, monkeypatch):
    applied_online(redis_client, redis_url, tmp_path / "b")
    before = contents(redis_client, "doc:*")
    client = redis.Redis.from_url(redis_url)
    real_fault = finalize_module.fault
    fired: list[int | None] = []

    def right_after_the_delete(point: str, batch: int | None = None) -> None:
        # finalize_delete: the batch's source keys were just deleted, nothing else done yet
        if point == "finalize_delete" and not fired:
            fired.append(batch)
            assert not client.exists("doc:7") and not client.exists("doc:8")
            client.hset("doc:7", mapping={"t": "recreated", "g": "g1"})
            client.delete("doc:7")                                   # recreated, then gone
            client.hset("doc:8", mapping={"t": "recreated 8", "g": "g2"})  # recreated
        real_fault(point, batch)

    monkeypatch.setattr(finalize_module, "fault", right_after_the_delete)
    done = finalize_migration(redis_url, tmp_path / "b")
    assert fired and done.succeeded, done.to_yaml()
    # the client's last word on doc:7 was a delete: its copy is gone too (before the fix it
    # kept its pre-finalize value); doc:8's copy holds what the client wrote, and the next
    # pass backed doc:8 up and deleted it
    assert not redis_client.exists("new:7")
    assert redis_client.hgetall("new:8") == {b"title": b"recreated 8", b"g": b"g2"}
    assert list(redis_client.scan_iter(match="doc:*")) == []
    # finalize's own deletes left every other copy alone
    targets = contents(redis_client, "new:*")
    assert set(targets) == {b"new:" + k[4:] for k in before} - {b"new:7"}
    for k, (fields, expiry) in before.items():
        if k not in (b"doc:7", b"doc:8"):
            assert targets[b"new:" + k[4:]] == (renamed_quantized(fields), expiry), k
    client.close()


@pytest.mark.parametrize("memory_keys", [2, 100_000], ids=["spilled", "in-memory"])
def test_finalize_deletes_whose_events_wait_in_the_backlog_leave_every_target(
        redis_client, redis_url, tmp_path, notify, monkeypatch, memory_keys):
    """``apply --follow``, then ``rvlm finalize`` from another shell. While finalize's first
    batch is between its read and its delete, a client writes every source key of the later
    batches twice, last batch first. With a backlog of 2 keys in memory it spills to disk and
    finalize's own delete events land in the spill behind those writes; either way the keys
    of the second batch still have their writes waiting (not carried over yet) when finalize
    reads and deletes them. Every target must hold its source's last value once finalize
    returned and the follower stopped."""
    n = 400
    make_hash_index(redis_client, n=n, dims=8)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    plan = copy_plan(redis_client)
    out: dict[str, object] = {}
    apply = threading.Thread(target=lambda: out.setdefault("report", apply_plan(
        redis_url, plan, backup_dir=tmp_path / "b", batch_size=100, accept_data_loss=True,
        online=OnlineOptions(follow=True, backlog_memory_keys=memory_keys))))
    apply.start()
    deadline = time.monotonic() + 120
    while points_at(redis_client, "live") != "idx_v2":
        assert time.monotonic() < deadline and apply.is_alive()
        time.sleep(0.05)
    # finalize's order (its SCAN): batch 0 is order[:100]
    order: list[bytes] = []
    cursor = 0
    while True:
        cursor, keys = redis_client.scan(cursor, match="doc:*", count=1000, _type="hash")
        order += keys
        if cursor == 0:
            break
    client = redis.Redis.from_url(redis_url)
    real_fault = finalize_module.fault
    fired: list[int | None] = []
    spilled: list[int] = []
    carried: list[bytes] = []

    def client_writes(point: str, batch: int | None = None) -> None:
        if point == "finalize_backup" and not fired:  # batch 0 read, not deleted yet
            fired.append(batch)
            for r in (1, 2):
                pipe = client.pipeline(transaction=False)
                for k in reversed(order[100:]):
                    pipe.hset(k, "t", f"round {r} of {k.decode()}")
                pipe.execute()
        if point == "finalize_delete" and not fired[1:]:  # batch 0 deleted: did it spill?
            fired.append(batch)
            spilled.extend(p.stat().st_size for p in (tmp_path / "b" / "backlog").glob("*.spill"))
        if point == "finalize_backup" and batch == (fired[0] or 0) + 1:
            # batch 1 read and carried over by finalize: which keys did forwarding carry?
            for chunk in KeyLog(tmp_path / "b" / "written.keys").iter_keys(1000):
                carried.extend(chunk)
        real_fault(point, batch)

    monkeypatch.setattr(finalize_module, "fault", client_writes)
    before = contents(redis_client, "doc:*")
    expected = {b"new:" + k[4:]: renamed_quantized(
        {**fields, **({b"t": f"round 2 of {k.decode()}".encode()} if k in order[100:] else {})})
        for k, (fields, _expiry) in before.items()}
    report = finalize_migration(redis_url, tmp_path / "b")
    apply.join(60)
    client.close()
    assert fired and report.succeeded, report.to_yaml()
    assert (max(spilled, default=0) > 0) == (memory_keys == 2)
    # the scenario: batch 1's writes were still waiting when finalize read and deleted them
    assert carried and not set(carried) & set(order[100:200])
    applied = out["report"]
    assert applied.succeeded, applied.to_yaml()  # type: ignore[union-attr]
    assert list(redis_client.scan_iter(match="doc:*")) == []
    targets = contents(redis_client, "new:*")
    missing = sorted(set(expected) - set(targets))
    assert not missing, f"{len(missing)} targets deleted, e.g. {missing[:5]}"
    wrong = [k for k, fields in expected.items() if targets[k][0] != fields]
    assert not wrong, f"{len(wrong)} targets hold an older value, e.g. {wrong[:5]}"


def test_a_write_under_the_last_scans_cursor_is_carried_over_and_deleted(
        redis_client, redis_url, tmp_path, notify, monkeypatch):
    """A client writes a source key right after the scan that found the source empty (as if
    under its cursor): the quiet check sees its event, so finalize passes again instead of
    ending with the key in place and its write missing from the target."""
    applied_online(redis_client, redis_url, tmp_path / "b")
    client = redis.Redis.from_url(redis_url)
    real_scan = finalize_module.source_documents
    fired: list[bool] = []

    def scan_then_write(*args, **kwargs):  # type: ignore[no-untyped-def]
        found = 0
        for keys in real_scan(*args, **kwargs):
            found += len(keys)
            yield keys
        if not found and not fired:
            fired.append(True)
            client.hset("doc:9", mapping={"t": "under the cursor", "g": "g9"})

    monkeypatch.setattr(finalize_module, "source_documents", scan_then_write)
    done = finalize_migration(redis_url, tmp_path / "b")
    client.close()
    assert fired and done.succeeded, done.to_yaml()
    assert done.online["passes"] == 2
    assert list(redis_client.scan_iter(match="doc:*")) == []
    assert redis_client.hgetall("new:9") == {b"title": b"under the cursor", b"g": b"g9"}


def test_a_write_after_finalizes_last_check_fails_it_and_a_second_finalize_carries_it_over(
        redis_client, redis_url, tmp_path, notify, monkeypatch):
    """A client writes a source key once finalize's last check found the source empty and
    quiet (its change capture about to stop): the write cannot be carried over, so finalize
    says so and fails; run again (the run is ``finalized``) it carries the write over, backs
    the key up and deletes it, and a rollback restores the key with that write."""
    applied_online(redis_client, redis_url, tmp_path / "b")
    first = finalize_with_a_late_write(redis_url, tmp_path / "b", monkeypatch)
    assert any("re-run 'rvlm finalize" in a for a in first.manual_actions)
    empty_at = first.online["source_empty_at"]
    assert isinstance(empty_at, float)
    assert redis_client.hget("new:7", "title") != b"too late"  # not carried over
    assert redis_client.exists("doc:7")

    second = finalize_migration(redis_url, tmp_path / "b")
    assert second.succeeded, second.to_yaml()
    assert any("1 source keys were written after the finalize's last check" in w
               for w in second.warnings), second.warnings
    assert second.online["late_writes_carried_over"] == 1
    assert second.online["source_empty_at"] == empty_at  # what the guarantee dates from
    assert redis_client.hgetall("new:7") == {b"title": b"too late", b"g": b"g7"}
    assert list(redis_client.scan_iter(match="doc:*")) == []
    assert finalize_migration(redis_url, tmp_path / "b").succeeded  # nothing left to do
    back = rollback(redis_url, tmp_path / "b")
    assert back.succeeded, back.to_yaml()
    assert redis_client.hgetall("doc:7") == {b"t": b"too late", b"g": b"g7"}
    assert len(list(redis_client.scan_iter(match="doc:*"))) == 60


def test_a_client_that_never_stops_writing_leaves_finalize_unfinished_until_it_stops(
        redis_client, redis_url, tmp_path, notify):
    """Finalize passes while a client writes the source prefix, for ``finalize_settle``
    seconds after its first pass; a client that writes longer gets the keys it still
    changes left in place (carried over), a failed report that says so, and once it stops,
    the same command finishes with every write in its target."""
    n, dims = 300, 8
    applied_online(redis_client, redis_url, tmp_path / "b", n=n, dims=dims)
    writer = Writer(redis_url, n, dims, pause=0.002)
    writer.start()
    started = time.monotonic()
    first = finalize_migration(redis_url, tmp_path / "b",
                               options=OnlineOptions(finalize_settle=0.5))
    assert writer.is_alive()  # it wrote through the whole finalize
    writer.stop.set()
    writer.join()
    assert not first.succeeded, first.to_yaml()
    assert any("still being written" in a for a in first.manual_actions), first.to_yaml()
    assert first.online["passes"] >= 3 and time.monotonic() - started >= 0.5
    second = finalize_migration(redis_url, tmp_path / "b")
    assert second.succeeded, second.to_yaml()
    assert list(redis_client.scan_iter(match="doc:*")) == []
    for key, model in writer.model.items():
        if model is not None:  # a key the client still holds: its last write was carried over
            assert redis_client.hgetall(b"new:" + key[4:]) == renamed_quantized(model), key


def test_deletes_made_after_a_failed_finalize_reach_their_targets_on_the_next(
        redis_client, redis_url, tmp_path, notify, monkeypatch):
    """A finalize fails because a client keeps writing the source prefix (the keys it still
    changes are left in place, carried over). The client stops right after finalize's last
    scan, then, with no finalize running (no change capture), deletes some of the keys left
    and writes the others. The next finalize must delete the targets of the deleted keys
    (before the fix they kept their documents: the source was gone, so no pass saw them)
    while keeping the targets of every key finalize itself deleted."""
    n, dims = 300, 8
    applied_online(redis_client, redis_url, tmp_path / "b", n=n, dims=dims)
    before = contents(redis_client, "doc:*")
    writer = Writer(redis_url, n, dims, pause=0.001)

    real_drain = OnlineCopy.drain

    def stop_the_writer_first(self: OnlineCopy, **kwargs: Any) -> None:
        # finalize's passes are over (its last scan done): the client stops here, so every
        # write it made is carried over by this drain, or is to a key finalize left in place
        writer.stop.set()
        writer.join()
        return real_drain(self, **kwargs)

    monkeypatch.setattr(OnlineCopy, "drain", stop_the_writer_first)
    writer.start()
    first = finalize_migration(redis_url, tmp_path / "b",
                               options=OnlineOptions(finalize_settle=0.3))
    monkeypatch.undo()
    assert not writer.is_alive()
    assert not first.succeeded, first.to_yaml()
    assert any("still being written" in a for a in first.manual_actions), first.to_yaml()
    left = sorted(redis_client.scan_iter(match="doc:*", count=1000))
    assert left
    # with no finalize running: delete half of the keys left, write the others and a new one
    model = dict(writer.model)
    deleted = left[::2]
    wrote = {k: {b"t": f"after the failure {k.decode()}".encode(), b"g": b"a"}
             for k in [*left[1::2], b"doc:new"]}
    redis_client.delete(*deleted)
    model.update(dict.fromkeys(deleted))
    for k, doc in wrote.items():
        redis_client.delete(k)
        redis_client.hset(k, mapping=doc)
    model.update(wrote)

    second = finalize_migration(redis_url, tmp_path / "b")
    assert second.succeeded, second.to_yaml()
    assert list(redis_client.scan_iter(match="doc:*")) == []
    targets = contents(redis_client, "new:*")
    kept = [k for k in deleted if b"new:" + k[4:] in targets]
    assert not kept, f"{len(kept)} of {len(deleted)} deleted keys keep their targets: {kept}"
    assert second.online["sweep"]["deleted"] == len(deleted), second.online
    for k, doc in wrote.items():
        assert targets[b"new:" + k[4:]][0] == renamed_quantized(doc), k
    # every other target: the client's last write, or the copy finalize left alone
    touched = {k for _at, k in writer.times} | set(left) | set(wrote)
    for k in touched:
        want = model.get(k, before[k][0] if k in before else None)
        got = targets.get(b"new:" + k[4:])
        assert (got[0] if got else None) == (
            renamed_quantized(want) if want is not None else None), k
    for k, (fields, expiry) in before.items():
        if k not in touched:
            assert targets[b"new:" + k[4:]] == (renamed_quantized(fields), expiry), k
    assert not (tmp_path / "b" / "finalize-left.keys").exists()
    assert not list((tmp_path / "b").glob("*.sqlite"))


@pytest.mark.parametrize("also_write", [True, False], ids=["delete-and-write", "delete-only"])
def test_a_late_write_then_deleted_with_no_finalize_running_deletes_its_target(
        redis_client, redis_url, tmp_path, notify, monkeypatch, also_write):
    """A client writes a source key after a finished finalize's last check (the command
    fails and says so), then deletes it again before the next finalize; maybe it also writes
    another. The next finalize must delete the deleted key's target (before the fix it kept
    its pre-finalize copy, and with no other late write the command said 'nothing to do'),
    carry the other write over, and leave every other target alone; a rollback still
    restores every source key finalize deleted."""
    applied_online(redis_client, redis_url, tmp_path / "b")
    before = contents(redis_client, "doc:*")
    finalize_with_a_late_write(redis_url, tmp_path / "b", monkeypatch)
    redis_client.delete("doc:7")
    if also_write:
        redis_client.hset("doc:8", mapping={"t": "late 8", "g": "g8"})

    second = finalize_migration(redis_url, tmp_path / "b")
    assert second.succeeded, second.to_yaml()
    assert not redis_client.exists("new:7")  # before the fix: its pre-finalize copy
    assert second.online["sweep"]["deleted"] == 1, second.online
    assert list(redis_client.scan_iter(match="doc:*")) == []
    targets = contents(redis_client, "new:*")
    if also_write:
        assert targets[b"new:8"][0] == {b"title": b"late 8", b"g": b"g8"}
    for k, (fields, expiry) in before.items():
        if k == b"doc:7" or (also_write and k == b"doc:8"):
            continue
        assert targets[b"new:" + k[4:]] == (renamed_quantized(fields), expiry), k
    assert set(targets) == {b"new:" + k[4:] for k in before} - {b"new:7"}
    again = finalize_migration(redis_url, tmp_path / "b")
    assert again.succeeded and "already finalized; nothing to do" in again.warnings
    back = rollback(redis_url, tmp_path / "b")
    assert back.succeeded, back.to_yaml()
    assert len(list(redis_client.scan_iter(match="doc:*"))) == 60



def test_apply_finalize_with_a_late_write_then_deleted_lets_rvlm_finalize_delete_its_target(
        redis_client, redis_url, tmp_path, notify, monkeypatch):
    """``apply --finalize``: a client writes a source key after the apply's finalize made its
    last check (the apply fails and says so), then deletes it before anyone runs finalize
    again. ``rvlm finalize`` then deletes its target (before the fix: 'already finalized;
    nothing to do', and the target kept its pre-finalize copy)."""
    make_hash_index(redis_client, n=60, dims=8)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    before = contents(redis_client, "doc:*")
    applied = finalize_with_a_late_write(
        redis_url, tmp_path / "b", monkeypatch, lambda: apply_plan(
            redis_url, copy_plan(redis_client), backup_dir=tmp_path / "b",
            accept_data_loss=True, online=OnlineOptions(finalize=True)))
    assert any("re-run 'rvlm finalize" in a for a in applied.manual_actions), applied.to_yaml()
    redis_client.delete("doc:7")
    again = finalize_migration(redis_url, tmp_path / "b")
    assert again.succeeded, again.to_yaml()
    assert not redis_client.exists("new:7")  # before the fix: its pre-finalize copy
    targets = contents(redis_client, "new:*")
    assert targets == {b"new:" + k[4:]: (renamed_quantized(fields), expiry)
                       for k, (fields, expiry) in before.items() if k != b"doc:7"}
    assert list(redis_client.scan_iter(match="doc:*")) == []
    assert again.online["sweep"]["deleted"] == 1
