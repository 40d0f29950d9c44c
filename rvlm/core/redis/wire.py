"""A lean pipeline for the executor's hot path: many commands, one write, one read loop.

``redis.Redis.pipeline()`` spends about 15 microseconds of Python per command (queueing,
packing in Python, per-reply bookkeeping), which is three times what the server needs for an
``HMGET`` or an ``HSET`` of a small vector. :func:`execute` sends the same commands over the
same pooled connection (same URL, TLS, auth, timeouts, RESP2 or RESP3) but packs them with
``hiredis.pack_command`` into one buffer and reads the replies straight from the connection's
parser. Semantics are those of ``pipe.execute(raise_on_error=False)`` without a transaction:
replies in command order, an error reply is returned as a :class:`redis.ResponseError`
instance in its place, and every reply is read before returning so the connection never
desynchronises. A connection or timeout error disconnects the connection and propagates (no
retry: the caller decides; the executor's batches are idempotent on resume).

Arguments must be ``bytes``, ``str``, ``int`` or ``float`` (what Redis accepts on the wire).
A client that is not a sync ``redis.Redis`` (the async bridge of :mod:`rvlm.aio`) is served
through its own ``pipeline()``.

On a Redis Cluster client, :func:`execute` routes: one such pipeline per primary, side by side,
redirections followed (:mod:`rvlm.core.redis.routing`); :func:`send` is the one-connection
part. On a client with a :class:`~rvlm.core.redis.durability.ReplicaWait` installed, a
pipeline with a write in it ends with ``WAIT`` on each node (:mod:`rvlm.core.redis.durability`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import redis

from rvlm.core.redis import durability, routing

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # hiredis comes with redis[hiredis], a dependency; fall back to redis-py's packer
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - exercised only without hiredis
    _hiredis_pack = None

#: Commands per socket write; bounds the packed buffer for very large batches.
CHUNK = 4096

Command = Sequence[Any]


def _pack(conn: Any, commands: Sequence[Command]) -> list[bytes]:
    if _hiredis_pack is not None:
        pack = _hiredis_pack
        return [b"".join([pack(c if type(c) is tuple else tuple(c)) for c in commands])]
    packed: list[bytes] = conn.pack_commands(commands)
    return packed


class Packed(list):
    """Commands (argument tuples) whose RESP bytes were made ahead: ``packed[i]`` is command
    ``i`` on the wire. :func:`send` writes those bytes instead of packing each command again;
    every other path (a cluster's routing, a replica ``WAIT`` appended, the async bridge)
    takes the commands themselves."""

    def __init__(self, commands: list[tuple[Any, ...]], packed: list[bytes]) -> None:
        super().__init__(commands)
        self.packed = packed


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def around_key(name: bytes, tail: Sequence[bytes]) -> tuple[bytes, bytes]:
    """The RESP bytes of ``(name, key, *tail)`` before and after the key's length and bytes:
    ``head + b"$%d\\r\\n" % len(key) + key + rest`` is that command on the wire (all of
    them bytes), in a fraction of ``hiredis.pack_command``'s time."""
    return (b"*%d\r\n" % (2 + len(tail)) + _bulk(name),
            b"\r\n" + b"".join(map(_bulk, tail)))


def same_tail(name: bytes, keys: Sequence[bytes], tail: Sequence[bytes]) -> list[Any]:
    """The commands ``(name, key, *tail)`` for each of ``keys`` (e.g. ``HMGET key f1 f2``),
    as a :class:`Packed` list when every argument is bytes (:func:`around_key`:
    ``hiredis.pack_command`` takes 3-5 times as long for an ``HMGET`` of three names)."""
    commands = [(name, k, *tail) for k in keys]
    if type(name) is not bytes or not all(type(a) is bytes for a in tail) \
            or not all(type(k) is bytes for k in keys):
        return commands
    head, rest = around_key(name, tail)
    return Packed(commands, [head + b"$%d\r\n" % len(k) + k + rest for k in keys])


def _get_connection(client: redis.Redis) -> Any:
    pool = client.connection_pool
    try:
        return pool.get_connection()
    except TypeError:  # redis-py 5.0 requires a command name
        return pool.get_connection("PIPELINE")


def _reader(conn: Any) -> Any:
    """The fastest way to read one reply from ``conn``: its parser's ``read_response`` (error
    replies come back as exception instances, push messages are handled by the parser), or,
    for a connection without one, its own ``read_response`` (which raises error replies)."""
    parser = getattr(conn, "_parser", None)
    read = getattr(parser, "read_response", None)
    return read if callable(read) else conn.read_response


def _read_hiredis(conn: Any, count: int, append: Callable[[Any], None]) -> bool:
    """Read ``count`` replies straight from the connection's hiredis reader (what its
    ``read_response`` does, without a Python call per reply); False, having read nothing,
    when the connection has no hiredis parser. Error replies are appended as exception
    instances; a connection error (or one nested in a reply) is raised; a RESP3 push message
    goes to the parser's push handler, as ``read_response`` does."""
    parser: Any = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    fill = getattr(parser, "read_from_socket", None)
    # the "not enough data yet" sentinel redis-py gives its hiredis reader
    pending = getattr(sys.modules.get(type(parser).__module__), "NOT_ENOUGH_DATA", None)
    if reader is None or pending is None or not callable(fill) \
            or type(reader).__name__ != "Reader":
        return False
    gets = reader.gets
    push = getattr(parser, "_hiredis_PushNotificationType", None)
    got = 0
    while got < count:
        r = gets()
        if r is pending:
            fill()
            continue
        if isinstance(r, Exception):
            if isinstance(r, redis.ConnectionError):
                raise r
        elif push is not None and type(r) is push:
            parser.handle_push_response(r)
            continue
        elif type(r) is list and r and isinstance(r[0], redis.ConnectionError):
            raise r[0]
        append(r)
        got += 1
    return True


def execute(client: Any, commands: Sequence[Command]) -> list[Any]:
    """Send ``commands`` (argument tuples, e.g. ``(b"HMGET", key, b"f")``) and return their
    replies in order; error replies are returned as ``ResponseError`` instances. On a cluster
    client, each command goes to the primary owning its key (:func:`routing.route`)."""
    if not commands:
        return []
    wait = durability.wait_of(client)
    nodes = routing.node_map(client)
    if nodes is not None:
        if wait is not None and not durability.writes(commands):
            wait = None
        return routing.route(nodes, commands, send, wait)
    # one server: whether it has replicas is known after the first call (usually none)
    extra = wait.command("", client) if wait is not None else None
    if extra is None or not durability.writes(commands):
        return send(client, commands)
    assert wait is not None
    replies = send(client, [*commands, extra])
    wait.check("", extra, replies.pop())
    return replies


def send(client: Any, commands: Sequence[Command]) -> list[Any]:
    """:func:`execute` on the one server (or node) ``client`` talks to: one pipeline on one
    pooled connection."""
    if not commands:
        return []
    if not isinstance(client, redis.Redis):  # e.g. the async bridge: its own pipeline
        return _via_pipeline(client, commands)
    conn = _get_connection(client)
    replies: list[Any] = []
    append = replies.append
    made = commands.packed if type(commands) is Packed else None
    try:
        for start in range(0, len(commands), CHUNK):
            part = commands[start:start + CHUNK]
            conn.send_packed_command(_pack(conn, part) if made is None
                                     else [b"".join(made[start:start + CHUNK])])
            if _read_hiredis(conn, len(part), append):
                continue
            read = _reader(conn)
            for _ in range(len(part)):
                try:
                    append(read())
                except redis.ResponseError as exc:
                    append(exc)
    except OSError as exc:  # raw socket errors (timeouts included) from the parser
        conn.disconnect()
        raise redis.ConnectionError(f"error while talking to Redis: {exc}") from exc
    except BaseException:
        conn.disconnect()
        raise
    finally:
        client.connection_pool.release(conn)
    return replies


def _via_pipeline(client: Any, commands: Sequence[Command]) -> list[Any]:
    """The same through ``client.pipeline()``, for clients that are not a sync
    ``redis.Redis`` (replies then pass through redis-py's response callbacks)."""
    pipe = client.pipeline(transaction=False)
    for c in commands:
        pipe.execute_command(*c)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    return replies


def first_error(replies: Sequence[Any]) -> Exception | None:
    """The first error reply in ``replies``, or None."""
    for r in replies:
        if isinstance(r, Exception):
            return r
    return None


def wrong_type(error: Exception) -> bool:
    """Whether an error reply says the key holds another type (Redis's ``WRONGTYPE``, or
    RedisJSON's "Existing key has wrong Redis type")."""
    return "WRONGTYPE" in str(error).upper() or "wrong" in str(error).lower()


def raise_first(replies: Sequence[Any]) -> None:
    """Raise the first error reply in ``replies``, if there is one."""
    err = first_error(replies)
    if err is not None:
        raise err


class Batch:
    """Commands collected like a non-transactional ``client.pipeline()`` (the methods the
    executor uses: ``execute_command``, ``hset(key, mapping=...)``, ``hdel``, ``exists``,
    ``pttl``, ``delete``) and sent by :meth:`execute` through :func:`execute`.

    Replies are raw (no redis-py response callbacks): integers, bytes, lists, ``b"OK"``.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.commands: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return len(self.commands)

    def execute_command(self, *args: Any) -> Batch:
        self.commands.append(args)
        return self

    def hset(self, key: bytes, mapping: Any) -> Batch:
        args: list[Any] = [b"HSET", key]
        for name, value in mapping.items():
            args.append(name)
            args.append(value)
        self.commands.append(tuple(args))
        return self

    def hdel(self, key: bytes, *names: Any) -> Batch:
        self.commands.append((b"HDEL", key, *names))
        return self

    def exists(self, *keys: bytes) -> Batch:
        self.commands.append((b"EXISTS", *keys))
        return self

    def pttl(self, key: bytes) -> Batch:
        self.commands.append((b"PTTL", key))
        return self

    def delete(self, *keys: bytes) -> Batch:
        self.commands.append((b"DEL", *keys))
        return self

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send every command; replies in order. With ``raise_on_error`` the first error
        reply is raised (after all replies were read), else returned in its place."""
        commands, self.commands = self.commands, []
        replies = execute(self.client, commands)
        if raise_on_error:
            err = first_error(replies)
            if err is not None:
                raise err
        return replies


__all__ = ["CHUNK", "Batch", "Packed", "around_key", "execute", "first_error", "raise_first",
           "same_tail", "send", "wrong_type"]
