from __future__ import annotations

from rvlm.core.redis.capabilities import detect


def test_embedded_server_has_search_and_json(redis_client):
    caps = detect(redis_client)
    assert caps.search and caps.json
    redis_client.execute_command("FT.CREATE", "i", "ON", "HASH", "SCHEMA", "t", "TEXT")
    redis_client.hset("k", mapping={"t": "hello world"})
    assert redis_client.execute_command("FT.SEARCH", "i", "hello")
