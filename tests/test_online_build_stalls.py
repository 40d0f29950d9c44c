"""The target's background HNSW build and the other clients: what an online plan says about
the search module's BG_INDEX_SLEEP_GAP, read from the real server (RESP2 and RESP3)."""

from __future__ import annotations

import redis
from online_helpers import RENAME_QUANTIZE, copy_plan
from test_apply_helpers import make_hash_index

from rvlm.core.redis.capabilities import search_setting
from rvlm.core.redis.connection import client_kwargs
from rvlm.embedded.server import EmbeddedServer, free_port

TO_HNSW = {**RENAME_QUANTIZE,
           "update_fields": [{"name": "v", "attrs": {"datatype": "float16",
                                                     "algorithm": "hnsw"}}]}


def stall_warnings(plan) -> list[str]:
    return [w for w in plan.all_warnings() if "BG_INDEX_SLEEP_GAP" in w]


def test_an_hnsw_target_plan_names_the_build_gap_and_the_setting_to_change(
        protocol, redis_client):
    make_hash_index(redis_client, n=50)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    gap = search_setting(redis_client, "BG_INDEX_SLEEP_GAP")
    assert gap == "100"  # the module's default on the embedded server
    hnsw = copy_plan(redis_client, TO_HNSW)
    assert hnsw.supported, hnsw.blocked_reasons
    [said] = stall_warnings(hnsw)
    assert "lets other clients in only every 100 documents (BG_INDEX_SLEEP_GAP 100)" in said
    assert "BG_INDEX_SLEEP_GAP 1 (Redis 8: search-bg-index-sleep-gap 1" in said
    assert "rvlm does not change it" in said
    # a FLAT target is not built into a graph: nothing to say
    flat = copy_plan(redis_client)
    assert flat.supported, flat.blocked_reasons
    assert stall_warnings(flat) == []
    # and planning changed no server setting
    assert search_setting(redis_client, "BG_INDEX_SLEEP_GAP") == "100"


def test_a_server_started_with_a_small_gap_gets_no_build_warning(protocol, tmp_path):
    server = EmbeddedServer(port=free_port(), directory=tmp_path / "server",
                            search_args=("BG_INDEX_SLEEP_GAP", "1"))
    server.start()
    try:
        client = redis.Redis.from_url(server.url, **client_kwargs())
        assert search_setting(client, "BG_INDEX_SLEEP_GAP") == "1"
        assert search_setting(client, "NO_SUCH_SETTING") is None
        make_hash_index(client, n=50)
        client.execute_command("FT.ALIASADD", "live", "idx")
        plan = copy_plan(client, TO_HNSW)
        assert plan.supported, plan.blocked_reasons
        assert stall_warnings(plan) == []
        client.close()
    finally:
        server.stop()
