"""What a Redis Cluster looks like from one node: ``CLUSTER NODES`` parsed, slot migrations found.

``CLUSTER NODES`` is one text reply (a bulk string under RESP2 and RESP3, bytes or str), one
line per node::

    <id> <ip:port@bus[,hostname]> <flags> <primary-id|-> <ping> <pong> <epoch> <link> <slot>...

A slot entry is ``n`` or ``a-b`` (owned), ``[n->-<id>]`` (this node is migrating slot ``n`` to
node ``id``) or ``[n-<-<id>]`` (importing it from ``id``). Migration entries appear only in the
lines of the nodes taking part, and only in each node's own view (``myself``): ask every primary
to see every migration in progress.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from rvlm.core.redis.resp import to_str

#: Number of hash slots in a Redis Cluster.
SLOTS = 16384


@attrs.frozen
class SlotMigration:
    """Slot ``slot`` moving from node ``source`` to node ``target`` (node ids), as seen by
    one of them (``state``: ``migrating`` on the source, ``importing`` on the target)."""

    slot: int
    source: str
    target: str
    state: str

    def describe(self) -> str:
        return f"slot {self.slot} {self.state} ({self.source[:8]} -> {self.target[:8]})"


@attrs.frozen
class ClusterNode:
    """One line of ``CLUSTER NODES``."""

    id: str
    host: str
    port: int
    bus_port: int
    flags: tuple[str, ...]
    primary_id: str | None
    connected: bool
    slots: tuple[tuple[int, int], ...] = ()
    migrations: tuple[SlotMigration, ...] = ()

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def is_replica(self) -> bool:
        return "slave" in self.flags

    @property
    def myself(self) -> bool:
        return "myself" in self.flags

    @property
    def failing(self) -> bool:
        """Marked failed (``fail``) or suspected (``fail?``) by this view, or in handshake."""
        return any(f in ("fail", "fail?", "handshake", "noaddr") for f in self.flags)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def owns(self, slot: int) -> bool:
        return any(a <= slot <= b for a, b in self.slots)

    @property
    def slot_count(self) -> int:
        return sum(b - a + 1 for a, b in self.slots)


def _slot_entry(node_id: str, entry: str) -> tuple[tuple[int, int] | None, SlotMigration | None]:
    if entry.startswith("["):
        body = entry[1:-1]
        if "->-" in body:
            slot, other = body.split("->-", 1)
            return None, SlotMigration(int(slot), node_id, other, "migrating")
        slot, other = body.split("-<-", 1)
        return None, SlotMigration(int(slot), other, node_id, "importing")
    a, _, b = entry.partition("-")
    return (int(a), int(b or a)), None


def parse_node_line(line: str) -> ClusterNode:
    """One ``CLUSTER NODES`` line as a :class:`ClusterNode`."""
    parts = line.split()
    if len(parts) < 8:
        raise ValueError(f"not a CLUSTER NODES line: {line!r}")
    node_id, addr, flags, primary = parts[0], parts[1], parts[2], parts[3]
    hostport, _, bus = addr.partition("@")
    host, _, port = hostport.rpartition(":")
    slots: list[tuple[int, int]] = []
    migrations: list[SlotMigration] = []
    for entry in parts[8:]:
        owned, moving = _slot_entry(node_id, entry)
        if owned is not None:
            slots.append(owned)
        if moving is not None:
            migrations.append(moving)
    return ClusterNode(
        id=node_id, host=host, port=int(port or 0),
        bus_port=int(bus.split(",", 1)[0] or 0) if bus else 0,
        flags=tuple(flags.split(",")), primary_id=None if primary == "-" else primary,
        connected=parts[7] == "connected", slots=tuple(slots), migrations=tuple(migrations))


def parse_cluster_nodes(reply: Any) -> list[ClusterNode]:
    """The reply of ``CLUSTER NODES`` (bytes or str) as one :class:`ClusterNode` per line."""
    return [parse_node_line(line) for line in to_str(reply).splitlines() if line.strip()]


def cluster_nodes(client: Any) -> list[ClusterNode]:
    """``CLUSTER NODES`` of the node ``client`` (a plain ``redis.Redis``) talks to (sent as two
    arguments, so that redis-py applies no response callback of its own)."""
    return parse_cluster_nodes(client.execute_command("CLUSTER", "NODES"))


def myself(nodes: Iterable[ClusterNode]) -> ClusterNode:
    """The line of the node that answered."""
    for n in nodes:
        if n.myself:
            return n
    raise ValueError("CLUSTER NODES has no 'myself' line")


def migrations(views: Iterable[Sequence[ClusterNode]]) -> list[SlotMigration]:
    """Every slot migration in progress in the given views (one ``CLUSTER NODES`` per node),
    each slot once (the source's ``migrating`` view preferred), by slot."""
    found: dict[int, SlotMigration] = {}
    for view in views:
        for node in view:
            for m in node.migrations:
                if m.slot not in found or m.state == "migrating":
                    found[m.slot] = m
    return [found[s] for s in sorted(found)]


__all__ = [
    "SLOTS",
    "ClusterNode",
    "SlotMigration",
    "cluster_nodes",
    "migrations",
    "myself",
    "parse_cluster_nodes",
    "parse_node_line",
]
