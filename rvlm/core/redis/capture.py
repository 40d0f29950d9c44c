"""Change capture: which source keys changed while an online migration copies them.

A :class:`Subscriber` holds one pub/sub connection to one server (one node: a cluster gets one
subscriber per primary, all feeding the same :class:`~rvlm.core.storage.pending.PendingKeys`)
and ``PSUBSCRIBE``\\ s to ``__keyspace@<db>__:<prefix>*`` for each source prefix (glob
characters escaped). :meth:`Subscriber.start` returns only once the server confirmed every
pattern, so a key read after it returns has every later change reported. A thread reads the
connection and adds each changed key to the sink with the time it arrived.

Pub/sub is at-most-once: what happens while the connection is down is never delivered. So a
subscriber never reconnects. It marks itself *lost* (:attr:`Subscriber.lost`, and
:meth:`Subscriber.check` raises :class:`CaptureLost`) when:

* the connection fails or is closed (``CLIENT KILL``, a server restart, the pub/sub output
  buffer limit);
* a subscription confirmation arrives that it did not ask for (the client library reconnected
  and subscribed again behind its back: events in between are gone);
* a heartbeat ``PING`` on the connection gets no answer within ``ping_timeout``;
* ``watch`` (called every ``watch_interval`` seconds, e.g. a CONFIG GET of
  ``notify-keyspace-events``) reports a problem.

:meth:`Subscriber.barrier` waits until every event the server published before the call was
handed to the sink (a ``PING`` on the pub/sub connection is answered in order with the
messages), which is what "the backlog is empty" needs to mean at a cut-over.

A *marker* channel (``marker``, optional) lets a writer take its own events out of the
backlog exactly: a script that deletes a key and then publishes the key's name on the
marker channel puts its ``del`` event and the marker next to each other in this connection's
stream (a script runs atomically, and the server queues both in execution order), so
forgetting the key's entries when the marker arrives (in memory or spilled:
:meth:`~rvlm.core.storage.pending.PendingKeys.discard`) forgets the script's event and every
one before it, never a later client's (``rvlm finalize``'s deletes,
:mod:`rvlm.core.migrate.online.finalize`). A cluster broadcasts a ``PUBLISH`` to every node, so
markers are exact on one server only.

The connection is named :data:`CLIENT_NAME` (``CLIENT LIST`` shows it; tests kill it by name).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rvlm.core.errors import MigrationFailed
from rvlm.core.redis.resp import to_str
from rvlm.core.storage.pending import PendingKeys

CLIENT_NAME = "rvlm-capture"


class CaptureLost(MigrationFailed):
    """The change-capture subscription was lost: events may have been missed."""


def escape_pattern(prefix: bytes) -> bytes:
    """``prefix`` with the glob characters ``* ? [ ] \\`` escaped for PSUBSCRIBE."""
    out = bytearray()
    for c in prefix:
        if c in b"*?[]\\":
            out += b"\\"
        out.append(c)
    return bytes(out)


def channel_prefix(db: int) -> bytes:
    """The part of a keyspace channel before the key."""
    return b"__keyspace@%d__:" % db


def _db_of(client: redis.Redis) -> int:
    return int(client.connection_pool.connection_kwargs.get("db", 0) or 0)


def dedicated_client(client: redis.Redis, name: str = CLIENT_NAME) -> redis.Redis:
    """A new client to the same server as ``client`` (same credentials, db, TLS, protocol)
    that never retries or reconnects on its own, named ``name``."""
    kwargs: dict[str, Any] = dict(client.connection_pool.connection_kwargs)
    kwargs.pop("retry", None)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    kwargs["client_name"] = name
    kwargs["decode_responses"] = False
    kwargs["health_check_interval"] = 0
    pool = redis.ConnectionPool(connection_class=client.connection_pool.connection_class,
                                **kwargs)
    return redis.Redis(connection_pool=pool)


class Subscriber:
    """One pub/sub connection reporting changed keys under ``prefixes`` to ``sink``.

    ``client`` is only used for its connection settings (a dedicated connection is made).
    ``node`` names the server in messages (empty for a single server).
    """

    def __init__(self, client: redis.Redis, prefixes: Sequence[bytes | str], sink: PendingKeys,
                 *, node: str = "", ping_interval: float = 1.0, ping_timeout: float = 10.0,
                 watch: Callable[[], str | None] | None = None,
                 watch_interval: float = 2.0, marker: bytes | None = None) -> None:
        if not prefixes:
            raise ValueError("change capture needs at least one prefix")
        self.db = _db_of(client)
        self.node = node
        self.sink = sink
        self.channel = channel_prefix(self.db)
        self.patterns = list(dict.fromkeys(
            self.channel + escape_pattern(p.encode() if isinstance(p, str) else bytes(p)) + b"*"
            for p in prefixes))
        #: a channel whose messages name a key whose entry to forget (see the module docstring)
        self.marker = marker
        self._subscribed = self.patterns + ([escape_pattern(marker)] if marker else [])
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.watch = watch
        self.watch_interval = watch_interval
        self._client = dedicated_client(client)
        self._pubsub: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._requests: queue.SimpleQueue[tuple[bytes, threading.Event]] = queue.SimpleQueue()
        self._waiting: dict[bytes, threading.Event] = {}
        self._confirmed = 0
        self._seq = 0
        #: why the subscription is lost (None while it is good)
        self.lost: str | None = None
        #: messages received (events)
        self.received = 0

    # -- life cycle ----------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Subscribe and wait until the server confirmed every pattern, then start reading in
        a thread. Raises :class:`CaptureLost` if the server does not confirm in time."""
        try:
            self._pubsub = self._client.pubsub()
            self._pubsub.psubscribe(*self._subscribed)
            deadline = time.monotonic() + timeout
            while self._confirmed < len(self._subscribed):
                if time.monotonic() > deadline:
                    raise CaptureLost(f"change capture{self._on()}: the server did not confirm "
                                      f"the subscription within {timeout:.0f}s")
                msg = self._pubsub.get_message(timeout=0.1)
                if msg is not None:
                    self._handle(msg, time.monotonic())
        except redis.RedisError as exc:
            self._close()
            raise CaptureLost(f"change capture{self._on()} could not subscribe: {exc}") from None
        self._thread = threading.Thread(target=self._run, name="rvlm-capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reading and close the connection (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        self._close()
        for ev in self._waiting.values():
            ev.set()

    def _close(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                self._pubsub.close()
            self._pubsub = None
        with contextlib.suppress(Exception):
            self._client.close()
            self._client.connection_pool.disconnect()

    def __enter__(self) -> Subscriber:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what callers use ----------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`CaptureLost` if the subscription was lost."""
        if self.lost is not None:
            raise CaptureLost(self.lost)

    def barrier(self, timeout: float = 10.0) -> None:
        """Return once every event published before this call reached the sink. Raises
        :class:`CaptureLost` when the subscription is lost or the server does not answer."""
        self.check()
        self._seq += 1
        token = b"rvlm-barrier-%d" % self._seq
        done = threading.Event()
        self._requests.put((token, done))
        if not done.wait(timeout):
            self._lose(f"no answer to a PING on the capture connection within {timeout:.0f}s")
        self.check()

    # -- the reading thread ----------------------------------------------------------------
    def _on(self) -> str:
        return f" on {self.node}" if self.node else ""

    def _lose(self, why: str) -> None:
        if self.lost is None:
            self.lost = (f"change capture{self._on()} lost its subscription ({why}); writes "
                         "made meanwhile may not have been seen")
        for ev in list(self._waiting.values()):
            ev.set()

    def _handle(self, msg: dict[str, Any], now: float) -> None:
        kind = msg.get("type")
        if kind == "pmessage":
            channel = msg["channel"]
            if isinstance(channel, str):  # pragma: no cover - decode_responses is off
                channel = channel.encode("utf-8", "surrogateescape")
            if channel.startswith(self.channel):
                self.received += 1
                self.sink.add(bytes(channel[len(self.channel):]), now)
            elif self.marker is not None and channel == self.marker:
                data = msg.get("data")
                self.sink.discard([data if isinstance(data, bytes) else str(data).encode()])
        elif kind == "psubscribe":
            self._confirmed += 1
            if self._confirmed > len(self._subscribed):
                self._lose("the connection was re-established and subscribed again")
        elif kind == "pong":
            data = msg.get("data")
            token = data if isinstance(data, bytes) else str(data or "").encode()
            ev = self._waiting.pop(token, None)
            if ev is not None:
                ev.set()
        elif kind in ("punsubscribe", "unsubscribe") and not self._stop.is_set():
            self._lose(f"the server ended the subscription ({to_str(msg.get('channel'))})")

    def _run(self) -> None:
        ps = self._pubsub
        beat_at = time.monotonic() + self.ping_interval
        beat: tuple[bytes, float, threading.Event] | None = None
        watch_at = time.monotonic() + self.watch_interval
        n = 0
        while not self._stop.is_set() and self.lost is None:
            now = time.monotonic()
            try:
                while True:
                    try:
                        token, ev = self._requests.get_nowait()
                    except queue.Empty:
                        break
                    self._waiting[token] = ev
                    ps.ping(token)
                if beat is not None and beat[2].is_set():
                    beat = None
                if beat is None and now >= beat_at:
                    n += 1
                    token = b"rvlm-heartbeat-%d" % n
                    ev = threading.Event()
                    self._waiting[token] = ev
                    ps.ping(token)
                    beat = (token, now, ev)
                    beat_at = now + self.ping_interval
                elif beat is not None and now - beat[1] > self.ping_timeout:
                    self._lose(f"no answer to a PING for {self.ping_timeout:.0f}s")
                    break
                if self.watch is not None and now >= watch_at:
                    watch_at = now + self.watch_interval
                    problem = self.watch()
                    if problem:
                        self._lose(problem)
                        break
                msg = ps.get_message(timeout=0.05)
                while msg is not None:
                    self._handle(msg, time.monotonic())
                    msg = ps.get_message(timeout=0) if self.lost is None else None
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if not self._stop.is_set():
                    self._lose(f"{type(exc).__name__}: {exc}")
                break
            except Exception as exc:  # never die silently: a dead reader loses events
                if not self._stop.is_set():
                    self._lose(f"{type(exc).__name__}: {exc}")
                break
        if self.lost is not None:
            # the client library may have connected again (and subscribed) while raising:
            # that connection must not live on unread
            self._close()
