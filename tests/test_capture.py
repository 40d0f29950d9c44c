"""Change capture for online mode, on the real server: the notification setting (turned on,
put back, shared by runs, advice where CONFIG is refused), the subscriber (every change of a
key under a prefix, nothing else, a barrier, a lost subscription noticed), and the backlog of
pending keys (deduplicated, oldest first, spilled to disk beyond its memory bound)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from rvlm.core.redis.capture import CLIENT_NAME, CaptureLost, Subscriber
from rvlm.core.redis.connection import connect
from rvlm.core.redis.notify import (
    REGISTRY_KEY,
    ConfigRefused,
    NotifySetting,
    advice,
    format_flags,
    missing,
    needed_flags,
    parse_flags,
    probe,
    read_setting,
)
from rvlm.core.storage import pending as pending_module
from rvlm.core.storage.pending import PendingKeys


@pytest.fixture
def notify_off(redis_client):
    """The server's notification setting, emptied for the test and put back after it."""
    before = read_setting(redis_client)
    redis_client.config_set("notify-keyspace-events", "")
    yield redis_client
    redis_client.config_set("notify-keyspace-events", before)


def kill_capture(client) -> int:
    ids = [c["id"] for c in client.client_list() if c.get("name") == CLIENT_NAME]
    for i in ids:
        client.client_kill_filter(_id=i)
    return len(ids)


# --------------------------------------------------------------------------- the setting


def test_flags_parse_and_format():
    assert parse_flags("AKE") == parse_flags("KEg$lshzxetd")
    assert format_flags(parse_flags("ghxedK$")) == "Kg$hxed"
    assert format_flags(parse_flags("KA")) == "AK"
    assert missing("ghxK", "Kg$hxe") == "$e"
    assert missing("KA", needed_flags("json")) == ""
    assert needed_flags("hash") == "Kg$hxe" and needed_flags("json") == "Kg$hxed"
    text = advice("Ex", needed_flags("json"))
    assert "'KEg$hxed'" in text and "(it is 'Ex' now)" in text


def test_enter_turns_on_what_is_missing_and_leave_puts_it_back(notify_off):
    r = notify_off
    r.config_set("notify-keyspace-events", "Ex")  # an application uses expired key-events
    run = NotifySetting(r, "run-a", needed_flags("hash"))
    assert run.enter() == "xE"
    assert parse_flags(read_setting(r)) == parse_flags("ExKg$he")
    assert run.enter() == read_setting(r)  # entering again (a resume) changes nothing
    assert run.leave() == "xE"  # the value read before, as the server spells it
    assert parse_flags(read_setting(r)) == parse_flags("Ex")
    assert not r.exists(REGISTRY_KEY)
    assert run.leave() is None  # leaving twice is harmless


def test_two_runs_share_the_setting_and_the_last_one_restores(notify_off):
    r = notify_off
    a = NotifySetting(r, "run-a", needed_flags("hash"))
    b = NotifySetting(r, "run-b", needed_flags("json"))
    a.enter()
    b.enter()
    assert parse_flags(read_setting(r)) >= parse_flags("Kg$hxed")
    a.leave()  # b still needs everything a needed, and d
    assert parse_flags(read_setting(r)) >= parse_flags("Kg$hxed")
    assert b.leave() == ""
    assert read_setting(r) == ""


def test_leave_keeps_flags_an_operator_added_meanwhile(notify_off):
    r = notify_off
    run = NotifySetting(r, "run-a", needed_flags("hash"))
    run.enter()
    r.config_set("notify-keyspace-events", read_setting(r) + "l")  # lists, added by hand
    run.leave()
    assert parse_flags(read_setting(r)) == parse_flags("Kl")


def test_refused_config_is_reported_and_probe_says_what_is_missing(notify_off, redis_url):
    r = notify_off
    user = f"lim{uuid.uuid4().hex[:6]}"
    r.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-config")
    try:
        limited = redis.Redis.from_url(redis_url, username=user, password="pw")
        with pytest.raises(ConfigRefused, match="CONFIG GET notify-keyspace-events"):
            NotifySetting(limited, "run-a", needed_flags("json")).enter()
        assert probe(limited, needed_flags("json"), timeout=0.5) == "Kg$hxd"  # none arrive
        r.config_set("notify-keyspace-events", "Kgh")  # as if configured by an operator
        assert probe(limited, needed_flags("json"), timeout=0.5) == "$xd"
        r.config_set("notify-keyspace-events", "KA")
        assert probe(limited, needed_flags("json"), timeout=0.5) == ""
        limited.close()
    finally:
        r.execute_command("ACL", "DELUSER", user)


# --------------------------------------------------------------------------- pending keys


