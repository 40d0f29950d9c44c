"""Change capture for one online run: the notification setting, the backlog, the subscribers,
and the copy engine that works them off.

:class:`CaptureSession` is what an apply, a resume and ``rvlm finalize`` start before reading
the first source key: it registers the run's need for keyspace notifications (CONFIG SET, or,
where CONFIG is refused, a probe that the events arrive: otherwise one line saying exactly
what to configure), opens the backlog (:class:`~rvlm.core.storage.pending.PendingKeys` in the
backup dir) and subscribes to the source prefixes (one
:class:`~rvlm.core.redis.capture.Subscriber`). :meth:`CaptureSession.engine` builds the
:class:`~rvlm.core.migrate.online.copier.OnlineCopy` for the run.

On a Redis Cluster a node publishes the events of the writes it runs, so the session reads
the topology from the server (:class:`~rvlm.core.redis.nodes.NodeClients`), sets the
notification classes on every node, replicas included (a promoted replica must go on
notifying; the registry records each node's value before), and starts one subscriber per
primary, all feeding the one backlog; :meth:`CaptureSession.start` returns once every one
confirmed its subscription, then checks that the primaries are still those it subscribed to.
Each subscriber's watch reads its node's setting and its node's view of the primaries: a
failover or any other change of the set of primaries loses the capture (a key's events would
now be published where nobody listens), which stops the run like a lost connection does, with
the source serving; the same command resumes (it subscribes again and reconciles every copy).
Where CONFIG is refused, the probe runs on every primary and the advice names every node.

:meth:`CaptureSession.stop` ends the subscription; :meth:`CaptureSession.leave` takes the
run's notification classes off again (only at the end of forwarding, finalize or rollback: a
stopped or crashed run that will resume keeps them).
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.faults import fault
from rvlm.core.migrate.online.control import ControlChannel
from rvlm.core.migrate.online.copier import OnlineCopy
from rvlm.core.migrate.online.mirror import Mirror
from rvlm.core.migrate.online.options import OnlineOptions
from rvlm.core.migrate.online.throttle import Throttler
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.run import Run
from rvlm.core.migrate.transform import transform_batch
from rvlm.core.redis import routing
from rvlm.core.redis.capture import CaptureLost, Subscriber
from rvlm.core.redis.connection import connect
from rvlm.core.redis.nodes import NodeClients, describe, key_on, primary_set, registry_client
from rvlm.core.redis.notify import (
    REGISTRY_KEY,
    ConfigRefused,
    NotifySetting,
    advice,
    missing,
    needed_flags,
    probe,
    read_setting,
)
from rvlm.core.redis.topology import cluster_nodes
from rvlm.core.storage.keyfile import KeyFileReader
from rvlm.core.storage.keylog import KeyLog
from rvlm.core.storage.pending import PendingKeys

#: Target keys created outside the key files are logged here (see the blue/green protocol).
WRITTEN_NAME = "written.keys"
PENDING_DIR = "backlog"


KEYS_PATTERN = "keys-*.rvk"


def key_files(directory: Path) -> list[Path]:
    """The key files of every copy (``keys-1.rvk``, ``keys-2.rvk``, ...), oldest first."""
    def epoch(p: Path) -> int:
        digits = p.stem.partition("-")[2]
        return int(digits) if digits.isdigit() else 0
    return sorted(Path(directory).glob(KEYS_PATTERN), key=epoch)


def copied_source_keys(directory: Path, chunk: int = 1000) -> Any:
    """Every source key a run copied or carried over (the key files, then the written
    log), in chunks; keys may repeat."""
    for path in key_files(directory):
        with KeyFileReader(path, verify=False) as reader:
            yield from reader.iter_batches(chunk)
    yield from KeyLog(Path(directory) / WRITTEN_NAME).iter_keys(chunk)


def run_id(plan: Plan, directory: Path) -> str:
    """The run's name in the notification registry: the plan and the backup dir."""
    where = hashlib.sha1(str(Path(directory).resolve()).encode()).hexdigest()[:10]
    return f"{plan.fingerprint[:16]}-{where}"


def notify_setting(client: Any, run: str, needed: str
                   ) -> tuple[NotifySetting, NodeClients | None]:
    """The :class:`NotifySetting` of run ``run`` on ``client``'s server: on a cluster, every
    node (replicas included; the :class:`NodeClients` is returned to be closed), the registry
    on the node holding it."""
    if not routing.is_cluster(client):
        return NotifySetting(client, run, needed), None
    nodes = NodeClients(client, name="rvlm-config")
    return NotifySetting(registry_client(client, REGISTRY_KEY), run, needed,
                         nodes.every()), nodes


def cluster_advice(nodes: NodeClients, needed: str) -> str:
    """:func:`advice` for a cluster: the value, on every node (named)."""
    return (advice(None, needed) + f"; on this cluster, on every node, replicas included "
            f"(a promoted replica must go on notifying): {describe(list(nodes.clients))}")


def marker_channel(plan: Plan, directory: Path) -> bytes:
    """The run's marker channel (:class:`~rvlm.core.redis.capture.Subscriber`)."""
    return f"rvlm:marker:{run_id(plan, directory)}".encode()


