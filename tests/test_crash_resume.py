"""Kill apply at several points (RVLM_FAULT -> os._exit(137)), re-run it, and compare the
documents' bytes and query answers with an uninterrupted control run on the same data."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_apply_helpers import (
    all_plugins,
    build_plan,
    convert_op,
    f16_target,
    half_op,
    json_target,
    make_hash_index,
    prefix_op,
    rename_field_target,
    rename_op,
    reset,
    search,
    snapshot,
)

from rvlm.core.migrate.backup_dir import KEYS_NAME
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.rollback import rollback
from rvlm.core.redis.connection import read_index
from rvlm.core.storage.backup.frames import FrameRef, scan_file
from rvlm.core.storage.journal import RunState
from rvlm.core.storage.keyfile import KeyFileReader

HELPER = Path(__file__).with_name("test_apply_helpers.py")
N = 90
BATCH = 10


def _setup(client):
    """Fresh data and a plan: rename t->title, float32->float16, doc: -> item:, idx -> idx2."""
    reset(client)
    make_hash_index(client, n=N, ttl_every=9)
    src = read_index(client, "idx").schema
    target = f16_target(rename_field_target(src, "t", "title")).with_index(
        name="idx2", prefix=("item:",))
    return build_plan(client, "idx", target, [rename_op(), half_op(), prefix_op()], lossy=True)


def _run(url: str, plan_path: Path, backup: Path, *, fault: str | None = None,
         workers: int = 1, rename_mode: str | None = None,
         after: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RVLM_FAULT", "RVLM_FAULT_AFTER", "RVLM_RENAME_MODE")}
    if fault:
        env["RVLM_FAULT"] = fault
    if after:  # the crash waits until another thread stopped at this point
        env["RVLM_FAULT_AFTER"] = after
    if rename_mode:
        env["RVLM_RENAME_MODE"] = rename_mode
    # output through files, not pipes: the run is over when its process exits (once, under
    # load, the 2-worker run had exited with 1 while its pipes stayed open for 120 s)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        done = subprocess.run(
            [sys.executable, str(HELPER), url, str(plan_path), str(backup), str(BATCH),
             str(workers)], env=env, stdout=out, stderr=err, text=True, timeout=120,
            check=False)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(done.args, done.returncode, out.read(), err.read())


@pytest.fixture(scope="module")
def control(redis_url, tmp_path_factory):
    """The state an uninterrupted apply leaves (documents with TTL flags, query answers)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    plan = _setup(client)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path_factory.mktemp("control"),
                        batch_size=BATCH, accept_data_loss=True, plugins=all_plugins())
    assert report.succeeded, report.to_yaml()
    state = (snapshot(client), search(client, "idx2", "@title:hello"))
    reset(client)
    client.close()
    return state


