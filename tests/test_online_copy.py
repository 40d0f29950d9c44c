"""The online copy engine on the real server, with change capture and a writer thread changing
source documents (HSET, HDEL, DEL, EXPIRE; JSON.SET for JSON) while they are copied: after a
drain, every target equals the transform of its source's final state, deleted sources have no
target, and the forwarding lag is measured."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import numpy as np
import pytest
from test_apply_helpers import make_hash_index, make_json_index
from test_mirror import dumps, mirror_of, plan_for

from rvlm.core.migrate.online.control import ControlChannel, send
from rvlm.core.migrate.online.copier import OnlineCopy, StepSize, Stopped
from rvlm.core.migrate.online.throttle import Throttler
from rvlm.core.redis.capture import Subscriber
from rvlm.core.redis.connection import connect, read_index
from rvlm.core.redis.docio.keys import enumerate_keys
from rvlm.core.redis.notify import NotifySetting, needed_flags, read_setting
from rvlm.core.schema.ftcreate import create_arguments
from rvlm.core.storage.keylog import KeyLog
from rvlm.core.storage.pending import PendingKeys

DIMS = 8


@pytest.fixture
def notify(redis_client):
    before = read_setting(redis_client)
    yield
    redis_client.config_set("notify-keyspace-events", before)


class Writer(threading.Thread):
    """Changes random source documents until stopped; remembers which keys it touched."""

    def __init__(self, url: str, prefix: str, n: int, storage: str = "hash") -> None:
        super().__init__(daemon=True)
        self.client = connect(url)
        self.prefix, self.n, self.storage = prefix, n, storage
        self.stop = threading.Event()
        self.ops = 0
        self.touched: set[bytes] = set()
        self.rng = random.Random(3)

    def run(self) -> None:
        r, rng = self.client, self.rng
        while not self.stop.is_set():
            i = rng.randrange(self.n + 50)  # some keys are new
            key = f"{self.prefix}{i}".encode()
            op = rng.random()
            if self.storage == "json":
                if op < 0.7:
                    doc = {"t": f"written {self.ops}", "g": "w",
                           "v": [rng.random() for _ in range(DIMS)], "z": {"n": i}}
                    r.execute_command("JSON.SET", key, "$", json.dumps(doc))
                elif op < 0.85:
                    r.delete(key)
                else:
                    r.pexpire(key, rng.randrange(200_000, 400_000))
            elif op < 0.55:
                vec = np.array([rng.random() for _ in range(DIMS)], np.float32).tobytes()
                r.hset(key, mapping={"t": f"written {self.ops}", "v": vec})
            elif op < 0.7:
                r.hdel(key, "g")
            elif op < 0.8:
                r.delete(key)
            elif op < 0.9:
                r.pexpire(key, rng.randrange(200_000, 400_000))
            else:
                r.hset(key, "extra", b"\x00\x01")
            self.touched.add(key)
            self.ops += 1
            time.sleep(0.0005)


def expected_hash(client: Any, key: bytes) -> dict[bytes, bytes] | None:
    """The target of a hash source under the rename t->title + float16 plan."""
    src = client.hgetall(key)
    if not src:
        return None
    out = {(b"title" if n == b"t" else n): v for n, v in src.items()}
    if b"v" in src:
        out[b"v"] = np.frombuffer(src[b"v"], np.float32).astype(np.float16).tobytes()
    return out


def start(client: Any, url: str, plan, tmp_path, **kw: Any):
    setting = NotifySetting(client, "test", needed_flags(plan.source_schema.storage_type))
    setting.enter()
    pending = PendingKeys(tmp_path / "pending", max_keys=kw.pop("max_keys", 100_000))
    sub = Subscriber(connect(url), list(plan.source_schema.index.prefix), pending,
                     ping_interval=0.2)
    sub.start()
    engine = OnlineCopy(client, mirror_of(client, plan), pending, [sub],
                        KeyLog(tmp_path / "written.keys"), batch_size=97, **kw)
    client.execute_command(*create_arguments(plan.target_schema))
    info = read_index(client, plan.source_index)
    keyfile = tmp_path / "keys.rvk"
    enumerate_keys(client, plan.source_schema, info.stats.num_docs,
                   info.stats.indexing_failures, keyfile)
    return setting, sub, engine, keyfile


def test_copy_under_writes_ends_with_every_target_exact(redis_client, redis_url, tmp_path,
                                                        notify, protocol):
    n = 1500
    make_hash_index(redis_client, n=n, dims=DIMS, ttl_every=7)
    plan = plan_for(redis_client, "idx", {
        "index": {"name": "idx_v2", "prefix": "new:"},
        "rename_fields": [{"old_name": "t", "new_name": "title"}],
        "update_fields": [{"name": "v", "attrs": {"datatype": "float16"}}]})
    setting, sub, engine, keyfile = start(redis_client, redis_url, plan, tmp_path)
    redis_client.hset(f"doc:{n + 100}", mapping={"t": "created after the enumeration"})
    writer = Writer(redis_url, "doc:", n)
    writer.start()
    try:
        engine.copy(keyfile)
        time.sleep(0.2)
    finally:
        writer.stop.set()
        writer.join()
    engine.drain()
    sub.stop()
    setting.leave()
    assert writer.ops > 100 and engine.applied > 0
    sources = {k for k in redis_client.scan_iter(match="doc:*")}
    for i in [*range(n + 50), n + 100]:
        key = b"doc:%d" % i
        target = b"new:%d" % i
        want = expected_hash(redis_client, key)
        got = redis_client.hgetall(target) or None
        assert got == want, key
        if want is not None:
            assert (redis_client.execute_command("PEXPIRETIME", target)
                    == redis_client.execute_command("PEXPIRETIME", key))
    assert {b"new:" + k[4:] for k in sources} == set(redis_client.scan_iter(match="new:*"))
    lag = engine.lag.to_dict()
    assert lag["count"] == engine.applied and lag["max"] >= lag["p99"] >= lag["p50"] > 0
    # every target key rvlm wrote outside the key file was logged first
    logged = {k for chunk in engine.written.iter_keys() for k in chunk}
    created = {b"doc:" + k[4:] for k in redis_client.scan_iter(match="new:*")
               if int(k[4:]) >= n}
    assert created and created <= logged


def test_json_copy_under_writes(redis_client, redis_url, tmp_path, notify):
    n = 400
    make_json_index(redis_client, n=n, dims=DIMS)
    plan = plan_for(redis_client, "jidx", {"index": {"name": "jidx_v2", "prefix": "k:"},
                                           "rename_fields": [{"old_name": "g",
                                                              "new_name": "group"}],
                                           "update_fields": [{"name": "group",
                                                              "path": "$.group"}]})
    setting, sub, engine, keyfile = start(redis_client, redis_url, plan, tmp_path)
    writer = Writer(redis_url, "j:", n, storage="json")
    writer.start()
    try:
        engine.copy(keyfile)
        time.sleep(0.2)
    finally:
        writer.stop.set()
        writer.join()
    engine.drain()
    sub.stop()
    setting.leave()
    for i in range(n + 50):
        src = redis_client.execute_command("JSON.GET", f"j:{i}", "$")
        dst = redis_client.execute_command("JSON.GET", f"k:{i}", "$")
        if src is None:
            assert dst is None
            continue
        want = json.loads(src)[0]
        want["group"] = want.pop("g")
        assert json.loads(dst)[0] == want
        assert (redis_client.execute_command("PEXPIRETIME", f"k:{i}")
                == redis_client.execute_command("PEXPIRETIME", f"j:{i}"))


def test_resume_compares_and_sweeps(redis_client, redis_url, tmp_path, notify):
    n = 300
    make_hash_index(redis_client, n=n, dims=DIMS)
    plan = plan_for(redis_client, "idx", {"index": {"name": "idx_v2", "prefix": "new:"}})
    setting, sub, engine, keyfile = start(redis_client, redis_url, plan, tmp_path)
    engine.copy(keyfile)
    engine.drain()
    sub.stop()  # the process "dies": changes made now are not captured
    redis_client.hset("doc:5", "t", "changed while nobody listened")
    redis_client.delete("doc:6")
    redis_client.hset("new:7", "t", "damaged copy")
    source_before = dumps(redis_client, "doc:*")
    pending = PendingKeys(tmp_path / "pending2")
    sub2 = Subscriber(connect(redis_url), ["doc:"], pending)
    sub2.start()
    again = OnlineCopy(redis_client, engine.mirror, pending, [sub2],
                       KeyLog(tmp_path / "written.keys"), batch_size=50)
    again.compare = True
    keyfile2 = tmp_path / "keys2.rvk"
    info = read_index(redis_client, "idx")
    enumerate_keys(redis_client, plan.source_schema, info.stats.num_docs,
                   info.stats.indexing_failures, keyfile2)
    again.copy(keyfile2)
    with __import__("rvlm.core.storage.keyfile", fromlist=["x"]).KeyFileReader(keyfile) as r:
        assert again.sweep(r.iter_batches(50)) == 1  # doc:6's copy
    again.drain()
    sub2.stop()
    setting.leave()
    assert again.skipped_same == n - 1 - 2  # only doc:5 and new:7 were rewritten
    assert redis_client.hget("new:5", "t") == b"changed while nobody listened"
    assert redis_client.hget("new:7", "t") == redis_client.hget("doc:7", "t")
    assert not redis_client.exists("new:6")
    assert dumps(redis_client, "doc:*") == source_before  # never written


def test_throttle_and_commands_from_another_shell(redis_client, redis_url, tmp_path, notify):
    n = 600
    make_hash_index(redis_client, n=n, dims=DIMS)
    plan = plan_for(redis_client, "idx", {"index": {"name": "idx_v2", "prefix": "new:"}})
    control = ControlChannel(tmp_path / "backup")
    throttler = Throttler(redis_client, interval=0.05)
    setting, sub, engine, keyfile = start(redis_client, redis_url, plan, tmp_path,
                                          throttler=throttler, control=control)
    throttler.forced = True  # as if 'rvlm ctl throttle' came first
    answers: dict[str, str] = {}
    copied_while_throttled: list[int] = []

    def operator() -> None:
        time.sleep(0.5)
        copied_while_throttled.append(engine.copied)
        answers["status"] = send(tmp_path / "backup", "status")
        answers["max-load"] = send(tmp_path / "backup", "max-load=used_memory=100gb")
        answers["unthrottle"] = send(tmp_path / "backup", "unthrottle")

    t = threading.Thread(target=operator)
    t.start()
    engine.copy(keyfile)
    t.join()
    engine.drain()
    sub.stop()
    setting.leave()
    assert copied_while_throttled == [0]
    assert "State: throttled, commanded by user" in answers["status"]
    assert answers["max-load"] == f"used_memory={100 * 1024 ** 3}"
    assert answers["unthrottle"] == "unthrottled"
    assert engine.copied == n and len(list(redis_client.scan_iter(match="new:*"))) == n


def test_critical_load_stops_cleanly(redis_client, redis_url, tmp_path, notify):
    make_hash_index(redis_client, n=200, dims=DIMS)
    plan = plan_for(redis_client, "idx", {"index": {"name": "idx_v2", "prefix": "new:"}})
    throttler = Throttler(redis_client, critical_load={"connected_clients": 1}, interval=0)
    setting, sub, engine, keyfile = start(redis_client, redis_url, plan, tmp_path,
                                          throttler=throttler)
    before = dumps(redis_client, "doc:*")
    with pytest.raises(Stopped, match=r"critical-load reached \(connected_clients="):
        engine.copy(keyfile)
    sub.stop()
    setting.leave()
    assert dumps(redis_client, "doc:*") == before


def test_a_killed_capture_connection_stops_the_copy(redis_client, redis_url, tmp_path, notify):
    from rvlm.core.redis.capture import CLIENT_NAME, CaptureLost

    make_hash_index(redis_client, n=400, dims=DIMS)
    plan = plan_for(redis_client, "idx", {"index": {"name": "idx_v2", "prefix": "new:"}})
    setting, sub, engine, keyfile = start(redis_client, redis_url, plan, tmp_path)
    before = dumps(redis_client, "doc:*")
    killed = []

    def kill_after_first_batch(point: str, batch: int | None) -> None:
        if point == "online_copy" and batch == 0:
            for c in redis_client.client_list():
                if c.get("name") == CLIENT_NAME:
                    redis_client.client_kill_filter(_id=c["id"])
                    killed.append(c["id"])
            time.sleep(0.3)

    engine.fault = kill_after_first_batch
    with pytest.raises(CaptureLost, match="lost its subscription"):
        engine.copy(keyfile)
    sub.stop()
    setting.leave()
    assert killed and engine.copied < 400
    assert dumps(redis_client, "doc:*") == before


def test_finalize_backs_up_then_deletes_and_loses_no_write(redis_client, redis_url, tmp_path,
                                                           notify):
    from rvlm.core.migrate.online.finalize import Finalizer
    from rvlm.core.storage.backup.reader import BackupReader
    from rvlm.core.storage.journal import Journal, RunState

    n = 800
    make_hash_index(redis_client, n=n, dims=DIMS, ttl_every=9)
    plan = plan_for(redis_client, "idx", {
        "index": {"name": "idx_v2", "prefix": "new:"},
        "rename_fields": [{"old_name": "t", "new_name": "title"}],
        "update_fields": [{"name": "v", "attrs": {"datatype": "float16"}}]})
    setting, sub, engine, keyfile = start(redis_client, redis_url, plan, tmp_path)
    engine.copy(keyfile)
    engine.drain()
    redis_client.execute_command("FT.DROPINDEX", "idx")  # after the cut-over
    backup = tmp_path / "backup"
    backup.mkdir()
    journal = Journal(backup, 0)
    writer = Writer(redis_url, "doc:", n)

    def progress(done: int, total: int) -> None:
        """The writer changes source keys during the whole first pass, then stops."""
        if not writer.is_alive() and not writer.stop.is_set():
            writer.start()
        if done == total and fin.result.passes == 1:
            writer.stop.set()
            writer.join()

    fin = Finalizer(engine, journal, backup, plan.fingerprint, prefixes=["doc:"],
                    fault=lambda p, b: None, max_passes=5, progress=progress)
    engine.batch_size = 40  # a slower first pass, so the writer gets to write
    result = fin.run()
    engine.drain()
    sub.stop()
    setting.leave()
    journal.close()
    assert writer.ops > 20 and result.passes >= 2 and result.left == 0
    assert not list(redis_client.scan_iter(match="doc:*"))  # every source key is gone
    latest: dict[bytes, dict[bytes, bytes]] = {}
    reader = BackupReader(backup, plan.fingerprint)
    for _b, records in reader.batches():
        for r in records:
            latest[r.key] = {f.name: f.value for f in r.fields}
    # every document no client touched is in the backup (a key the writer deleted before
    # finalize read it never reached it: counting keys raced those deletes with new keys)
    untouched = {b"doc:%d" % i for i in range(n)} - writer.touched
    assert untouched <= latest.keys(), sorted(untouched - latest.keys())[:5]
    assert len(untouched) > n // 2
    state = RunState.load(backup)
    assert state.started_not_done == frozenset() and len(state.done) == result.batches
    for key, fields in latest.items():
        want = {(b"title" if k == b"t" else k): v for k, v in fields.items()}
        if b"v" in fields:
            want[b"v"] = np.frombuffer(fields[b"v"], np.float32).astype(np.float16).tobytes()
        got = redis_client.hgetall(b"new:" + key[4:])
        # the target holds the last state the source had before it was deleted, unless the
        # writer deleted the source after that backup (then the target is gone too)
        assert got == want or (not got and key in writer.touched), key


def test_changes_are_carried_over_while_a_long_check_runs(redis_client, redis_url, tmp_path,
                                                          notify):
    """A slow read-only check (validation's round trips, the gate's queries) runs in a thread
    of its own: a write made meanwhile reaches its target before the check ends."""
    make_hash_index(redis_client, n=50, dims=DIMS)
    plan = plan_for(redis_client, "idx", {
        "index": {"name": "idx_v2", "prefix": "new:"},
        "rename_fields": [{"old_name": "t", "new_name": "title"}]})
    setting, sub, engine, keyfile = start(redis_client, redis_url, plan, tmp_path)
    try:
        engine.copy(keyfile)
        engine.drain()
        seen: list[Any] = []

        def check() -> str:
            redis_client.hset("doc:7", "t", "written during the check")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # the check waits for the change to arrive
                got = redis_client.hget("new:7", "title")
                if got == b"written during the check":
                    seen.append(got)
                    break
                time.sleep(0.01)
            return "checked"

        started = time.monotonic()
        assert engine.forward_during(check) == "checked"
        assert seen == [b"written during the check"] and time.monotonic() - started < 5
        assert engine.lag.to_dict()["max"] < 1000

        def broken() -> None:
            raise ValueError("the check failed")

        with pytest.raises(ValueError, match="the check failed"):
            engine.forward_during(broken)
    finally:
        sub.stop()
        setting.leave()


def test_step_sizes_follow_time() -> None:
    step = StepSize(0.04, most=500, start=100)
    step.took(0.2)  # slow: shrinks
    assert step.size == 70
    for _ in range(20):
        step.took(0.5)
    assert step.size == 10  # never under the floor
    step.took(0.001, keys=3)  # fast but not full: stays
    assert step.size == 10
    for _ in range(10):
        step.took(0.001)
    assert step.size == 500  # never over the batch
    step.took(0.2, keys=20)  # a slow short step shrinks it from what it held
    assert step.size == 14


def test_finalize_ends_when_writes_never_leave_a_key_standing(redis_client, redis_url, tmp_path,
                                                             notify):
    """A client that creates a source key and deletes it at once, over and over, keeps the
    source from being quiet but never leaves a key for a scan to find: finalize must still
    end once ``settle`` seconds have passed after its first scan (before, they only started
    after a scan that found keys, so this finalize never ended), with nothing deleted and
    the source not found quiet."""
    from rvlm.core.migrate.online.finalize import Finalizer
    from rvlm.core.storage.journal import Journal

    make_hash_index(redis_client, n=30, dims=DIMS)
    plan = plan_for(redis_client, "idx", {"index": {"name": "idx_v2", "prefix": "new:"}})
    setting, sub, engine, keyfile = start(redis_client, redis_url, plan, tmp_path)
    engine.copy(keyfile)
    engine.drain()
    redis_client.delete(*redis_client.keys("doc:*"))  # the source is empty from the start
    engine.drain()
    stop = threading.Event()

    def flicker() -> None:
        client = connect(redis_url)
        while not stop.is_set():
            pipe = client.pipeline(transaction=True)
            pipe.hset("doc:1000", mapping={"t": "here and gone"})
            pipe.delete("doc:1000")
            pipe.execute()
            time.sleep(0.002)
        client.close()

    backup = tmp_path / "backup"
    backup.mkdir()
    journal = Journal(backup, 0)
    fin = Finalizer(engine, journal, backup, plan.fingerprint, prefixes=["doc:"],
                    fault=lambda p, b: None, settle=0.3)
    out: list[Any] = []
    flickering = threading.Thread(target=flicker, daemon=True)
    flickering.start()
    time.sleep(0.05)
    finalizing = threading.Thread(target=lambda: out.append(fin.run()), daemon=True)
    finalizing.start()
    finalizing.join(30)
    stop.set()
    flickering.join()
    ended = not finalizing.is_alive()
    if not ended:  # let it end, so the subscriber can be stopped
        fin.settle = 0.0
        fin.max_passes = 0
        finalizing.join(30)
    sub.stop()
    setting.leave()
    journal.close()
    assert ended, "finalize kept waiting for a quiet source"
    result = out[0]
    assert result.deleted == 0 and result.left == 0 and result.source_empty_at is None
