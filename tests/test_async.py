"""The shared sync/async matrix: the same migrations through MigrationPlanner/Executor and
AsyncMigrationPlanner/Executor give identical plans (YAML), documents (bytes) and results."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rvlm import (
    AsyncMigrationExecutor,
    AsyncMigrationPlanner,
    MigrationExecutor,
    MigrationPlanner,
    hookimpl,
)
from rvlm.core.plugins.checks import CheckResult

N = 40


def _vec(i: int) -> bytes:
    return np.random.default_rng(i).random(4, dtype=np.float32).tobytes()


def setup_hash(client: Any) -> None:
    client.execute_command(
        "FT.CREATE", "docs", "ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA", "title", "TEXT",
        "tag", "TAG", "embedding", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", "4",
        "DISTANCE_METRIC", "COSINE")
    for i in range(N):
        client.hset(f"doc:{i}", mapping={"title": f"t{i}", "tag": "a,b", "embedding": _vec(i)})


def setup_json(client: Any) -> None:
    client.execute_command(
        "FT.CREATE", "jdocs", "ON", "JSON", "PREFIX", "1", "j:", "SCHEMA", "$.title", "AS",
        "title", "TEXT", "$.n", "AS", "n", "NUMERIC")
    for i in range(N):
        client.execute_command("JSON.SET", f"j:{i}", "$", json.dumps({"title": f"t{i}", "n": i}))


def _wait(client: Any, name: str) -> None:
    import time

    for _ in range(200):
        info = client.execute_command("FT.INFO", name)
        flat = dict(zip(info[::2], info[1::2], strict=False)) if isinstance(info, list) else info
        if str(flat.get(b"indexing", flat.get("indexing", 0))) in ("0", "b'0'"):
            return
        time.sleep(0.02)


CASES: dict[str, tuple[Any, str, dict[str, Any]]] = {
    "hash-rename-quantize": (setup_hash, "docs", {"version": 1, "changes": {
        "rename_fields": [{"old_name": "title", "new_name": "headline"}],
        "update_fields": [{"name": "embedding", "attrs": {"datatype": "float16"}}]}}),
    "hash-prefix-index-rename": (setup_hash, "docs", {"version": 1, "changes": {
        "remove_fields": ["tag"], "index": {"name": "docs_v2", "prefix": "d2:"}}}),
    "json-add-update": (setup_json, "jdocs", {"version": 1, "changes": {
        "add_fields": [{"name": "kind", "type": "tag", "path": "$.kind"}],
        "update_fields": [{"name": "n", "attrs": {"sortable": True}}]}}),
}


def snapshot(client: Any) -> dict[bytes, Any]:
    """Every key's type and exact value bytes."""
    out: dict[bytes, Any] = {}
    for key in sorted(client.keys("*")):
        if key.startswith(b"rvlm:"):
            continue
        kind = client.type(key)
        if kind == b"hash":
            out[key] = sorted(client.hgetall(key).items())
        elif kind == b"ReJSON-RL":
            out[key] = client.execute_command("JSON.GET", key)
        else:
            out[key] = kind
    return out


def reset(client: Any) -> None:
    for name in client.execute_command("FT._LIST") or []:
        client.execute_command("FT.DROPINDEX", name)
    client.flushall()


