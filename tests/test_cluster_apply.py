"""Migrations on a real Redis Cluster (3 primaries, Search and JSON on every node, no search
coordinator): a hash-tagged index ``{t1}idx`` over ``{t1}doc:``, hash and JSON.

Each migration runs on the cluster and, with the same data and plan, on one server; the
documents must come out byte for byte the same (values, key names, TTLs), and the index must
answer for every document. Sync, async and ``--workers 3`` executors each run once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import yaml
from cluster_data import (
    cli,
    load,
    one_tag_per_primary,
    snapshot,
    total,
    wait_indexed,
    write_patch,
)

from rvlm import (
    AsyncMigrationExecutor,
    AsyncMigrationPlanner,
    MigrationExecutor,
    MigrationPlanner,
    rollback,
)
from rvlm.core.errors import RvlmError
from rvlm.core.migrate.plan import Plan
from rvlm.core.redis.connection import connect, list_indexes
from rvlm.core.redis.routing import is_cluster

pytestmark = pytest.mark.cluster

N = 150
RENAME = {"rename_fields": [{"old_name": "title", "new_name": "headline"}]}
QUANTIZE = {"update_fields": [{"name": "vec", "attrs": {"datatype": "float16"}}]}
WITHIN_TAG = {"index": {"prefix": "{t1}item:"}}


def _migrate(url: str, changes: dict[str, Any], backup: Any, how: str) -> Any:
    patch = {"version": 1, "changes": changes}
    if how == "async":
        async def run() -> Any:
            plan = await AsyncMigrationPlanner().create_plan("{t1}idx", redis_url=url,
                                                             schema_patch=patch)
            assert plan.supported, plan.blocked_reasons
            return await AsyncMigrationExecutor().apply(plan, redis_url=url, backup_dir=backup,
                                                        batch_size=40)
        return asyncio.run(run())
    plan = MigrationPlanner().create_plan("{t1}idx", redis_url=url, schema_patch=patch)
    assert plan.supported, plan.blocked_reasons
    return MigrationExecutor().apply(plan, redis_url=url, backup_dir=backup, batch_size=40,
                                     num_workers=3 if how == "workers" else 1)


@pytest.mark.parametrize(("storage", "changes", "how"), [
    ("hash", {**RENAME, **QUANTIZE}, "sync"),
    ("hash", {**RENAME, **QUANTIZE, **WITHIN_TAG}, "workers"),
    ("json", {**RENAME, **WITHIN_TAG}, "async"),
    ("json", {**QUANTIZE}, "sync"),
], ids=["hash-rename-quantize-sync", "hash-prefix-workers3", "json-prefix-async",
        "json-quantize-sync"])
def test_migration_on_the_cluster_equals_one_server(redis_cluster, cluster_client, redis_client,
                                                    redis_url, tmp_path, storage, changes,
                                                    how) -> None:
    rc = cluster_client
    load(rc, storage, N)
    load(redis_client, storage, N)
    owner = redis_cluster.owner_of(b"{t1}idx")
    assert redis_cluster.owner_of(b"{t1}doc:0").port == owner.port  # one slot, one node
    client = connect(redis_cluster.nodes[1].url)  # any node's URL: detected as a cluster
    assert is_cluster(client)
    client.close()
    report = _migrate(redis_cluster.nodes[1].url, changes, tmp_path / "c", how)
    assert report.result == "succeeded", report.to_yaml()
    control = _migrate(redis_url, changes, tmp_path / "one", "sync")
    assert control.result == "succeeded", control.to_yaml()
    prefix = b"{t1}item:" if "index" in changes else b"{t1}doc:"
    got, want = snapshot(rc, prefix, N), snapshot(redis_client, prefix, N)
    assert got == want and all(v is not None for v, _ttl in got.values())
    assert sum(ttl for _v, ttl in got.values()) == N // 5
    if prefix != b"{t1}doc:":
        assert not rc.exists(*[f"{{t1}}doc:{i}" for i in range(N)])
    assert total(rc, "{t1}idx") == N
    name = "headline" if "rename_fields" in changes else "title"
    assert total(rc, "{t1}idx", f"@{name}:hello") == N
    if storage == "hash" and "update_fields" in changes:
        v = rc.hget(prefix + b"7", b"vec")
        assert len(v) == 16 and np.frombuffer(v, np.float16).dtype == np.float16


def test_keys_from_the_index_cursor_or_scan_on_every_primary(redis_cluster, cluster_client,
                                                            tmp_path) -> None:
    """Keys are listed by the index's cursor (on the node that holds the index) when the
    cluster holds many other keys, by SCAN on every primary otherwise; both find every
    document once."""
    rc = cluster_client
    load(rc, "hash", 40)
    url = redis_cluster.url
    plan = MigrationPlanner().create_plan("{t1}idx", redis_url=url, schema_patch={
        "version": 1, "changes": RENAME})
    report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=tmp_path / "scan")
    assert report.result == "succeeded" and report.key_enumeration == "scan"
    assert report.documents_rewritten == 40
    pipe = rc.pipeline(transaction=False)
    for i in range(400):  # other keys, on every node: walking them all would cost more
        pipe.set(f"other:{i}", i)
    pipe.execute()
    plan = MigrationPlanner().create_plan("{t1}idx", redis_url=url, schema_patch={
        "version": 1, "changes": {"rename_fields": [
            {"old_name": "headline", "new_name": "title"}]}})
    report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=tmp_path / "cursor")
    assert report.result == "succeeded" and report.key_enumeration == "cursor"
    assert report.documents_rewritten == 40
    assert total(rc, "{t1}idx", "@title:hello") == 40 and rc.get("other:7") == b"7"


def test_prefix_change_to_another_tag_is_refused(redis_cluster, cluster_client,
                                                  tmp_path) -> None:
    """The plan says why (the documents would leave the index's slot) and apply refuses it
    with exit 2, nothing changed."""
    load(cluster_client, "hash", 30)
    url = redis_cluster.url
    patch = write_patch(tmp_path / "p.yaml", {"index": {"prefix": "{t2}doc:"}})
    plan = tmp_path / "plan.yaml"
    out = cli("plan", "--index", "{t1}idx", "--schema-patch", str(patch), "--url", url,
              "--cluster", "-o", str(plan))
    assert out.returncode == 1, out.stderr
    [reason] = Plan.load(plan).blocked_reasons
    assert "'{t2}doc:' would move documents out of the index's slot" in reason
    assert "no coordinator" in reason and "hash tag" in out.stdout
    out = cli("apply", "--plan", str(plan), "--backup-dir", str(tmp_path / "b"), "--url", url,
              "--yes")
    assert out.returncode == 2 and "the plan is blocked" in out.stderr
    assert out.stderr.count("\n") == 1  # one line
    assert total(cluster_client, "{t1}idx") == 30
    assert cluster_client.exists(*[f"{{t1}}doc:{i}" for i in range(30)]) == 30


def test_aliases_names_and_untagged_indexes_are_refused(redis_cluster, cluster_client) -> None:
    rc = cluster_client
    load(rc, "hash", 10)
    load(rc, "hash", 10, index="plain", prefix="plain:", wait=False)  # covers part of them
    url = redis_cluster.url
    planner = MigrationPlanner(alias="products")
    plan = planner.create_plan("{t1}idx", redis_url=url, schema_patch={
        "version": 1, "changes": RENAME})
    assert not plan.supported
    assert any("alias 'products'" in r and "CROSSSLOT" in r for r in plan.blocked_reasons)
    plan = MigrationPlanner(alias="{t1}products").create_plan(
        "{t1}idx", redis_url=url, schema_patch={"version": 1, "changes": RENAME})
    assert plan.supported, plan.blocked_reasons
    plan = MigrationPlanner().create_plan("{t1}idx", redis_url=url, schema_patch={
        "version": 1, "changes": {"index": {"name": "idx_v2"}}})
    assert any("new index name 'idx_v2'" in r for r in plan.blocked_reasons)
    plan = MigrationPlanner().create_plan("plain", redis_url=url, schema_patch={
        "version": 1, "changes": RENAME})
    assert any("'plain' is not complete on this cluster" in r for r in plan.blocked_reasons)


def test_a_per_shard_set_is_refused(redis_cluster, cluster_client, tmp_path) -> None:
    """One index per primary over the same untagged prefix (each covers its node's keys):
    ``rvlm plan`` refuses each with a reason naming the others, and ``rvlm batch plan`` skips
    them all; nothing is changed."""
    rc = cluster_client
    tags = one_tag_per_primary(redis_cluster)
    names = [f"{{{t}}}shard" for t in tags]
    for name in names:
        load(rc, "hash", 0, index=name, prefix="doc:", wait=False)
    load(rc, "hash", 60, index="{t1}idx", prefix="doc:", wait=False)  # one more, its node
    rc.execute_command("FT.DROPINDEX", "{t1}idx")
    for name in names:
        wait_indexed(rc, name, rc.get_node_from_key(name).redis_connection.dbsize())
    seen = {name: total(rc, name) for name in names}
    assert sum(seen.values()) == 60 and all(seen.values())  # each sees its node's share
    patch = write_patch(tmp_path / "p.yaml", RENAME)
    out = cli("plan", "--index", names[0], "--schema-patch", str(patch), "--url",
              redis_cluster.url, "-o", str(tmp_path / "plan.yaml"))
    assert out.returncode == 1, out.stdout + out.stderr
    reason = Plan.load(tmp_path / "plan.yaml").blocked_reasons[0]
    assert f"{names[0]!r} is one of a per-shard set" in reason
    assert f"{names[1]!r}, {names[2]!r}" in reason and "does not migrate a per-shard set" in reason
    out = cli("batch", "plan", "--schema-patch", str(patch), "--pattern", "*shard",
              "--plan-out", str(tmp_path / "bp.yaml"), "--url", redis_cluster.url)
    rows = yaml.safe_load((tmp_path / "bp.yaml").read_text())["indexes"]
    assert [(r["name"], r["applicable"]) for r in rows] == [(n, False) for n in sorted(names)]
    assert all("per-shard set" in r["skip_reason"] for r in rows), out.stdout
    assert {name: total(rc, name, "@title:hello") for name in names} == seen


@pytest.mark.parametrize("storage", ["hash", "json"])
def test_crash_resume_and_rollback(redis_cluster, cluster_client, tmp_path, storage) -> None:
    """apply killed mid-transform (``rvlm apply`` exits at a fault point, as kill -9 would),
    re-run: every document right; rollback: every document as it was, the source index
    back."""
    rc = cluster_client
    load(rc, storage, N)
    before = snapshot(rc, b"{t1}doc:", N)
    url = redis_cluster.nodes[2].url
    changes = {**RENAME, **WITHIN_TAG} if storage == "json" else {**RENAME, **QUANTIZE,
                                                                   **WITHIN_TAG}
    plan = MigrationPlanner().create_plan("{t1}idx", redis_url=url, schema_patch={
        "version": 1, "changes": changes})
    plan.write(tmp_path / "plan.yaml")
    backup = tmp_path / "backup"
    crashed = cli("apply", "--plan", str(tmp_path / "plan.yaml"), "--backup-dir", str(backup),
                  "--url", url, "--yes", "--accept-data-loss", "--batch-size", "20",
                  env={"RVLM_FAULT": "mid_write:2"})
    assert crashed.returncode == 137, crashed.stderr
    moved = rc.exists(*[f"{{t1}}item:{i}" for i in range(N)])
    assert 0 < moved < N and rc.exists(*before) == N - moved  # half way, no key twice
    resumed = MigrationExecutor().apply(plan, redis_url=url, backup_dir=backup, batch_size=20)
    assert resumed.result == "succeeded" and resumed.resumed, resumed.to_yaml()
    after = snapshot(rc, b"{t1}item:", N)
    assert all(v is not None for v, _t in after.values()) and total(rc, "{t1}idx") == N
    assert [t for _v, t in after.values()] == [t for _v, t in before.values()]
    assert not rc.exists(*before)
    back = rollback(backup, redis_url=url)
    assert back.result == "succeeded", back.to_yaml()
    assert snapshot(rc, b"{t1}doc:", N) == before
    assert not rc.exists(*after) and total(rc, "{t1}idx", "@title:hello") == N


def test_slot_migration_in_progress(redis_cluster, cluster_client, tmp_path) -> None:
    """plan reports a resharding in progress; apply refuses to start during it (nothing
    changed), and runs once it is over."""
    from redis.crc import key_slot

    rc = cluster_client
    load(rc, "hash", 20)
    url = redis_cluster.url
    slot = key_slot(b"{other}")
    src = redis_cluster.owner_of(b"{other}")
    dst = next(n for n in redis_cluster.primary_servers() if n.port != src.port)
    redis_cluster.begin_slot_migration(slot, dst.port)
    try:
        plan = MigrationPlanner().create_plan("{t1}idx", redis_url=url, schema_patch={
            "version": 1, "changes": RENAME})
        assert plan.supported
        assert any(f"slot {slot} migrating" in w for w in plan.warnings)
        with pytest.raises(RvlmError, match="a slot migration is in progress"):
            MigrationExecutor().apply(plan, redis_url=url, backup_dir=tmp_path / "b")
        assert total(rc, "{t1}idx") == 20 and rc.hget(b"{t1}doc:3", b"title") == b"hello 3"
    finally:
        redis_cluster.cancel_slot_migration(slot)
    report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=tmp_path / "b")
    assert report.result == "succeeded", report.to_yaml()
    assert total(rc, "{t1}idx", "@headline:hello") == 20


def test_a_resharding_begun_during_the_transform_stops_before_the_create(
        redis_cluster, cluster_client, tmp_path) -> None:
    """A slot migration of the index's slot starts while apply rewrites documents: apply
    stops before creating the index (it would cover only the documents still on the node),
    saying so; once the migration is over, the same call finishes."""
    from redis.crc import key_slot

    rc = cluster_client
    load(rc, "hash", 60)
    url = redis_cluster.url
    slot = key_slot(b"t1")
    src = redis_cluster.owner_of(b"{t1}idx")
    dst = next(n for n in redis_cluster.primary_servers() if n.port != src.port)
    plan = MigrationPlanner().create_plan("{t1}idx", redis_url=url, schema_patch={
        "version": 1, "changes": RENAME})
    begun: list[int] = []

    def progress(phase: str, done: int, total_batches: int) -> None:
        if phase == "transform" and done == 1 and not begun:
            redis_cluster.begin_slot_migration(slot, dst.port)
            begun.append(slot)

    try:
        report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=tmp_path / "b",
                                           batch_size=20, progress_callback=progress)
    finally:
        redis_cluster.cancel_slot_migration(slot)
    assert begun and report.result == "failed", report.to_yaml()
    assert "a slot migration is in progress" in report.error
    assert "re-run the same command" in " ".join(report.manual_actions)
    assert list_indexes(rc) == []  # stopped before the create
    report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=tmp_path / "b",
                                       batch_size=20)
    assert report.result == "succeeded" and report.resumed, report.to_yaml()
    assert total(rc, "{t1}idx", "@headline:hello") == 60


def test_online_index_change_moves_the_alias(redis_cluster, cluster_client, tmp_path) -> None:
    """Online mode (index-side change, no document touched) on the cluster: the new index
    and the alias keep the hash tag; queries through the alias answer throughout."""
    rc = cluster_client
    load(rc, "hash", 40)
    rc.execute_command("FT.ALIASADD", "{t1}live", "{t1}idx")
    url = redis_cluster.url
    plan = MigrationPlanner(mode="online").create_plan("{t1}live", redis_url=url, schema_patch={
        "version": 1, "changes": {"index": {"name": "{t1}idx_v2"},
                                  "add_fields": [{"name": "n2", "type": "numeric"}]}})
    assert plan.supported, plan.blocked_reasons
    report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=tmp_path / "b")
    assert report.result == "succeeded", report.to_yaml()
    info = rc.execute_command("FT.INFO", "{t1}live")
    flat = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2], strict=False))
    assert flat.get(b"index_name", flat.get("index_name")) in (b"{t1}idx_v2", "{t1}idx_v2")
    assert total(rc, "{t1}live") == 40
