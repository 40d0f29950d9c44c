"""Many commands on a Redis Cluster: one raw pipeline per primary, run side by side.

:func:`execute` takes the same argument tuples as :func:`rvlm.core.redis.wire.execute` and
returns the replies in the same order, with the same semantics (error replies in place, as
``ResponseError`` instances), for a plain client or a ``redis.cluster.RedisCluster``:

* each command goes to the primary owning its key's slot (the key is the first argument,
  or the first key of ``EVAL``/``EVALSHA``); a ``MULTI`` ... ``EXEC`` run of commands is one
  unit, sent whole to the owner of its first key (its keys must share a slot);
* the commands of each primary are packed into one write and read back in one loop
  (:func:`~rvlm.core.redis.wire.execute` on that node's pooled connection), every primary in
  its own thread, so a batch costs one round trip to the slowest node, not one per node;
* ``MOVED`` (a slot changed owner: a failover, a finished migration) updates the client's slot
  table and sends the unit again to the new owner; ``ASK`` (a slot being migrated, the key
  already moved) sends it to the importing node after ``ASKING``; ``TRYAGAIN`` waits briefly
  and sends it again. Only units that were redirected are sent again: a redirected command
  was not executed. Up to :data:`REDIRECTS` rounds, then the redirect is returned as the
  reply (the caller fails on it, like on any error reply).

A connection error or timeout on a node is raised after every other node's replies were read
(their commands did run): the caller decides (the executor's batches are idempotent on
resume). The slot table is redis-py's own (``RedisCluster.nodes_manager``), refreshed from
the cluster when a node cannot be reached.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, TryAgainError

from rvlm.core.redis import wire

#: Rounds of re-sending redirected units before a redirect is returned as the reply.
REDIRECTS = 5

Command = Sequence[Any]

_NO_KEY = frozenset({b"MULTI", b"EXEC", b"DISCARD", b"ASKING"})


def is_cluster(client: Any) -> bool:
    """True for a sync ``redis.cluster.RedisCluster``."""
    return isinstance(client, RedisCluster)


def _name(cmd: Command) -> bytes:
    head = cmd[0]
    return (head if isinstance(head, bytes) else str(head).encode()).upper()


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return str(value).encode()


def command_key(cmd: Command) -> bytes | None:
    """The key that decides where ``cmd`` goes: its first argument, the first key of
    ``EVAL``/``EVALSHA``; None for ``MULTI``, ``EXEC``, ``DISCARD``, ``ASKING`` and a script
    without keys."""
    name = _name(cmd)
    if name in _NO_KEY:
        return None
    if name in (b"EVAL", b"EVALSHA", b"FCALL", b"FCALL_RO"):
        return _arg(cmd[3]) if len(cmd) > 3 and int(cmd[2]) > 0 else None
    return _arg(cmd[1]) if len(cmd) > 1 else None


class _Unit:
    """Consecutive commands that go to one node together (one command, or MULTI..EXEC)."""

    __slots__ = ("commands", "first", "slot")

    def __init__(self, first: int, commands: list[Command], slot: int) -> None:
        self.first = first
        self.commands = commands
        self.slot = slot


def _units(commands: Sequence[Command]) -> list[_Unit]:
    units: list[_Unit] = []
    i = 0
    n = len(commands)
    while i < n:
        cmd = commands[i]
        if _name(cmd) == b"MULTI":
            j = i + 1
            while j < n and _name(commands[j]) not in (b"EXEC", b"DISCARD"):
                j += 1
            if j == n:
                raise ValueError("MULTI without EXEC in a cluster pipeline")
            group = list(commands[i:j + 1])
            keys = [k for c in group if (k := command_key(c)) is not None]
            if not keys:
                raise ValueError("a MULTI/EXEC without a key cannot be routed on a cluster")
            units.append(_Unit(i, group, key_slot(keys[0])))
            i = j + 1
            continue
        key = command_key(cmd)
        if key is None:
            raise ValueError(f"{_name(cmd).decode(errors='replace')} has no key to route it by "
                             "on a cluster; send it to a node")
        units.append(_Unit(i, [cmd], key_slot(key)))
        i += 1
    return units


def _redirect(replies: Sequence[Any]) -> Exception | None:
    for r in replies:
        if isinstance(r, (MovedError, AskError, TryAgainError)):
            return r
    return None


class _Sender:
    """Sends units to nodes, one thread per node (a pool kept per client)."""

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self.pool: ThreadPoolExecutor | None = None

    def node_client(self, name: str) -> redis.Redis:
        node = self.client.get_node(node_name=name)
        if node is None:  # a node we have not seen: let redis-py learn the topology again
            self.client.nodes_manager.initialize()
            node = self.client.get_node(node_name=name)
            if node is None:
                raise redis.ConnectionError(f"cluster node {name} is unknown")
        conn = self.client.get_redis_connection(node)
        assert conn is not None
        return conn

    def owner(self, slot: int) -> str:
        return str(self.client.nodes_manager.get_node_from_slot(slot).name)

    def send(self, groups: dict[str, list[tuple[_Unit, list[Command]]]]) -> dict[str, list[Any]]:
        """Send each node's commands (flattened in unit order); replies per node. Raises the
        first connection error once every node answered or failed."""

        def run(name: str) -> list[Any]:
            flat = [c for _u, cmds in groups[name] for c in cmds]
            return wire.execute(self.node_client(name), flat)

        names = list(groups)
        if len(names) == 1:
            return {names[0]: run(names[0])}
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rvlm-node")
        futures = {n: self.pool.submit(run, n) for n in names}
        out: dict[str, list[Any]] = {}
        error: BaseException | None = None
        for n, f in futures.items():
            try:
                out[n] = f.result()
            except BaseException as exc:
                error = error or exc
        if error is not None:
            if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
                self.client.nodes_manager.initialize()
            raise error
        return out


_SENDERS: dict[int, tuple[RedisCluster, _Sender]] = {}


def _sender(client: RedisCluster) -> _Sender:
    got = _SENDERS.get(id(client))
    if got is None or got[0] is not client:
        if len(_SENDERS) > 64:
            _SENDERS.clear()
        got = (client, _Sender(client))
        _SENDERS[id(client)] = got
    return got[1]


def execute(client: Any, commands: Sequence[Command]) -> list[Any]:
    """:func:`rvlm.core.redis.wire.execute` for any client: routed per primary on a cluster
    (see the module docstring), else one pipeline on the client's connection."""
    if not commands:
        return []
    if not is_cluster(client):
        return wire.execute(client, commands)
    sender = _sender(client)
    units = _units(commands)
    replies: list[Any] = [None] * len(commands)
    # (unit, commands to send, replies to skip at the front: the ASKING reply)
    todo: list[tuple[_Unit, list[Command], str | None]] = [(u, u.commands, None) for u in units]
    for attempt in range(REDIRECTS + 1):
        groups: dict[str, list[tuple[_Unit, list[Command]]]] = {}
        for unit, cmds, target in todo:
            groups.setdefault(target or sender.owner(unit.slot), []).append((unit, cmds))
        answered = sender.send(groups)
        again: list[tuple[_Unit, list[Command], str | None]] = []
        wait = False
        for name, sent in groups.items():
            got = answered[name]
            p = 0
            for unit, cmds in sent:
                part = got[p:p + len(cmds)]
                p += len(cmds)
                if len(cmds) != len(unit.commands):  # ASKING was sent first
                    part = part[len(cmds) - len(unit.commands):]
                replies[unit.first:unit.first + len(unit.commands)] = part
                err = _redirect(part)
                if err is None or attempt == REDIRECTS:
                    continue
                if isinstance(err, MovedError):
                    client.nodes_manager.move_slot(err)
                    again.append((unit, unit.commands, None))
                elif isinstance(err, AskError):
                    target = f"{err.host}:{err.port}"
                    again.append((unit, [(b"ASKING",), *unit.commands], target))
                else:  # TRYAGAIN: keys of a multi-key command split by a migration
                    wait = True
                    again.append((unit, unit.commands, None))
        if not again:
            break
        if wait:
            time.sleep(0.05)
        todo = again
    return replies


def primaries(client: Any) -> list[tuple[str, redis.Redis]]:
    """``(name, client)`` of every primary (one ``("", client)`` for a plain client)."""
    if not is_cluster(client):
        return [("", client)]
    out = []
    for node in client.get_primaries():
        conn = client.get_redis_connection(node)
        assert conn is not None
        out.append((str(node.name), conn))
    return out


__all__ = ["REDIRECTS", "command_key", "execute", "is_cluster", "primaries"]
