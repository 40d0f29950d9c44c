"""rvlm.core.redis.wire: the executor's packed pipeline, under RESP2 and RESP3."""

from __future__ import annotations

import pytest
import redis

from rvlm.core.redis import wire
from rvlm.core.redis.connection import connect


@pytest.mark.parametrize("protocol", [2, 3])
def test_replies_in_order_errors_in_place(redis_url, redis_client, protocol):
    client = connect(redis_url, protocol=protocol)
    redis_client.set("s", "x")
    replies = wire.execute(client, [(b"HSET", b"h", b"f", b"\x00\xff"), (b"HGET", b"s", b"f"),
                                    (b"HMGET", b"h", b"f", b"nope"), (b"PTTL", b"gone")])
    assert replies[0] == 1 and isinstance(replies[1], redis.ResponseError)
    assert replies[2] == [b"\x00\xff", None] and replies[3] == -2
    # the connection is still in sync and back in the pool
    assert client.ping() and wire.execute(client, [(b"EXISTS", b"h")]) == [1]
    assert wire.execute(client, []) == []
    client.close()


def test_batch_like_a_pipeline_and_chunks(redis_client, monkeypatch):
    monkeypatch.setattr(wire, "CHUNK", 3)
    batch = wire.Batch(redis_client)
    for i in range(7):
        batch.hset(b"k%d" % i, mapping={b"a": i})
    batch.hdel(b"k0", b"a").exists(b"k0", b"k1").pttl(b"k1").delete(b"k1")
    assert len(batch) == 11
    assert batch.execute() == [1] * 7 + [1, 1, -1, 1]
    assert len(batch) == 0
    batch.execute_command("HGET", "missing-type-check", "a")
    redis_client.set("str", "x")
    batch.execute_command("HGET", "str", "a")
    with pytest.raises(redis.ResponseError):
        batch.execute()
