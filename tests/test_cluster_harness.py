"""The embedded cluster the suite starts (rvlm.embedded.cluster) and CLUSTER NODES parsing.

What the rest of the cluster tests rely on: 3 primaries covering every slot, Search and JSON on
every node, replicas that take over with their data and indexes, and the facts of a search
cluster without a coordinator (an index lives on the node owning its name's slot).
"""

from __future__ import annotations

import socket
import time

import pytest
from redis.crc import key_slot

from rvlm.core.redis.capabilities import detect
from rvlm.core.redis.resp import to_int, to_list, to_map, to_str
from rvlm.core.redis.topology import (
    SLOTS,
    migrations,
    myself,
    parse_cluster_nodes,
    parse_node_line,
)
from rvlm.embedded.cluster import EmbeddedCluster, free_ports, slot_ranges

pytestmark = pytest.mark.cluster

LINES = """\
07c3 127.0.0.1:30004@31004,host-a slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [93->-67ed] [77-<-292f]
292f 127.0.0.1:30003@31003 master,fail? - 0 1426238318243 3 disconnected 10923-16383 17
"""


def test_parse_cluster_nodes_lines() -> None:
    nodes = parse_cluster_nodes(LINES.encode())
    assert [n.id for n in nodes] == ["07c3", "67ed", "e7d1", "292f"]
    replica, p2, me, p3 = nodes
    assert replica.is_replica and replica.primary_id == "e7d1" and replica.bus_port == 31004
    assert not replica.slots and replica.address == "127.0.0.1:30004"
    assert p2.slots == ((5461, 10922),) and p2.slot_count == 5462 and p2.owns(10922)
    assert me.myself and me.is_primary and me == myself(nodes)
    assert me.slots == ((0, 5460),) and not me.owns(5461)
    assert [m.describe() for m in me.migrations] == [
        "slot 93 migrating (e7d1 -> 67ed)", "slot 77 importing (292f -> e7d1)"]
    assert p3.failing and not p3.connected and p3.slots == ((10923, 16383), (17, 17))
    # one view per node: a migration seen by both ends is listed once, by slot
    other = [parse_node_line("67ed 127.0.0.1:30002@31002 myself,master - 0 0 2 connected "
                             "5461-10922 [93-<-e7d1]")]
    found = migrations([nodes, other])
    assert [(m.slot, m.state, m.source, m.target) for m in found] == [
        (77, "importing", "292f", "e7d1"), (93, "migrating", "e7d1", "67ed")]


def test_parse_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a CLUSTER NODES line"):
        parse_node_line("hello world")


def test_slot_ranges_cover_every_slot_once() -> None:
    for n in (1, 3, 7):
        ranges = slot_ranges(n)
        assert ranges[0][0] == 0 and ranges[-1][1] == SLOTS - 1
        assert sum(b - a + 1 for a, b in ranges) == SLOTS
        assert all(ranges[i][1] + 1 == ranges[i + 1][0] for i in range(n - 1))
    with pytest.raises(ValueError):
        slot_ranges(0)


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_three_primaries_cover_every_slot_with_search_and_json(redis_cluster, cluster_client,
                                                                protocol) -> None:
    view = redis_cluster.view()
    primaries = [n for n in view if n.is_primary]
    assert len(view) == 3 and len(primaries) == 3
    assert sum(n.slot_count for n in primaries) == SLOTS
    for node in redis_cluster.nodes:
        c = node.client()
        try:
            caps = detect(c)
            assert caps.cluster and caps.search and caps.json
            assert b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO")
        finally:
            c.close()
    # keys written through the cluster client land on every primary, once
    for i in range(300):
        cluster_client.set(f"k:{i}", i)
    sizes = [to_int(cluster_client.get_redis_connection(n).dbsize())
             for n in cluster_client.get_primaries()]
    assert sum(sizes) == 300 and all(s > 50 for s in sizes)


def test_index_without_coordinator_lives_on_its_slot_owner(redis_cluster, cluster_client,
                                                           protocol) -> None:
    """This machine's search cluster: an index name is a key; the index covers the keys of
    its node only, unless name and prefix share a hash tag."""
    rc = cluster_client
    rc.execute_command("FT.CREATE", "{t}idx", "ON", "HASH", "PREFIX", "1", "{t}doc:",
                       "SCHEMA", "title", "TEXT")
    rc.execute_command("FT.CREATE", "idx", "ON", "HASH", "PREFIX", "1", "doc:",
                       "SCHEMA", "title", "TEXT")
    pipe = rc.pipeline(transaction=False)
    for i in range(600):
        pipe.hset(f"{{t}}doc:{i}", mapping={"title": f"hello {i}"})
        pipe.hset(f"doc:{i}", mapping={"title": f"hello {i}"})
    pipe.execute()

    def total(index: str) -> int:
        reply = rc.execute_command("FT.SEARCH", index, "*", "LIMIT", "0", "0")
        return to_int(to_map(reply)["total_results"] if isinstance(reply, dict) else reply[0])

    owner = redis_cluster.owner_of(b"idx")
    c = owner.client()
    try:
        on_owner = to_int(c.dbsize())
    finally:
        c.close()
    lists = {n.port: sorted(to_str(x) for x in to_list(
        rc.get_redis_connection(n).execute_command("FT._LIST"))) for n in rc.get_primaries()}
    assert total("{t}idx") == 600  # every key of the tag is on one node, with the index
    # the untagged index sees only the doc: keys on its own node
    tagged_here = 600 if redis_cluster.owner_of(b"{t}doc:0").port == owner.port else 0
    assert 0 < total("idx") == on_owner - tagged_here < 600
    assert "idx" in lists[owner.port]
    assert "{t}idx" in lists[redis_cluster.owner_of(b"{t}idx").port]
    assert sum(len(v) for v in lists.values()) == 2  # each index exists once, on one node


