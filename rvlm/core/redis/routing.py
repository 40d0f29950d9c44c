"""Many commands on a Redis Cluster: one raw pipeline per primary, run side by side.

:func:`route` is how :func:`rvlm.core.redis.wire.execute` serves a cluster client: the same
argument tuples in, the replies in the same order out, error replies in place (as
``ResponseError`` instances):

* each command goes to the primary owning its key's slot (the key is the first argument,
  or the first key of ``EVAL``/``EVALSHA``); a ``MULTI`` ... ``EXEC`` run of commands is one
  unit, sent whole to the owner of its first key (its keys must share a slot);
* the commands of each primary are sent as one pipeline on that node's pooled connection
  (``send``, i.e. :func:`rvlm.core.redis.wire.send`), every primary in its own thread, so a
  batch costs one round trip to the slowest node, not one per node;
* ``MOVED`` (a slot changed owner: a failover, a finished migration) updates the client's slot
  table and sends the unit again to the new owner; ``ASK`` (a slot being migrated, the key
  already moved) sends it to the importing node after ``ASKING``; ``TRYAGAIN`` waits briefly
  and sends it again. Only units that were redirected are sent again: a redirected command
  was not executed. Up to :data:`REDIRECTS` rounds, then the redirect is returned as the
  reply (the caller fails on it, like on any error reply).

A connection error or timeout on a node is raised after every other node's replies were read
(their commands did run), once the slot table was refreshed from the cluster: the caller
decides (the executor's batches are idempotent on resume).

The cluster is seen through a :class:`NodeMap` (:func:`node_map`): redis-py's sync
``RedisCluster`` (its slot table, ``nodes_manager``), or any client object with a
``node_map()`` method (the async bridge of :mod:`rvlm.aio`).
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, TryAgainError

#: Rounds of re-sending redirected units before a redirect is returned as the reply.
REDIRECTS = 5

Command = Sequence[Any]
#: Sends commands on one node's client and returns the replies (errors in place).
Send = Callable[[Any, Sequence[Command]], list[Any]]

_NO_KEY = frozenset({b"MULTI", b"EXEC", b"DISCARD", b"ASKING"})


class Trailer(Protocol):
    """A command that ends every node's pipeline (``WAIT``: :mod:`rvlm.core.redis.durability`)."""

    def command(self, name: str, node: Any) -> Command | None:
        """The command to end ``node``'s pipeline with, or None."""

    def check(self, name: str, command: Command, reply: Any) -> None:
        """Raise when ``reply`` to ``command`` on ``name`` is not what it must be."""


class NodeMap(Protocol):
    """What routing needs to know about a cluster (names are ``host:port``)."""

    def owner(self, slot: int) -> str:
        """The primary that owns ``slot`` as far as the client knows."""

    def node_client(self, name: str) -> Any:
        """A client for one node, which ``send`` accepts."""

    def moved(self, error: MovedError) -> None:
        """Learn from a ``MOVED`` reply (the slot's new owner)."""

    def refresh(self) -> None:
        """Learn the whole topology again (after a node could not be reached)."""

    def primaries(self) -> list[tuple[str, Any]]:
        """``(name, client)`` of every primary."""

    def submit(self, fn: Callable[[], list[Any]]) -> Any:
        """Run ``fn`` in a thread; returns a future."""


class ClusterNodes:
    """:class:`NodeMap` of a sync ``redis.cluster.RedisCluster``.

    The owner of each slot is read from redis-py's slot table once and kept in a flat list
    (redis-py's lookup costs microseconds per key); a ``MOVED`` or a refresh clears it. A
    stale entry costs one ``MOVED``, which is followed."""

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self.pool: ThreadPoolExecutor | None = None
        self.table: list[str | None] = [None] * 16384

    def owner(self, slot: int) -> str:
        name = self.table[slot]
        if name is None:
            name = self.table[slot] = str(
                self.client.nodes_manager.get_node_from_slot(slot).name)
        return name

    def node_client(self, name: str) -> redis.Redis:
        node = self.client.get_node(node_name=name)
        if node is None:  # a node we have not seen: let redis-py learn the topology again
            self.refresh()
            node = self.client.get_node(node_name=name)
            if node is None:
                raise redis.ConnectionError(f"cluster node {name} is unknown")
        conn = self.client.get_redis_connection(node)
        if conn is None:
            raise redis.ConnectionError(f"no connection to cluster node {name}")
        return conn

    def moved(self, error: MovedError) -> None:
        self.client.nodes_manager.move_slot(error)
        self.table = [None] * 16384  # a failover moves every slot of a node at once

    def refresh(self) -> None:
        self.client.nodes_manager.initialize()
        self.table = [None] * 16384

    def primaries(self) -> list[tuple[str, Any]]:
        return [(str(n.name), self.node_client(str(n.name))) for n in self.client.get_primaries()]

    def submit(self, fn: Callable[[], list[Any]]) -> Any:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rvlm-node")
        return self.pool.submit(fn)


