"""``AsyncMigrationPlanner`` and ``AsyncMigrationExecutor``: one migration, on ``redis.asyncio``.

How it works, precisely:

* Every Redis command of a plan or an apply (FT.INFO, key enumeration, batch reads, pipelined
  writes, renames, FT.DROPINDEX/FT.CREATE, index polling, validation, the lock and its lease)
  is sent by a ``redis.asyncio`` client on *the caller's event loop*.
* The control flow is the sync planner's and executor's own code (the same plugin host, the
  same journal, backup, key file and lock modules), run in a worker thread that talks to Redis
  through :class:`AsyncBridge`: each command or pipeline is handed to the event loop with
  ``asyncio.run_coroutine_threadsafe`` and the thread waits for its reply. Plans, document
  bytes, backups, journals and reports are therefore identical to the sync path's, and crash
  safety and resume are the same code.
* The event loop is never blocked: file I/O (backup fsync, journal, key file), the plugins'
  ``transform_documents`` (numpy) and YAML work run in the worker thread.
* Not on the event loop: with ``num_workers > 1`` the transform forks worker processes, which
  use their own sync clients (as the sync executor does); and rollback runs the sync rollback
  in a thread (:meth:`AsyncMigrationExecutor.rollback`).
* A Redis Cluster (detected from the URL, or a ``redis.asyncio.cluster.RedisCluster`` passed
  in): single commands go through the async cluster client; pipelined document I/O is routed
  per primary (:mod:`rvlm.core.redis.routing`) over one ``redis.asyncio.Redis`` per node, all on
  the same loop (:meth:`AsyncBridge.node_map`); so are transactions (MULTI/EXEC, to the primary
  owning their slot: :class:`_ClusterTransaction` says why not redis-py's).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from rvlm.core.migrate.online.options import OnlineOptions
    from rvlm.core.migrate.plan import Plan
    from rvlm.core.migrate.report import MigrationReport
    from rvlm.core.schema.model import IndexSchema
    from rvlm.core.schema.patch import SchemaPatch

T = TypeVar("T")


class AsyncBridge:
    """A sync-looking client whose every command runs on a ``redis.asyncio`` client's loop.

    Only for use from a thread other than the loop's thread (the loop would wait on itself).
    Supports what rvlm's core uses: any command method (``execute_command``, ``get``, ``set``,
    ``eval``, ``info``, ...) and ``pipeline()`` (queue, then ``execute``).
    """

    def __init__(self, client: aioredis.Redis, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop
        self._nodes: _AsyncClusterNodes | None = None

    def node_map(self) -> _AsyncClusterNodes | None:
        """The routing view of an async Redis Cluster client (None for one server): see
        :class:`rvlm.core.redis.routing.NodeMap`."""
        if self._nodes is None and _is_async_cluster(self._client):
            self._nodes = _AsyncClusterNodes(self)
        return self._nodes

    async def aclose_nodes(self) -> None:
        """Close the per-node clients :meth:`node_map` opened (on the loop)."""
        if self._nodes is not None:
            await self._nodes.aclose()

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` on the loop and wait for it (from a worker thread)."""
        if _running_loop() is self._loop:
            raise RuntimeError("AsyncBridge used from its own event loop thread")

        async def wrap() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result()

    def pipeline(self, transaction: bool = True,
                 shard_hint: Any = None) -> _BridgePipeline | _ClusterTransaction:
        if transaction and _is_async_cluster(self._client):
            return _ClusterTransaction(self)
        return _BridgePipeline(self, self._client.pipeline(transaction=transaction,
                                                            shard_hint=shard_hint))

    def close(self) -> None:
        """No-op: the async client belongs to its creator."""

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                return self.run(result)
            return result

        return call


def _is_async_cluster(client: Any) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, RedisCluster)


#: Connection settings a per-node client takes over from the async cluster client.
_NODE_KWARGS = ("username", "password", "credential_provider", "decode_responses",
                "socket_timeout", "socket_connect_timeout", "protocol", "encoding",
                "encoding_errors", "client_name")