@pytest.mark.parametrize(
    ("fault", "workers", "rename_mode"),
    [
        ("after_checks", 1, None),
        ("after_drop", 1, None),
        ("after_backup:3", 1, None),
        ("after_started:4", 1, None),
        ("mid_write:2", 1, None),
        ("mid_write:5", 1, "dump"),
        ("after_batch:6", 1, None),
        ("after_transform", 1, None),
        ("after_create", 1, None),
        ("after_started:5", 2, None),
    ],
)
def test_crash_then_resume_equals_control(redis_client, redis_url, tmp_path, control, fault,
                                          workers, rename_mode):
    plan = _setup(redis_client)
    plan_path = tmp_path / "plan.yaml"
    plan.write(plan_path)
    backup = tmp_path / "backup"
    first = _run(redis_url, plan_path, backup, fault=fault, workers=workers,
                 rename_mode=rename_mode)
    if workers == 1:
        assert first.returncode == 137, first.stdout + first.stderr
    else:  # a worker died: the coordinator reports a failed migration
        assert first.returncode == 1, first.stdout + first.stderr
    # resume with another worker count when the first run had 2
    second = _run(redis_url, plan_path, backup, workers=1 if workers == 2 else 2,
                  rename_mode=rename_mode)
    assert second.returncode == 0, second.stdout + second.stderr
    assert snapshot(redis_client) == control[0]  # HalfPlugin asserts nothing converts twice
    assert search(redis_client, "idx2", "@title:hello") == control[1]
    # a third run is a no-op that still validates
    third = _run(redis_url, plan_path, backup)
    assert third.returncode == 0, third.stdout + third.stderr
    assert snapshot(redis_client) == control[0]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_stop_when_the_coordinator_is_killed(redis_client, redis_url, tmp_path,
                                                     control):
    """kill -9 of a 2-worker apply's coordinator: its workers stop at their next batch instead
    of transforming on with nobody holding the index lock, and the same command finishes."""
    plan = _setup(redis_client)
    plan_path = tmp_path / "plan.yaml"
    plan.write(plan_path)
    backup = tmp_path / "backup"
    env = {k: v for k, v in os.environ.items() if k != "RVLM_FAULT"}
    env["RVLM_TEST_BATCH_SLEEP"] = "0.5"  # 9 batches: about 2.5 s per worker
    with tempfile.TemporaryFile("w+") as out:
        run = subprocess.Popen(
            [sys.executable, str(HELPER), redis_url, str(plan_path), str(backup), str(BATCH),
             "2"], env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.02)
            workers = _children(run.pid)
        assert len(workers) == 2, "the apply never started its two workers"
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 30
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers)
    # they stopped, not finished: source documents are left for the resume to move
    assert any(True for _ in redis_client.scan_iter(match="doc:*", count=1000))
    second = _run(redis_url, plan_path, backup, workers=2)
    assert second.returncode == 0, second.stdout + second.stderr
    assert snapshot(redis_client) == control[0]
    assert search(redis_client, "idx2", "@title:hello") == control[1]


def test_torn_backup_frame_is_redone(redis_client, redis_url, tmp_path, control):
    plan = _setup(redis_client)
    plan_path = tmp_path / "plan.yaml"
    plan.write(plan_path)
    backup = tmp_path / "backup"
    assert _run(redis_url, plan_path, backup, fault="after_backup:3").returncode == 137
    data = backup / "data-0.rvb"
    with open(data, "r+b") as f:  # the crash hit while the frame of batch 3 was written
        f.truncate(data.stat().st_size - 17)
    second = _run(redis_url, plan_path, backup)
    assert second.returncode == 0, second.stdout + second.stderr
    assert snapshot(redis_client) == control[0]


def test_crash_then_rollback_restores_everything(redis_client, redis_url, tmp_path):
    plan = _setup(redis_client)
    before = snapshot(redis_client)
    q_before = search(redis_client, "idx")
    plan_path = tmp_path / "plan.yaml"
    plan.write(plan_path)
    backup = tmp_path / "backup"
    assert _run(redis_url, plan_path, backup, fault="mid_write:4").returncode == 137
    report = rollback(redis_url, backup)
    assert report.succeeded, report.to_yaml()
    assert snapshot(redis_client) == before
    assert search(redis_client, "idx") == q_before
    # a rolled-back dir cannot be applied again by mistake
    again = _run(redis_url, plan_path, backup)
    assert again.returncode != 0 and "rolled back" in (again.stdout + again.stderr)


# --------------------------------------------------------------------------- conversion


def _setup_convert(client):
    """Fresh data and a plan that renames t -> title, then replaces every hash with a JSON
    document under a new prefix (doc: -> item:), idx -> idx2. Some keys have TTLs, one a
    field name and a value that are not UTF-8."""
    reset(client)
    make_hash_index(client, n=N, ttl_every=9)
    client.hset("doc:4", mapping={b"\xff\xfeodd": b"\xff\x01"})
    src = read_index(client, "idx").schema
    target = json_target(rename_field_target(src, "t", "title"), name="idx2", prefix=("item:",))
    return build_plan(client, "idx", target, [rename_op(), convert_op("json", ("doc:", "item:"))])


