"""The index lock against a real Redis, under RESP2 and RESP3, bytes and decoded clients."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from rvlm.core.redis.lock import (
    LEASE_ENV,
    IndexLock,
    LeaseKeeper,
    LockHeld,
    LockLost,
    hold_locks,
    lock_key,
    lock_owner,
)

try:  # the shared fixture comes from rvlm.testing.pytest_plugin (or tests/conftest.py)
    from rvlm.testing import pytest_plugin as _plugin

    _SHARED_FIXTURE = hasattr(_plugin, "redis_client")
except ImportError:  # pragma: no cover
    _SHARED_FIXTURE = False

if not _SHARED_FIXTURE:  # pragma: no cover - temporary stand-in until the shared one exists

    @pytest.fixture
    def redis_client() -> Iterator[redis.Redis]:
        url = os.environ.get("REDIS_URL")
        if not url:
            pytest.skip("REDIS_URL is not set")
        client = redis.Redis.from_url(url, decode_responses=False)
        yield client
        client.close()


_WHERE = {"host", "port", "path", "db", "username", "password"}


@pytest.fixture(
    params=[(2, False), (2, True), (3, False), (3, True)],
    ids=lambda p: f"resp{p[0]}-{'str' if p[1] else 'bytes'}",
)
def client(request: pytest.FixtureRequest, redis_client: redis.Redis) -> Iterator[redis.Redis]:
    """A client on the same server/db as ``redis_client`` with the given protocol/decoding."""
    protocol, decode = request.param
    pool = redis_client.connection_pool
    kwargs: dict[str, Any] = {
        k: v for k, v in pool.connection_kwargs.items() if k in _WHERE and v is not None
    }
    kwargs.update(protocol=protocol, decode_responses=decode)
    c = redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )
    assert int(c.client_info()["resp"]) == protocol  # really speaking that protocol
    yield c
    c.close()


@pytest.fixture
def index() -> str:
    return f"idx-{uuid.uuid4().hex[:8]}"


def test_acquire_and_release(client: redis.Redis, index: str) -> None:
    lock = IndexLock(client, index, owner="alice", lease_ms=10_000)
    lock.acquire()
    raw = client.get(lock_key(index))
    assert raw is not None
    info = json.loads(raw)
    assert (
        info["owner"] == "alice" and info["pid"] == os.getpid() and info["host"] and info["started"]
    )
    assert 0 < client.pttl(lock_key(index)) <= 10_000
    assert lock.release() is True
    assert client.exists(lock_key(index)) == 0
    assert lock.release() is False


def test_second_apply_is_refused_naming_the_holder(client: redis.Redis, index: str) -> None:
    with IndexLock(client, index, owner="alice", lease_ms=20_000):
        other = IndexLock(client, index, owner="bob")
        with pytest.raises(LockHeld) as err:
            other.acquire()
        message = str(err.value)
        assert "\n" not in message
        assert repr(index) in message and "alice" in message and f"pid {os.getpid()}" in message
        assert "lease expires in" in message
        assert not other.held
    assert client.exists(lock_key(index)) == 0
    with IndexLock(client, index, owner="bob"):  # free again
        pass


def test_renew_extends_only_our_own_lease(client: redis.Redis, index: str) -> None:
    lock = IndexLock(client, index, owner="alice", lease_ms=5_000)
    lock.acquire()
    client.pexpire(lock_key(index), 100)
    lock.renew()
    assert client.pttl(lock_key(index)) > 4_000
    client.set(lock_key(index), "someone else", px=5_000)  # our lease ran out, bob took it
    with pytest.raises(LockLost):
        lock.renew()
    assert client.get(lock_key(index)) in (b"someone else", "someone else")
    assert lock.release() is False
    assert client.exists(lock_key(index)) == 1  # bob's lock is untouched


def test_release_never_deletes_another_holders_lock(client: redis.Redis, index: str) -> None:
    lock = IndexLock(client, index, owner="alice", lease_ms=5_000)
    lock.acquire()
    client.set(lock_key(index), json.dumps({"owner": "bob"}))
    assert lock.release() is False
    assert json.loads(client.get(lock_key(index)) or "{}")["owner"] == "bob"


def test_expired_lease_lets_another_apply_in(client: redis.Redis, index: str) -> None:
    old = IndexLock(client, index, owner="alice", lease_ms=50)
    old.acquire()
    time.sleep(0.12)
    new = IndexLock(client, index, owner="bob", lease_ms=5_000)
    new.acquire()
    with pytest.raises(LockLost):
        old.renew()
    assert old.release() is False
    assert new.release() is True


def test_context_manager_releases_on_error(client: redis.Redis, index: str) -> None:
    with pytest.raises(RuntimeError), IndexLock(client, index, owner="alice"):
        raise RuntimeError("migration failed")
    assert client.exists(lock_key(index)) == 0


def test_lock_without_ttl_is_described(client: redis.Redis, index: str) -> None:
    client.set(lock_key(index), "manual")
    with pytest.raises(LockHeld, match="never expires"):
        IndexLock(client, index, owner="alice").acquire()


def test_lease_keeper_keeps_the_lock_and_notices_loss(client: redis.Redis, index: str) -> None:
    lock = IndexLock(client, index, owner="alice", lease_ms=240)
    with lock, LeaseKeeper(lock) as keeper:
        time.sleep(0.5)  # two leases: it was renewed
        keeper.check()
        assert client.exists(lock_key(index)) == 1
        client.set(lock_key(index), "thief", px=5_000)
        deadline = time.monotonic() + 2
        while keeper.error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(LockLost):
            keeper.check()
    assert client.get(lock_key(index)) in (b"thief", "thief")


def test_lease_keeper_stops_when_asked_not_at_its_next_renewal(client: redis.Redis,
                                                                index: str) -> None:
    """Stopping the renewer ends its thread at once, not when its wait for the next renewal
    would have run out (issue #17: an apply's exit must not wait on a lease interval): with a
    lease of two hours the thread would otherwise sleep 40 minutes. The lock is left held
    until released, and nothing renews it after the stop."""
    import threading

    lock = IndexLock(client, index, owner="alice", lease_ms=7_200_000)
    with lock:
        keeper = LeaseKeeper(lock)
        keeper.start()
        name = f"rvlm-lease-{index}"
        assert name in {t.name for t in threading.enumerate()}
        stopper = threading.Thread(target=keeper.stop, daemon=True)
        stopper.start()
        stopper.join(timeout=60)  # a generous bound: an interval-bound stop takes 40 min
        assert not stopper.is_alive()
        assert name not in {t.name for t in threading.enumerate()}
        keeper.check()
        assert client.exists(lock_key(index)) == 1
    assert client.exists(lock_key(index)) == 0


# --------------------------------------------------------------------------- hold_locks


def test_hold_locks_takes_every_lock_once_and_releases_them(client: redis.Redis,
                                                            index: str) -> None:
    other = index + "_v2"
    with hold_locks(client, [index, other, index], lock_owner("apply")) as leases:
        for name in (index, other):
            held = json.loads(client.get(lock_key(name)))
            assert held["owner"].startswith("rvlm apply (") and held["pid"] == os.getpid()
        leases.check()
        assert leases.error is None and len(leases.keepers) == 2
    assert client.exists(lock_key(index), lock_key(other)) == 0


def test_hold_locks_releases_the_first_when_the_second_is_held(client: redis.Redis,
                                                               index: str) -> None:
    other = index + "_v2"
    with IndexLock(client, other, owner="bob"), pytest.raises(LockHeld, match="bob"), \
            hold_locks(client, [index, other], lock_owner("apply")):
        pytest.fail("the second lock is held: the block must not run")
    assert client.exists(lock_key(index)) == 0  # the one it took is released


def test_hold_locks_takes_over_a_lock_left_by_a_dead_process(client: redis.Redis,
                                                            index: str) -> None:
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    left = json.dumps({"owner": "rvlm apply (crashed)", "host": socket.gethostname(),
                       "pid": int(gone.stdout), "started": "then", "token": "t"})
    client.set(lock_key(index), left, px=60_000)
    with hold_locks(client, [index], lock_owner("rollback")):
        assert json.loads(client.get(lock_key(index)))["owner"].startswith("rvlm rollback")
    assert client.exists(lock_key(index)) == 0
    # a live holder is not taken over
    alive = json.dumps({"owner": "alice", "host": socket.gethostname(), "pid": os.getpid(),
                        "started": "now", "token": "t"})
    client.set(lock_key(index), alive, px=60_000)
    with pytest.raises(LockHeld, match="alice"), hold_locks(client, [index], "me"):
        pass
    assert json.loads(client.get(lock_key(index)))["owner"] == "alice"


def test_leases_notice_a_lost_second_lock(client: redis.Redis, index: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LEASE_ENV, "240")
    other = index + "_v2"
    with hold_locks(client, [index, other], "me") as leases:
        client.set(lock_key(other), "thief", px=5_000)
        deadline = time.monotonic() + 2
        while leases.error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(LockLost, match=other):
            leases.check()
    assert client.get(lock_key(other)) in (b"thief", "thief")  # not ours: left alone
    assert client.exists(lock_key(index)) == 0