_MAPS: weakref.WeakKeyDictionary[Any, ClusterNodes] = weakref.WeakKeyDictionary()


def node_map(client: Any) -> NodeMap | None:
    """The :class:`NodeMap` of a cluster client, or None for a client of one server."""
    if isinstance(client, RedisCluster):
        got = _MAPS.get(client)
        if got is None:
            got = _MAPS[client] = ClusterNodes(client)
        return got
    method = getattr(type(client), "node_map", None)
    if callable(method):
        found: NodeMap | None = client.node_map()
        return found
    return None


def is_cluster(client: Any) -> bool:
    """True for a client of a Redis Cluster (sync ``RedisCluster``, or a bridge to an async
    one)."""
    return node_map(client) is not None


def command_name(cmd: Command) -> bytes:
    """The command's name, upper case (``b"HSET"``), whether given as bytes or str."""
    head = cmd[0]
    return (head if isinstance(head, bytes) else str(head).encode()).upper()


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return str(value).encode()


def _spellings(*names: str) -> frozenset[Any]:
    return frozenset(x for n in names for x in (n, n.lower(), n.encode(), n.lower().encode()))


#: Command names that need a look before taking the first argument as the key.
_SPECIAL = _spellings("MULTI", "EXEC", "DISCARD", "ASKING", "EVAL", "EVALSHA", "FCALL",
                      "FCALL_RO", "MEMORY")
#: ``MEMORY USAGE key``: the key is the second argument.
_MEMORY = _spellings("MEMORY")
_MULTI = _spellings("MULTI")
_END = _spellings("EXEC", "DISCARD")


def command_key(cmd: Command) -> bytes | None:
    """The key that decides where ``cmd`` goes: its first argument, the first key of
    ``EVAL``/``EVALSHA``, the key of ``MEMORY USAGE``; None for ``MULTI``, ``EXEC``,
    ``DISCARD``, ``ASKING`` and a script without keys."""
    if cmd[0] not in _SPECIAL:
        if len(cmd) < 2:
            return None
        key = cmd[1]
        return key if type(key) is bytes else _arg(key)
    name = command_name(cmd)
    if name in _NO_KEY:
        return None
    if cmd[0] in _MEMORY:
        return _arg(cmd[2]) if len(cmd) > 2 else None
    return _arg(cmd[3]) if len(cmd) > 3 and int(cmd[2]) > 0 else None


def _units(commands: Sequence[Command]) -> tuple[list[int], list[int], list[int]]:
    """The slot of every command, where each unit ends (``ends[i]``: the index after the unit
    that starts at ``i``: ``i + 1`` for one command, after the ``EXEC`` of a ``MULTI``), and
    the unit each command belongs to (its start). Commands of a ``MULTI`` have its slot."""
    n = len(commands)
    slots = [0] * n
    ends = list(range(1, n + 1))
    unit_of = list(range(n))
    i = 0
    while i < n:
        cmd = commands[i]
        head = cmd[0]
        if head not in _SPECIAL:  # the hot path: one command on the key in argument 1
            if len(cmd) < 2:
                raise ValueError(f"{command_name(cmd).decode(errors='replace')} has no key to "
                                 "route it by on a cluster; send it to a node")
            key = cmd[1]
            slots[i] = key_slot(key if type(key) is bytes else _arg(key))
            i += 1
            continue
        if head in _MULTI:
            j = i + 1
            while j < n and commands[j][0] not in _END:
                j += 1
            if j == n:
                raise ValueError("MULTI without EXEC in a cluster pipeline")
            keys = [k for c in commands[i:j + 1] if (k := command_key(c)) is not None]
            if not keys:
                raise ValueError("a MULTI/EXEC without a key cannot be routed on a cluster")
            slot = key_slot(keys[0])
            for x in range(i, j + 1):
                slots[x] = slot
                unit_of[x] = i
            ends[i] = j + 1
            i = j + 1
            continue
        script_key = command_key(cmd)
        if script_key is None:
            raise ValueError(f"{command_name(cmd).decode(errors='replace')} has no key to route "
                             "it by on a cluster; send it to a node")
        slots[i] = key_slot(script_key)
        i += 1
    return slots, ends, unit_of


