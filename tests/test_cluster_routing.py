"""rvlm.core.redis.routing on a real cluster: one pipeline per primary, replies in order,
MOVED and ASK followed, MULTI/EXEC kept whole, error replies in place."""

from __future__ import annotations

import pytest
import redis
from redis.crc import key_slot

from rvlm.core.redis import routing, wire
from rvlm.core.redis.resp import to_int, to_str

pytestmark = pytest.mark.cluster


def test_replies_in_order_across_primaries(cluster_client, protocol) -> None:
    rc = cluster_client
    keys = [f"doc:{i}".encode() for i in range(900)]
    replies = wire.execute(rc, [(b"HSET", k, b"n", str(i)) for i, k in enumerate(keys)])
    assert [to_int(r) for r in replies] == [1] * 900
    got = wire.execute(rc, [(b"HMGET", k, b"n", b"missing") for k in keys])
    assert got == [[str(i).encode(), None] for i in range(900)]
    # every primary got its share of the one call
    sizes = [to_int(c.dbsize()) for _name, c in routing.primaries(rc)]
    assert len(sizes) == 3 and sum(sizes) == 900 and min(sizes) > 200


def test_multi_exec_units_and_scripts(cluster_client, protocol) -> None:
    rc = cluster_client
    rc.set(b"s:1", b"x")  # a string: HSET on it is an error reply, in its place
    commands: list[tuple[object, ...]] = []
    for i in range(50):
        k = f"m:{i}".encode()
        commands += [(b"MULTI",), (b"DEL", k), (b"HSET", k, b"a", b"1"),
                     (b"PEXPIRE", k, 60000), (b"EXEC",)]
    commands.append((b"HSET", b"s:1", b"a", b"1"))
    commands.append((b"EVAL", "return redis.call('EXISTS', KEYS[1], KEYS[2])", 2,
                     b"{m}:a", b"{m}:b"))
    replies = wire.execute(rc, commands)
    for i in range(50):
        queued, exec_reply = replies[5 * i:5 * i + 4], replies[5 * i + 4]
        assert [to_str(q) for q in queued] == ["OK", "QUEUED", "QUEUED", "QUEUED"]
        assert [to_int(x) for x in exec_reply] == [0, 1, 1]
    assert isinstance(replies[-2], redis.ResponseError) and "WRONGTYPE" in str(replies[-2])
    assert to_int(replies[-1]) == 0
    assert all(0 < rc.pttl(f"m:{i}") <= 60000 for i in range(50))


def test_memory_usage_goes_to_the_owner_of_its_key(cluster_client) -> None:
    """``MEMORY USAGE key``: routed by the key, not by ``USAGE`` (else every reply is a MOVED
    and an online plan's footprint measured no document on a cluster)."""
    rc = cluster_client
    keys = [f"{{t{i}}}doc".encode() for i in range(30)]
    wire.execute(rc, [(b"HSET", k, b"f", b"x" * 100) for k in keys])
    owners = {routing.node_map(rc).owner(key_slot(k)) for k in keys}
    assert len(owners) == 3  # keys on every primary, so some are not where b"USAGE" is
    replies = wire.execute(rc, [(b"MEMORY", b"USAGE", k, b"SAMPLES", b"0") for k in keys])
    assert [type(r) for r in replies if isinstance(r, Exception)] == []
    assert all(to_int(r) > 100 for r in replies)
    assert routing.command_key((b"MEMORY", b"USAGE", b"k")) == b"k"
    assert routing.command_key(("memory", "usage", "k", "SAMPLES", 0)) == b"k"


def test_commands_without_a_key_are_refused(cluster_client) -> None:
    with pytest.raises(ValueError, match="no key"):
        wire.execute(cluster_client, [(b"DBSIZE",)])
    with pytest.raises(ValueError, match="MULTI without EXEC"):
        wire.execute(cluster_client, [(b"MULTI",), (b"SET", b"a", b"1")])


def test_moved_and_ask_are_followed(redis_cluster, cluster_client) -> None:
    """A slot migrated behind the client's back: keys already moved answer ASK (sent to the
    importing node after ASKING), the finished slot answers MOVED (slot table updated)."""
    rc = cluster_client
    slot = key_slot(b"{r}")
    keys = [f"{{r}}:{i}".encode() for i in range(200)]
    wire.execute(rc, [(b"SET", k, str(i)) for i, k in enumerate(keys)])
    src = redis_cluster.owner_of(b"{r}")
    dst = next(n for n in redis_cluster.primary_servers() if n.port != src.port)
    redis_cluster.begin_slot_migration(slot, dst.port)
    try:
        assert redis_cluster.migrate_keys(slot, src.port, dst.port, count=80) == 80
        # half moved: reads of both halves and writes succeed (ASK for the moved keys)
        got = wire.execute(rc, [(b"GET", k) for k in keys])
        assert [to_int(g) for g in got] == list(range(200))
        assert all(to_int(r) == i + 1 for i, r in enumerate(wire.execute(
            rc, [(b"INCR", k) for k in keys])))
        redis_cluster.migrate_keys(slot, src.port, dst.port)
        redis_cluster.finish_slot_migration(slot, dst.port)
    except BaseException:
        redis_cluster.cancel_slot_migration(slot)
        raise
    name = f"127.0.0.1:{src.port}"
    assert rc.nodes_manager.slots_cache[slot][0].name == name  # the client does not know yet
    got = wire.execute(rc, [(b"GET", k) for k in keys])  # MOVED, then the new owner
    assert [to_int(g) for g in got] == [i + 1 for i in range(200)]
    assert rc.nodes_manager.slots_cache[slot][0].name == f"127.0.0.1:{dst.port}"


def test_failover_is_followed(redis_cluster_replicas, cluster_replicas_client) -> None:
    cluster, rc = redis_cluster_replicas, cluster_replicas_client
    keys = [f"f:{i}".encode() for i in range(300)]
    wire.execute(rc, [(b"SET", k, b"1") for k in keys])
    owner = cluster.owner_of(keys[0])
    replica = cluster.replicas_of(owner.port)[0]
    cluster.failover(replica.port)
    # the demoted primary answers MOVED for its old slots: followed to the promoted replica
    assert [to_int(r) for r in wire.execute(rc, [(b"INCR", k) for k in keys])] == [2] * 300
    assert rc.nodes_manager.slots_cache[key_slot(keys[0])][0].name == \
        f"127.0.0.1:{replica.port}"


def test_plain_client_is_one_pipeline(redis_client) -> None:
    assert not routing.is_cluster(redis_client)
    assert wire.execute(redis_client, [(b"SET", b"a", b"1"), (b"GET", b"a")]) == [
        b"OK", b"1"]
    assert routing.primaries(redis_client) == [("", redis_client)]


def test_command_key() -> None:
    assert routing.command_key((b"HSET", b"k", b"f", b"v")) == b"k"
    assert routing.command_key(("EVAL", "return 1", 2, "a", "b")) == b"a"
    assert routing.command_key(("EVAL", "return 1", 0)) is None
    assert routing.command_key((b"MULTI",)) is None
