"""A primary fails over (``CLUSTER FAILOVER`` on its replica) while apply rewrites its
documents; apply follows the new primary, or fails and the same command resumes it. Every
document must come out right (3 primaries + 3 replicas)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from cluster_data import load, snapshot, total, vectors

from rvlm import MigrationExecutor, MigrationPlanner

pytestmark = pytest.mark.cluster

N = 600
BATCH = 10


def test_failover_during_a_transform_then_resume(redis_cluster_replicas, cluster_replicas_client,
                                                 tmp_path) -> None:
    cluster, rc = redis_cluster_replicas, cluster_replicas_client
    load(rc, "hash", N)
    before = snapshot(rc, b"{t1}doc:", N)
    owner = cluster.owner_of(b"{t1}doc:0")
    replica = cluster.replicas_of(owner.port)[0]
    url = cluster.urls[-1]
    plan = MigrationPlanner().create_plan("{t1}idx", redis_url=url, schema_patch={
        "version": 1, "changes": {
            "rename_fields": [{"old_name": "title", "new_name": "headline"}],
            "update_fields": [{"name": "vec", "attrs": {"datatype": "float16"}}],
            "index": {"prefix": "{t1}item:"}}})
    assert plan.supported, plan.blocked_reasons
    failover = threading.Thread(target=cluster.failover, args=(replica.port,))
    seen: list[int] = []

    def progress(phase: str, done: int, total_batches: int) -> None:
        if phase != "transform":
            return
        seen.append(done)
        if done == 3:
            failover.start()  # races with the batches that follow
        elif failover.is_alive():
            time.sleep(0.02)  # keep the transform going until the failover is over

    report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=tmp_path / "b",
                                       batch_size=BATCH, progress_callback=progress)
    failover.join(30)
    assert not failover.is_alive() and cluster.owner_of(b"{t1}doc:0").port == replica.port
    assert seen and max(seen) >= 3  # the failover started during the transform
    if report.result != "succeeded":
        # a batch broke at the failover (a connection dropped, or the demoted primary had
        # run part of a pipeline, so its WAIT cannot vouch for it): the same command resumes
        assert "re-run the same command" in " ".join(report.manual_actions), report.to_yaml()
        report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=tmp_path / "b",
                                           batch_size=BATCH)
    else:
        assert max(seen) > 3  # the transform went on through the failover
    assert report.result == "succeeded", report.to_yaml()
    after = snapshot(rc, b"{t1}item:", N)
    vecs = vectors(N)
    for i in range(N):
        fields, ttl = after[f"{{t1}}item:{i}".encode()]
        old, old_ttl = before[f"{{t1}}doc:{i}".encode()]
        assert fields[b"headline"] == old[b"title"] and fields[b"tag"] == old[b"tag"]
        assert fields[b"vec"] == vecs[i].astype(np.float16).tobytes()
        assert b"title" not in fields and ttl == old_ttl
    assert total(rc, "{t1}idx", "@headline:hello") == N
    assert not rc.exists(*before)


def test_killed_then_failed_over_then_the_same_command_resumes(
        redis_cluster_replicas, cluster_replicas_client, tmp_path) -> None:
    """``rvlm apply`` dies mid-transform (a fault point, as kill -9 would); then the primary
    that holds the index and its documents fails over to its replica; the same command, run
    against another node, resumes on the promoted primary and finishes every document."""
    from cluster_data import cli

    cluster, rc = redis_cluster_replicas, cluster_replicas_client
    n = 200
    load(rc, "hash", n)
    before = snapshot(rc, b"{t1}doc:", n)
    owner = cluster.owner_of(b"{t1}doc:0")
    url = next(u for u, node in zip(cluster.urls, cluster.nodes, strict=True)
               if node.port != owner.port)
    plan = MigrationPlanner().create_plan("{t1}idx", redis_url=url, schema_patch={
        "version": 1, "changes": {
            "rename_fields": [{"old_name": "title", "new_name": "headline"}],
            "update_fields": [{"name": "vec", "attrs": {"datatype": "float16"}}],
            "index": {"prefix": "{t1}item:"}}})
    plan.write(tmp_path / "plan.yaml")
    args = ("apply", "--plan", str(tmp_path / "plan.yaml"), "--backup-dir",
            str(tmp_path / "b"), "--url", url, "--yes", "--accept-data-loss", "--batch-size",
            "20")
    crashed = cli(*args, env={"RVLM_FAULT": "mid_write:3"})
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    moved = rc.exists(*[f"{{t1}}item:{i}" for i in range(n)])
    assert 0 < moved < n
    replica = cluster.replicas_of(owner.port)[0]
    cluster.failover(replica.port)
    assert cluster.owner_of(b"{t1}doc:0").port == replica.port
    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resum" in resumed.stdout + resumed.stderr
    after = snapshot(rc, b"{t1}item:", n)
    vecs = vectors(n)
    for i in range(n):
        fields, ttl = after[f"{{t1}}item:{i}".encode()]
        old, old_ttl = before[f"{{t1}}doc:{i}".encode()]
        assert fields[b"headline"] == old[b"title"] and ttl == old_ttl
        assert fields[b"vec"] == vecs[i].astype(np.float16).tobytes()
    assert total(rc, "{t1}idx", "@headline:hello") == n
    assert not rc.exists(*before)


RENAME_WITHIN_TAG = {"rename_fields": [{"old_name": "title", "new_name": "headline"}],
                     "index": {"prefix": "{t1}item:"}}


@pytest.mark.parametrize("how", ["sync", "async"])
def test_every_write_pipeline_waits_for_the_replica(redis_cluster_replicas,
                                                    cluster_replicas_client, tmp_path,
                                                    how) -> None:
    """Each batch's writes end with WAIT on the primary they went to (its one replica), so a
    batch is journaled done only once its replica has its writes; no WAIT where nothing was
    written. The sync and the async executors."""
    import asyncio

    from rvlm import AsyncMigrationExecutor
    from rvlm.testing.cluster import CommandRecorder

    cluster, rc = redis_cluster_replicas, cluster_replicas_client
    n = 100
    load(rc, "hash", n)
    url = cluster.url
    plan = MigrationPlanner().create_plan("{t1}idx", redis_url=url, schema_patch={
        "version": 1, "changes": RENAME_WITHIN_TAG})
    with CommandRecorder(cluster) as rec:
        if how == "async":
            report = asyncio.run(AsyncMigrationExecutor().apply(
                plan, redis_url=url, backup_dir=tmp_path / "b", batch_size=20))
        else:
            report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=tmp_path / "b",
                                               batch_size=20)
    assert report.result == "succeeded", report.to_yaml()
    owner = cluster.owner_of(b"{t1}doc:0").port
    waits = rec.sent("WAIT")
    assert set(waits) == {owner}, waits
    assert len(waits[owner]) >= n // 20  # at least one per batch
    assert all(w[:2] == [b"WAIT", b"1"] for w in waits[owner])
    assert total(rc, "{t1}idx", "@headline:hello") == n
    if how == "sync":  # rollback's restores wait too, before it journals rolled_back
        from rvlm import rollback

        with CommandRecorder(cluster) as rec:
            back = rollback(tmp_path / "b", redis_url=url)
        assert back.result == "succeeded", back.to_yaml()
        assert set(rec.sent("WAIT")) == {owner}
        assert total(rc, "{t1}idx", "@title:hello") == n


def test_a_replica_that_does_not_acknowledge_fails_the_batch_then_resume(
        redis_cluster_replicas, cluster_replicas_client, tmp_path, monkeypatch) -> None:
    """The replica of the documents' primary is stopped (SIGSTOP): the first batch's WAIT
    times out, apply fails saying why, and the batch is not journaled done; once the replica
    runs again the same call resumes and every document is right."""
    import os
    import signal

    from rvlm.core.storage.journal import RunState

    cluster, rc = redis_cluster_replicas, cluster_replicas_client
    n = 60
    load(rc, "hash", n)
    before = snapshot(rc, b"{t1}doc:", n)
    url = cluster.url
    plan = MigrationPlanner().create_plan("{t1}idx", redis_url=url, schema_patch={
        "version": 1, "changes": RENAME_WITHIN_TAG})
    owner = cluster.owner_of(b"{t1}doc:0")
    replica = cluster.replicas_of(owner.port)[0]
    pid = replica.pid()
    assert pid
    monkeypatch.setenv("RVLM_REPLICA_TIMEOUT_MS", "300")
    os.kill(pid, signal.SIGSTOP)
    try:
        report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=tmp_path / "b",
                                           batch_size=20)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert report.result == "failed", report.to_yaml()
    assert "not confirmed by its replicas" in report.error and "0 of 1" in report.error
    assert not RunState.load(tmp_path / "b").done  # no batch journaled done
    cluster.wait_ok()
    monkeypatch.delenv("RVLM_REPLICA_TIMEOUT_MS")
    report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=tmp_path / "b",
                                       batch_size=20)
    assert report.result == "succeeded" and report.resumed, report.to_yaml()
    after = snapshot(rc, b"{t1}item:", n)
    for i in range(n):
        fields, ttl = after[f"{{t1}}item:{i}".encode()]
        old, old_ttl = before[f"{{t1}}doc:{i}".encode()]
        assert fields[b"headline"] == old[b"title"] and ttl == old_ttl
    assert total(rc, "{t1}idx", "@headline:hello") == n and not rc.exists(*before)