class _AsyncClusterNodes:
    """:class:`rvlm.core.redis.routing.NodeMap` of an async ``RedisCluster`` behind a bridge:
    the slot table is the async client's; each node is served by its own ``redis.asyncio``
    client (same credentials, TLS and protocol) wrapped in a bridge on the same loop."""

    def __init__(self, bridge: AsyncBridge) -> None:
        self.bridge = bridge
        self.cluster: Any = bridge._client
        self.clients: dict[str, AsyncBridge] = {}
        self.raw: list[Any] = []
        self.pool: Any = None

    def owner(self, slot: int) -> str:
        return str(self.cluster.nodes_manager.get_node_from_slot(slot).name)

    def node_client(self, name: str) -> AsyncBridge:
        got = self.clients.get(name)
        if got is not None:
            return got
        import redis.asyncio as aioredis

        node = self.cluster.get_node(node_name=name)
        if node is None:
            self.refresh()
            node = self.cluster.get_node(node_name=name)
            if node is None:
                import redis

                raise redis.ConnectionError(f"cluster node {name} is unknown")
        kw = self.cluster.connection_kwargs
        kwargs = {k: kw[k] for k in _NODE_KWARGS if k in kw}
        kwargs.update({k: v for k, v in kw.items() if k.startswith("ssl_")})
        if "SSL" in getattr(kw.get("connection_class"), "__name__", ""):
            kwargs["ssl"] = True
        raw = aioredis.Redis(host=node.host, port=node.port, **kwargs)
        self.raw.append(raw)
        got = self.clients[name] = AsyncBridge(raw, self.bridge._loop)
        return got

    def moved(self, error: Any) -> None:
        self.bridge.run(self.cluster.nodes_manager.move_slot(error))

    def refresh(self) -> None:
        self.bridge.run(self.cluster.nodes_manager.initialize())

    def primaries(self) -> list[tuple[str, Any]]:
        return [(str(n.name), self.node_client(str(n.name)))
                for n in self.cluster.get_primaries()]

    def submit(self, fn: Callable[[], list[Any]]) -> Any:
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rvlm-node")
        return self.pool.submit(fn)

    async def aclose(self) -> None:
        for raw in self.raw:
            with contextlib.suppress(Exception):
                await raw.aclose()
        self.raw.clear()
        self.clients.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=False)


class _BridgePipeline:
    """Queues commands on an async pipeline; ``execute`` runs it on the loop."""

    def __init__(self, bridge: AsyncBridge, pipe: Any) -> None:
        self._bridge = bridge
        self._pipe = pipe

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        result: list[Any] = self._bridge.run(self._pipe.execute(raise_on_error=raise_on_error))
        return result

    def __enter__(self) -> _BridgePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bridge.run(self._pipe.reset())

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._pipe, name)
        if not callable(attr):
            return attr

        def queue(*args: Any, **kwargs: Any) -> _BridgePipeline:
            attr(*args, **kwargs)
            return self

        return queue


class _ClusterTransaction:
    """``MULTI``/``EXEC`` on an async Redis Cluster, sent on the bridge's loop to the primary
    that owns the commands' slot, through that node's own ``redis.asyncio`` client.

    Not redis-py's ``redis.asyncio.cluster.ClusterPipeline(transaction=True)``: its
    ``TransactionStrategy.execute_command`` (redis-py 8.1 here; it came with the asyncio port
    of cluster MULTI/EXEC, redis/redis-py#3649; no upstream issue names this) runs every
    queued command under ``asyncio.run`` in a thread of its own. When the cluster client is
    due to re-initialize (after a connection error, or ``aclose()`` after ``reinitialize_steps``
    MOVED replies when that is not 0), that throw-away loop runs ``initialize()``: connections
    for CLUSTER SLOTS and COMMAND are opened on it and left in the nodes' free lists when it
    closes, and the next command on the real loop that takes one fails with "RuntimeError:
    Event loop is closed" (the async online copy's cut-over, ``FT.ALIASUPDATE`` in a
    transaction then ``FT.INFO``; the connection ownership of that strategy is also open
    upstream, redis/redis-py#4253). Here nothing runs off the loop:
    commands are recorded, their slot is read on the loop (the cluster client's command
    parser) and the transaction is sent like on one server; a MOVED/ASK/TRYAGAIN/CLUSTERDOWN
    reply refreshes the slot table and the transaction is sent again (at most 3 times).
    """

    ATTEMPTS = 3

    def __init__(self, bridge: AsyncBridge) -> None:
        self._bridge = bridge
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __len__(self) -> int:
        return len(self._calls)

    def __enter__(self) -> _ClusterTransaction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()

    def reset(self) -> None:
        self._calls.clear()

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        import redis

        calls, self._calls = self._calls, []
        if not calls:
            return []
        nodes = self._bridge.node_map()
        assert nodes is not None
        retry = (redis.exceptions.MovedError, redis.exceptions.AskError,
                 redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError)
        for attempt in range(self.ATTEMPTS):
            node = nodes.node_client(nodes.owner(self._slot(nodes, calls)))
            try:
                return node.run(_send_transaction(node._client, calls, raise_on_error))
            except retry:
                if attempt == self.ATTEMPTS - 1:
                    raise
                nodes.refresh()
        raise AssertionError("unreachable")  # pragma: no cover

    def _slot(self, nodes: _AsyncClusterNodes, calls: Sequence[tuple[str, tuple[Any, ...],
                                                                        dict[str, Any]]]) -> int:
        """The one slot of the transaction's keys (the cluster refuses more than one)."""
        from redis.exceptions import RedisClusterException

        from rvlm.core.redis.topology import slot_of

        recorder = _recorder(calls)
        slots: set[int] = set()
        parser = nodes.cluster.commands_parser
        for args, _options in recorder.command_stack:
            keys = self._bridge.run(parser.get_keys(*args)) if len(args) > 1 else None
            slots |= {slot_of(k) for k in keys or ()}
        if len(slots) != 1:
            raise RedisClusterException(
                "a transaction on a Redis Cluster needs keys of exactly one slot; "
                f"these commands have {len(slots)}: {[a[0] for a, _ in recorder.command_stack]}")
        return slots.pop()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("watch", "unwatch"):
            raise AttributeError(f"{type(self).__name__} does not support {name!r}")

        def queue(*args: Any, **kwargs: Any) -> _ClusterTransaction:
            self._calls.append((name, args, kwargs))
            return self

        return queue


