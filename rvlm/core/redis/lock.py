"""One migration per index at a time: a leased lock key in Redis.

``rvlm:lock:{index}`` holds a JSON description of the holder (owner, host, pid, start time and a
random token) and expires after ``lease_ms`` unless renewed. :meth:`IndexLock.acquire` is
``SET ... NX PX``; :meth:`IndexLock.renew` and :meth:`IndexLock.release` are Lua
compare-and-``PEXPIRE`` / compare-and-``DEL`` on the exact value we set, so a process whose
lease ran out can never extend or delete the lock a newer holder took. Works with
``decode_responses`` True or False and RESP2 or RESP3 (the comparison runs in the server).

Typical use (what apply and rollback do, through :func:`hold_locks`)::

    with hold_locks(r, ["products", "products_v2"], lock_owner("apply")) as leases:
        for batch in ...:
            leases.check()      # raises LockLost if a lease could not be kept
            ...

:func:`acquire_lock` takes over a lock left by a dead process on this host (a crash), so a
re-run resumes at once instead of waiting for the lease to run out. ``RVLM_LOCK_LEASE_MS``
sets the lease (default 30000).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

import redis

from rvlm.core.errors import MigrationFailed, RvlmError

KEY_PREFIX = "rvlm:lock:"
LEASE_ENV = "RVLM_LOCK_LEASE_MS"
DEFAULT_LEASE_MS = 30_000

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
#: Deletes the lock only if it still holds exactly the value a dead holder left.
_STEAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LockHeld(RvlmError):
    """Another apply holds the index lock; the message names the holder and its lease."""


class LockLost(MigrationFailed):
    """We no longer hold the index lock (lease expired and/or taken by someone else)."""


def lock_key(index_name: str) -> str:
    """The Redis key that locks ``index_name``."""
    return f"{KEY_PREFIX}{index_name}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class IndexLock:
    """A lease on ``rvlm:lock:{index_name}`` for ``owner`` (free text shown to others).

    Context manager: acquires on enter, releases on exit. The lease lasts ``lease_ms`` from
    acquire or the last :meth:`renew`; keep it alive with :class:`LeaseKeeper` or call
    :meth:`renew` more often than ``lease_ms``.
    """

    def __init__(
        self, client: redis.Redis, index_name: str, owner: str, lease_ms: int = 30_000
    ) -> None:
        if lease_ms <= 0:
            raise ValueError(f"lease_ms must be positive, got {lease_ms}")
        self.client = client
        self.index_name = index_name
        self.owner = owner
        self.lease_ms = int(lease_ms)
        self.key = lock_key(index_name)
        self._value: str | None = None

    @property
    def held(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release` (not a server check)."""
        return self._value is not None

    def acquire(self) -> None:
        """Take the lock (``SET NX PX``) or raise :class:`LockHeld` naming the holder."""
        if self._value is not None:
            raise RuntimeError(f"{self.key} is already held by this IndexLock")
        value = json.dumps(
            {
                "owner": self.owner,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": _iso(time.time()),
                "token": uuid.uuid4().hex,
            },
            sort_keys=True,
        )
        for _ in range(3):  # the holder may vanish between SET and GET: try again
            if self.client.set(self.key, value, nx=True, px=self.lease_ms):
                self._value = value
                return
            message = self._describe_holder()
            if message is not None:
                raise LockHeld(message)
        raise LockHeld(f"index {self.index_name!r} is locked by a holder that keeps changing")

    def _describe_holder(self) -> str | None:
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.key)
        pipe.pttl(self.key)
        raw, pttl = pipe.execute()
        if raw is None:
            return None
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        try:
            info: Any = json.loads(text)
        except ValueError:
            info = None
        if isinstance(info, dict):
            holder = (
                f"{info.get('owner')} (host {info.get('host')}, pid {info.get('pid')}, "
                f"since {info.get('started')})"
            )
        else:
            holder = repr(text)
        if pttl is None or int(pttl) < 0:
            lease = f"its lease never expires (delete {self.key} by hand if that apply is gone)"
        else:
            ms = int(pttl)
            lease = f"its lease expires in {ms / 1000:.1f}s (at {_iso(time.time() + ms / 1000)})"
        return f"index {self.index_name!r} is being migrated by {holder}; {lease}"

    def renew(self) -> None:
        """Extend the lease to ``lease_ms`` from now, only if we still own the lock.

        Raises :class:`LockLost` if the key is gone or holds someone else's value.
        """
        if self._value is None:
            raise LockLost(f"{self.key} is not held")
        ok = self.client.eval(_RENEW, 1, self.key, self._value, str(self.lease_ms))
        if not int(ok):
            self._value = None
            raise LockLost(
                f"lost the lock on index {self.index_name!r}: the lease expired"
                " (or another apply took it)"
            )

    def release(self) -> bool:
        """Delete the lock if we still own it. Returns True if it was ours and is now gone,
        False if it had expired or belongs to someone else (their lock is left alone)."""
        if self._value is None:
            return False
        value, self._value = self._value, None
        deleted = self.client.eval(_RELEASE, 1, self.key, value)
        return bool(int(deleted))

    def __enter__(self) -> IndexLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class LeaseKeeper:
    """A daemon thread that renews ``lock`` every ``lease_ms / 3``.

    If the lock is lost, or cannot be renewed for a whole lease (server unreachable), the
    thread stops and :meth:`check` raises :class:`LockLost` from then on: call it between
    batches. Context manager: starts on enter, stops on exit.
    """

    def __init__(self, lock: IndexLock) -> None:
        self.lock = lock
        self.interval = lock.lease_ms / 3000
        self.error: LockLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"rvlm-lease-{lock.index_name}", daemon=True
        )

    def _run(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                self.lock.renew()
                last_ok = time.monotonic()
            except LockLost as exc:
                self.error = exc
                return
            except redis.RedisError as exc:
                if time.monotonic() - last_ok >= self.lock.lease_ms / 1000:
                    self.error = LockLost(
                        f"could not renew the lock on index {self.lock.index_name!r} for a "
                        f"whole lease ({exc})"
                    )
                    return

    def start(self) -> None:
        """Start renewing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and wait for the thread. Idempotent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def check(self) -> None:
        """Raise :class:`LockLost` if the lease has been lost."""
        if self.error is not None:
            raise self.error

    def __enter__(self) -> LeaseKeeper:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def lock_owner(command: str) -> str:
    """The owner text an rvlm command puts in its locks: ``rvlm <command> (<user>)``."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = "unknown"
    return f"rvlm {command} ({user})"


def pid_alive(pid: int) -> bool:
    """True unless no process ``pid`` exists on this host (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(client: redis.Redis, name: str, owner: str) -> IndexLock:
    """Take the lock on index ``name`` (lease from ``RVLM_LOCK_LEASE_MS``); a lock left by a
    dead process on this host (a crash) is taken over. Raises :class:`LockHeld` naming a live
    holder."""
    lease = int(os.environ.get(LEASE_ENV, str(DEFAULT_LEASE_MS)))
    lock = IndexLock(client, name, owner=owner, lease_ms=lease)
    try:
        lock.acquire()
        return lock
    except LockHeld:
        raw = client.get(lock_key(name))
        try:
            info = json.loads(raw) if raw is not None else None
        except ValueError:
            info = None
        if (isinstance(info, dict) and info.get("host") == socket.gethostname()
                and isinstance(info.get("pid"), int) and not pid_alive(info["pid"])):
            client.eval(_STEAL, 1, lock_key(name), raw)  # type: ignore[arg-type]
            lock.acquire()
            return lock
        raise


class Leases:
    """The lease keepers of the locks :func:`hold_locks` holds."""

    def __init__(self, keepers: Iterable[LeaseKeeper]) -> None:
        self.keepers = list(keepers)

    @property
    def error(self) -> LockLost | None:
        """The first lost lease, or None while every lease is kept."""
        return next((k.error for k in self.keepers if k.error is not None), None)

    def check(self) -> None:
        """Raise :class:`LockLost` if any lease has been lost."""
        for keeper in self.keepers:
            keeper.check()


@contextlib.contextmanager
def hold_locks(client: redis.Redis, names: Iterable[str], owner: str) -> Iterator[Leases]:
    """Lock every index in ``names`` (each once, in order, with :func:`acquire_lock`), keep
    every lease alive while the block runs, then stop the keepers and release the locks (a
    lock that expired or was taken over is left alone). If one lock is held by someone else,
    :class:`LockHeld` is raised and the locks already taken are released."""
    locks: list[IndexLock] = []
    keepers: list[LeaseKeeper] = []
    try:
        for name in dict.fromkeys(names):
            locks.append(acquire_lock(client, name, owner))
        for lock in locks:
            keeper = LeaseKeeper(lock)
            keeper.start()
            keepers.append(keeper)
        yield Leases(keepers)
    finally:
        for keeper in keepers:
            keeper.stop()
        for lock in locks:
            with contextlib.suppress(redis.RedisError):
                lock.release()
