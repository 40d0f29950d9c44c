"""The good-neighbour machinery of online mode: throttling on INFO fields and on replica lag
(a real replica), the forwarding-lag statistics, and the control channel another shell uses
to query, throttle, unthrottle or cut over a running apply."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest
from test_apply_helpers import primary_with_replica

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.online.control import (
    ControlChannel,
    Status,
    eta_seconds,
    normalise,
    read_status,
    running,
    send,
)
from rvlm.core.migrate.online.lag import LagStats
from rvlm.core.migrate.online.throttle import (
    ReplicaLag,
    Throttler,
    crossed,
    parse_thresholds,
)

# --------------------------------------------------------------------------- thresholds


def test_thresholds_parse_with_redis_size_suffixes():
    assert parse_thresholds("used_memory=4gb, connected_clients=500", "--max-load") == {
        "used_memory": 4 * 1024 ** 3, "connected_clients": 500.0}
    assert parse_thresholds("instantaneous_ops_per_sec=5k", "--max-load") == {
        "instantaneous_ops_per_sec": 5000.0}
    assert parse_thresholds("", "--max-load") == {}
    for bad in ("used_memory", "used_memory=lots", "used_memory=4tb", "=3"):
        with pytest.raises(RvlmError, match=r"--max-load: .* is not FIELD=NUMBER"):
            parse_thresholds(bad, "--max-load")


def test_crossed_names_the_field_value_and_threshold():
    info = {"used_memory": 3 * 1024 ** 3, "connected_clients": 12}
    assert crossed(info, {"connected_clients": 100}) is None
    assert crossed(info, {"used_memory": 2 * 1024 ** 3}) == "used_memory=3.00GB >= 2.00GB"
    assert crossed(info, {"connected_clients": 12}) == "connected_clients=12 >= 12"


def test_throttler_on_info_fields(redis_client):
    used = int(redis_client.info()["used_memory"])
    t = Throttler(redis_client, max_load={"used_memory": used * 100}, interval=0)
    t.validate()
    assert t.check().reason is None
    t.max_load = {"used_memory": 1}
    assert t.check().reason.startswith("max-load used_memory=")
    t.max_load = {}
    t.forced = True
    assert t.check().reason == "commanded by user"
    t.forced = False
    t.critical_load = {"connected_clients": 1}
    state = t.check()
    assert state.reason is None and state.critical.startswith("connected_clients=")


def test_throttler_refuses_unknown_fields_before_anything(redis_client):
    with pytest.raises(RvlmError, match="--max-load: the server's INFO has no field 'used_mem'"):
        Throttler(redis_client, max_load={"used_mem": 1}).validate()
    with pytest.raises(RvlmError, match="--critical-load: INFO field 'redis_version' is not"):
        Throttler(redis_client, critical_load={"redis_version": 1}).validate()
    with pytest.raises(RvlmError, match="--max-lag-millis must be a positive"):
        Throttler(redis_client, max_lag_ms=0).validate()


@pytest.fixture(scope="module")
def primary_and_replica():
    """Two embedded servers of this test's own: a primary and its replica."""
    with primary_with_replica() as (_url, primary, replica):
        yield primary, replica


def test_replica_lag_is_measured_in_ms_and_throttles(primary_and_replica):
    primary, replica = primary_and_replica
    lag = ReplicaLag(primary)
    primary.set("x", 0)
    time.sleep(0.05)
    assert set(lag.sample().values()) == {0.0}
    t = Throttler(primary, max_lag_ms=150, interval=0)
    t.validate()
    assert t.check().reason is None
    # the replica stops applying the replication stream (INFO still answers); the primary
    # keeps writing until the throttle notices (bounded, whatever the machine's load)
    replica.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
    state = t.check()
    deadline = time.monotonic() + 4
    for i in range(1000):
        primary.set("x", i)
        time.sleep(0.06)
        state = t.check()
        if state.reason is not None or time.monotonic() > deadline:
            break
    assert state.reason is not None and "lag" in state.reason and "> 150ms" in state.reason
    assert all(isinstance(v, float) and v > 150 for v in state.replica_lag_ms.values()), state
    replica.execute_command("CLIENT", "UNPAUSE")
    primary.set("x", "done")
    deadline = time.monotonic() + 5
    while t.check().reason is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t.close()


