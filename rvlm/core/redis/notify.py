"""Keyspace notifications for change capture: which classes, turning them on, putting them back.

Change capture (:mod:`rvlm.core.redis.capture`) listens on the ``__keyspace@<db>__:<key>``
channels (class ``K``: the event name is the message). The event classes it needs:

* ``g`` generic: ``del``, ``rename_from``/``rename_to``, ``expire``, ``persist``, ``copy_to``,
  ``restore``, ...;
* ``$`` strings: ``set`` (a ``SET`` over a document replaces it with a string);
* ``h`` hashes: ``hset``, ``hdel``, ``hincrby``, ``hexpire``, ``hexpired``, ...;
* ``x`` expired and ``e`` evicted (a key that goes without a command);
* ``d`` module events, for JSON: RedisJSON's ``json.set``, ``json.del``, ... come only with it.

Measured on Redis 8.2: CONFIG SET takes the flags in any order and reads them back reordered;
``A`` stands for ``g$lshzxetd``.

:class:`NotifySetting` turns the missing classes on with ``CONFIG SET`` and takes them off again
at the end. Several runs may need notifications at once (a many-index run, two shells), so the
server keeps a registry (hash :data:`REGISTRY_KEY`): the value before the first run turned
anything on, and one field per run holding the flags it needs. A run that leaves removes only
the flags no remaining run needs and that were not there before; the last one out puts the
server back as it found it, keeping flags an operator added meanwhile.

Where ``CONFIG`` is refused (managed services), nothing can be turned on: :func:`probe` checks
on a throw-away key that the needed events arrive, and :func:`advice` says exactly which
``notify-keyspace-events`` value to configure.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Sequence

import redis

from rvlm.core.errors import RvlmError
from rvlm.core.redis.resp import to_map, to_str

PARAMETER = "notify-keyspace-events"
#: The server-side registry of runs that need notifications (see the module docstring).
REGISTRY_KEY = "rvlm:notify"
_ORIGINAL = b"original"
_HOLDER = "holder:"
#: What ``A`` stands for.
ALL = "g$lshzxetd"
#: Every flag in the order rvlm writes them back.
_ORDER = "KEg$lshzxetdnm"


def needed_flags(storage_type: str) -> str:
    """The classes change capture needs for documents of ``storage_type`` (``hash`` or
    ``json``), ``K`` first."""
    return "Kg$hxe" + ("d" if storage_type == "json" else "")


def parse_flags(value: str) -> frozenset[str]:
    """The single flags ``value`` turns on (``A`` expanded)."""
    out: set[str] = set()
    for c in value:
        if c == "A":
            out.update(ALL)
        else:
            out.add(c)
    return frozenset(out)


def format_flags(flags: Iterable[str]) -> str:
    """``flags`` as a value for CONFIG SET: ``A`` when all of its classes are there, then the
    rest in a fixed order."""
    have = set(flags)
    out = ""
    if have.issuperset(ALL):
        out = "A"
        have -= set(ALL)
    return out + "".join(c for c in _ORDER if c in have) + "".join(sorted(have - set(_ORDER)))


def missing(current: str, needed: str) -> str:
    """The flags of ``needed`` that ``current`` lacks (in ``needed``'s order)."""
    have = parse_flags(current)
    return "".join(c for c in needed if c not in have)


def advice(current: str | None, needed: str) -> str:
    """One sentence saying which value to configure so that ``needed`` events arrive."""
    if current is None:
        value = needed
        basis = ""
    else:
        value = format_flags(parse_flags(current) | parse_flags(needed))
        basis = f" (it is {current!r} now)" if current else " (it is empty now)"
    return (f"set the server's notify-keyspace-events to {value!r}{basis}: online mode needs "
            f"the keyspace events {needed!r} to carry writes made during the copy over "
            "(on a managed service, set it in the service's parameter group or configuration)")


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class ConfigRefused(RvlmError):
    """The server refused CONFIG GET or SET (an ACL, or a managed service renamed it)."""


def read_setting(client: redis.Redis) -> str:
    """The server's ``notify-keyspace-events`` (CONFIG GET); raises :class:`ConfigRefused`."""
    try:
        reply = client.config_get(PARAMETER)
    except redis.ResponseError as exc:  # NoPermissionError is one
        raise ConfigRefused(f"CONFIG GET {PARAMETER} was refused: {exc}") from None
    got = to_map(reply).get(PARAMETER)
    return "" if got is None else to_str(got)


def _write_setting(client: redis.Redis, value: str) -> None:
    try:
        client.config_set(PARAMETER, value)
    except redis.ResponseError as exc:
        raise ConfigRefused(f"CONFIG SET {PARAMETER} {value!r} was refused: {exc}") from None


class NotifySetting:
    """Turns on the notification classes one run needs and takes them off at the end.

    ``run_id`` names the run in the registry (the same id on resume: entering twice is a
    no-op). ``nodes``: ``(address, client)`` of every server whose setting is changed (a
    cluster: every node, replicas included); by default ``client`` alone. The registry lives
    on ``client`` (on a cluster, the node holding :data:`REGISTRY_KEY`), with the value found
    before the first run per node (field ``original``, or ``original@<address>``).
    ``enter()`` returns the value it found (for the journal; a cluster: ``address=value``
    per node); ``leave()`` removes the run and restores on each node what no other run needs.
    Both raise :class:`ConfigRefused` when CONFIG is refused.
    """

    def __init__(self, client: redis.Redis, run_id: str, needed: str,
                 nodes: Sequence[tuple[str, redis.Redis]] | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.needed = needed
        self.nodes = list(nodes) if nodes is not None else [("", client)]

    @staticmethod
    def _original(address: str) -> bytes:
        return _ORIGINAL + (b"@" + address.encode() if address else b"")

    def _registry(self) -> dict[bytes, bytes]:
        raw = self.client.hgetall(REGISTRY_KEY) or {}
        return {_bytes(k): _bytes(v) for k, v in raw.items()}

    def enter(self) -> str:
        """Register the run, then CONFIG SET on every node the union of what is set there
        and what it needs."""
        current = {address: read_setting(c) for address, c in self.nodes}
        field = (_HOLDER + self.run_id).encode()
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(REGISTRY_KEY)
                    held = {_bytes(k) for k in (pipe.hgetall(REGISTRY_KEY) or {})}
                    pipe.multi()
                    for address, value in current.items():
                        if self._original(address) not in held:
                            pipe.hset(REGISTRY_KEY, self._original(address), value)
                    pipe.hset(REGISTRY_KEY, field, self.needed)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        for address, c in self.nodes:
            if missing(current[address], self.needed):
                _write_setting(c, format_flags(parse_flags(current[address])
                                               | parse_flags(self.needed)))
        if len(self.nodes) == 1 and not self.nodes[0][0]:
            return current[""]
        return "; ".join(f"{a}={v!r}" for a, v in current.items())

    def leave(self) -> str | None:
        """Unregister the run; put back on every node what no remaining run needs. Returns
        the value set on the first node that changed (None when nothing had to change)."""
        field = (_HOLDER + self.run_id).encode()
        registry = self._registry()
        if field not in registry:
            return None
        others = [v.decode() for k, v in registry.items()
                  if k.startswith(_HOLDER.encode()) and k != field]
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(REGISTRY_KEY, field)
            if not others:
                pipe.delete(REGISTRY_KEY)
            pipe.execute()
        still = parse_flags("".join(others))
        first: str | None = None
        for address, c in self.nodes:
            original = registry.get(self._original(address),
                                    registry.get(_ORIGINAL, b"")).decode()
            value = self._restore(c, original, bool(others), still)
            if first is None:
                first = value
        return first

    def _restore(self, client: redis.Redis, original: str, others: bool,
                 still: frozenset[str]) -> str | None:
        added = parse_flags(self.needed) - parse_flags(original) - still
        current = read_setting(client)
        flags = parse_flags(current)
        if not flags & added:
            return None
        keep = flags - added
        if keep - {"K", "E"} and not keep & {"K", "E"}:
            keep |= {"K"}  # classes someone else added still need a channel to arrive on
        value = original if not others and keep == parse_flags(original) \
            else format_flags(keep)
        if not parse_flags(value) - {"K", "E"}:
            value = ""  # K or E alone delivers nothing: the server's own default is empty
        _write_setting(client, value)
        return value


def probe(client: redis.Redis, needed: str, *, timeout: float = 2.0,
          key: str | None = None) -> str:
    """Which classes of ``needed`` do *not* deliver events now, tried on a throw-away key
    (``rvlm:probe:<random>``) on a second connection of ``client``'s pool: ``h`` (HSET),
    ``g`` (DEL), ``$`` (SET), ``x`` (a 1 ms TTL), ``d`` (JSON.SET, when the server has JSON).
    ``e`` (eviction) cannot be provoked and is assumed to follow the server's setting
    (:func:`advice` names it). ``K`` is implied by any event arriving. Returns the classes
    that did not deliver, in ``needed``'s order (empty: all good). ``key``: the throw-away
    key to use instead (on a cluster node, one in a slot that node owns)."""
    db = int(client.connection_pool.connection_kwargs.get("db", 0) or 0)
    key = key or f"rvlm:probe:{uuid.uuid4().hex}"
    pubsub = client.pubsub()
    expect: dict[str, str] = {}
    try:
        pubsub.subscribe(f"__keyspace@{db}__:{key}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # the confirmation: the subscription is active
            msg = pubsub.get_message(timeout=0.05)
            if msg and msg.get("type") == "subscribe":
                break
        if "h" in needed:
            client.hset(key, "f", "v")
            expect["hset"] = "h"
        if "g" in needed:
            client.delete(key)
            expect["del"] = "g"
        if "$" in needed:
            client.set(key, "v")
            expect["set"] = "$"
            client.delete(key)
        if "d" in needed:
            with contextlib.suppress(redis.ResponseError):
                client.execute_command("JSON.SET", key, "$", "{}")
                expect["json.set"] = "d"
                client.delete(key)
        if "x" in needed:
            client.set(key, "v", px=1)
            expect["expired"] = "x"
            time.sleep(0.005)
            client.exists(key)  # an access expires it at once (no wait for the active cycle)
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not set(expect) <= seen:
            msg = pubsub.get_message(timeout=0.05)
            if msg and msg.get("type") == "message":
                seen.add(to_str(msg["data"]))
    finally:
        with contextlib.suppress(redis.RedisError):
            client.delete(key)
        with contextlib.suppress(redis.RedisError):
            pubsub.close()
    if not seen:  # no event at all: K itself is off
        return "".join(c for c in needed if c in "K" or c in expect.values())
    lacking = {cls for event, cls in expect.items() if event not in seen}
    return "".join(c for c in needed if c in lacking)


__all__ = [
    "PARAMETER",
    "REGISTRY_KEY",
    "ConfigRefused",
    "NotifySetting",
    "advice",
    "format_flags",
    "missing",
    "needed_flags",
    "parse_flags",
    "probe",
    "read_setting",
]
