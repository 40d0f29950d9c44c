"""The embedded server's load-time arguments of the Search module (``search_args``): what the
online bench uses to start a server with ``BG_INDEX_SLEEP_GAP`` set, which RediSearch 2.10
refuses to change at run time."""

from __future__ import annotations

import pytest
import redis

from rvlm.core.redis.connection import client_kwargs
from rvlm.embedded.server import EmbeddedServer, free_port


def sleep_gap(client: redis.Redis) -> bytes:
    reply = client.execute_command("FT.CONFIG", "GET", "BG_INDEX_SLEEP_GAP")
    # RESP3: {name: value}; RESP2: [[name, value]]
    return reply[b"BG_INDEX_SLEEP_GAP"] if isinstance(reply, dict) else reply[0][1]


def test_search_args_reach_the_module_that_refuses_them_at_run_time(protocol, tmp_path,
                                                                    redis_client):
    assert sleep_gap(redis_client) == b"100"  # the module's default
    with pytest.raises(redis.ResponseError, match="Not modifiable at runtime"):
        redis_client.execute_command("FT.CONFIG", "SET", "BG_INDEX_SLEEP_GAP", "1")
    server = EmbeddedServer(port=free_port(), directory=tmp_path / "server",
                            search_args=("BG_INDEX_SLEEP_GAP", "1"))
    server.start()
    try:
        client = redis.Redis.from_url(server.url, **client_kwargs())
        assert sleep_gap(client) == b"1"
        client.execute_command("FT.CREATE", "i", "ON", "HASH", "SCHEMA", "t", "TEXT")
        client.hset("k", mapping={"t": "hello"})
        assert client.execute_command("FT.SEARCH", "i", "hello", "NOCONTENT")  # it serves
        client.close()
    finally:
        server.stop()