@pytest.fixture(scope="module")
def convert_control(redis_url, tmp_path_factory):
    """What an uninterrupted conversion leaves, and the originals."""
    import redis

    client = redis.Redis.from_url(redis_url)
    plan = _setup_convert(client)
    before = snapshot(client)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path_factory.mktemp("convert"),
                        batch_size=BATCH, plugins=all_plugins())
    assert report.succeeded, report.to_yaml()
    state = (snapshot(client), search(client, "idx2", "@title:hello"), before)
    reset(client)
    client.close()
    return state


@pytest.mark.parametrize(
    ("fault", "workers", "rename_mode"),
    [
        ("after_backup:1", 1, None),
        ("after_started:1", 1, None),
        ("mid_write:1", 1, None),  # replaced in place, not moved to item: yet
        ("mid_write:2", 1, "dump"),
        ("after_batch:1", 1, None),
        ("after_started:3", 2, None),
    ],
)
def test_conversion_crash_then_resume_equals_control(redis_client, redis_url, tmp_path,
                                                     convert_control, fault, workers,
                                                     rename_mode):
    plan = _setup_convert(redis_client)
    plan_path = tmp_path / "plan.yaml"
    plan.write(plan_path)
    backup = tmp_path / "backup"
    first = _run(redis_url, plan_path, backup, fault=fault, workers=workers,
                 rename_mode=rename_mode)
    assert first.returncode == (137 if workers == 1 else 1), first.stdout + first.stderr
    if fault.startswith("mid_write"):  # the crash left JSON documents at their old keys
        assert any(redis_client.type(k) == b"ReJSON-RL"
                   for k in redis_client.scan_iter(match="doc:*"))
    second = _run(redis_url, plan_path, backup, workers=1 if workers == 2 else 2,
                  rename_mode=rename_mode)
    assert second.returncode == 0, second.stdout + second.stderr
    assert snapshot(redis_client) == convert_control[0]
    assert search(redis_client, "idx2", "@title:hello") == convert_control[1]
    report = rollback(redis_url, backup)
    assert report.succeeded, report.to_yaml()
    assert snapshot(redis_client) == convert_control[2]


def _lose_unsynced_started(backup: Path) -> int:
    """What an OS crash may leave: the journal without the ``batch_started`` lines of batches
    not done (they are fsynced beside the writes, not before them). Returns lines cut."""
    cut = 0
    for path in backup.glob("journal-*.jsonl"):
        lines = path.read_text().splitlines(keepends=True)
        done = {json.loads(x)["rec"]["batch"] for x in lines
                if json.loads(x)["rec"]["event"] == "batch_done"}
        kept = [x for x in lines if not (json.loads(x)["rec"]["event"] == "batch_started"
                                         and json.loads(x)["rec"]["batch"] not in done)]
        cut += len(lines) - len(kept)
        path.write_text("".join(kept))
    return cut


@pytest.mark.parametrize("fault", ["mid_write:1", "mid_write:2"])
def test_conversion_crash_losing_batch_started_resumes_and_rolls_back(
        redis_client, redis_url, tmp_path, convert_control, fault):
    """The backup's fsync is a batch's one durable point: a crash mid-write whose journal lost
    the batch's ``batch_started`` (replaced documents deleted, their JSON not written yet)
    still resumes to the control's documents, and a rollback gives back every hash."""
    plan = _setup_convert(redis_client)
    plan_path = tmp_path / "plan.yaml"
    plan.write(plan_path)
    backup = tmp_path / "backup"
    assert _run(redis_url, plan_path, backup, fault=fault).returncode == 137
    # batches b+1 and b+2 may be backed up too (WRITE_QUEUE + 1 started, not done)
    assert _lose_unsynced_started(backup) in (1, 2, 3)
    second = _run(redis_url, plan_path, backup)
    assert second.returncode == 0, second.stdout + second.stderr
    assert snapshot(redis_client) == convert_control[0]
    assert search(redis_client, "idx2", "@title:hello") == convert_control[1]
    # and straight to a rollback from the same state
    plan = _setup_convert(redis_client)
    plan.write(plan_path)
    backup = tmp_path / "backup2"
    assert _run(redis_url, plan_path, backup, fault=fault).returncode == 137
    # batches b+1 and b+2 may be backed up too (WRITE_QUEUE + 1 started, not done)
    assert _lose_unsynced_started(backup) in (1, 2, 3)
    report = rollback(redis_url, backup)
    assert report.succeeded, report.to_yaml()
    assert snapshot(redis_client) == convert_control[2]


