"""rvlm.core.redis.moves: keys moved across cluster slots with their TTLs, interrupted moves
finished instead of reported as collisions, foreign keys never overwritten, copies recognised
by content (not DUMP bytes)."""

from __future__ import annotations

import json
import os

import pytest
from redis.crc import key_slot

from rvlm.core.errors import MigrationFailed
from rvlm.core.redis import wire
from rvlm.core.redis.docio.moves import crosses_slots, delete_copies, move_keys, same_content

pytestmark = pytest.mark.cluster


def _vector_hash(i: int) -> dict[bytes, bytes]:
    """A hash table encoded hash (a field over 64 bytes, 20 more fields): its DUMP order
    depends on the node's hash seed."""
    return {b"vec": os.urandom(256), **{f"f{j}".encode(): f"{i}-{j}".encode()
                                        for j in range(20)}}


def _other_node(rc, key: bytes, stem: str) -> bytes:
    owner = rc.get_node_from_key(key).name
    return next(k for n in range(1000)
                if rc.get_node_from_key(k := f"{stem}{n}".encode()).name != owner)


def test_cross_slot_moves_keep_values_and_ttls(cluster_client, protocol) -> None:
    rc = cluster_client
    hashes = {f"old:{i}".encode(): _vector_hash(i) for i in range(300)}
    wire.execute(rc, [(b"HSET", k, *[x for fv in v.items() for x in fv])
                         for k, v in hashes.items()])
    wire.execute(rc, [(b"PEXPIRE", k, 600_000) for k in list(hashes)[:100]])
    rc.execute_command("JSON.SET", b"old:json", "$", json.dumps({"b": 1, "a": [1, 2]}))
    pairs = [(k, b"new:" + k[4:]) for k in hashes] + [(b"old:json", b"new:json")]
    assert sum(crosses_slots(rc, o, n) for o, n in pairs) > 200
    move_keys(rc, pairs)
    for k, v in hashes.items():
        new = b"new:" + k[4:]
        assert rc.hgetall(new) == v and not rc.exists(k)
    ttls = [rc.pttl(b"new:" + k[4:]) for k in hashes]
    assert all(590_000 < t <= 600_000 for t in ttls[:100]) and set(ttls[100:]) == {-1}
    assert json.loads(rc.execute_command("JSON.GET", b"new:json")) == {"b": 1, "a": [1, 2]}


def test_an_interrupted_move_is_finished_not_a_collision(cluster_client, protocol) -> None:
    """A crash between RESTORE and DEL leaves the copy beside its source; the re-run of the
    same move finishes it (RedisVL reports a collision here)."""
    rc = cluster_client
    old = b"src:1"
    new = _other_node(rc, old, "dst:")
    doc = _vector_hash(1)
    rc.hset(old, mapping=doc)
    rc.pexpire(old, 500_000)
    rc.restore(new, rc.pttl(old), rc.dump(old))  # RESTORE done, DEL not: the crash
    assert rc.dump(new) != rc.dump(old)  # why DUMP bytes cannot tell a copy
    move_keys(rc, [(old, new)])
    assert not rc.exists(old) and rc.hgetall(new) == doc and 0 < rc.pttl(new) <= 500_000


def test_a_foreign_key_is_never_overwritten(cluster_client, protocol) -> None:
    rc = cluster_client
    rc.hset(b"a:1", mapping={b"x": b"1"})
    rc.hset(b"a:2", mapping={b"x": b"2"})
    taken = _other_node(rc, b"a:2", "b:")
    mine = _other_node(rc, b"a:1", "c:")
    rc.hset(taken, mapping={b"someone": b"else"})
    with pytest.raises(MigrationFailed, match=taken.decode()):
        move_keys(rc, [(b"a:1", mine), (b"a:2", taken)])
    assert rc.hgetall(mine) == {b"x": b"1"} and not rc.exists(b"a:1")
    assert rc.hgetall(b"a:2") == {b"x": b"2"} and rc.hgetall(taken) == {b"someone": b"else"}