def test_pending_keys_dedup_oldest_first_and_spill(tmp_path):
    p = PendingKeys(tmp_path, max_keys=3)
    for i, k in enumerate([b"a", b"b", b"a", b"c", b"d", b"e", b"b", b"d"]):
        p.add(k, float(i))
    # a, b, c in memory (a and b keep their first time); d, e, d spilled in arrival order
    assert len(p) == 6 and p.received == 8 and p.spilled_total == 3
    assert p.take(2) == [(b"a", 0.0), (b"b", 1.0)]
    p.add(b"f", 8.0)  # the spill is not drained: f goes behind it
    assert p.take(10) == [(b"c", 3.0), (b"d", 4.0), (b"e", 5.0), (b"d", 7.0), (b"f", 8.0)]
    assert len(p) == 0 and p.take(5) == []
    p.add(b"g", 9.0)  # back in memory once the spill is drained
    assert p.covered([b"g"], before=10.0) == 1 and len(p) == 0
    p.add(b"h", 11.0)
    assert p.covered([b"h"], before=10.0) == 0 and len(p) == 1  # changed after the read
    p.close()
    assert not list(tmp_path.iterdir())


def test_pending_keys_discard_forgets_spilled_entries_that_arrived_before_it(tmp_path):
    # finalize's own delete event of a key must never be taken, wherever it waits
    p = PendingKeys(tmp_path, max_keys=2)
    for i, k in enumerate([b"a", b"b", b"c", b"d", b"c", b"e"]):
        p.add(k, float(i))  # a, b in memory; c, d, c, e spilled
    p.discard([b"a", b"c"])  # a from memory, both spilled c's
    p.add(b"c", 6.0)  # a change after the discard (a client recreating c) is kept
    p.add(b"a", 7.0)
    assert p.take(10) == [(b"b", 1.0), (b"d", 3.0), (b"e", 5.0), (b"c", 6.0), (b"a", 7.0)]
    assert len(p) == 0
    p.add(b"x", 8.0)  # the spill drained: marks are gone with it, x is in memory again
    p.discard([b"x"])
    assert p.take(10) == [] and len(p) == 0
    p.close()


def test_pending_keys_marks_are_bounded_and_swept_into_the_spill(tmp_path):
    p = PendingKeys(tmp_path, max_keys=3)
    keys = [b"k%d" % i for i in range(20)]
    for i, k in enumerate(keys):
        p.add(k, float(i))  # k0..k2 in memory, k3..k19 spilled
    assert p.take(5) == [(k, float(i)) for i, k in enumerate(keys[:5])]
    for k in keys[5:15:2]:  # the 4th mark is past max_keys: swept into the file, dropped
        p.discard([k])
    p.add(b"k7", 30.0)  # after its discard: kept
    got = p.take(100)
    assert got == ([(k, float(i)) for i, k in enumerate(keys) if i >= 5 and
                    not (i < 15 and i % 2)] + [(b"k7", 30.0)])
    assert len(p) == 0
    p.close()


@pytest.mark.parametrize("chunk", [1 << 20, 5])  # 5 bytes: every record across chunks
def test_pending_keys_holds_sees_spilled_changes_but_not_discarded_ones(tmp_path, monkeypatch,
                                                                        chunk):
    # the check before the cut-over: a key whose change waits in the spill is in flight (left
    # to forwarding), not a target to copy again
    monkeypatch.setattr(pending_module, "_SWEEP_CHUNK", chunk)
    p = PendingKeys(tmp_path, max_keys=2)
    for i, k in enumerate([b"a", b"b", b"c", b"d", b"c", b"long" * 40, b"e", b"h"]):
        p.add(k, float(i))  # a, b in memory; c, d, c, long..., e, h spilled
    assert p.spilled_total == 6
    assert p.holds([b"a", b"c", b"long" * 40, b"e", b"x"]) == {b"a", b"c", b"long" * 40, b"e"}
    p.discard([b"c", b"d"])  # forgotten, in the spill too
    assert p.holds([b"c", b"d", b"e"]) == {b"e"}
    p.add(b"d", 8.0)  # a change after the discard is in flight again
    assert p.holds([b"c", b"d"]) == {b"d"}
    assert p.take(3) == [(b"a", 0.0), (b"b", 1.0), (b"long" * 40, 5.0)]
    assert p.holds([b"a", b"long" * 40, b"e", b"d"]) == {b"e", b"d"}  # taken: carried over
    assert p.holds([b"h"]) == {b"h"}
    p.discard([b"f", b"g", b"h"])  # past max_keys marks: swept into the file (NaN), dropped
    assert not p._marks and p.holds([b"h", b"e"]) == {b"e"}
    assert p.take(10) == [(b"e", 6.0), (b"d", 8.0)]
    assert p.holds([b"e", b"d"]) == set() and len(p) == 0
    p.close()


def test_pending_keys_memory_is_bounded(tmp_path):
    p = PendingKeys(tmp_path, max_keys=100)
    for i in range(5000):
        p.add(b"key:%d" % i, float(i))
    assert len(p._memory) == 100 and len(p) == 5000
    seen = [k for batch in iter(lambda: p.take(700), []) for k, _ in batch]
    assert seen == [b"key:%d" % i for i in range(5000)]
    p.close()


