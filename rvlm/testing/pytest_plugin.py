"""pytest fixtures for rvlm and for plugin authors (loaded through the ``pytest11`` entry point).

* ``redis_url`` (session): a real Redis with Search and JSON. ``REDIS_URL`` when set (so the
  suite also runs against Redis 8.x; refused when that server holds data, because tests flush
  it, unless ``RVLM_TEST_FLUSH_OK=1``); otherwise an embedded server on a free port, started
  once per session and stopped at the end.
* ``redis_client``: a bytes client on a clean database (FLUSHALL before the test).
* ``redis_cluster``, ``redis_cluster_replicas`` (session), ``cluster_client``,
  ``cluster_replicas_client``: a real Redis Cluster (3 primaries; 3 primaries + 3 replicas)
  started on first use; see :mod:`rvlm.testing.cluster`.
* ``rvlm_plugin``: register a plugin on the default host for the length of one test::

      def test_my_change(rvlm_plugin, redis_client):
          rvlm_plugin(MyPlugin())
          ...
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rvlm.testing.cluster import (  # noqa: F401  (fixtures, registered by being here)
    cluster_client,
    cluster_replicas_client,
    redis_cluster,
    redis_cluster_replicas,
)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis with the Search and JSON modules for this test session."""
    url = os.environ.get("REDIS_URL")
    if url:
        _refuse_a_server_with_data(url)
        yield url
        return
    from rvlm.embedded.server import EmbeddedServer, free_port

    directory = Path(tempfile.mkdtemp(prefix="rvlm-test-server-"))
    server = EmbeddedServer(port=free_port(), directory=directory)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        server.wipe()


FLUSH_OK_ENV = "RVLM_TEST_FLUSH_OK"


def _refuse_a_server_with_data(url: str) -> None:
    """Tests FLUSHALL their server: never do that to one that holds data by accident."""
    if os.environ.get(FLUSH_OK_ENV):
        return
    import redis

    from rvlm.core.redis.connection import redact

    client = redis.Redis.from_url(url)
    try:
        keyspace = client.info("keyspace")
    finally:
        client.close()
    if keyspace:
        pytest.exit(f"REDIS_URL={redact(url)} holds data ({', '.join(map(str, keyspace))}) and "
                    f"the tests flush every database; point REDIS_URL at a scratch server or "
                    f"set {FLUSH_OK_ENV}=1", returncode=2)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A ``redis.Redis`` (bytes) on a clean database; RESP2 or RESP3 per ``RVLM_PROTOCOL``
    (the client's default when unset), so a whole suite can run under either protocol."""
    import redis

    from rvlm.core.redis.connection import client_kwargs

    client = redis.Redis.from_url(redis_url, **client_kwargs())
    client.flushall()
    for name in client.execute_command("FT._LIST") or []:
        client.execute_command("FT.DROPINDEX", name)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def rvlm_plugin() -> Iterator[Callable[..., str]]:
    """Call with a plugin object (and optionally ``name=``) to register it for this test."""
    from rvlm.core.plugins.host import get_host

    host = get_host()
    names: list[str] = []

    def register(plugin: Any, name: str | None = None, version: str | None = None) -> str:
        got = host.register(plugin, name=name, version=version)
        names.append(got)
        return got

    try:
        yield register
    finally:
        for n in names:
            host.unregister(n)