@pytest.mark.parametrize("fault", ["after_started:2", "mid_write:2"])
def test_conversion_crash_then_rollback_restores_the_hashes(redis_client, redis_url, tmp_path,
                                                            fault):
    plan = _setup_convert(redis_client)
    before = snapshot(redis_client)
    ttls = {k: redis_client.pttl(k) for k in before if redis_client.pttl(k) > 0}
    q_before = search(redis_client, "idx")
    plan_path = tmp_path / "plan.yaml"
    plan.write(plan_path)
    backup = tmp_path / "backup"
    assert _run(redis_url, plan_path, backup, fault=fault).returncode == 137
    report = rollback(redis_url, backup)
    assert report.succeeded, report.to_yaml()
    assert snapshot(redis_client) == before
    for k, ttl in ttls.items():
        assert ttl - 60_000 < redis_client.pttl(k) <= ttl
    assert search(redis_client, "idx") == q_before
    assert not list(redis_client.scan_iter(match="item:*"))


# ------------------------------------------------------- several batches backed up at once


def _frames(backup: Path) -> list[FrameRef]:
    """The committed frames of worker 0's backup data file, in file order."""
    path = backup / "data-0.rvb"
    with open(path, "rb") as f:
        return scan_file(path, f.fileno(), None, 0).frames


def _batch_keys(backup: Path, batch: int) -> list[bytes]:
    with KeyFileReader(backup / KEYS_NAME) as reader:
        return reader.batch(batch, BATCH)


