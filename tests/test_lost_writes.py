"""Redis loses writes (a restart from an older RDB): rvlm must notice, never say succeeded on a
wrong result, and a re-run must repair it (issue #12).

A server of the test's own, in a directory the test controls: ``SAVE`` writes ``dump.rdb`` at a
chosen moment, ``kill -9`` takes the server down without saving again, and a restart loads that
older snapshot, so writes journaled as done are gone. rvlm runs as a user runs it, in a
process of its own (``python -m rvlm apply``), stopped at exact batches by fault points.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from typer.testing import CliRunner

from rvlm.cli.main import app
from rvlm.core.redis.connection import read_index, wait_indexed
from rvlm.embedded.server import EmbeddedServer, free_port

N = 600
BATCH = 20  # 30 batches
DIMS = 8
runner = CliRunner()


@pytest.fixture
def server() -> Iterator[EmbeddedServer]:
    work = Path(tempfile.mkdtemp(prefix="rvlm-lost-"))
    srv = EmbeddedServer(port=free_port(), directory=work / "server")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


def _load(client: redis.Redis) -> None:
    client.execute_command(
        "FT.CREATE", "prod", "ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA", "title", "TEXT",
        "emb", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", str(DIMS), "DISTANCE_METRIC",
        "COSINE")
    rng = np.random.default_rng(11)
    pipe = client.pipeline(transaction=False)
    for i in range(N):
        pipe.hset(f"doc:{i}", mapping={
            "title": f"hello {i}", "emb": rng.normal(size=DIMS).astype(np.float32).tobytes()})
    pipe.execute()
    wait_indexed(client, "prod", 60)


def _plan(url: str, tmp: Path) -> Path:
    patch = tmp / "patch.yaml"
    patch.write_text("version: 1\nchanges:\n  rename_fields: [{old_name: title, new_name: "
                     "headline}]\n  update_fields: [{name: emb, attrs: {datatype: float16}}]\n")
    out = tmp / "plan.yaml"
    r = runner.invoke(app, ["plan", "-i", "prod", "--schema-patch", str(patch), "--url", url, "-o",
                            str(out)])
    assert r.exit_code == 0, r.output
    return out


def _apply(url: str, plan: Path, backup: Path, fault: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RVLM_FAULT"}
    if fault:
        env["RVLM_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "rvlm", "apply", "--plan", str(plan), "--backup-dir",
         str(backup), "--url", url, "--batch-size", str(BATCH), "--yes", "--accept-data-loss"],
        env=env, capture_output=True, text=True, timeout=300, check=False)


def _crash_and_restart(srv: EmbeddedServer) -> None:
    """kill -9 the server (nothing saved on the way down), then start it again: it loads the
    dump.rdb of the last SAVE."""
    pid = srv.pid()
    assert pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while srv.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.pid_path.unlink(missing_ok=True)
    srv.start()


def _migrated_correctly(client: redis.Redis) -> None:
    """Every document has the new field name and a float16 vector, none the old ones, and
    the vectors are the originals converted (same seed)."""
    rng = np.random.default_rng(11)
    for i in range(N):
        doc = client.hgetall(f"doc:{i}")
        want = rng.normal(size=DIMS).astype(np.float32)
        assert set(doc) == {b"headline", b"emb"}, (i, doc)
        assert doc[b"headline"] == f"hello {i}".encode()
        assert doc[b"emb"] == want.astype(np.float16).tobytes(), i


def _old_fields(client: redis.Redis) -> int:
    return sum(1 for i in range(N) if client.hexists(f"doc:{i}", "title"))


def test_apply_crashes_then_redis_restarts_from_an_older_rdb(server, tmp_path):
    """Batches 0..9 written and saved, 10..24 written and journaled as done but not saved,
    then rvlm and redis-server are killed. The re-run notices the restart, redoes the lost
    batches from the backup, and only then says succeeded."""
    client = server.client()
    _load(client)
    plan = _plan(server.url, tmp_path)
    backup = tmp_path / "backup"
    assert _apply(server.url, plan, backup, "after_batch:9").returncode == 137
    client.save()  # the snapshot holds batches 0..9
    assert _apply(server.url, plan, backup, "after_batch:24").returncode == 137
    _crash_and_restart(server)
    client = server.client()
    assert _old_fields(client) == N - 10 * BATCH  # the writes of batches 10..24 are gone

    r = _apply(server.url, plan, backup)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "restarted" in r.stdout + r.stderr
    _migrated_correctly(client)
    v = runner.invoke(app, ["validate", "--plan", str(plan), "--backup-dir", str(backup),
                            "--url", server.url])
    assert v.exit_code == 0, v.output
    assert f"all {N} rewritten documents hold what the migration wrote" in v.output


def test_a_succeeded_apply_whose_writes_redis_lost_fails_validation_and_is_repaired(
        server, tmp_path):
    """apply succeeded, then redis-server restarts from a snapshot taken mid-transform: the
    target index and most rewritten documents are gone. validate fails (naming documents); a
    re-run of apply redoes the lost batches, recreates the index, and succeeds."""
    client = server.client()
    _load(client)
    plan = _plan(server.url, tmp_path)
    backup = tmp_path / "backup"
    assert _apply(server.url, plan, backup, "after_batch:7").returncode == 137
    client.save()  # the snapshot: batches 0..7 written, no target index
    done = _apply(server.url, plan, backup)
    assert done.returncode == 0, done.stdout + done.stderr
    _migrated_correctly(client)
    _crash_and_restart(server)
    client = server.client()
    assert _old_fields(client) == N - 8 * BATCH

    v = runner.invoke(app, ["validate", "--plan", str(plan), "--backup-dir", str(backup),
                            "--url", server.url])
    assert v.exit_code == 1, v.output

    r = _apply(server.url, plan, backup)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "restarted" in out and "lost writes" in out
    _migrated_correctly(client)
    assert read_index(client, "prod").stats.num_docs == N


def test_the_snapshot_is_older_than_the_drop(server, tmp_path):
    """The snapshot predates the apply: after the restart the source index is back and no
    document was migrated; the re-run drops the source again and redoes every batch."""
    client = server.client()
    _load(client)
    plan = _plan(server.url, tmp_path)
    backup = tmp_path / "backup"
    client.save()
    assert _apply(server.url, plan, backup, "after_batch:12").returncode == 137
    _crash_and_restart(server)
    client = server.client()
    assert _old_fields(client) == N

    r = _apply(server.url, plan, backup)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "again" in r.stdout + r.stderr
    _migrated_correctly(client)


def test_validate_names_a_document_changed_after_the_apply(server, tmp_path):
    """Every document is checked, not a sample: one changed document out of 600 fails it."""
    client = server.client()
    _load(client)
    plan = _plan(server.url, tmp_path)
    backup = tmp_path / "backup"
    assert _apply(server.url, plan, backup).returncode == 0
    client.hset("doc:437", "emb", b"\x00" * (2 * DIMS))
    v = runner.invoke(app, ["validate", "--plan", str(plan), "--backup-dir", str(backup),
                            "--url", server.url])
    assert v.exit_code == 1, v.output
    assert "doc:437" in v.output
