"""A real Redis Cluster of embedded servers (Search and JSON loaded on every node), for tests,
benchmarks and trying rvlm on a cluster.

``EmbeddedCluster(primaries=3, replicas=1).start()`` launches ``primaries * (1 + replicas)``
:class:`~rvlm.embedded.server.EmbeddedServer` nodes in cluster mode on free loopback ports (each
with its own bus port, ``--cluster-port``), all at once, then forms the cluster with redis-py
alone (no ``redis-cli``):

1. each primary gets an equal share of the 16384 slots (``CLUSTER ADDSLOTSRANGE``) and its own
   config epoch (``CLUSTER SET-CONFIG-EPOCH``, so no epoch collision has to be resolved);
2. the first node meets every other (``CLUSTER MEET host port bus-port``);
3. once every node knows every other, each replica follows its primary (``CLUSTER
   REPLICATE``);
4. it waits until every node says ``cluster_state:ok`` with the same view of who owns which
   slots, and each replica's link to its primary is up. A primary that just started holds its
   state at ``fail`` for two seconds (Redis's writable delay): most of the start-up time.

``stop()`` shuts every node down (in parallel); ``wipe()`` removes the cluster's directory. The
nodes keep no data on disk (no RDB, no AOF); ``nodes.conf`` lives in each node's directory.
:meth:`EmbeddedCluster.failover` promotes a replica with ``CLUSTER FAILOVER`` and waits until
every node agrees.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from rvlm.core.errors import RvlmError
from rvlm.core.redis.topology import SLOTS, ClusterNode, cluster_nodes, myself, slot_of
from rvlm.embedded.server import EmbeddedServer

if TYPE_CHECKING:
    import redis
    from redis.cluster import RedisCluster

T = TypeVar("T")

HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now (all held
    open together while they are picked, so none is picked twice)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def slot_ranges(primaries: int) -> list[tuple[int, int]]:
    """The 16384 slots split into ``primaries`` contiguous, nearly equal ranges."""
    if primaries < 1:
        raise ValueError(f"a cluster needs at least one primary, not {primaries}")
    bounds = [SLOTS * i // primaries for i in range(primaries + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(primaries)]


def _until(what: str, check: Callable[[], bool], timeout: float, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
            last = None
        except Exception as exc:  # a node still starting, a view not yet converged
            last = exc
        time.sleep(step)
    raise RvlmError(f"cluster: {what} not reached after {timeout:.0f}s"
                    + (f" (last error: {last})" if last else ""))


@attrs.define
class EmbeddedCluster:
    """A cluster of embedded servers: ``start()``, ``stop()``, ``wipe()``, ``url``.

    ``primaries`` primaries with ``replicas`` replicas each. ``ports`` (optional) fixes the
    client ports, primaries first (the bus port is then ``port + 10000``); by default every
    port is free and picked at start. ``directory`` holds one sub-directory per node (a
    temporary directory by default).
    """

    primaries: int = 3
    replicas: int = 0
    directory: Path | None = None
    ports: Sequence[int] | None = None
    node_timeout_ms: int = 3000
    nodes: list[EmbeddedServer] = attrs.field(factory=list)
    bus_ports: list[int] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        if self.primaries < 1 or self.replicas < 0:
            raise ValueError("a cluster needs at least one primary and no negative replicas")
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="rvlm-cluster-"))
        self.directory = Path(self.directory)
        total = self.primaries * (1 + self.replicas)
        if self.ports is not None:
            if len(self.ports) != total:
                raise ValueError(f"{total} ports needed, {len(self.ports)} given")
            ports = list(self.ports)
            self.bus_ports = [p + 10000 for p in ports]
        else:
            picked = free_ports(2 * total)
            ports, self.bus_ports = picked[:total], picked[total:]
        self.nodes = [
            EmbeddedServer(port=port, directory=self.dir / f"node-{port}",
                           extra_args=self._node_args(bus))
            for port, bus in zip(ports, self.bus_ports, strict=True)
        ]

    @property
    def dir(self) -> Path:
        assert self.directory is not None
        return self.directory

    def _node_args(self, bus_port: int) -> tuple[str, ...]:
        return (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(bus_port),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-require-full-coverage", "yes",
            "--cluster-allow-replica-migration", "no",
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
        )

    # -- addresses -------------------------------------------------------------------------
    @property
    def ports_in_use(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        """A URL of one node (a cluster client discovers the others from it)."""
        return self.nodes[0].url

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node(self, port: int) -> EmbeddedServer:
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError(port)

    # -- life cycle ------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        """Start every node, form the cluster and wait until it serves reads and writes."""
        for n in self.nodes:
            n.launch()
        try:
            self._parallel(lambda n: n.wait_ready(timeout), self.nodes)
            self._form(timeout)
        except BaseException:
            self.stop()
            raise

    def _form(self, timeout: float) -> None:
        clients = [n.client() for n in self.nodes]
        try:
            ids = [myself(cluster_nodes(c)).id for c in clients]
            for i, ((a, b), c) in enumerate(zip(slot_ranges(self.primaries), clients,
                                                strict=False)):
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", a, b)
                c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            first = clients[0]
            for n, bus in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                first.execute_command("CLUSTER", "MEET", HOST, n.port, bus)
            total = len(self.nodes)

            def everyone_known() -> bool:
                return all(len([x for x in cluster_nodes(c) if not x.failing]) == total
                           for c in clients)

            _until("every node knows every other", everyone_known, timeout)
            for r, c in enumerate(clients[self.primaries:]):
                c.execute_command("CLUSTER", "REPLICATE", ids[r % self.primaries])
            self.wait_ok(timeout)
        finally:
            for c in clients:
                c.close()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every running node reports ``cluster_state:ok``, all of them see the same
        nodes in the same roles with the same slots (every slot covered), and every replica's
        link to its primary is up."""
        running = [n for n in self.nodes if n.running()]

        def ok() -> bool:
            views = []
            for n in running:
                c = n.client()
                try:
                    info = c.execute_command("CLUSTER", "INFO")
                    if b"cluster_state:ok" not in info:
                        return False
                    view = cluster_nodes(c)
                    me = myself(view)
                    if me.is_replica:
                        repl = c.info("replication")
                        if repl.get("master_link_status") != "up":
                            return False
                    views.append(sorted((x.id, x.is_primary, x.primary_id, x.slots)
                                        for x in view if not x.failing))
                finally:
                    c.close()
            if not views or any(v != views[0] for v in views) or len(views[0]) != len(running):
                return False
            return sum(b - a + 1 for *_x, slots in views[0] for a, b in slots) == SLOTS

        _until("cluster_state:ok on every node", ok, timeout)

    def stop(self) -> None:
        """Shut every node down (in parallel); a no-op for nodes not running."""
        self._parallel(lambda n: n.stop(), self.nodes)

    def wipe(self) -> None:
        """Remove the cluster's directory (nodes that still run are stopped first)."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wipe()

    @staticmethod
    def _parallel(fn: Callable[[EmbeddedServer], T], nodes: Sequence[EmbeddedServer]) -> list[T]:
        if not nodes:
            return []
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            return list(pool.map(fn, nodes))

    # -- inspection ------------------------------------------------------------------------
    def view(self, port: int | None = None) -> list[ClusterNode]:
        """``CLUSTER NODES`` as seen by the node on ``port`` (default: the first running)."""
        server = self.node(port) if port is not None else next(
            n for n in self.nodes if n.running())
        c = server.client()
        try:
            return cluster_nodes(c)
        finally:
            c.close()

    def primary_servers(self) -> list[EmbeddedServer]:
        """The nodes that are primaries now (after a failover, not the first ``primaries``)."""
        ports = {n.port for n in self.view() if n.is_primary and n.slots and not n.failing}
        return [n for n in self.nodes if n.port in ports]

    def replica_servers(self) -> list[EmbeddedServer]:
        ports = {n.port for n in self.view() if n.is_replica and not n.failing}
        return [n for n in self.nodes if n.port in ports]

    def replicas_of(self, primary_port: int) -> list[EmbeddedServer]:
        view = self.view()
        primary = next(n for n in view if n.port == primary_port)
        ports = {n.port for n in view if n.primary_id == primary.id}
        return [n for n in self.nodes if n.port in ports]

    def owner_of(self, key: bytes | str) -> EmbeddedServer:
        """The primary that owns ``key``'s slot now (one ``CLUSTER NODES``; for many keys use
        :meth:`slot_owners`)."""
        return self.node(self.slot_owners()[slot_of(key)])

    def slot_owners(self) -> list[int]:
        """The port of the primary owning each of the 16384 slots now (0: none)."""
        owners = [0] * SLOTS
        for n in self.view():
            if n.is_primary and not n.failing:
                for a, b in n.slots:
                    owners[a:b + 1] = [n.port] * (b - a + 1)
        return owners

    def client(self, **kwargs: Any) -> RedisCluster:
        """A bytes ``redis.cluster.RedisCluster`` on this cluster (``kwargs`` passed on)."""
        from redis.cluster import RedisCluster

        kwargs.setdefault("decode_responses", False)
        return RedisCluster(host=HOST, port=self.nodes[0].port, **kwargs)

    def node_clients(self) -> list[redis.Redis]:
        """A plain client per running node (close them when done)."""
        return [n.client() for n in self.nodes if n.running()]

    # -- changes ---------------------------------------------------------------------------
    def failover(self, replica_port: int, timeout: float = 30.0) -> None:
        """Promote the replica on ``replica_port`` with ``CLUSTER FAILOVER`` (its primary is
        alive: no write is lost) and wait until every node agrees."""
        server = self.node(replica_port)
        c = server.client()
        try:
            c.execute_command("CLUSTER", "FAILOVER")
        finally:
            c.close()

        def promoted() -> bool:
            return all(any(x.port == replica_port and x.is_primary for x in self.view(n.port))
                       for n in self.nodes if n.running())

        _until(f"node {replica_port} promoted", promoted, timeout)
        self.wait_ok(timeout)

    def begin_slot_migration(self, slot: int, target_port: int) -> tuple[int, int]:
        """Mark ``slot`` IMPORTING on the primary ``target_port`` and MIGRATING on its owner
        (the first steps of a resharding). Returns ``(source_port, target_port)``."""
        view = self.view()
        source = next(n for n in view if n.is_primary and n.owns(slot))
        target = next(n for n in view if n.port == target_port)
        if source.id == target.id:
            raise ValueError(f"node {target_port} already owns slot {slot}")
        self._on(target.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source.id)
        self._on(source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", target.id)
        return source.port, target.port

    def migrate_keys(self, slot: int, source_port: int, target_port: int,
                     count: int | None = None) -> int:
        """MIGRATE up to ``count`` (default: all) keys of ``slot`` from ``source_port`` to
        ``target_port`` (during a migration begun with :meth:`begin_slot_migration`). Returns
        how many moved."""
        moved = 0
        while count is None or moved < count:
            want = 100 if count is None else min(100, count - moved)
            keys = self._on(source_port, "CLUSTER", "GETKEYSINSLOT", slot, want)
            if not keys:
                break
            self._on(source_port, "MIGRATE", HOST, target_port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
        return moved

    def finish_slot_migration(self, slot: int, target_port: int, *, wait: bool = True) -> None:
        """Give ``slot`` to ``target_port`` on every primary (the last step of a resharding)
        and wait until the cluster agrees (``wait``; finishing many slots, wait once with
        :meth:`wait_ok` after the last)."""
        target = next(n for n in self.view() if n.port == target_port)
        for n in self.primary_servers():
            self._on(n.port, "CLUSTER", "SETSLOT", slot, "NODE", target.id)
        if wait:
            self.wait_ok()

    def cancel_slot_migration(self, slot: int) -> None:
        """Clear IMPORTING/MIGRATING of ``slot`` on every primary (``SETSLOT STABLE``)."""
        for n in self.primary_servers():
            self._on(n.port, "CLUSTER", "SETSLOT", slot, "STABLE")

    def _on(self, port: int, *args: Any) -> Any:
        c = self.node(port).client()
        try:
            return c.execute_command(*args)
        finally:
            c.close()

    def flush(self) -> None:
        """FLUSHALL and drop every search index on every primary (a clean cluster)."""
        for n in self.primary_servers():
            c = n.client()
            try:
                for name in c.execute_command("FT._LIST") or []:
                    with contextlib.suppress(Exception):
                        c.execute_command("FT.DROPINDEX", name)
                c.flushall()
            finally:
                c.close()


__all__ = ["EmbeddedCluster", "free_ports", "slot_ranges"]