@pytest.mark.parametrize("case", list(CASES))
def test_sync_and_async_are_identical(case: str, redis_client: Any, redis_url: str,
                                      tmp_path: Path) -> None:
    setup, index, patch = CASES[case]
    setup(redis_client)
    _wait(redis_client, index)
    plan = MigrationPlanner().create_plan(index, redis_url=redis_url, schema_patch=patch)
    aplan = asyncio.run(AsyncMigrationPlanner().create_plan(index, redis_url=redis_url,
                                                            schema_patch=patch))
    assert plan.supported, plan.blocked_reasons
    assert aplan.to_yaml() == plan.to_yaml()
    report = MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=tmp_path / "s",
                                       batch_size=7)
    assert report.result == "succeeded", (report.error, report.validation.errors)
    after_sync = snapshot(redis_client)

    reset(redis_client)
    setup(redis_client)
    _wait(redis_client, index)
    ticks: list[tuple[str, int, int]] = []

    async def run() -> Any:
        return await AsyncMigrationExecutor().apply(
            aplan, redis_url=redis_url, backup_dir=tmp_path / "a", batch_size=7,
            progress_callback=lambda *a: ticks.append(a))

    areport = asyncio.run(run())
    assert areport.result == report.result == "succeeded", areport.error
    assert snapshot(redis_client) == after_sync
    assert areport.documents == report.documents
    assert areport.documents_rewritten == report.documents_rewritten
    assert areport.batches == report.batches
    assert areport.validation.to_dict() == report.validation.to_dict()
    assert ticks, "the progress callback was called"
    # identical backups: the same records, byte for byte, and batches of the same sizes. The
    # order of the keys is SCAN's, which depends on the server's hash table (an incremental
    # rehash in progress or not), not on the executor: two runs over the same keys may list
    # them in different orders, so the records are compared by key, as a user restoring one
    # document would find it
    from rvlm.core.storage.backup.reader import BackupReader

    sb = list(BackupReader(tmp_path / "s", plan.fingerprint).batches())
    ab = list(BackupReader(tmp_path / "a", plan.fingerprint).batches())
    assert [(b, len(r)) for b, r in sb] == [(b, len(r)) for b, r in ab]
    srecords = sorted((r for _, records in sb for r in records), key=lambda r: r.key)
    arecords = sorted((r for _, records in ab for r in records), key=lambda r: r.key)
    assert srecords == arecords
    assert len({r.key for r in srecords}) == len(srecords) == report.documents_rewritten


class Counter:
    """A plugin registered for one run: counts its hook calls and adds a check."""

    name = "counter"

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def pre_drop(self, plan: Any, context: Any) -> list[str]:
        self.calls.append("pre_drop")
        return []

    @hookimpl
    def validate(self, plan: Any, context: Any) -> list[CheckResult]:
        self.calls.append("validate")
        return [CheckResult(name="counter", passed=True, details="seen")]


def test_async_runs_one_run_plugin(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    setup_hash(redis_client)
    _wait(redis_client, "docs")
    patch = {"version": 1, "changes": {"remove_fields": ["tag"]}}
    plugin = Counter()

    async def run() -> Any:
        plan = await AsyncMigrationPlanner().create_plan("docs", redis_url=redis_url,
                                                         schema_patch=patch)
        return await AsyncMigrationExecutor().apply(plan, redis_url=redis_url,
                                                    backup_dir=tmp_path / "b",
                                                    plugins=[plugin])

    report = asyncio.run(run())
    assert report.result == "succeeded"
    assert plugin.calls == ["pre_drop", "validate"]
    assert any(c.name == "counter" for c in report.validation.checks)


def test_async_given_client_and_loop_not_blocked(redis_client: Any, redis_url: str,
                                                 tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    setup_hash(redis_client)
    _wait(redis_client, "docs")
    patch = {"version": 1, "changes": {"update_fields": [
        {"name": "embedding", "attrs": {"datatype": "float16"}}]}}

    async def run() -> tuple[Any, int]:
        client = aioredis.Redis.from_url(redis_url)
        beats = 0

        async def heartbeat() -> None:
            nonlocal beats
            while True:
                beats += 1
                await asyncio.sleep(0.001)

        hb = asyncio.create_task(heartbeat())
        try:
            plan = await AsyncMigrationPlanner().create_plan("docs", redis_client=client,
                                                             schema_patch=patch)
            report = await AsyncMigrationExecutor().apply(plan, redis_client=client,
                                                          backup_dir=tmp_path / "b",
                                                          batch_size=5)
            assert await client.ping()  # the caller's client is left open
        finally:
            hb.cancel()
            await client.aclose()
        return report, beats

    report, beats = asyncio.run(run())
    assert report.result == "succeeded"
    assert beats > 5, "the event loop kept running during the migration"


def test_async_bad_input_is_one_error(redis_url: str, tmp_path: Path) -> None:
    from rvlm import RvlmError

    async def run() -> None:
        await AsyncMigrationPlanner().create_plan("nope", redis_url=redis_url, schema_patch={
            "version": 1, "changes": {"remove_fields": ["x"]}})

    with pytest.raises(RvlmError, match="no index named 'nope'"):
        asyncio.run(run())
