"""Writes acknowledged by the replicas before their batch is journaled done.

Replication is asynchronous: a primary answers a write before its replicas have it. When that
primary then dies and a replica is promoted (an automatic failover of a Redis Cluster, or
Sentinel), the writes it had not passed on are gone, while the journal says their batch is
done, so a resume would skip them. :class:`ReplicaWait`, installed on a client with
:func:`install`, closes that gap: every pipeline that :func:`rvlm.core.redis.wire.execute`
sends with a write in it ends, on each node it went to, with ``WAIT <replicas> <timeout>`` on
the same connection (``WAIT`` counts the writes of its own connection), where ``replicas`` is
the number of replicas connected to that node when rvlm first wrote to it (a node without
replicas gets no ``WAIT``). A ``WAIT`` answered with fewer replicas raises
:class:`ReplicaLag`; the batch is then not journaled done, and the re-run restores and redoes
it. The timeout is :data:`TIMEOUT_MS`, or ``RVLM_REPLICA_TIMEOUT_MS`` milliseconds.

``WAIT`` makes a write survive the loss of its primary only when a replica that has it is the
one promoted; Redis Cluster promotes the replica with the most recent offset.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import redis

from rvlm.core.errors import MigrationFailed
from rvlm.core.redis.resp import to_int, to_map
from rvlm.core.redis.routing import command_name

#: How long a batch's writes may take to reach the replicas (milliseconds).
TIMEOUT_MS = 10_000
TIMEOUT_ENV = "RVLM_REPLICA_TIMEOUT_MS"

#: Commands that change data: a pipeline with one of them ends with ``WAIT``.
WRITES = frozenset({
    b"HSET", b"HMSET", b"HDEL", b"DEL", b"UNLINK", b"RESTORE", b"RENAME", b"RENAMENX", b"COPY",
    b"SET", b"JSON.SET", b"JSON.DEL", b"JSON.MERGE", b"JSON.MSET", b"PEXPIRE", b"PEXPIREAT",
    b"EXPIRE", b"EXPIREAT", b"PERSIST", b"EXEC", b"EVAL", b"EVALSHA", b"FCALL",
})


class ReplicaLag(MigrationFailed):
    """A node's replicas did not acknowledge the writes of a batch in time."""


def writes(commands: Sequence[Sequence[Any]]) -> bool:
    """True when some command of ``commands`` changes data."""
    return any(command_name(c) in WRITES for c in commands)


class ReplicaWait:
    """See the module docstring. ``node`` names are those of the routing (``host:port``;
    ``""`` for a client of one server)."""

    def __init__(self, timeout_ms: int | None = None) -> None:
        if timeout_ms is None:
            timeout_ms = int(os.environ.get(TIMEOUT_ENV) or TIMEOUT_MS)
        self.timeout_ms = timeout_ms
        self.replicas: dict[str, int] = {}
        self.lock = threading.Lock()

    def command(self, name: str, node: Any) -> tuple[Any, ...] | None:
        """The ``WAIT`` to end a pipeline with on ``node``, or None (no replica)."""
        with self.lock:
            count = self.replicas.get(name)
        if count is None:
            try:
                info = to_map(node.info("replication"))
            except redis.ResponseError:  # INFO refused (a managed service): no WAIT
                info = {}
            count = to_int(info.get("connected_slaves", 0)) if info.get("role") in (
                "master", b"master") else 0
            with self.lock:
                self.replicas[name] = count
        return (b"WAIT", count, self.timeout_ms) if count else None

    def check(self, name: str, command: Sequence[Any], reply: Any) -> None:
        """Raise :class:`ReplicaLag` when ``reply`` (to ``command``) acknowledges fewer
        replicas than it asked for."""
        want = int(command[1])
        got = reply if isinstance(reply, int) else -1
        if isinstance(reply, Exception) or got < want:
            where = f"node {name}" if name else "the server"
            what = (f"failed: {reply}" if isinstance(reply, Exception)
                    else f"{got} of {want} replicas acknowledged within {self.timeout_ms} ms")
            raise ReplicaLag(
                f"{where}: the writes of this batch were not confirmed by its replicas (WAIT "
                f"{what}); they would be lost if the primary failed over now, so the batch is "
                f"not journaled done: re-run the same command once the replicas catch up "
                f"(it redoes the batch)")


_WAITS: weakref.WeakKeyDictionary[Any, ReplicaWait] = weakref.WeakKeyDictionary()


def install(client: Any, wait: ReplicaWait | None = None) -> ReplicaWait:
    """Make every write pipeline :func:`~rvlm.core.redis.wire.execute` sends on ``client``
    wait for the replicas (see the module docstring)."""
    got = wait or ReplicaWait()
    with contextlib.suppress(TypeError):  # a client that cannot be weakly referenced
        _WAITS[client] = got
    return got


def uninstall(client: Any) -> None:
    """Stop waiting for the replicas on ``client``."""
    _WAITS.pop(client, None)


def wait_of(client: Any) -> ReplicaWait | None:
    """The :class:`ReplicaWait` installed on ``client``, or None."""
    try:
        return _WAITS.get(client)
    except TypeError:  # an unhashable client
        return None


__all__ = ["TIMEOUT_ENV", "TIMEOUT_MS", "WRITES", "ReplicaLag", "ReplicaWait", "install",
           "uninstall", "wait_of", "writes"]
