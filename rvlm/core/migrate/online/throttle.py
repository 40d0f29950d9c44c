"""Being a good neighbour to production: when an online migration pauses, and why.

While *throttled* an online apply neither copies documents nor carries changes over (change
capture keeps listening, so nothing is lost: the backlog grows and is worked off afterwards).
Any one reason throttles, checked at most every ``interval`` seconds, and the status says the
first that applies:

* ``throttle`` from another shell (``rvlm ctl throttle``), until ``unthrottle``;
* ``--max-load FIELD=N[,FIELD=N]``: a numeric INFO field (``used_memory``,
  ``instantaneous_ops_per_sec``, ``connected_clients``, ...) at or above its threshold;
* ``--max-lag-millis N``: a replica more than N ms behind (see :class:`ReplicaLag`; a replica
  that cannot be read counts as lagging).

On a Redis Cluster (``nodes``: every primary) each INFO field is read on every primary and
the worst (highest) value counts, named with its node; ``--max-lag-millis`` reads the
replicas of every primary.

``--critical-load FIELD=N[,...]`` is not a pause: crossing it stops the run cleanly (the
journal says where it was; the same command resumes).

Thresholds take Redis's size suffixes: ``k``/``m``/``g`` (1000s) and ``kb``/``mb``/``gb``
(1024s), e.g. ``used_memory=4gb``.
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import redis

from rvlm.core.errors import RvlmError
from rvlm.core.redis.resp import to_str

_SUFFIX = {"": 1, "k": 1000, "kb": 1024, "m": 1000 ** 2, "mb": 1024 ** 2, "g": 1000 ** 3,
           "gb": 1024 ** 3}
_ITEM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_thresholds(text: str | None, option: str) -> dict[str, float]:
    """``FIELD=N[,FIELD=N]`` as ``{field: threshold}``; raises :class:`RvlmError` naming the
    bad item."""
    out: dict[str, float] = {}
    if not text:
        return out
    for item in text.split(","):
        if not item.strip():
            continue
        m = _ITEM.match(item)
        if not m or m.group(3).lower() not in _SUFFIX:
            raise RvlmError(f"{option}: {item.strip()!r} is not FIELD=NUMBER (e.g. "
                            "used_memory=4gb,instantaneous_ops_per_sec=50000)")
        out[m.group(1)] = float(m.group(2)) * _SUFFIX[m.group(3).lower()]
    return out


def format_thresholds(thresholds: dict[str, float]) -> str:
    """The inverse of :func:`parse_thresholds` (plain numbers)."""
    return ",".join(f"{k}={int(v) if v == int(v) else v}" for k, v in thresholds.items())


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(to_str(value))
    except (TypeError, ValueError):
        return None


def check_fields(info: dict[str, Any], thresholds: dict[str, float], option: str) -> None:
    """Every field of ``thresholds`` is a numeric field of ``info`` (INFO); raises
    :class:`RvlmError` naming the first that is not, before anything is done."""
    for name in thresholds:
        if name not in info:
            known = ", ".join(sorted(k for k, v in info.items()
                                     if _number(v) is not None and k in _SUGGEST))
            raise RvlmError(f"{option}: the server's INFO has no field {name!r} (numeric "
                            f"fields include {known})")
        if _number(info[name]) is None:
            raise RvlmError(f"{option}: INFO field {name!r} is not a number "
                            f"({info[name]!r})")


_SUGGEST = frozenset({"used_memory", "used_memory_rss", "instantaneous_ops_per_sec",
                      "connected_clients", "blocked_clients", "mem_fragmentation_ratio",
                      "instantaneous_input_kbps", "instantaneous_output_kbps"})


def _size(v: float) -> str:
    for unit, n in (("GB", 1024 ** 3), ("MB", 1024 ** 2)):
        if abs(v) >= n:
            return f"{v / n:.2f}{unit}"
    return f"{v:g}"


def crossed(info: dict[str, Any], thresholds: dict[str, float]) -> str | None:
    """The first ``field=value >= threshold`` of ``thresholds`` that ``info`` crosses."""
    for name, limit in thresholds.items():
        value = _number(info.get(name))
        if value is not None and value >= limit:
            show = _size if "memory" in name else (lambda x: f"{x:g}")
            return f"{name}={show(value)} >= {show(limit)}"
    return None


class ReplicaLag:
    """How far behind each replica is, in ms, without writing anything.

    Each :meth:`sample` reads the primary's ``master_repl_offset`` (and remembers when it had
    which value) and each replica's own ``slave_repl_offset`` (INFO on the replica, read right
    after). A replica at or past the primary's offset has no lag; otherwise its lag is the time
    since the primary first held more than the replica has. Precise to the sampling interval.

    ``replicas``: ``host:port`` of the replicas to read; None finds them in the primary's
    INFO replication (``slaveN:ip=...,port=...``). They are reached with the primary's
    credentials.
    """

    def __init__(self, primary: redis.Redis, replicas: Sequence[str] | None = None,
                 *, history_seconds: float = 300.0, timeout: float = 1.0) -> None:
        self.primary = primary
        self.explicit = list(replicas) if replicas is not None else None
        self.history: collections.deque[tuple[float, int]] = collections.deque()
        self.history_seconds = history_seconds
        self.timeout = timeout
        self._clients: dict[str, redis.Redis] = {}

    def _client(self, address: str) -> redis.Redis:
        c = self._clients.get(address)
        if c is None:
            host, _, port = address.rpartition(":")
            kwargs = dict(self.primary.connection_pool.connection_kwargs)
            kwargs.update(host=host, port=int(port), socket_timeout=self.timeout,
                          socket_connect_timeout=self.timeout, decode_responses=False)
            kwargs.pop("retry", None)
            pool = redis.ConnectionPool(
                connection_class=self.primary.connection_pool.connection_class, **kwargs)
            c = self._clients[address] = redis.Redis(connection_pool=pool)
        return c

    def sample(self, now: float | None = None) -> dict[str, float | str]:
        """Lag in ms per replica ``host:port``, or a string saying why it could not be read."""
        now = time.monotonic() if now is None else now
        info = self.primary.info("replication")
        offset = int(info.get("master_repl_offset", 0))
        h = self.history
        if not h or h[-1][1] != offset:
            h.append((now, offset))
        while len(h) > 1 and h[1][0] < now - self.history_seconds:
            h.popleft()
        out: dict[str, float | str] = {}
        addresses = self.explicit
        states: dict[str, str] = {}
        if addresses is None:
            addresses = []
            for k, v in info.items():
                if re.fullmatch(r"slave\d+", k) and isinstance(v, dict):
                    a = f"{to_str(v.get('ip'))}:{v.get('port')}"
                    addresses.append(a)
                    states[a] = to_str(v.get("state", "online"))
        for a in addresses:
            if states.get(a, "online") != "online":
                out[a] = f"state {states[a]}"
                continue
            try:
                rinfo = self._client(a).info("replication")
            except (redis.RedisError, OSError) as exc:
                out[a] = f"unreachable ({type(exc).__name__})"
                continue
            if to_str(rinfo.get("master_link_status", "up")) != "up":
                out[a] = "link to the primary is down"
                continue
            have = int(rinfo.get("slave_repl_offset", 0))
            if have >= offset:
                out[a] = 0.0
                continue
            first_more = next((t for t, o in h if o > have), now)
            out[a] = max(0.0, (now - first_more) * 1000.0)
        return out

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()


@attrs.define
class ThrottleState:
    """The outcome of one check: why to pause (None: go on), why to stop (None: go on)."""

    reason: str | None = None
    critical: str | None = None
    replica_lag_ms: dict[str, float | str] = attrs.field(factory=dict)


class Throttler:
    """Decides, at most every ``interval`` seconds, whether the run pauses or stops (see the
    module docstring). ``forced`` is set by ``rvlm ctl throttle`` / ``unthrottle``; the
    thresholds may be changed while running (``rvlm ctl max-load=...``). ``nodes``:
    ``(address, client)`` of every primary of a cluster (None: ``client`` alone)."""

    def __init__(self, client: redis.Redis, *, max_load: dict[str, float] | None = None,
                 critical_load: dict[str, float] | None = None,
                 max_lag_ms: float | None = None, replicas: Sequence[str] | None = None,
                 interval: float = 0.25,
                 nodes: Sequence[tuple[str, redis.Redis]] | None = None) -> None:
        self.client = client
        self.nodes = list(nodes) if nodes else [("", client)]
        self.max_load = dict(max_load or {})
        self.critical_load = dict(critical_load or {})
        self.max_lag_ms = max_lag_ms
        self.interval = interval
        self.forced = False
        self.explicit = replicas
        self.replicas: list[ReplicaLag] | None = self._lags() if max_lag_ms is not None \
            else None
        self._checked_at = float("-inf")
        self._state = ThrottleState()
        #: called by :meth:`close` (e.g. closing the node clients it was given)
        self.on_close: list[Callable[[], None]] = []

    def _lags(self) -> list[ReplicaLag]:
        if self.explicit is not None:
            return [ReplicaLag(self.nodes[0][1], self.explicit)]
        return [ReplicaLag(c) for _a, c in self.nodes]

    def info(self) -> dict[str, Any]:
        """INFO of the server; on a cluster, every numeric field at its highest value over the
        primaries, and ``"<field>@"`` naming the node that has it."""
        if len(self.nodes) == 1:
            return dict(self.nodes[0][1].info())
        merged: dict[str, Any] = {}
        for address, c in self.nodes:
            for k, v in c.info().items():
                n = _number(v)
                if k not in merged or (n is not None and (_number(merged[k]) or 0) < n):
                    merged[k] = v
                    merged[k + "@"] = address
        return merged

    def validate(self) -> None:
        """Refuse thresholds on INFO fields the server does not have (before any change)."""
        if self.max_load or self.critical_load:
            info = dict(self.nodes[0][1].info())
            check_fields(info, self.max_load, "--max-load")
            check_fields(info, self.critical_load, "--critical-load")
        if self.max_lag_ms is not None and self.max_lag_ms <= 0:
            raise RvlmError("--max-lag-millis must be a positive number of milliseconds")

    def set_max_lag(self, ms: float | None) -> None:
        self.max_lag_ms = ms
        if ms is not None and self.replicas is None:
            self.replicas = self._lags()
        self._checked_at = float("-inf")

    def check(self, now: float | None = None) -> ThrottleState:
        """The current state (re-evaluated when ``interval`` has passed)."""
        now = time.monotonic() if now is None else now
        if now - self._checked_at < self.interval:
            if self.forced and self._state.reason is None:
                self._state.reason = "commanded by user"
            return self._state
        self._checked_at = now
        state = ThrottleState()
        if self.max_load or self.critical_load:
            info = self.info()
            state.critical = _on_node(info, crossed(info, self.critical_load))
            load = _on_node(info, crossed(info, self.max_load))
            if load:
                state.reason = f"max-load {load}"
        if self.replicas is not None and self.max_lag_ms is not None:
            for lag in self.replicas:
                state.replica_lag_ms.update(lag.sample(now))
            for name, ms in state.replica_lag_ms.items():
                if isinstance(ms, str):
                    state.reason = state.reason or f"replica {name}: {ms}"
                elif ms > self.max_lag_ms:
                    state.reason = state.reason or (f"replica {name} lag {ms:.0f}ms > "
                                                    f"{self.max_lag_ms:g}ms")
        if self.forced:
            state.reason = "commanded by user"
        self._state = state
        return state

    def close(self) -> None:
        for lag in self.replicas or ():
            lag.close()
        for fn in self.on_close:
            fn()


def _on_node(info: dict[str, Any], what: str | None) -> str | None:
    """``what`` (``field=value >= limit``) with `` on <node>`` when the value came from one
    node of a cluster."""
    if what is None:
        return None
    node = info.get(what.partition("=")[0] + "@")
    return f"{what} on {node}" if node else what
