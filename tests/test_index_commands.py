"""``rvlm index create`` and ``rvlm index drop`` (rvl's ``index create``, ``delete`` and
``destroy``) on the real server, under RESP2 and RESP3: what exists afterwards, which
documents are left, and one clear line (exit 2, nothing changed) for every refusal."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from rvlm.cli.main import app
from rvlm.core.redis.connection import read_index
from rvlm.core.redis.lock import acquire_lock
from rvlm.core.schema.yaml_format import load_schema

DATA = Path(__file__).parent / "data" / "redisvl"
runner = CliRunner()


def rvlm(*args: str) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def refused(result: Result, *words: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def wait_indexed(client: Any, name: str) -> None:
    for _ in range(500):
        if not int(read_index(client, name).stats.indexing):
            return
        time.sleep(0.01)


def fill(client: Any, prefix: str = "shop:", n: int = 5) -> None:
    for i in range(n):
        client.hset(f"{prefix}{i}", mapping={"title": f"t{i}", "price": i, "category": "a"})


def test_create_from_a_redisvl_schema_then_drop_keeping_the_documents(
        redis_client: Any, redis_url: str, protocol: int) -> None:
    fill(redis_client)
    done = rvlm("index", "create", "-s", str(DATA / "shop_hash.yaml"), "--url", redis_url)
    assert done.exit_code == 0, done.output
    assert "created index 'shop'" in done.stdout
    wait_indexed(redis_client, "shop")
    info = read_index(redis_client, "shop")
    assert info.schema.without_unknowns() == load_schema(DATA / "shop_hash.yaml")
    assert info.stats.num_docs == 5
    # again: the name is taken
    refused(rvlm("index", "create", "--schema", str(DATA / "shop_hash.yaml"), "--url", redis_url),
            "'shop' already exists", "rvlm index drop -i shop")
    done = rvlm("index", "drop", "-i", "shop", "--url", redis_url)
    assert done.exit_code == 0, done.output
    assert "dropped index 'shop'; its 5 documents are kept" in done.stdout
    assert b"shop" not in redis_client.execute_command("FT._LIST")
    assert redis_client.hget("shop:3", "title") == b"t3"


def test_drop_with_delete_documents_and_rvls_names(redis_client: Any, redis_url: str,
                                                   protocol: int) -> None:
    fill(redis_client)
    redis_client.set("other", "kept")
    assert rvlm("index", "create", "-s", str(DATA / "shop_hash.yaml"), "--url",
                redis_url).exit_code == 0
    wait_indexed(redis_client, "shop")
    listed = rvlm("index", "listall", "--url", redis_url)
    assert listed.exit_code == 0 and "shop" in listed.stdout
    done = rvlm("index", "destroy", "-i", "shop", "--url", redis_url)
    assert done.exit_code == 0, done.output
    assert "deleted its 5 documents" in done.stdout
    assert redis_client.keys("shop:*") == [] and redis_client.get("other") == b"kept"
    # rvl index delete: documents stay
    fill(redis_client)
    assert rvlm("index", "create", "-s", str(DATA / "shop_hash.yaml"), "--url",
                redis_url).exit_code == 0
    assert rvlm("index", "delete", "-i", "shop", "--url", redis_url).exit_code == 0
    assert len(redis_client.keys("shop:*")) == 5


def test_refusals_change_nothing(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    fill(redis_client)
    redis_client.execute_command("FT.CREATE", "shop", "ON", "HASH", "PREFIX", "1", "shop:",
                                 "SCHEMA", "title", "TEXT")
    redis_client.execute_command("FT.CREATE", "all_shop", "ON", "HASH", "PREFIX", "1", "sh",
                                 "SCHEMA", "price", "NUMERIC")
    redis_client.execute_command("FT.ALIASADD", "shop_live", "shop")
    refused(rvlm("index", "drop", "-i", "nope", "--url", redis_url), "no index named 'nope'")
    refused(rvlm("index", "drop", "-i", "shop_live", "--url", redis_url),
            "'shop_live' is an alias of index 'shop'", "FT.ALIASDEL shop_live")
    refused(rvlm("index", "drop", "-i", "shop", "--delete-documents", "--url", redis_url),
            "'all_shop' also covers the documents of 'shop'")
    lock = acquire_lock(redis_client, "shop", "a test holding the lock")
    try:
        refused(rvlm("index", "drop", "-i", "shop", "--url", redis_url), "shop")
    finally:
        lock.release()
    bad = tmp_path / "bad.yaml"
    bad.write_text("index: {name: x}\nfields:\n  - {name: t, type: txt}\n")
    refused(rvlm("index", "create", "-s", str(bad), "--url", redis_url), "unknown field type")
    refused(rvlm("index", "create", "-s", str(tmp_path / "missing.yaml"), "--url", redis_url),
            "no such file")
    assert sorted(redis_client.execute_command("FT._LIST")) == [b"all_shop", b"shop"]
    assert len(redis_client.keys("shop:*")) == 5


@pytest.mark.parametrize("storage", ["hash", "json"])
def test_what_index_info_yaml_prints_creates_the_same_index(
        redis_client: Any, redis_url: str, tmp_path: Path, storage: str) -> None:
    """info --yaml, drop, create: the same index (rvl users recreate indexes this way)."""
    assert rvlm("index", "create", "-s", str(DATA / f"shop_{storage}.yaml"), "--url",
                redis_url).exit_code == 0
    before = read_index(redis_client, "shop").schema
    text = rvlm("index", "info", "-i", "shop", "--yaml", "--url", redis_url).stdout
    (tmp_path / "s.yaml").write_text(text)
    assert rvlm("index", "drop", "-i", "shop", "--url", redis_url).exit_code == 0
    assert rvlm("index", "create", "-s", str(tmp_path / "s.yaml"), "--url",
                redis_url).exit_code == 0
    assert read_index(redis_client, "shop").schema == before
