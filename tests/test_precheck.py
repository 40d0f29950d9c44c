"""The executor asks the server to accept the target schema before anything is dropped."""

from __future__ import annotations

import time

import pytest

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.planner import make_plan
from rvlm.core.schema.patch import patch_from_dict


def _wait(client, index):
    for _ in range(200):
        info = client.ft(index).info()
        if int(info.get("indexing", info.get(b"indexing", 0)) or 0) == 0:
            return
        time.sleep(0.02)


def test_a_target_the_server_refuses_is_caught_before_the_drop(redis_client, redis_url, tmp_path):
    r = redis_client
    r.execute_command("FT.CREATE", "items", "ON", "HASH", "PREFIX", "1", "item:", "SCHEMA",
                      "n", "NUMERIC", "title", "TEXT")
    for i in range(20):
        r.hset(f"item:{i}", mapping={"n": i, "title": f"hello {i}"})
    _wait(r, "items")
    # "SORTABLE" after a NUMERIC field is read by the server as that field's option.
    patch = patch_from_dict({"version": 1, "changes": {
        "rename_fields": [{"old_name": "title", "new_name": "SORTABLE"}]}}, "p.yaml")
    plan = make_plan(r, "items", patch=patch)
    assert plan.supported
    with pytest.raises(RvlmError, match="refuses the target schema"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "b")
    # Nothing changed: the index still answers, documents keep their field names.
    assert r.execute_command("FT.SEARCH", "items", "hello", "NOCONTENT", "LIMIT", "0", "0")
    assert r.hget("item:3", "title") == b"hello 3"
    assert r.hget("item:3", "SORTABLE") is None
    assert not [n for n in r.execute_command("FT._LIST") if b"precheck" in n]