def test_same_slot_moves_rename(cluster_client, protocol) -> None:
    rc = cluster_client
    rc.hset(b"{t}doc:1", mapping=_vector_hash(1))
    rc.pexpire(b"{t}doc:1", 300_000)
    assert not crosses_slots(rc, b"{t}doc:1", b"{t}item:1")
    move_keys(rc, [(b"{t}doc:1", b"{t}item:1")])
    assert not rc.exists(b"{t}doc:1") and rc.hlen(b"{t}item:1") == 21
    assert 0 < rc.pttl(b"{t}item:1") <= 300_000
    # an earlier interrupted DUMP/RESTORE move left a copy: RENAMENX refuses, the copy stays
    rc.hset(b"{t}doc:2", mapping={b"a": b"1"})
    rc.hset(b"{t}item:2", mapping={b"a": b"1"})
    move_keys(rc, [(b"{t}doc:2", b"{t}item:2")])
    assert not rc.exists(b"{t}doc:2") and rc.hgetall(b"{t}item:2") == {b"a": b"1"}
    rc.hset(b"{t}doc:3", mapping={b"a": b"1"})
    rc.hset(b"{t}item:3", mapping={b"a": b"other"})
    with pytest.raises(MigrationFailed, match="already exists"):
        move_keys(rc, [(b"{t}doc:3", b"{t}item:3")])
    assert rc.hgetall(b"{t}doc:3") == {b"a": b"1"}


def test_copies_are_recognised_by_content(cluster_client, protocol) -> None:
    rc = cluster_client
    doc = _vector_hash(7)
    rc.hset(b"k:1", mapping=doc)
    far = _other_node(rc, b"k:1", "copy:")
    rc.restore(far, 0, rc.dump(b"k:1"))
    # same slot (script) and other slot (two reads)
    rc.hset(b"{s}a", mapping=doc)
    rc.hset(b"{s}b", mapping=dict(reversed(list(doc.items()))))
    rc.hset(b"{s}c", mapping={**doc, b"f3": b"changed"})
    rc.execute_command("JSON.SET", b"{s}j1", "$", '{"a":1,"b":[1,2]}')
    rc.execute_command("JSON.SET", b"{s}j2", "$", '{"a":1,"b":[1,2]}')
    rc.execute_command("JSON.SET", b"{s}j3", "$", '{"b":[1,2],"a":1}')
    rc.set(b"{s}s1", b"v")
    assert same_content(rc, [(b"k:1", far), (b"{s}a", b"{s}b"), (b"{s}a", b"{s}c"),
                             (b"{s}j1", b"{s}j2"), (b"{s}a", b"{s}j1"),
                             (b"{s}a", b"{s}missing")]) == [True, True, False, True, False,
                                                            False]
    deleted = delete_copies(rc, [(b"k:1", far), (b"{s}a", b"{s}b"), (b"{s}a", b"{s}c"),
                                 (b"{s}j1", b"{s}j2"), (b"{s}j1", b"{s}j3"),
                                 (b"{s}s1", b"{s}a")])
    assert deleted == [True, True, False, True, False, False]
    assert not rc.exists(far, b"{s}b", b"{s}j2")
    assert rc.exists(b"k:1", b"{s}a", b"{s}c", b"{s}j1", b"{s}j3", b"{s}s1") == 6
    assert key_slot(b"{s}a") == key_slot(b"{s}b")


def test_one_node_dump_mode(redis_client, monkeypatch) -> None:
    """RVLM_RENAME_MODE=dump takes the cross-slot path on one node, same guarantees."""
    monkeypatch.setenv("RVLM_RENAME_MODE", "dump")
    r = redis_client
    r.hset(b"o:1", mapping=_vector_hash(1))
    r.hset(b"o:2", mapping=_vector_hash(2))
    r.pexpire(b"o:1", 400_000)
    r.restore(b"n:2", 0, r.dump(b"o:2"))  # interrupted
    move_keys(r, [(b"o:1", b"n:1"), (b"o:2", b"n:2")])
    assert not r.exists(b"o:1", b"o:2") and r.hlen(b"n:1") == r.hlen(b"n:2") == 21
    assert 0 < r.pttl(b"n:1") <= 400_000 and r.pttl(b"n:2") == -1