_REDIRECTS = (MovedError, AskError, TryAgainError)


def _send_all(nodes: NodeMap, groups: dict[str, list[Command]],
              send: Send) -> dict[str, list[Any]]:
    """Send each node its commands; replies per node. Raises the first connection error
    once every node answered or failed (the topology refreshed)."""

    def run(name: str) -> list[Any]:
        return send(nodes.node_client(name), groups[name])

    names = list(groups)
    if len(names) == 1:
        try:
            return {names[0]: run(names[0])}
        except (redis.ConnectionError, redis.TimeoutError):
            nodes.refresh()
            raise
    futures = {n: nodes.submit(functools.partial(run, n)) for n in names}
    out: dict[str, list[Any]] = {}
    error: BaseException | None = None
    for n, f in futures.items():
        try:
            out[n] = f.result()
        except BaseException as exc:
            error = error or exc
    if error is not None:
        if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
            nodes.refresh()
        raise error
    return out


def route(nodes: NodeMap, commands: Sequence[Command], send: Send,
          trailer: Trailer | None = None) -> list[Any]:
    """Send ``commands`` over the cluster ``nodes`` (see the module docstring). ``trailer``:
    each node's pipeline (in every round) ends with its command, whose reply it checks once
    the node's other replies are in."""
    if not commands:
        return []
    slots, ends, unit_of = _units(commands)
    replies: list[Any] = [None] * len(commands)
    starts = list(range(len(commands)))
    i = 0
    todo: list[int] = []  # unit starts still to send
    while i < len(commands):
        todo.append(i)
        i = ends[i]
    asks: dict[int, str] = {}  # unit start -> node that answered ASK for it
    owner = nodes.owner
    for attempt in range(REDIRECTS + 1):
        groups: dict[str, list[Command]] = {}
        sent: dict[str, list[int]] = {}  # node -> command indices, in send order
        for u in todo:
            name = asks.get(u) or owner(slots[u])
            group = groups.get(name)
            if group is None:
                group = groups[name] = []
                sent[name] = []
            end = ends[u]
            if u in asks:
                group.append((b"ASKING",))
                sent[name].append(-1)  # the ASKING reply is dropped
            if end == u + 1:
                group.append(commands[u])
                sent[name].append(u)
            else:
                group.extend(commands[u:end])
                sent[name].extend(starts[u:end])
        ends_with: dict[str, Command] = {}
        if trailer is not None:
            for name, group in groups.items():
                extra = trailer.command(name, nodes.node_client(name))
                if extra is not None:
                    group.append(extra)
                    sent[name].append(-1)
                    ends_with[name] = extra
        answered = _send_all(nodes, groups, send)
        for name, extra in ends_with.items():
            assert trailer is not None
            # a node whose every command was redirected ran none (a demoted primary answers
            # MOVED, and its WAIT an error): nothing to check there, the commands go again
            got = answered[name]
            if any(x >= 0 and not isinstance(r, _REDIRECTS)
                   for x, r in zip(sent[name], got, strict=True)):
                trailer.check(name, extra, got[-1])
        redirected: dict[int, Exception] = {}
        for name, idxs in sent.items():
            for x, r in zip(idxs, answered[name], strict=True):
                if x < 0:
                    continue
                replies[x] = r
                if isinstance(r, _REDIRECTS):
                    redirected.setdefault(unit_of[x], r)
        if not redirected or attempt == REDIRECTS:
            break
        asks = {}
        wait = False
        for u, err in redirected.items():
            if isinstance(err, MovedError):
                nodes.moved(err)
            elif isinstance(err, AskError):
                asks[u] = f"{err.host}:{err.port}"
            else:  # TRYAGAIN: keys of a multi-key command split by a migration
                wait = True
        if wait:
            time.sleep(0.05)
        todo = sorted(redirected)
    return replies


def primaries(client: Any) -> list[tuple[str, Any]]:
    """``(name, client)`` of every primary; ``[("", client)]`` for a client of one server."""
    nodes = node_map(client)
    return [("", client)] if nodes is None else nodes.primaries()


__all__ = ["REDIRECTS", "ClusterNodes", "NodeMap", "Trailer", "command_key", "is_cluster",
           "node_map", "primaries", "route"]
