"""rvlm.core.redis.wire: the executor's packed pipeline, under RESP2 and RESP3."""

from __future__ import annotations

import hiredis
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


@pytest.mark.parametrize("protocol", [2, 3])
def test_commands_packed_ahead_read_what_packed_commands_read(redis_url, redis_client,
                                                              monkeypatch, protocol):
    """``same_tail`` (an HMGET per key, its bytes made by a format) sends what hiredis would
    pack: binary keys and names (CRLF, '%', NUL), empty ones, every chunk."""
    monkeypatch.setattr(wire, "CHUNK", 4)
    client = connect(redis_url, protocol=protocol)
    keys = [b"k\r\n%s%d\x00", b"", b"plain", b"\xff" * 300, b"gone"] + [b"n%d" % i
                                                                        for i in range(6)]
    names = [b"f", b"%d\r\n", b"", b"absent"]
    for i, k in enumerate(keys[:4] + keys[5:]):
        redis_client.hset(k, mapping={b"f": b"v%d" % i, b"%d\r\n": b"\r\n" * i, b"": b"e"})
    commands = wire.same_tail(b"HMGET", keys, names)
    assert isinstance(commands, wire.Packed) and len(commands.packed) == len(keys)
    assert list(commands) == [(b"HMGET", k, *names) for k in keys]
    assert [hiredis.pack_command(c) for c in commands] == commands.packed
    assert wire.execute(client, commands) == wire.execute(client, list(commands))
    assert wire.execute(client, commands)[4] == [None] * 4
    # anything not bytes: plain commands, packed by hiredis as before
    mixed = wire.same_tail(b"HMGET", ["str-key"], names)
    assert type(mixed) is list and wire.execute(client, mixed) == [[None] * 4]
    client.close()
