"""``rvlm finalize`` against a client that is still writing at the worst moment: between
finalize's delete of a source key and the moment it forgets the events that delete caused
(a fault point in the test, not a sleep race)."""

from __future__ import annotations

import pytest
import redis
from online_helpers import contents, copy_plan, renamed_quantized
from test_apply_helpers import make_hash_index

import rvlm.core.migrate.online.finalize as finalize_module
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.online.finalize import finalize_migration
from rvlm.core.redis.notify import read_setting


@pytest.fixture
def notify(redis_client):
    before = read_setting(redis_client)
    redis_client.config_set("notify-keyspace-events", "")
    yield
    redis_client.config_set("notify-keyspace-events", before)


def test_a_key_recreated_right_after_finalize_deleted_it_reaches_its_target(
        redis_client, redis_url, tmp_path, notify, monkeypatch):
    make_hash_index(redis_client, n=60, dims=8)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    report = apply_plan(redis_url, copy_plan(redis_client), backup_dir=tmp_path / "b",
                        accept_data_loss=True)
    assert report.succeeded, report.to_yaml()
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