class CaptureSession:
    """See the module docstring."""

    def __init__(self, run: Run, options: OnlineOptions) -> None:
        self.run = run
        self.options = options
        plan = run.plan
        # pub/sub and the notification registry need a sync connection of their own (the
        # async API's bridge carries the run's other commands)
        self.owns_client = not isinstance(run.client, (redis.Redis, RedisCluster))
        self.client: Any = connect(run.url) if self.owns_client else run.client
        self.needed = needed_flags(plan.source_schema.storage_type)
        self.setting, self.cluster = notify_setting(self.client, run_id(plan, run.dir),
                                                    self.needed)
        self.config = True
        self.pending: PendingKeys | None = None
        self.subscribers: list[Subscriber] = []
        self.found: str | None = None

    def _watch(self, node: redis.Redis) -> Any:
        """The check a subscriber runs every few seconds on its node: the setting still
        delivers what capture needs, and (a cluster) the primaries are those subscribed."""
        def watch() -> str | None:
            if self.config:
                try:
                    lack = missing(read_setting(node), self.needed)
                except Exception:  # the check itself failing is not a lost subscription
                    lack = ""
                if lack:
                    return f"notify-keyspace-events no longer has {lack!r} (someone changed it)"
            if self.cluster is not None:
                return self._topology_problem(node)
            return None
        return watch

    def _topology_problem(self, node: redis.Redis) -> str | None:
        assert self.cluster is not None
        try:
            now = primary_set(cluster_nodes(node))
        except redis.ResponseError as exc:
            return f"CLUSTER NODES failed ({exc})"
        except (redis.ConnectionError, redis.TimeoutError):
            return None  # the subscriber's own connection says whether the node is gone
        subscribed = self.cluster.primary_addresses
        if now != subscribed:
            return (f"the cluster's primaries changed (a failover or a topology change): "
                    f"subscribed on {describe(subscribed)}, now {describe(now)}")
        return None

    def check_topology(self) -> None:
        """Raise :class:`CaptureLost` when some primary's view of the primaries differs from
        the set subscribed (a cluster; a no-op for one server)."""
        if self.cluster is None:
            return
        for address, node in self.cluster.primaries():
            problem = self._topology_problem(node)
            if problem:
                raise CaptureLost(f"change capture on {address}: {problem}; writes made "
                                  "meanwhile may not have been seen")

    def start(self) -> None:
        """Register the run, open the backlog and subscribe (confirmed before returning)."""
        client = self.client
        try:
            self.found = self.setting.enter()
        except ConfigRefused:
            self.config = False
            if self.cluster is None:
                lacking = probe(client, self.needed)
                where = ""
            else:
                lacks = {a: probe(c, self.needed,
                                  key=key_on(self.cluster.node(a), "rvlm:probe:"))
                         for a, c in self.cluster.primaries()}
                lacking = "".join(sorted({c for v in lacks.values() for c in v}))
                where = " on " + describe([a for a, v in lacks.items() if v])
            if lacking:
                how = (advice(None, self.needed) if self.cluster is None
                       else cluster_advice(self.cluster, self.needed))
                raise RvlmError("change capture cannot start: CONFIG is refused and the "
                                f"server{where} does not deliver the keyspace events "
                                f"{lacking!r}; " + how) from None
        self.pending = PendingKeys(self.run.dir / PENDING_DIR,
                                   max_keys=self.options.backlog_memory_keys)
        prefixes = list(self.run.plan.source_schema.index.prefix)
        nodes = self.cluster.primaries() if self.cluster is not None else [("", client)]
        # finalize's marker channel: exact on one server only (a cluster broadcasts PUBLISH)
        marker = marker_channel(self.run.plan, self.run.dir) if self.cluster is None else None
        for address, node in nodes:
            sub = Subscriber(node, prefixes, self.pending, node=address,
                             watch=self._watch(node), marker=marker)
            self.subscribers.append(sub)
            sub.start()
        self.check_topology()  # a failover between reading the topology and subscribing

    def stop(self) -> None:
        """End the subscriptions and drop the backlog (idempotent)."""
        for sub in self.subscribers:
            sub.stop()
        self.subscribers = []
        if self.pending is not None:
            self.pending.close()
        if self.cluster is not None:
            self.cluster.close()  # connections only: leave() may still use the clients

    def leave(self) -> None:
        """Take the run's notification classes off again (kept if another run needs them)."""
        if self.config:
            with contextlib.suppress(ConfigRefused):
                self.setting.leave()
        if self.cluster is not None:
            self.cluster.close()
        if self.owns_client:
            self.client.close()

    def engine(self, control: ControlChannel | None, throttler: Throttler | None) -> OnlineCopy:
        """The copy engine of this run (one writer; see :mod:`rvlm.core.migrate.online.copier`)."""
        run = self.run
        assert self.pending is not None, "start() first"
        mirror = Mirror(run.plan, run.host, run.ctx, transform_batch)
        return OnlineCopy(run.client, mirror, self.pending, self.subscribers,
                          KeyLog(run.dir / WRITTEN_NAME), throttler=throttler, control=control,
                          batch_size=run.batch_size, status_every=self.options.status_every,
                          on_status=self.options.on_status,
                          should_stop=self.options.should_stop, fault=fault)


def make_throttler(run: Run, options: OnlineOptions) -> Throttler:
    """The run's throttle, its options checked against the server (before any change); on a
    cluster it reads every primary (and their replicas)."""
    view = NodeClients(run.client, name="rvlm-throttle") if routing.is_cluster(run.client) \
        else None
    t = Throttler(run.client, max_load=options.max_load, critical_load=options.critical_load,
                  max_lag_ms=options.max_lag_ms, replicas=options.replicas,
                  nodes=view.primaries() if view is not None else None)
    if view is not None:
        t.on_close.append(view.close)
    t.validate()
    return t
