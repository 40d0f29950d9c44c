"""Connecting to Redis, and the few index-level reads every command needs.

``connect`` turns a bad URL or an unreachable server into one clear :class:`RvlmError` line
(with the password redacted). Clients never decode responses: keys and values are bytes
everywhere in rvlm, and :mod:`rvlm.core.redis.resp` normalises replies under RESP2 and RESP3.

A URL of any node of a Redis Cluster (primary or replica) gives a ``redis.cluster.RedisCluster``:
``connect`` asks the server (``INFO cluster``), or is told (``cluster=True``, the CLI's
``--cluster``, ``RVLM_CLUSTER=1``, which then refuses a server that is not a cluster node).
Commands on one key go to the node owning it; pipelined document I/O goes through
:func:`rvlm.core.redis.wire.execute`, which routes per primary.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import quote

import redis

from rvlm.core.errors import MigrationFailed, RvlmError
from rvlm.core.redis import routing
from rvlm.core.redis.resp import to_float, to_int, to_list, to_map, to_str
from rvlm.core.schema.ftinfo import IndexInfo, parse_ft_info
from rvlm.core.schema.model import IndexSchema

DEFAULT_URL = "redis://localhost:6379"
#: ``1``: the server must be a Redis Cluster (the CLI's ``--cluster`` sets it, so worker
#: processes see it too); ``0``: never make a cluster client; unset: ask the server.
CLUSTER_ENV = "RVLM_CLUSTER"


def resolve_url(url: str | None) -> str:
    """The URL to use: the one given, else ``REDIS_URL``, else localhost:6379."""
    return url or os.environ.get("REDIS_URL") or DEFAULT_URL


#: ``scheme:`` and its slashes, as typed (``redis://``, ``redis:/``, ``redis//``, ``rediss://``)
_SCHEME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:/*|[A-Za-z][A-Za-z0-9+.-]*//)")


def _userinfo(url: str) -> tuple[str, str, str] | None:
    """(scheme prefix, user info, rest after the last ``@``), or None without an ``@``.

    Deliberately not a URL parser: a URL that does not parse (``redis:/:PW@h``, an unescaped
    ``#`` in the password, a port that is not a number) must still lose its password."""
    head, at, rest = url.rpartition("@")
    if not at:
        return None
    match = _SCHEME.match(head)
    prefix = match.group(0) if match else ""
    return prefix, head[len(prefix):], rest


def url_from_parts(*, host: str | None = None, port: int | None = None,
                   user: str | None = None, password: str | None = None,
                   ssl: bool = False) -> str:
    """A URL from RedisVL's connection options (``rvl ... --host --port --user --password
    --ssl``): localhost and 6379 where not given, ``rediss://`` with ``ssl``."""
    auth = ""
    if user or password:
        auth = quote(user or "", safe="") + (f":{quote(password, safe='')}" if password else "")
        auth += "@"
    scheme = "rediss" if ssl else "redis"
    return f"{scheme}://{auth}{host or 'localhost'}:{port or 6379}"


def with_ssl(url: str) -> str:
    """``url`` with TLS (``redis://`` becomes ``rediss://``)."""
    return "rediss://" + url[len("redis://"):] if url.startswith("redis://") else url


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe to print or store in a plan).

    Everything between the scheme and the last ``@`` is credentials: ``user:***`` keeps the
    user name; user info without a ``:`` may be a password typed without one and becomes
    ``***``."""
    parts = _userinfo(url)
    if parts is None:
        return url
    prefix, userinfo, rest = parts
    user, colon, _password = userinfo.partition(":")
    return f"{prefix}{user}:***@{rest}" if colon else f"{prefix}***@{rest}"


def scrub(text: str, url: str) -> str:
    """``text`` (an error message about ``url``) without any piece of ``url``'s password.

    A parser that failed may quote a fragment of the password (``Port could not be cast to
    integer value as 'pa'`` for ``redis://:pa#ss@host``): every piece between the characters a
    parser splits at is replaced."""
    parts = _userinfo(url)
    if parts is None:
        return text
    userinfo = parts[1]
    secret = userinfo.partition(":")[2] if ":" in userinfo else userinfo
    pieces = sorted({p for p in re.split(r"[#?/@:\[\]]", secret) if p}, key=len, reverse=True)
    for piece in [secret, *pieces]:
        if piece:
            text = text.replace(piece, "***")
    return text


def bad_url(url: str, exc: BaseException) -> RvlmError:
    """The one-line error for a URL the client cannot use (password never printed)."""
    text = scrub(str(exc), url)
    parts = _userinfo(url)
    hint = ""
    if parts is not None and re.search(r"[#?/@\[\]]", parts[1]):
        hint = ("; characters such as '#', '?', '/' or '@' in a user name or password must "
                "be percent-encoded (# as %23, ? as %3F, / as %2F, @ as %40)")
    return RvlmError(f"bad Redis URL {redact(url)}: {text}{hint}")


def cluster_wanted(cluster: bool | None = None) -> bool | None:
    """``cluster`` if given, else what ``RVLM_CLUSTER`` says (None: ask the server)."""
    if cluster is not None:
        return cluster
    value = os.environ.get(CLUSTER_ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def cluster_enabled(client: Any) -> bool:
    """True when the server behind ``client`` is a node of a Redis Cluster (``INFO cluster``)."""
    try:
        return bool(to_int(to_map(client.info("cluster")).get("cluster_enabled", 0)))
    except redis.RedisError:
        return False


def client_kwargs(protocol: int | None = None) -> dict[str, Any]:
    """The keyword arguments of every rvlm client: bytes replies, and ``protocol`` (2 or 3),
    by default ``RVLM_PROTOCOL``, else the client's own default."""
    if protocol is None and os.environ.get("RVLM_PROTOCOL"):
        protocol = int(os.environ["RVLM_PROTOCOL"])
    kwargs: dict[str, Any] = {"decode_responses": False}
    if protocol is not None:
        kwargs["protocol"] = protocol
    return kwargs


def not_a_cluster(target: str) -> RvlmError:
    """The error for --cluster (``RVLM_CLUSTER``) given with a server that is not a cluster."""
    return RvlmError(f"{redact(target)} is not a Redis Cluster node (INFO cluster says "
                     "cluster_enabled:0); leave out --cluster (RVLM_CLUSTER) for one server")


def connect(
    url: str | None = None, *, protocol: int | None = None, check: bool = True,
    cluster: bool | None = None,
) -> redis.Redis:
    """A bytes client for ``url`` (see :func:`resolve_url`), pinged unless ``check`` is False.

    ``protocol`` 2 or 3 forces RESP2 or RESP3; by default ``RVLM_PROTOCOL`` or the client's own
    default. When the server is a Redis Cluster node the client is a
    ``redis.cluster.RedisCluster`` (it answers the same commands; see the module docstring);
    ``cluster`` (default: ``RVLM_CLUSTER``, else ask the server) forces the answer. Raises
    :class:`RvlmError` naming the (redacted) URL when it cannot connect.
    """
    target = resolve_url(url)
    logging.getLogger(__name__).debug("connecting to %s", redact(target))
    kwargs = client_kwargs(protocol)
    try:
        client = redis.Redis.from_url(target, **kwargs)
    except (ValueError, TypeError) as exc:
        raise bad_url(target, exc) from None
    want = cluster_wanted(cluster)
    if check or want is not False:
        try:
            client.ping()
        except redis.AuthenticationError as exc:
            raise RvlmError(f"Redis at {redact(target)} refused the credentials: "
                            f"{scrub(str(exc), target)}") from None
        except redis.RedisError as exc:
            raise RvlmError(f"cannot reach Redis at {redact(target)}: "
                            f"{scrub(str(exc), target)}") from None
        except ValueError as exc:  # some URL problems only show when connecting
            raise bad_url(target, exc) from None
    if want is False:
        return client
    enabled = cluster_enabled(client)
    if want and not enabled:
        client.close()
        raise not_a_cluster(target)
    if not enabled:
        return client
    client.close()
    return _cluster_client(target, kwargs)


def _cluster_client(target: str, kwargs: dict[str, Any]) -> redis.Redis:
    from redis.cluster import RedisCluster
    from redis.exceptions import RedisClusterException

    try:
        cluster = RedisCluster.from_url(target, **kwargs)
    except (RedisClusterException, redis.RedisError, ValueError) as exc:
        raise RvlmError(f"cannot use the Redis Cluster at {redact(target)}: "
                        f"{scrub(str(exc), target)}") from None
    # RedisCluster answers every command rvlm sends outside wire.execute (by key, or on every
    # primary through routing.primaries); it is no redis.Redis subclass, hence the cast
    return cast(redis.Redis, cluster)


def list_indexes(client: redis.Redis) -> list[str]:
    """Every index name on the server (FT._LIST), sorted; on a cluster, on every primary."""
    names: set[str] = set()
    for _name, node in routing.primaries(client):
        try:
            reply = node.execute_command("FT._LIST")
        except redis.ResponseError as exc:
            raise RvlmError(f"the server has no Search module (FT._LIST failed: {exc})"
                            ) from None
        names.update(to_str(n) for n in to_list(reply))
    return sorted(names)


def read_index(client: redis.Redis, name: str) -> IndexInfo:
    """The live index ``name`` (or an alias of it) as an :class:`IndexInfo`.

    Raises :class:`RvlmError` ("no index named ...") when it does not exist.
    """
    try:
        reply = client.execute_command("FT.INFO", name)
    except redis.ResponseError as exc:
        text = str(exc).lower()
        if "unknown index" in text or "no such index" in text or "not found" in text:
            raise RvlmError(f"no index named {name!r} on this server") from None
        raise RvlmError(f"FT.INFO {name} failed: {exc}") from None
    return parse_ft_info(reply)


def other_indexes(client: redis.Redis, exclude: Sequence[str]) -> dict[str, IndexSchema]:
    """Every index's schema but those named in ``exclude`` (those that vanish while being
    read are left out)."""
    out = {}
    for name in list_indexes(client):
        if name in exclude:
            continue
        try:
            out[name] = read_index(client, name).schema
        except RvlmError:
            continue
    return out


def index_exists(client: redis.Redis, name: str) -> bool:
    """True when ``name`` is an index or an alias."""
    try:
        client.execute_command("FT.INFO", name)
    except redis.ResponseError:
        return False
    return True


def indexing_progress(client: redis.Redis, name: str) -> tuple[bool, float]:
    """``(indexing, percent_indexed)`` of index ``name`` from FT.INFO, without parsing the
    schema (what a wait loop polls). A percentage the server does not report counts as 1.0.
    Raises :class:`RvlmError` like :func:`read_index` when the index does not exist."""
    try:
        reply = client.execute_command("FT.INFO", name)
    except redis.ResponseError as exc:
        text = str(exc).lower()
        if "unknown index" in text or "no such index" in text or "not found" in text:
            raise RvlmError(f"no index named {name!r} on this server") from None
        raise RvlmError(f"FT.INFO {name} failed: {exc}") from None
    info = to_map(reply)
    pct = to_float(info.get("percent_indexed"), 1.0)
    return bool(to_int(info.get("indexing"))), 1.0 if pct != pct else pct  # NaN: unknown


#: The indexing wait polls quickly at first (a small or fast index is often done within a
#: few milliseconds), then less often: every 50 ms near the end, up to every 2 s while the
#: end is far (FT.INFO during a build holds Redis's main thread for milliseconds).
POLL_FIRST, POLL_MAX, POLL_FAR = 0.002, 0.05, 2.0


def next_poll(interval: float, before: float, done: float, elapsed: float, *,
              low: float, high: float) -> float:
    """Seconds until the next indexing poll, after one ``interval`` ago that saw fraction
    ``before`` (0-1) indexed and one ``elapsed`` seconds later that saw ``done``: half the
    remaining time estimated from that rate, at least ``low``, and at most ``high`` and one and
    a half ``interval`` (unknown rate: just that growth). Once ``done`` reaches 1, ``low``."""
    grown = min(high, interval * 1.5)
    if done >= 1.0:
        return min(grown, low)
    rate = (done - before) / elapsed if elapsed > 0 else 0.0
    if rate <= 0:
        return grown
    return min(grown, max(low, 0.5 * (1.0 - done) / rate))


def wait_indexed(client: redis.Redis, name: str, timeout: float, *,
                 progress: Callable[[int], None] | None = None, hint: str = "",
                 first: float = POLL_FIRST, low: float = POLL_MAX, high: float = POLL_FAR,
                 stop: threading.Event | None = None) -> None:
    """Poll FT.INFO until index ``name`` finished indexing: after ``first`` (2 ms), then at
    intervals growing by half (the server is asked at most about 25 times in the first
    second), at most half the remaining time estimated from the indexing rate (see
    :func:`next_poll`), between ``low`` (50 ms) and ``high`` (2 s), so the user waits at most
    about ``low`` past the end of a steady build.

    ``progress(percent)`` is called with each poll's percentage (0-100). After ``timeout``
    seconds raises :class:`~rvlm.core.errors.MigrationFailed` naming the index and how far
    it got, followed by ``hint`` (what the user can do) when given; as soon as ``stop`` is set
    (the caller gave up), raises it saying so.
    """
    deadline = time.monotonic() + timeout
    interval, before, at = first / 1.5, 0.0, time.monotonic()
    while True:
        indexing, pct = indexing_progress(client, name)
        now = time.monotonic()
        if progress is not None:
            progress(int(pct * 100))
        if not indexing and pct >= 1.0:
            return
        if now > deadline:
            raise MigrationFailed(f"index {name!r} still indexing ({pct:.0%}) after "
                                  f"{timeout:.0f}s" + (f"; {hint}" if hint else ""))
        interval = next_poll(interval, before, pct, now - at, low=low, high=high)
        before, at = pct, now
        pause = min(interval, max(0.0, deadline - now) + low)
        if stop is None:
            time.sleep(pause)
        elif stop.wait(pause):
            raise MigrationFailed(f"stopped waiting for index {name!r} ({pct:.0%} indexed)")
