"""pytest fixtures for rvlm and for plugin authors (loaded through the ``pytest11`` entry point).

* ``redis_url`` (session): a real Redis with Search and JSON. ``REDIS_URL`` when set (so the
  suite also runs against Redis 8.x); otherwise an embedded server on a free port, started once
  per session and stopped at the end.
* ``redis_client``: a bytes client on a clean database (FLUSHALL before the test).
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


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis with the Search and JSON modules for this test session."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from rvlm.core.server import EmbeddedServer, free_port

    directory = Path(tempfile.mkdtemp(prefix="rvlm-test-server-"))
    server = EmbeddedServer(port=free_port(), directory=directory)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        server.wipe()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A ``redis.Redis`` (bytes) on a clean database; RESP2 or RESP3 per ``RVLM_PROTOCOL``
    (the client's default when unset), so a whole suite can run under either protocol."""
    import redis

    kwargs: dict[str, Any] = {"decode_responses": False}
    if os.environ.get("RVLM_PROTOCOL"):
        kwargs["protocol"] = int(os.environ["RVLM_PROTOCOL"])
    client = redis.Redis.from_url(redis_url, **kwargs)
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
    from rvlm.core.plugins import get_host

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
