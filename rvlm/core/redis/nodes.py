"""Every node of a Redis Cluster as a plain client, in the server's own view.

Change capture needs more of a cluster than document routing does
(:mod:`rvlm.core.redis.routing`): keyspace notifications are published by the node that runs a
write, and configured per node, replicas included (a replica promoted by a failover must go on
notifying). So this module reads the topology from the server (``CLUSTER NODES`` of a primary,
:func:`live_nodes`), not from the client library's cache, and makes a client for any node
(:func:`client_for`: the settings of a node the library connected to, with another address).

:func:`primary_set` is what a run subscribed to: the primaries that own slots. When a later view
differs (a failover promoted a replica, a node was added or removed), events of some keys are
published on a node nobody listens to: the run treats that as a lost subscription.

:func:`key_on` finds a key a node owns (for a throw-away probe key on that node), and
:func:`registry_client` the node holding a given key (the notification registry).

For a client of one server, :func:`live_nodes` is empty and the callers use the client itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rvlm.core.redis import routing
from rvlm.core.redis.topology import ClusterNode, cluster_nodes, slot_of

#: Settings a sync client takes over from an asyncio one.
_PLAIN = frozenset({"username", "password", "credential_provider", "db", "protocol",
                    "socket_timeout", "socket_connect_timeout", "encoding", "encoding_errors",
                    "client_name", "path"})


def template(client: Any) -> redis.Redis:
    """A plain client of one node of ``client``'s cluster (its settings are the template for
    every other node), or ``client`` itself for one server."""
    if not routing.is_cluster(client):
        return client
    found: redis.Redis = routing.primaries(client)[0][1]
    return found


def client_for(base: redis.Redis, address: str, *, name: str | None = None,
               retry: bool = True, timeout: float | None = None) -> redis.Redis:
    """A new client to ``address`` (``host:port``) with ``base``'s settings (credentials, TLS,
    protocol, db); ``name`` sets its client name, ``retry=False`` makes it never reconnect on
    its own, ``timeout`` bounds its socket operations."""
    kwargs: dict[str, Any] = dict(base.connection_pool.connection_kwargs)
    cls = base.connection_pool.connection_class
    if not issubclass(cls, redis.connection.AbstractConnection):
        # an asyncio client's settings (the async API's bridge): a sync connection class of
        # the same kind, and only the plain settings
        cls = getattr(redis.connection, cls.__name__, redis.connection.Connection)
        kwargs = {k: v for k, v in kwargs.items() if k in _PLAIN or k.startswith("ssl_")}
    host, _, port = address.rpartition(":")
    kwargs.update(host=host, port=int(port), decode_responses=False)
    kwargs.pop("retry", None)
    if not retry:
        kwargs["retry"] = Retry(NoBackoff(), 0)
        kwargs["health_check_interval"] = 0
    if name is not None:
        kwargs["client_name"] = name
    if timeout is not None:
        kwargs["socket_timeout"] = timeout
        kwargs["socket_connect_timeout"] = timeout
    pool = redis.ConnectionPool(connection_class=cls, **kwargs)
    return redis.Redis(connection_pool=pool)


def live_nodes(client: Any) -> list[ClusterNode]:
    """Every node of ``client``'s cluster (primaries and replicas) as ``CLUSTER NODES`` of the
    first primary that answers says; [] for a client of one server."""
    if not routing.is_cluster(client):
        return []
    error: Exception | None = None
    for _name, node in routing.primaries(client):
        try:
            return cluster_nodes(node)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            error = exc
    raise redis.ConnectionError(f"no primary of the cluster answered CLUSTER NODES ({error})")


def primary_set(nodes: Sequence[ClusterNode]) -> frozenset[str]:
    """The addresses of the primaries that own slots."""
    return frozenset(n.address for n in nodes if n.is_primary and n.slots)


def describe(addresses: Sequence[str] | frozenset[str]) -> str:
    """``a, b, c`` (sorted)."""
    return ", ".join(sorted(addresses))


def key_on(node: ClusterNode, base: str) -> str:
    """``base{N}`` for the smallest ``N`` whose slot ``node`` owns (``base`` for a node
    without slots)."""
    if not node.slots:
        return base
    for n in range(1_000_000):
        key = f"{base}{{{n}}}"
        if node.owns(slot_of(key)):
            return key
    return base  # pragma: no cover - 16384 slots are all reached long before


def registry_client(client: Any, key: bytes | str) -> Any:
    """The client that holds ``key``: the node owning its slot on a cluster (so that WATCH and
    MULTI work on it), ``client`` itself otherwise."""
    nodes = routing.node_map(client)
    if nodes is None:
        return client
    return nodes.node_client(nodes.owner(slot_of(key)))


class NodeClients:
    """Plain clients (made by :func:`client_for`) to every node of a cluster as one view of
    ``CLUSTER NODES`` saw them: ``nodes``, the :func:`primary_set` of that view, the clients
    by address. Close with :meth:`close`."""

    def __init__(self, client: Any, *, name: str | None = None,
                 timeout: float | None = 5.0) -> None:
        self.base = template(client)
        self.nodes = [n for n in live_nodes(client)
                      if "fail" not in n.flags and "noaddr" not in n.flags]
        self.primary_addresses = primary_set(self.nodes)
        self.clients = {n.address: client_for(self.base, n.address, name=name,
                                              timeout=timeout) for n in self.nodes}

    def primaries(self) -> list[tuple[str, redis.Redis]]:
        """``(address, client)`` of every primary that owns slots."""
        return [(a, self.clients[a]) for a in sorted(self.primary_addresses)]

    def every(self) -> list[tuple[str, redis.Redis]]:
        """``(address, client)`` of every node, replicas included."""
        return sorted(self.clients.items())

    def node(self, address: str) -> ClusterNode:
        return next(n for n in self.nodes if n.address == address)

    def close(self) -> None:
        close_all(list(self.clients.values()))


def close_all(clients: Sequence[redis.Redis]) -> None:
    """Close clients made by :func:`client_for` (errors ignored)."""
    for c in clients:
        with contextlib.suppress(Exception):
            c.close()
            c.connection_pool.disconnect()


__all__ = ["NodeClients", "client_for", "close_all", "describe", "key_on", "live_nodes",
           "primary_set", "registry_client", "template"]
