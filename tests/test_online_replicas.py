"""Online copies on a source with a replica: every write pipeline of the copy and of the
forwarding ends with ``WAIT`` for the replicas (:mod:`rvlm.core.redis.durability`, as for
drop_recreate), so a replica that does not acknowledge stops the run, resumable, instead of
the run moving on with writes a failover would lose."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from online_helpers import copy_plan, dumps, points_at
from test_apply_helpers import make_hash_index, primary_with_replica

from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.online.options import OnlineOptions
from rvlm.core.redis.durability import TIMEOUT_ENV


@pytest.fixture
def primary_and_replica():
    """Two embedded servers of this test's own: a primary and its replica."""
    with primary_with_replica() as (url, primary, replica):
        yield url, primary, replica


def _caught_up(primary: redis.Redis, replica: redis.Redis) -> None:
    deadline = time.monotonic() + 20
    while replica.info("replication").get("slave_repl_offset") != \
            primary.info("replication").get("master_repl_offset"):
        assert time.monotonic() < deadline, "the replica did not catch up"
        time.sleep(0.05)


def test_the_copy_waits_for_the_replica(primary_and_replica, tmp_path, monkeypatch):
    url, primary, replica = primary_and_replica
    monkeypatch.setenv(TIMEOUT_ENV, "300")
    make_hash_index(primary, n=200, dims=8, ttl_every=7)
    primary.execute_command("FT.ALIASADD", "live", "idx")
    source = dumps(primary, "doc:*")
    plan = copy_plan(primary)
    _caught_up(primary, replica)
    # the replica stops applying the replication stream: no copy write can be acknowledged
    replica.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
    try:
        report = apply_plan(url, plan, backup_dir=tmp_path / "b", accept_data_loss=True)
    finally:
        replica.execute_command("CLIENT", "UNPAUSE")
    assert not report.succeeded
    assert "not confirmed by its replicas" in report.error, report.error
    assert points_at(primary, "live") == "idx"  # the source keeps serving, unmodified
    assert dumps(primary, "doc:*") == source
    _caught_up(primary, replica)
    again = apply_plan(url, plan, backup_dir=tmp_path / "b", accept_data_loss=True)
    assert again.succeeded, again.to_yaml()
    # acknowledged before the run went on: the replica has every copy the moment it returns
    assert dumps(replica, "new:*") == dumps(primary, "new:*")
    assert len(dumps(primary, "new:*")) == 200


def test_forwarding_waits_for_the_replica(primary_and_replica, tmp_path, monkeypatch):
    url, primary, replica = primary_and_replica
    monkeypatch.setenv(TIMEOUT_ENV, "300")
    make_hash_index(primary, n=100, dims=8)
    primary.execute_command("FT.ALIASADD", "live", "idx")
    plan = copy_plan(primary)
    out: dict[str, object] = {}
    apply = threading.Thread(target=lambda: out.setdefault("report", apply_plan(
        url, plan, backup_dir=tmp_path / "b", accept_data_loss=True,
        online=OnlineOptions(follow=True))))
    apply.start()
    deadline = time.monotonic() + 60
    while points_at(primary, "live") != "idx_v2":
        assert time.monotonic() < deadline and apply.is_alive()
        time.sleep(0.05)
    _caught_up(primary, replica)
    replica.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
    try:
        primary.hset("doc:3", "t", "written after the cut-over")
        apply.join(30)
    finally:
        replica.execute_command("CLIENT", "UNPAUSE")
    assert not apply.is_alive()
    report = out["report"]
    assert not report.succeeded  # type: ignore[union-attr]
    assert "not confirmed by its replicas" in report.error  # type: ignore[union-attr]
    assert points_at(primary, "live") == "idx_v2"  # the target keeps serving
    _caught_up(primary, replica)
    again = apply_plan(url, plan, backup_dir=tmp_path / "b", accept_data_loss=True)
    assert again.succeeded, again.to_yaml()
    assert primary.hget("new:3", "title") == b"written after the cut-over"
    assert replica.hget("new:3", "title") == b"written after the cut-over"
