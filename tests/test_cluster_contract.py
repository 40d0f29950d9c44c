"""CONTRACT TESTS of the coordinated search layout (one index name answers for every shard:
Redis Enterprise, Redis Cloud, Redis 8's query engine with its coordinator).

No coordinated search cluster can run on this machine (see ../shared/cluster-facts.md), so
these tests force the layout (``RVLM_SEARCH_LAYOUT=coordinated``) on the real 3-primary
cluster and check what rvlm *sends to which node* (``MONITOR`` on every node,
:class:`rvlm.testing.cluster.CommandRecorder`) and what happens to the documents. What only a
coordinator can answer (an index that counts the documents of every shard) is not checked.
"""

from __future__ import annotations

import pytest
from cluster_data import wait_indexed

from rvlm import MigrationExecutor, MigrationPlanner
from rvlm.core.redis.topology import slot_of
from rvlm.testing.cluster import CommandRecorder

pytestmark = [pytest.mark.cluster, pytest.mark.contract]

N = 300


@pytest.fixture
def coordinated(monkeypatch):
    monkeypatch.setenv("RVLM_SEARCH_LAYOUT", "coordinated")


def _load(rc, n: int = N) -> None:
    rc.execute_command("FT.CREATE", "idx", "ON", "HASH", "PREFIX", "1", "doc:",
                       "FILTER", "@n>=0", "SCHEMA", "title", "TEXT", "n", "NUMERIC")
    pipe = rc.pipeline(transaction=False)
    for i in range(n):
        pipe.hset(f"doc:{i}", mapping={"title": f"hello {i}", "n": i})
        if i % 3 == 0:
            pipe.pexpire(f"doc:{i}", 600_000)
    pipe.execute()


def test_contract_coordinated_plans_are_not_refused(redis_cluster, cluster_client,
                                                    coordinated) -> None:
    """Untagged index, prefix moving to other slots, an alias in another slot: all fine
    where one index name answers for every shard."""
    _load(cluster_client, 30)
    plan = MigrationPlanner(alias="products").create_plan(
        "idx", redis_url=redis_cluster.url, schema_patch={"version": 1, "changes": {
            "index": {"prefix": "item:"}}})
    assert plan.supported, plan.blocked_reasons
    assert plan.server["search_layout"] == "coordinated" and plan.server["cluster"]


def test_contract_coordinated_apply_sends_each_command_to_its_owner(
        redis_cluster, cluster_client, coordinated, tmp_path) -> None:
    rc = cluster_client
    _load(rc)
    url = redis_cluster.url
    plan = MigrationPlanner().create_plan("idx", redis_url=url, schema_patch={
        "version": 1, "changes": {"index": {"prefix": "item:"}}})
    assert plan.supported, plan.blocked_reasons
    with CommandRecorder(redis_cluster) as rec:
        report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=tmp_path / "b",
                                           batch_size=50)
    owners = redis_cluster.slot_owners()
    name_owner = owners[slot_of("idx")]

    def on_idx(name: str) -> dict[int, int]:
        return {p: n for p, cmds in rec.sent(name).items()
                if (n := sum(1 for c in cmds if c[1] == b"idx"))}

    # index commands: once, to the node owning the name's slot (the coordinator fans out);
    # never once per shard
    assert on_idx("FT.DROPINDEX") == {name_owner: 1}
    assert on_idx("FT.CREATE") == {name_owner: 1}
    # keys: SCAN on every primary (the index has a FILTER, so its cursor is not enough)
    assert set(rec.sent("SCAN")) == {n.port for n in redis_cluster.primary_servers()}
    # documents: every DUMP and DEL of an old key on its owner, every RESTORE of a new key on
    # its owner, each exactly once
    seen: dict[tuple[bytes, bytes], int] = {}
    for port, cmds in rec.commands.items():
        for c in cmds:
            if c[0] in (b"DUMP", b"RESTORE", b"DEL") and c[1][:4] in (b"doc:", b"item"):
                assert owners[slot_of(c[1])] == port, c[:2]
                seen[(c[0], c[1])] = seen.get((c[0], c[1]), 0) + 1
    for i in range(N):
        assert seen.get((b"DUMP", f"doc:{i}".encode())) == 1
        assert seen.get((b"RESTORE", f"item:{i}".encode())) == 1
        assert seen.get((b"DEL", f"doc:{i}".encode())) == 1
    # the documents moved, values and TTLs kept
    assert not rc.exists(*[f"doc:{i}" for i in range(N)])
    for i in range(N):
        assert rc.hgetall(f"item:{i}") == {b"title": f"hello {i}".encode(),
                                           b"n": str(i).encode()}
        assert (0 < rc.pttl(f"item:{i}") <= 600_000) == (i % 3 == 0)
    # only a coordinator counts every shard's documents: here the index on its node sees its
    # share, which is all the validation can find wrong
    wait_indexed(rc, "idx", sum(1 for i in range(N) if owners[slot_of(f"item:{i}")] == name_owner))
    failed = [c.name for c in report.validation.checks if not c.passed]
    assert set(failed) <= {"doc_count_match", "key_sample_exists", "query_results"}, failed
    assert "doc_count_match" in failed