def _os_crash(backup: Path, batch: int, frame: str) -> None:
    """What an OS crash may leave of ``batch``'s frame, written and not fsynced when the
    process died: all of it (``kept``: the page cache reached the disk), none (``gone``), or
    its header and half its payload (``torn``)."""
    if frame == "kept":
        return
    last = _frames(backup)[-1]
    assert last.batch == batch
    path = backup / "data-0.rvb"
    with open(path, "r+b") as f:
        f.truncate(last.offset if frame == "gone" else path.stat().st_size - last.length // 2)


def _lose_journal_after_done(backup: Path, batch: int) -> int:
    """What an OS crash may leave of a journal fsynced at most twice a second: every line
    after ``batch_done`` of ``batch`` lost. Returns the lines cut."""
    path = backup / "journal-0.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    recs = [json.loads(x)["rec"] for x in lines]
    end = next(i for i, r in enumerate(recs)
               if r["event"] == "batch_done" and r["batch"] == batch) + 1
    path.write_text("".join(lines[:end]))
    return len(lines) - end


@pytest.mark.parametrize(
    ("setup", "fault", "after", "frame", "rename_mode", "lose_journal"),
    [
        # batch 4 half written while batch 5's backup is fsynced and journaled as started
        ("hash", "mid_write:4", "after_started:5", "kept", None, False),
        # ... while batch 5's frame is written, not fsynced: a process crash keeps it whole;
        # an OS crash keeps it, loses it or tears it
        ("hash", "mid_write:4", "backup_unsynced:5", "kept", None, False),
        ("hash", "mid_write:4", "backup_unsynced:5", "gone", None, False),
        ("hash", "mid_write:4", "backup_unsynced:5", "torn", None, False),
        # keys of batch 4 moved by DUMP/RESTORE, their sources not deleted yet
        ("hash", "mid_move:4", "after_started:5", "kept", "dump", True),
        ("hash", "mid_move:4", "backup_unsynced:5", "torn", "dump", False),
        # an OS crash that also lost the journal's last half second: batches 2 and 3 done,
        # their batch_done lost
        ("hash", "mid_write:4", "after_started:5", "kept", None, True),
        # whole documents replaced by JSON: batch 1 half replaced, batch 2 backed up
        ("convert", "mid_write:1", "after_started:2", "kept", None, False),
        ("convert", "mid_write:1", "backup_unsynced:2", "torn", None, False),
    ],
)
def test_crash_with_the_next_batch_backed_up_resumes_and_rolls_back(
        request, redis_client, redis_url, tmp_path, setup, fault, after, frame, rename_mode,
        lose_journal):
    """The executor backs batch b+1 up while it writes batch b. A crash then leaves b half
    written and b+1 backed up (fsynced, or its frame only written: whole, torn or gone after an
    OS crash) with none of b+1's keys written; resuming ends with the documents and answers
    of an uninterrupted apply, and a rollback from the same state gives back every original."""
    make, control = ((_setup, request.getfixturevalue("control")) if setup == "hash" else
                     (_setup_convert, request.getfixturevalue("convert_control")))
    b = int(fault.split(":")[1])
    for then in ("resume", "rollback"):
        plan = make(redis_client)
        before = snapshot(redis_client)
        q_before = search(redis_client, "idx")
        plan_path = tmp_path / f"plan-{then}.yaml"
        plan.write(plan_path)
        backup = tmp_path / f"backup-{then}"
        first = _run(redis_url, plan_path, backup, fault=fault, after=after,
                     rename_mode=rename_mode)
        assert first.returncode == 137, first.stdout + first.stderr
        # the state the crash left: b's frame committed, b+1's frame after it, b not done
        assert [f.batch for f in _frames(backup)][-2:] == [b, b + 1]
        state = RunState.load(backup)
        assert b - 1 in state.done and b not in state.done and b + 1 not in state.done
        assert (b + 1 in state.started) == after.startswith("after_started")
        now = snapshot(redis_client)
        assert any(now.get(k) != before[k] for k in _batch_keys(backup, b))  # b begun
        assert all(now.get(k) == before[k] for k in _batch_keys(backup, b + 1))  # b+1 not
        _os_crash(backup, b + 1, frame)
        if lose_journal:
            assert _lose_journal_after_done(backup, b - 3) > 0
        if then == "resume":
            second = _run(redis_url, plan_path, backup, rename_mode=rename_mode)
            assert second.returncode == 0, second.stdout + second.stderr
            assert snapshot(redis_client) == control[0]
            assert search(redis_client, "idx2", "@title:hello") == control[1]
            report = rollback(redis_url, backup)  # and the resumed run still rolls back
        else:
            report = rollback(redis_url, backup)
        assert report.succeeded, report.to_yaml()
        assert snapshot(redis_client) == before
        assert search(redis_client, "idx") == q_before


def test_crash_while_a_backup_is_not_fsynced_left_its_batch_unwritten(
        redis_client, redis_url, tmp_path, control):
    """The invariant: no key of a batch is written before its backup frame is fsynced. The
    process dies with batch 5's frame written and its fsync not returned (batch 4 is written
    meanwhile): none of batch 5's documents changed, and the resume ends as the control."""
    plan = _setup(redis_client)
    before = snapshot(redis_client)
    plan_path = tmp_path / "plan.yaml"
    plan.write(plan_path)
    backup = tmp_path / "backup"
    assert _run(redis_url, plan_path, backup, fault="backup_unsynced:5").returncode == 137
    assert [f.batch for f in _frames(backup)][-1] == 5
    assert 5 not in RunState.load(backup).started
    now = snapshot(redis_client)
    assert all(now.get(k) == before[k] for k in _batch_keys(backup, 5))
    _os_crash(backup, 5, "torn")
    second = _run(redis_url, plan_path, backup)
    assert second.returncode == 0, second.stdout + second.stderr
    assert snapshot(redis_client) == control[0]