def test_an_unreachable_replica_throttles(redis_client):
    t = Throttler(redis_client, max_lag_ms=100, replicas=["127.0.0.1:1"], interval=0)
    assert "replica 127.0.0.1:1: unreachable" in t.check().reason
    t.close()


# --------------------------------------------------------------------------- lag statistics


def test_lag_percentiles_within_one_percent():
    stats = LagStats()
    values = [random.Random(7).uniform(0.2, 50.0) for _ in range(10_000)] + [250.0]
    for v in values:
        stats.add(v)
    exact = sorted(values)
    for p in (50, 99):
        want = exact[int(len(exact) * p / 100) - 1]
        assert abs(stats.percentile(p) - want) <= want * 0.011, p
    d = stats.to_dict()
    assert d["count"] == 10_001 and d["max"] == 250.0
    other = LagStats()
    other.add(1000.0)
    stats.merge(other)
    assert stats.to_dict()["max"] == 1000.0 and stats.count == 10_002
    assert LagStats().to_dict() == {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}


# --------------------------------------------------------------------------- control channel


def test_status_line_and_eta():
    s = Status(phase="copy", copied=600, total=2000, applied=14, backlog=3,
               lag_ms={"count": 14, "p50": 1.2, "p99": 8.0, "max": 9.5}, elapsed=30.0,
               eta=eta_seconds(600, 2000, 30.0))
    assert s.line() == ("Copy: 600/2000 30.0%; Applied: 14; Backlog: 3; Lag: p50 1.2ms p99 8ms "
                        "max 9.5ms; Time: 30s; State: copy; ETA: 1m10s")
    s.throttled = "max-load used_memory=3.00GB >= 2.00GB"
    assert "State: throttled, max-load used_memory=3.00GB >= 2.00GB;" in s.line()
    assert eta_seconds(5, 1000, 3.0) is None  # under 1%: too early


def test_commands_reach_a_running_apply_and_get_answers(tmp_path):
    channel = ControlChannel(tmp_path)
    channel.publish(Status(phase="copy", total=10))
    seen: list[str] = []
    stop = threading.Event()

    def apply_loop() -> None:  # what the executor's tick does
        while not stop.is_set():
            for cid, command in channel.commands():
                seen.append(command)
                channel.answer(cid, "throttled" if command == "throttle" else channel.status.line())
            channel.publish()
            time.sleep(0.02)

    t = threading.Thread(target=apply_loop)
    t.start()
    try:
        assert running(tmp_path) is not None
        assert send(tmp_path, "throttle") == "throttled"
        assert send(tmp_path, "sup").startswith("Copy: 0/10")
        assert send(tmp_path, "unpostpone") != ""
        assert send(tmp_path, "max-load=used_memory=1gb") != ""
    finally:
        stop.set()
        t.join()
    assert seen == ["throttle", "status", "cut-over", "max-load=used_memory=1gb"]
    channel.close("succeeded")
    assert read_status(tmp_path).state == "succeeded"
    with pytest.raises(RvlmError, match=r"no online apply is running on .*its last status"):
        send(tmp_path, "status")


def test_unknown_command_and_dead_apply_are_one_line_errors(tmp_path):
    with pytest.raises(RvlmError, match="unknown command 'explode'"):
        normalise("explode")
    with pytest.raises(RvlmError, match="no online apply is running"):
        send(tmp_path, "status")
    channel = ControlChannel(tmp_path)
    channel.publish(Status(pid=2 ** 22 + 12345))  # no such process on this host
    assert running(tmp_path) is None
    channel.publish(Status(pid=os.getpid()))
    with pytest.raises(RvlmError, match="did not answer 'throttle' within 0s"):
        send(tmp_path, "throttle", timeout=0.2)
