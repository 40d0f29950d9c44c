"""What a Redis Cluster looks like: ``CLUSTER NODES`` parsed, slot migrations found, hash tags,
and the search layout (with or without a coordinator).

``CLUSTER NODES`` is one text reply (a bulk string under RESP2 and RESP3, bytes or str), one
line per node::

    <id> <ip:port@bus[,hostname]> <flags> <primary-id|-> <ping> <pong> <epoch> <link> <slot>...

A slot entry is ``n`` or ``a-b`` (owned), ``[n->-<id>]`` (this node is migrating slot ``n`` to
node ``id``) or ``[n-<-<id>]`` (importing it from ``id``). Migration entries appear only in the
lines of the nodes taking part, and only in each node's own view (``myself``): ask every primary
to see every migration in progress.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
from redis.crc import key_slot

from rvlm.core.redis import routing, wire
from rvlm.core.redis.resp import to_str

#: Number of hash slots in a Redis Cluster.
SLOTS = 16384

#: The search layouts: one server; a cluster whose search coordinator answers for every shard
#: under one index name (Redis Enterprise, Redis Cloud, Redis 8 with its query engine's
#: coordinator); a cluster without one (an index lives on the node owning its name's slot
#: and covers that node's keys only).
STANDALONE = "standalone"
COORDINATED = "coordinated"
UNCOORDINATED = "uncoordinated"
LAYOUTS = (STANDALONE, COORDINATED, UNCOORDINATED)
#: Overrides the detected layout (``coordinated`` or ``uncoordinated``; contract tests).
LAYOUT_ENV = "RVLM_SEARCH_LAYOUT"


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


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def hash_tag(key: str | bytes) -> bytes | None:
    """The part of ``key`` Redis hashes when it has a hash tag (the bytes between the first
    ``{`` and the next ``}``, when not empty); None when the whole key is hashed."""
    k = _b(key)
    start = k.find(b"{")
    if start < 0:
        return None
    end = k.find(b"}", start + 1)
    if end <= start + 1:
        return None
    return k[start + 1:end]


def slot_of(key: str | bytes) -> int:
    """The hash slot of ``key`` (hash tags honoured)."""
    return int(key_slot(_b(key)))


def prefix_slot(prefix: str | bytes) -> int | None:
    """The one slot every key starting with ``prefix`` hashes to, or None when keys under it
    can land in any slot (no complete hash tag inside the prefix itself)."""
    return None if hash_tag(prefix) is None else slot_of(prefix)


def detect_layout(client: Any, cluster: bool) -> str:
    """The search layout of the server behind ``client`` (see :data:`LAYOUTS`).

    A cluster is coordinated when its search module has the coordinator's internal commands
    (``_FT.SEARCH``) or ``FT.CLUSTERINFO``. ``RVLM_SEARCH_LAYOUT`` overrides a cluster's
    answer (contract tests of the coordinated layout on a cluster without one)."""
    if not cluster:
        return STANDALONE
    forced = os.environ.get(LAYOUT_ENV, "").strip().lower()
    if forced in (COORDINATED, UNCOORDINATED):
        return forced
    _name, node = routing.primaries(client)[0]
    reply = wire.send(node, [(b"COMMAND", b"INFO", b"_FT.SEARCH", b"FT.CLUSTERINFO")])[0]
    if isinstance(reply, Exception):
        return UNCOORDINATED
    known = [entry for entry in (reply or []) if entry]
    return COORDINATED if known else UNCOORDINATED


def cluster_migrations(client: Any) -> list[SlotMigration]:
    """Every slot migration in progress, asking every primary of ``client`` (a
    ``RedisCluster``); [] for a plain client."""
    if not routing.is_cluster(client):
        return []
    return migrations(cluster_nodes(node) for _name, node in routing.primaries(client))


__all__ = [
    "COORDINATED",
    "LAYOUTS",
    "LAYOUT_ENV",
    "SLOTS",
    "STANDALONE",
    "UNCOORDINATED",
    "ClusterNode",
    "SlotMigration",
    "cluster_migrations",
    "cluster_nodes",
    "detect_layout",
    "hash_tag",
    "migrations",
    "myself",
    "parse_cluster_nodes",
    "parse_node_line",
    "prefix_slot",
    "slot_of",
]