# --------------------------------------------------------------------------- the subscriber


def test_subscriber_sees_every_change_under_its_prefixes(notify_off, tmp_path, protocol,
                                                         redis_url):
    r = notify_off
    client = connect(redis_url)
    run = NotifySetting(client, "t", needed_flags("json"))
    run.enter()
    pending = PendingKeys(tmp_path)
    sub = Subscriber(client, [b"doc:", "w*x:"], pending, ping_interval=0.1)
    sub.start()
    try:
        r.hset("doc:1", "a", "1")
        r.hdel("doc:1", "a")  # hdel of the last field: del too
        r.hset("doc:2", mapping={"a": "1"})
        r.pexpire("doc:2", 1)
        r.set("doc:3", "x")
        r.execute_command("JSON.SET", "doc:4", "$", '{"a": 1}')
        r.rename("doc:4", "doc:5")
        r.hset("w*x:1", "a", "1")  # glob characters in a prefix are literal
        r.hset("wYx:1", "a", "1")
        r.hset("other:1", "a", "1")
        time.sleep(0.01)
        r.exists("doc:2")  # expire it now
        sub.barrier()
        keys = {k for k, _ in pending.take(100)}
        assert keys == {b"doc:1", b"doc:2", b"doc:3", b"doc:4", b"doc:5", b"w*x:1"}
        assert sub.lost is None
    finally:
        sub.stop()
        run.leave()
        pending.close()


def test_barrier_waits_for_events_published_before_it(notify_off, tmp_path, redis_url):
    r = notify_off
    client = connect(redis_url)
    run = NotifySetting(client, "t", needed_flags("hash"))
    run.enter()
    pending = PendingKeys(tmp_path)
    sub = Subscriber(client, [b"doc:"], pending)
    sub.start()
    try:
        pipe = r.pipeline(transaction=False)
        for i in range(3000):
            pipe.hset(f"doc:{i}", "a", i)
        pipe.execute()
        sub.barrier()
        assert len(pending) == 3000
    finally:
        sub.stop()
        run.leave()
        pending.close()


def test_killed_capture_connection_is_noticed_and_never_silently_replaced(notify_off, tmp_path,
                                                                          protocol, redis_url):
    r = notify_off
    client = connect(redis_url)
    run = NotifySetting(client, "t", needed_flags("hash"))
    run.enter()
    pending = PendingKeys(tmp_path)
    sub = Subscriber(client, [b"doc:"], pending, ping_interval=0.1)
    sub.start()
    try:
        assert kill_capture(r) == 1
        deadline = time.monotonic() + 5
        while sub.lost is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sub.lost is not None and "lost its subscription" in sub.lost
        with pytest.raises(CaptureLost):
            sub.check()
        with pytest.raises(CaptureLost):
            sub.barrier()
        time.sleep(0.3)
        assert kill_capture(r) == 0  # it did not reconnect behind our back
    finally:
        sub.stop()
        run.leave()
        pending.close()


def test_a_setting_turned_off_under_the_subscriber_is_noticed(notify_off, tmp_path, redis_url):
    r = notify_off
    client = connect(redis_url)
    run = NotifySetting(client, "t", needed_flags("hash"))
    run.enter()
    pending = PendingKeys(tmp_path)

    def watch() -> str | None:
        lack = missing(read_setting(client), needed_flags("hash"))
        return f"notify-keyspace-events lost {lack!r}" if lack else None

    sub = Subscriber(client, [b"doc:"], pending, watch=watch, watch_interval=0.05)
    sub.start()
    try:
        r.config_set("notify-keyspace-events", "")
        deadline = time.monotonic() + 5
        while sub.lost is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sub.lost is not None and "notify-keyspace-events lost" in sub.lost
    finally:
        sub.stop()
        run.leave()
        pending.close()


def test_subscriber_keeps_up_while_the_main_thread_is_busy(notify_off, tmp_path, redis_url):
    """The reader is a thread: events arriving while the caller works are not lost."""
    client = connect(redis_url)
    run = NotifySetting(client, "t", needed_flags("hash"))
    run.enter()
    pending = PendingKeys(tmp_path, max_keys=500)
    sub = Subscriber(client, [b"doc:"], pending)
    sub.start()

    def writer() -> None:
        w = connect(redis_url)
        for start in range(0, 2000, 100):
            pipe = w.pipeline(transaction=False)
            for i in range(start, start + 100):
                pipe.hset(f"doc:{i % 1500}", "n", i)
            pipe.execute()
        w.close()

    t = threading.Thread(target=writer)
    t.start()
    sum(i * i for i in range(300_000))  # the caller holds the GIL for a while
    t.join()
    try:
        sub.barrier()
        assert pending.received == 2000
        keys = {k for batch in iter(lambda: pending.take(400), []) for k, _ in batch}
        assert keys == {b"doc:%d" % i for i in range(1500)}
    finally:
        sub.stop()
        run.leave()
        pending.close()
