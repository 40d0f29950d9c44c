"""kill -9 of an online apply (and of finalize) at every phase, on the real server: before the
cut-over the source keeps serving, unmodified; after it the target serves; re-running the same
command finishes with the same result as a run that never crashed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from online_helpers import Writer, contents, copy_plan, dumps, points_at, renamed_quantized
from test_apply_helpers import make_hash_index

from rvlm.core.migrate.rollback import rollback
from rvlm.core.redis.notify import read_setting
from rvlm.core.storage.journal import RunState

DRIVER = Path(__file__).with_name("online_helpers.py")
N = 300


def drive(*args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RVLM_FAULT"}
    if fault:
        env["RVLM_FAULT"] = fault
    return subprocess.run([sys.executable, str(DRIVER), *args], env=env, capture_output=True,
                          text=True, timeout=180, check=False)


def total(client) -> int:
    reply = client.execute_command("FT.SEARCH", "live", "hello", "LIMIT", "0", "0")
    return int(reply[b"total_results"] if isinstance(reply, dict) else reply[0])


@pytest.fixture
def setup(redis_client, tmp_path):
    before = read_setting(redis_client)
    redis_client.config_set("notify-keyspace-events", "")
    make_hash_index(redis_client, n=N, dims=8, ttl_every=6)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    plan = copy_plan(redis_client)
    plan.write(tmp_path / "plan.yaml")
    yield plan
    redis_client.config_set("notify-keyspace-events", before)


def check_finished(client, source: dict) -> None:
    """The result of a run that never crashed: targets exact, alias moved, source untouched,
    the notification setting put back."""
    assert points_at(client, "live") == "idx_v2"
    assert set(client.execute_command("FT._LIST")) == {b"idx_v2"}
    assert dumps(client, "doc:*") == source
    for k, (fields, expiry) in contents(client, "doc:*").items():
        assert contents(client, "new:" + k[4:].decode())[b"new:" + k[4:]] == (
            renamed_quantized(fields), expiry)
    assert len(list(client.scan_iter(match="new:*"))) == N
    assert read_setting(client) == ""


@pytest.mark.parametrize("fault,serving", [
    ("online_after_checks", "idx"),
    ("online_after_capture", "idx"),
    ("online_after_create", "idx"),
    ("online_copy:2", "idx"),
    ("online_after_copy", "idx"),
    ("online_after_indexed", "idx"),
    ("online_after_validate", "idx"),
    ("online_after_alias", "idx_v2"),
    ("online_after_drop", "idx_v2"),
    ("online_after_forwarding", "idx_v2"),
])
def test_kill_then_resume(redis_client, redis_url, tmp_path, setup, fault, serving):
    source = dumps(redis_client, "doc:*")
    crashed = drive("apply", redis_url, str(tmp_path / "plan.yaml"), str(tmp_path / "b"),
                    fault=fault)
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    assert points_at(redis_client, "live") == serving
    assert total(redis_client) == N  # every answer complete, from one side
    assert dumps(redis_client, "doc:*") == source  # never written
    done = drive("apply", redis_url, str(tmp_path / "plan.yaml"), str(tmp_path / "b"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed: true" in done.stdout
    check_finished(redis_client, source)


def test_kill_while_carrying_changes_over_then_resume(redis_client, redis_url, tmp_path,
                                                      setup):
    writer = Writer(redis_url, N, 8, pause=0.002)
    writer.start()
    time.sleep(0.2)
    crashed = drive("apply", redis_url, str(tmp_path / "plan.yaml"), str(tmp_path / "b"),
                    fault="online_forward")
    writer.stop.set()
    writer.join()
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    assert points_at(redis_client, "live") == "idx"
    done = drive("apply", redis_url, str(tmp_path / "plan.yaml"), str(tmp_path / "b"))
    assert done.returncode == 0, done.stdout + done.stderr
    sources = contents(redis_client, "doc:*")
    targets = contents(redis_client, "new:*")
    assert {b"new:" + k[4:] for k in sources} == set(targets)
    for k, (fields, expiry) in sources.items():
        assert targets[b"new:" + k[4:]] == (renamed_quantized(fields), expiry)


@pytest.mark.parametrize("fault", ["finalize_backup:0", "finalize_delete:0",
                                   "finalize_after_batches"])
def test_kill_finalize_then_resume_and_roll_back(redis_client, redis_url, tmp_path, setup,
                                                 fault):
    source = contents(redis_client, "doc:*")
    done = drive("apply", redis_url, str(tmp_path / "plan.yaml"), str(tmp_path / "b"))
    assert done.returncode == 0, done.stdout + done.stderr
    crashed = drive("finalize", redis_url, str(tmp_path / "b"), fault=fault)
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    assert points_at(redis_client, "live") == "idx_v2" and total(redis_client) == N
    again = drive("finalize", redis_url, str(tmp_path / "b"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert list(redis_client.scan_iter(match="doc:*")) == []
    assert len(list(redis_client.scan_iter(match="new:*"))) == N
    assert RunState.load(tmp_path / "b").phase == "finalized"
    back = rollback(redis_url, tmp_path / "b")
    assert back.succeeded, back.to_yaml()
    assert contents(redis_client, "doc:*") == source
    assert points_at(redis_client, "live") == "idx"


@pytest.mark.parametrize("fault", ["online_copy:1", "online_after_alias"])
def test_kill_then_roll_back(redis_client, redis_url, tmp_path, setup, fault):
    source = dumps(redis_client, "doc:*")
    assert drive("apply", redis_url, str(tmp_path / "plan.yaml"), str(tmp_path / "b"),
                 fault=fault).returncode == 137
    report = rollback(redis_url, tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert dumps(redis_client, "doc:*") == source
    assert list(redis_client.scan_iter(match="new:*")) == []
    assert points_at(redis_client, "live") == "idx"
    assert set(redis_client.execute_command("FT._LIST")) == {b"idx"}
    assert read_setting(redis_client) == ""


def test_follow_ends_on_sigterm_after_draining(redis_client, redis_url, tmp_path, setup):
    import signal

    rvlm = str(Path(sys.executable).with_name("rvlm"))
    proc = subprocess.Popen([rvlm, "apply", "--url",
                             redis_url, "--plan", str(tmp_path / "plan.yaml"), "--backup-dir",
                             str(tmp_path / "b"), "--accept-data-loss", "--follow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while points_at(redis_client, "live") != "idx_v2":
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    redis_client.hset("doc:9", "t", "hello after the cut-over")
    t = threading.Timer(0.3, proc.send_signal, (signal.SIGTERM,))
    t.start()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert redis_client.hget("new:9", "title") == b"hello after the cut-over"
    assert "SIGTERM" in out + err


def test_kill_9_from_outside_mid_copy_then_the_same_command(redis_client, redis_url, tmp_path):
    """A real SIGKILL of the 'rvlm apply' process while it copies (some copies written, not
    all): the source keeps serving, unmodified; the same command
    finishes with the result of a run that never crashed."""
    import signal

    n = 10_000
    before = read_setting(redis_client)
    redis_client.config_set("notify-keyspace-events", "")
    try:
        make_hash_index(redis_client, n=n, dims=8, ttl_every=6)
        redis_client.execute_command("FT.ALIASADD", "live", "idx")
        copy_plan(redis_client).write(tmp_path / "plan.yaml")
        source = dumps(redis_client, "doc:*")
        rvlm = str(Path(sys.executable).with_name("rvlm"))
        command = [rvlm, "apply", "--url", redis_url, "--plan", str(tmp_path / "plan.yaml"),
                   "--backup-dir", str(tmp_path / "b"), "--accept-data-loss", "--yes",
                   "--batch-size", "100"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while redis_client.dbsize() < n + 100:  # some copies written (and a few rvlm keys)
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        copied = len(list(redis_client.scan_iter(match="new:*", count=1000)))
        assert 0 < copied < n, copied  # killed mid-copy, before the target index exists
        assert RunState.load(tmp_path / "b").phase == "capture_started"
        assert points_at(redis_client, "live") == "idx" and total(redis_client) == n
        assert dumps(redis_client, "doc:*") == source
        done = subprocess.run(command, capture_output=True, text=True, timeout=180,
                              check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert points_at(redis_client, "live") == "idx_v2"
        assert dumps(redis_client, "doc:*") == source
        for k, (fields, expiry) in contents(redis_client, "doc:*").items():
            assert contents(redis_client, "new:" + k[4:].decode())[b"new:" + k[4:]] == (
                renamed_quantized(fields), expiry)
        assert len(list(redis_client.scan_iter(match="new:*", count=1000))) == n
        assert read_setting(redis_client) == ""
    finally:
        redis_client.config_set("notify-keyspace-events", before)


def test_deletes_made_after_a_finalize_was_killed_reach_their_targets_but_not_its_own(
        redis_client, redis_url, tmp_path, setup):
    """kill -9 of finalize right after it deleted its first batch (nothing else recorded).
    With no finalize running, a client deletes a source key finalize had not reached and
    changes another. The next finalize deletes that key's target (the key is not in the
    finalize backup: a client deleted it) and keeps the targets of the keys the killed
    finalize deleted (in its backup); every other target holds its source."""
    from rvlm.core.migrate.online.finalize import finalize_migration

    before = contents(redis_client, "doc:*")
    done = drive("apply", redis_url, str(tmp_path / "plan.yaml"), str(tmp_path / "b"))
    assert done.returncode == 0, done.stdout + done.stderr
    crashed = drive("finalize", redis_url, str(tmp_path / "b"), fault="finalize_delete:0")
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    standing = sorted(redis_client.scan_iter(match="doc:*", count=1000))
    assert len(standing) == N - 50  # the first batch was deleted
    gone, changed = standing[0], standing[1]
    redis_client.delete(gone)
    redis_client.hset(changed, "t", b"changed meanwhile")

    again = finalize_migration(redis_url, tmp_path / "b")
    assert again.succeeded, again.to_yaml()
    assert list(redis_client.scan_iter(match="doc:*")) == []
    targets = contents(redis_client, "new:*")
    assert b"new:" + gone[4:] not in targets  # before the fix: its old copy stayed
    assert set(targets) == {b"new:" + k[4:] for k in before} - {b"new:" + gone[4:]}
    for k, (fields, expiry) in before.items():
        if k != gone:
            want = {**fields, b"t": b"changed meanwhile"} if k == changed else fields
            assert targets[b"new:" + k[4:]] == (renamed_quantized(want), expiry), k
    assert again.online["sweep"]["deleted"] == 1
    assert again.online["sweep"]["kept"] == 50  # the killed finalize's own deletes