def test_contract_resharding_during_an_apply_is_followed(
        redis_cluster, cluster_client, coordinated, tmp_path) -> None:
    """Slots of old and new keys change owner while apply moves documents (a resharding on a
    coordinated cluster). The slots of some keys of batch 3 are MIGRATING while that batch
    runs (commands on them are answered ASK: apply must send ASKING to the importing node);
    the slots of some keys of batch 5 have a new owner by then (the old one answers MOVED:
    apply must go to the new one). Every document moves once, value and TTL kept. The slots
    go back to their owners at the end (the cluster is shared by the session)."""
    from redis.crc import key_slot

    from rvlm.core.migrate.backup_dir import KEYS_NAME
    from rvlm.core.storage.keyfile import KeyFileReader

    rc = cluster_client
    _load(rc)
    url = redis_cluster.url
    backup = tmp_path / "b"
    plan = MigrationPlanner().create_plan("idx", redis_url=url, schema_patch={
        "version": 1, "changes": {"index": {"prefix": "item:"}}})
    assert plan.supported, plan.blocked_reasons
    primaries = [n.port for n in redis_cluster.primary_servers()]
    home = redis_cluster.slot_owners()
    moves: dict[int, tuple[int, int]] = {}
    chosen: dict[str, list[bytes]] = {}

    def progress(phase: str, done: int, total_batches: int) -> None:
        if phase != "transform":
            return
        if done == 1:  # begin: keys copied, slots MIGRATING/IMPORTING until batch 5
            with KeyFileReader(backup / KEYS_NAME) as keys:
                chosen["ask"], chosen["moved"] = keys.batch(3, 50)[:4], keys.batch(5, 50)[:4]
            slots = {key_slot(k) for k in chosen["ask"] + chosen["moved"]}
            slots |= {key_slot(b"item:" + k[4:]) for k in chosen["ask"] + chosen["moved"]}
            for s in sorted(slots - {key_slot(b"idx")}):
                dst = next(p for p in primaries if p != home[s])
                moves[s] = redis_cluster.begin_slot_migration(s, dst)
                redis_cluster.migrate_keys(s, *moves[s])
            for s in {key_slot(k) for k in chosen["moved"]}:  # batch 5's slots: moved now
                redis_cluster.finish_slot_migration(s, moves[s][1], wait=False)
        elif done == 5:
            for s, (_src, dst) in moves.items():
                redis_cluster.migrate_keys(s, *moves[s])
                redis_cluster.finish_slot_migration(s, dst, wait=False)

    try:
        with CommandRecorder(redis_cluster) as rec:
            report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=backup,
                                               batch_size=50, progress_callback=progress)
    finally:
        owners = redis_cluster.slot_owners()
        for s, (src, dst) in moves.items():
            if owners[s] == dst:
                redis_cluster.begin_slot_migration(s, src)
                redis_cluster.migrate_keys(s, dst, src)
                redis_cluster.finish_slot_migration(s, src, wait=False)
            else:
                redis_cluster.cancel_slot_migration(s)
        redis_cluster.wait_ok()
    assert len(chosen["ask"]) == len(chosen["moved"]) == 4 and len(moves) >= 8
    # ASK: ASKING went to the importing nodes. MOVED: a batch-5 key's commands ran on its
    # new owner (a command answered MOVED is refused before it runs, so MONITOR never shows
    # it; the data below shows nothing was done twice or lost)
    assert rec.sent("ASKING")
    assert set(rec.sent("ASKING")) <= {dst for _src, dst in moves.values()}
    for k in chosen["moved"]:
        src, dst = moves[key_slot(k)]
        ran = {p for p, cmds in rec.commands.items() if any(c[1:2] == [k] for c in cmds)}
        assert dst in ran and src not in ran, (k, src, dst, ran)
    # the run went through (only a coordinator would count every shard's documents in the
    # index; see the test above)
    assert report.error is None, report.to_yaml()
    failed = {c.name for c in report.validation.checks if not c.passed}
    assert failed <= {"doc_count_match", "key_sample_exists", "query_results"}, failed
    assert not rc.exists(*[f"doc:{i}" for i in range(N)])
    for i in range(N):
        assert rc.hgetall(f"item:{i}") == {b"title": f"hello {i}".encode(),
                                           b"n": str(i).encode()}
        assert (0 < rc.pttl(f"item:{i}") <= 600_000) == (i % 3 == 0)