def test_failover_keeps_data_and_indexes(redis_cluster_replicas, cluster_replicas_client
                                         ) -> None:
    cluster, rc = redis_cluster_replicas, cluster_replicas_client
    view = cluster.view()
    assert sum(n.is_primary for n in view) == 3 and sum(n.is_replica for n in view) == 3
    rc.execute_command("FT.CREATE", "{f}idx", "ON", "HASH", "PREFIX", "1", "{f}doc:",
                       "SCHEMA", "title", "TEXT")
    pipe = rc.pipeline(transaction=False)
    for i in range(200):
        pipe.hset(f"{{f}}doc:{i}", mapping={"title": f"hello {i}"})
    pipe.execute()
    owner = cluster.owner_of(b"{f}doc:0")
    replica = cluster.replicas_of(owner.port)[0]
    c = owner.client()
    try:
        c.execute_command("WAIT", 1, 5000)  # the replica has every write
    finally:
        c.close()
    started = time.monotonic()
    cluster.failover(replica.port)
    assert time.monotonic() - started < 15
    assert cluster.owner_of(b"{f}doc:0").port == replica.port
    assert owner.port in {n.port for n in cluster.replica_servers()}
    # the cluster client follows the new owner (MOVED), data and index intact
    assert rc.hget(b"{f}doc:7", b"title") == b"hello 7"
    reply = rc.execute_command("FT.SEARCH", "{f}idx", "*", "LIMIT", "0", "0")
    count = to_map(reply)["total_results"] if isinstance(reply, dict) else reply[0]
    assert to_int(count) == 200


def test_slot_migration_shows_in_the_views(redis_cluster, cluster_client) -> None:
    """A slot marked MIGRATING on its owner and IMPORTING on another shows in CLUSTER NODES
    of both (what the planner reports); finishing it moves the keys and the slot."""
    slot = key_slot(b"{mig}")
    for i in range(150):
        cluster_client.set(f"{{mig}}:{i}", i)
    src = redis_cluster.owner_of(b"{mig}")
    dst = next(n for n in redis_cluster.primary_servers() if n.port != src.port)
    ids = {n.port: n.id for n in redis_cluster.view()}
    redis_cluster.begin_slot_migration(slot, dst.port)
    try:
        found = migrations([redis_cluster.view(src.port), redis_cluster.view(dst.port)])
        assert [(m.slot, m.source, m.target, m.state) for m in found] == [
            (slot, ids[src.port], ids[dst.port], "migrating")]
        importing = migrations([redis_cluster.view(dst.port)])
        assert [(m.slot, m.state) for m in importing] == [(slot, "importing")]
        assert redis_cluster.migrate_keys(slot, src.port, dst.port, count=50) == 50
        assert redis_cluster.migrate_keys(slot, src.port, dst.port) == 100
        redis_cluster.finish_slot_migration(slot, dst.port)
    except BaseException:
        redis_cluster.cancel_slot_migration(slot)
        raise
    assert migrations([redis_cluster.view(n.port) for n in redis_cluster.nodes]) == []
    assert redis_cluster.owner_of(b"{mig}").port == dst.port
    assert [to_int(cluster_client.get(f"{{mig}}:{i}")) for i in range(150)] == list(range(150))


def test_cluster_stops_and_wipes(tmp_path) -> None:
    cluster = EmbeddedCluster(primaries=1, directory=tmp_path / "c")
    with cluster:
        assert all(n.running() for n in cluster.nodes)
        assert (tmp_path / "c" / f"node-{cluster.nodes[0].port}" / "nodes.conf").exists()
        rc = cluster.client()
        rc.set("a", "1")
        assert rc.get("a") == b"1"
        rc.close()
    assert not any(n.running() for n in cluster.nodes)
    assert not (tmp_path / "c").exists()


def test_cluster_refuses_bad_shapes(tmp_path) -> None:
    with pytest.raises(ValueError, match="at least one primary"):
        EmbeddedCluster(primaries=0, directory=tmp_path)
    with pytest.raises(ValueError, match="4 ports needed"):
        EmbeddedCluster(primaries=2, replicas=1, ports=[1, 2], directory=tmp_path)


def test_command_recorder_sees_where_commands_went(redis_cluster, cluster_client) -> None:
    from rvlm.testing.cluster import CommandRecorder, parse_monitor_line

    assert parse_monitor_line(b'+1.5 [0 127.0.0.1:1] "SET" "a\\x00\\"b\\\\" "v\\n1"') == [
        b"SET", b'a\x00"b\\', b"v\n1"]
    assert parse_monitor_line(b"+OK") is None
    with CommandRecorder(redis_cluster) as rec:
        for i in range(30):
            cluster_client.set(f"rec:{i}".encode(), b"\x00\xff")
    sets = rec.sent("set")
    assert sum(len(v) for v in sets.values()) == 30 and len(sets) == 3
    owners = redis_cluster.slot_owners()
    for port, cmds in sets.items():
        for args in cmds:
            assert owners[key_slot(args[1])] == port and args[2] == b"\x00\xff"