def _recorder(calls: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> Any:
    """A ``redis.asyncio`` pipeline (never connected) with ``calls`` queued: its
    ``command_stack`` holds each command's arguments as redis-py packs them."""
    import redis.asyncio as aioredis

    pipe = aioredis.Redis().pipeline(transaction=True)
    for name, args, kwargs in calls:
        getattr(pipe, name)(*args, **kwargs)
    return pipe


async def _send_transaction(client: Any, calls: Sequence[tuple[str, tuple[Any, ...],
                                                               dict[str, Any]]],
                            raise_on_error: bool) -> list[Any]:
    pipe = client.pipeline(transaction=True)
    try:
        for name, args, kwargs in calls:
            getattr(pipe, name)(*args, **kwargs)
        result: list[Any] = await pipe.execute(raise_on_error=raise_on_error)
        return result
    finally:
        await pipe.reset()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def async_connect(url: str | None = None) -> aioredis.Redis:
    """A bytes ``redis.asyncio`` client for ``url`` (else ``REDIS_URL``, else localhost),
    honouring ``RVLM_PROTOCOL`` like the sync :func:`rvlm.core.redis.connection.connect`."""
    import redis.asyncio as aioredis

    from rvlm.core.errors import RvlmError
    from rvlm.core.redis.connection import client_kwargs, redact, resolve_url

    target = resolve_url(url)
    try:
        return aioredis.Redis.from_url(target, **client_kwargs())
    except ValueError as exc:
        raise RvlmError(f"bad Redis URL {redact(target)}: {exc}") from None


async def async_connect_cluster_aware(url: str | None = None) -> Any:
    """:func:`async_connect`, pinged; a ``redis.asyncio.cluster.RedisCluster`` (initialized)
    when the server is a Redis Cluster node (``INFO cluster``, or ``RVLM_CLUSTER``, as the sync
    :func:`rvlm.core.redis.connection.connect`)."""
    from redis.asyncio.cluster import RedisCluster
    from redis.exceptions import RedisClusterException

    from rvlm.core.errors import RvlmError
    from rvlm.core.redis.connection import (
        client_kwargs,
        cluster_wanted,
        not_a_cluster,
        redact,
        resolve_url,
    )
    from rvlm.core.redis.resp import to_int, to_map

    client = async_connect(url)
    await _ping(client, url)
    want = cluster_wanted()
    if want is False:
        return client
    info = to_map(await client.info("cluster"))
    enabled = bool(to_int(info.get("cluster_enabled", 0)))
    target = resolve_url(url)
    if want and not enabled:
        await client.aclose()
        raise not_a_cluster(target)
    if not enabled:
        return client
    await client.aclose()
    try:
        # reinitialize_steps=0: a MOVED reply updates that slot only. redis-py sends FT.*
        # commands to a random node (its policy table assumes the search coordinator); on a
        # cluster without it the server answers MOVED (the index name is a key), and with the
        # default of 5 every fifth one made redis-py call aclose() on the whole client
        # (redis/redis-py#4322 is about that path), dropping connections other commands on
        # the loop were using ("'NoneType' object has no attribute 'writelines'" was seen).
        # A connection error still re-initializes the client.
        cluster = RedisCluster.from_url(target, reinitialize_steps=0, **client_kwargs())
        await cluster.initialize()
    except (RedisClusterException, ValueError, OSError) as exc:
        raise RvlmError(f"cannot use the Redis Cluster at {redact(target)}: {exc}") from None
    return cluster


def url_of(client: Any) -> str | None:
    """A URL for the server a ``redis.asyncio`` client talks to (for the executor's sync
    connections: its start-up check and ``num_workers > 1``); None for a unix socket. For an
    async cluster client, the URL of one of its nodes."""
    from urllib.parse import quote

    if _is_async_cluster(client):
        node = client.get_default_node() or client.get_nodes()[0]
        kw = {**client.connection_kwargs, "host": node.host, "port": node.port}
        if "SSL" in getattr(kw.get("connection_class"), "__name__", ""):
            kw["ssl"] = True
    else:
        kw = client.connection_pool.connection_kwargs
    if "path" in kw or "host" not in kw:
        return None
    scheme = "rediss" if kw.get("ssl") or "ssl_cert_reqs" in kw else "redis"
    auth = ""
    if kw.get("password"):
        auth = f"{quote(str(kw.get('username') or ''))}:{quote(str(kw['password']))}@"
    elif kw.get("username"):
        auth = f"{quote(str(kw['username']))}@"
    return f"{scheme}://{auth}{kw['host']}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


async def _ping(client: aioredis.Redis, url: str | None) -> None:
    import redis

    from rvlm.core.errors import RvlmError
    from rvlm.core.redis.connection import redact, resolve_url

    try:
        await client.ping()
    except redis.AuthenticationError as exc:
        raise RvlmError(f"Redis at {redact(resolve_url(url))} refused the credentials: "
                        f"{exc}") from None
    except redis.RedisError as exc:
        raise RvlmError(f"cannot reach Redis at {redact(resolve_url(url))}: {exc}") from None


async def _in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func`` in a fresh thread (not the default executor, so a blocked pool cannot stall it)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        try:
            value = func(*args, **kwargs)
        except BaseException as exc:
            loop.call_soon_threadsafe(_set_exception, future, exc)
        else:
            loop.call_soon_threadsafe(_set_result, future, value)

    threading.Thread(target=target, name="rvlm-async-worker", daemon=True).start()
    return await future


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class _Session:
    """An async client (given or owned) and its bridge, closed on exit when owned."""

    def __init__(self, redis_url: str | None, client: aioredis.Redis | None) -> None:
        self.url = redis_url
        self.given = client
        self.client: Any = client
        self.bridge: AsyncBridge

    async def __aenter__(self) -> AsyncBridge:
        if self.client is None:
            self.client = await async_connect_cluster_aware(self.url)
        elif _is_async_cluster(self.client):
            await self.client.initialize()
        self.bridge = AsyncBridge(self.client, asyncio.get_running_loop())
        return self.bridge

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.bridge.aclose_nodes()
        if self.given is None and self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()


class AsyncMigrationPlanner:
    """:class:`rvlm.MigrationPlanner` with ``await``: the same plan, read over redis.asyncio."""

    def __init__(self, *, sample_size: int = 1000, allow_shared_keys: bool = False,
                 mode: str = "drop_recreate", alias: str | None = None,
                 drop_source: bool = True, min_recall: float | None = None,
                 recall_k: int = 10, key_sample_limit: int = 20,
                 target_prefix: str | None = None) -> None:
        self.sample_size = sample_size
        self.key_sample_limit = key_sample_limit
        self.allow_shared_keys = allow_shared_keys
        self.mode = mode
        self.alias = alias
        self.drop_source = drop_source
        self.min_recall = min_recall
        self.recall_k = recall_k
        self.target_prefix = target_prefix

    async def create_plan(
        self,
        index_name: str,
        *,
        redis_url: str | None = None,
        schema_patch_path: str | Path | None = None,
        target_schema_path: str | Path | None = None,
        schema_patch: Mapping[str, Any] | SchemaPatch | None = None,
        target_schema: Mapping[str, Any] | IndexSchema | None = None,
        redis_client: aioredis.Redis | None = None,
        plugins: Sequence[Any] = (),
    ) -> Plan:
        """Same arguments and result as :meth:`rvlm.MigrationPlanner.create_plan`;
        ``redis_client`` is a ``redis.asyncio.Redis`` (bytes responses)."""
        from rvlm.api import MigrationPlanner

        sync = MigrationPlanner(sample_size=self.sample_size,
                                allow_shared_keys=self.allow_shared_keys, mode=self.mode,
                                alias=self.alias, drop_source=self.drop_source,
                                min_recall=self.min_recall, recall_k=self.recall_k,
                                key_sample_limit=self.key_sample_limit,
                                target_prefix=self.target_prefix)
        # The input files are validated before the server is contacted (as the sync path).
        inputs = sync.inputs(schema_patch_path=schema_patch_path,
                             target_schema_path=target_schema_path, schema_patch=schema_patch,
                             target_schema=target_schema, plugins=plugins)
        async with _Session(redis_url, redis_client) as bridge:
            return await _in_thread(inputs.plan, bridge, index_name)


class AsyncMigrationExecutor:
    """:class:`rvlm.MigrationExecutor` with ``await``: same arguments, report and effects."""

    async def apply(
        self,
        plan: Plan,
        *,
        redis_url: str | None = None,
        backup_dir: str | Path,
        batch_size: int = 500,
        num_workers: int = 1,
        plugins: Sequence[Any] = (),
        progress_callback: Callable[[str, int, int], None] | None = None,
        accept_data_loss: bool = True,
        index_timeout: float = 600.0,
        redis_client: aioredis.Redis | None = None,
        min_recall: float | None = None,
        recall_queries: int | None = None,
        recall_k: int = 10,
        query_check_file: str | Path | None = None,
        rollback_below_recall: bool = False,
        online: OnlineOptions | None = None,
    ) -> MigrationReport:
        """Apply (or resume) ``plan``; see :meth:`rvlm.MigrationExecutor.apply` (the quality
        gate's options included).

        ``progress_callback(step, done, total)`` is called on the event loop thread.
        ``redis_client`` is an optional ``redis.asyncio.Redis`` (bytes responses). ``online``
        as in the sync API; an online copy's change capture (a pub/sub subscription, the
        notification setting) runs on a sync connection of its own in a thread, like worker
        processes, and its ``on_status`` callback is called from that worker thread.
        """
        from rvlm.api import MigrationExecutor, progress_adapter, quality_options

        # a bad query check file is refused before the server is contacted
        quality_options(query_check_file=query_check_file)

        loop = asyncio.get_running_loop()
        progress = None
        adapted = progress_adapter(progress_callback)
        if adapted is not None:
            cb = adapted

            def progress(step: str, done: int, total: int) -> None:
                loop.call_soon_threadsafe(cb, step, done, total)

        url = redis_url if redis_url is not None or redis_client is None else \
            url_of(redis_client)
        async with _Session(redis_url, redis_client) as bridge:
            # the sync executor's own code (run, checks, journal, backup, locks) in a worker
            # thread; only the client differs. ``url`` is still needed for worker processes.
            return await _in_thread(
                MigrationExecutor().apply, plan, redis_url=url, backup_dir=backup_dir,
                batch_size=batch_size, num_workers=num_workers,
                accept_data_loss=accept_data_loss, progress_callback=progress,
                plugins=plugins, index_timeout=index_timeout, redis_client=bridge,
                min_recall=min_recall, recall_queries=recall_queries, recall_k=recall_k,
                query_check_file=query_check_file, rollback_below_recall=rollback_below_recall,
                online=online)

    async def validate(self, plan: Plan | str | Path, *, redis_url: str | None = None,
                       backup_dir: str | Path | None = None, min_recall: float | None = None,
                       query_check_file: str | Path | None = None,
                       plugins: Sequence[Any] = ()) -> MigrationReport:
        """:func:`rvlm.validate` in a worker thread (sync client; the loop is not blocked),
        the quality gate's options included."""
        from rvlm.api import validate

        return await _in_thread(validate, plan, redis_url=redis_url, backup_dir=backup_dir,
                                min_recall=min_recall, query_check_file=query_check_file,
                                plugins=plugins)

    async def finalize(self, backup_dir: str | Path, *, redis_url: str | None = None,
                       online: OnlineOptions | None = None) -> MigrationReport:
        """:func:`rvlm.finalize` in a worker thread (sync client; the loop is not blocked)."""
        from rvlm.api import finalize

        return await _in_thread(finalize, backup_dir, redis_url=redis_url, online=online)

    async def rollback(self, backup_dir: str | Path, *, redis_url: str | None = None,
                       index_timeout: float = 600.0, index: str | None = None,
                       force: bool = False) -> MigrationReport:
        """:func:`rvlm.rollback` in a worker thread (sync client; the loop is not blocked);
        ``force`` as there (documents changed since the migration are restored too)."""
        from rvlm.api import rollback

        return await _in_thread(rollback, backup_dir, redis_url=redis_url,
                                index_timeout=index_timeout, index=index, force=force)


__all__ = ["AsyncBridge", "AsyncMigrationExecutor", "AsyncMigrationPlanner", "async_connect"]
