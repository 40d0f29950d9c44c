"""rvl users' command-line habits work in rvlm (issue #11): connection flags, ``-p`` as the
port, rvl's flat command names, ``--key-sample-limit``, ``apply --async`` and
``estimate --aof-enabled``; on the real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import yaml
from test_batch_helpers import make_index, snapshot, write_patch
from typer.testing import CliRunner, Result

from rvlm.cli.main import app
from rvlm.core.redis.connection import read_index

QUANTIZE = "version: 1\nchanges:\n  update_fields:\n    - {name: v, attrs: {datatype: float16}}\n"
runner = CliRunner()


def rvlm(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.output)
    return result


def test_rvls_connection_flags_and_p_for_the_port(redis_client: Any, redis_url: str,
                                                  tmp_path: Path) -> None:
    make_index(redis_client, "a_idx", "a:", 3)
    parts = urlsplit(redis_url)
    host, port = str(parts.hostname), str(parts.port)
    unreachable = {"REDIS_URL": "redis://127.0.0.1:1"}    # the flags beat REDIS_URL
    for flags in (["--host", host, "--port", port], ["--host", host, "-p", port]):
        listed = ok(rvlm("index", "list", "--json", *flags, env=unreachable))
        assert [r["name"] for r in json.loads(listed.stdout)] == ["a_idx"]
    # every command that talks to Redis takes them: plan, apply, validate, batch, wizard...
    patch = write_patch(tmp_path)
    ok(rvlm("plan", "-i", "a_idx", "--schema-patch", str(patch), "-o",
            str(tmp_path / "plan.yaml"), "-p", port, "--host", host, env=unreachable))
    done = ok(rvlm("apply", "--plan", str(tmp_path / "plan.yaml"), "--backup-dir",
                   str(tmp_path / "b"), "-p", port, "--host", host, "--yes", env=unreachable))
    assert "succeeded" in done.stdout
    ok(rvlm("validate", "--plan", str(tmp_path / "plan.yaml"), "--backup-dir",
            str(tmp_path / "b"), "-p", port, "--host", host, env=unreachable))
    # a password and a user go into the URL; a wrong one is refused in one line
    refused = rvlm("index", "list", "--host", host, "-p", port, "--user", "ghost", "-a",
                   "wrong", env=unreachable)
    assert refused.exit_code == 2 and "refused the credentials" in refused.stderr
    assert "wrong" not in refused.output
    # --url with the flags: one line, not a silent choice
    both = rvlm("index", "list", "--url", redis_url, "--port", port)
    assert both.exit_code == 2 and "give --url or --port" in both.stderr
    # -p is not --schema-patch any more: an rvl user's -p 6380 means the port
    assert "--port" in rvlm("plan", "--help").stdout and "-p" in rvlm("plan", "--help").stdout
    old = rvlm("plan", "-i", "a_idx", "-p", str(patch), "--url", redis_url)
    assert old.exit_code == 2 and "Traceback" not in old.output
    assert "is not a port number (-p is the Redis port, as in rvl; give a schema patch with " \
           "--schema-patch)" in old.stderr


def test_ssl_switches_the_url_to_tls(redis_client: Any, redis_url: str) -> None:
    """The embedded server speaks no TLS: --ssl must reach it as rediss:// and fail."""
    parts = urlsplit(redis_url)
    plain = ok(rvlm("index", "list", "--host", str(parts.hostname), "-p", str(parts.port)))
    assert "no search indexes" in plain.stdout
    tls = rvlm("index", "list", "--host", str(parts.hostname), "-p", str(parts.port), "--ssl")
    assert tls.exit_code == 2 and "rediss://" in tls.stderr


def test_rvls_flat_command_names(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    make_index(redis_client, "a_idx", "a:", 3)
    make_index(redis_client, "b_idx", "b:", 3, seed=1)
    listed = ok(rvlm("list", "--url", redis_url))
    assert "a_idx" in listed.stdout and "b_idx" in listed.stdout
    helper = ok(rvlm("helper", "--url", redis_url))
    assert "1. a_idx" in helper.stdout and "quantize:" in helper.stdout
    out = tmp_path / "batch_plan.yaml"
    ok(rvlm("batch-plan", "--schema-patch", str(write_patch(tmp_path)), "--pattern", "*_idx",
            "--plan-out", str(out), "--url", redis_url))
    state = tmp_path / "batch_state.yaml"
    ok(rvlm("batch-apply", "--plan", str(out), "--backup-dir", str(tmp_path / "backups"),
            "--state", str(state), "--url", redis_url))
    ok(rvlm("batch-resume", "--state", str(state), "--url", redis_url))
    status = ok(rvlm("batch-status", "--state", str(state), "--json"))
    assert json.loads(status.stdout)["counts"]["succeeded"] == 2
    assert read_index(redis_client, "a_idx").schema.fields[0].name == "headline"
    # listed once, in the CLI reference's alias line, not as commands of their own
    top = rvlm("--help").stdout
    assert "batch-plan" not in top and "helper" not in top


def test_key_sample_limit(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    make_index(redis_client, "a_idx", "a:", 30)
    for limit, expected in (("5", 5), ("0", 0), ("100", 30)):
        out = tmp_path / f"plan{limit}.yaml"
        ok(rvlm("plan", "-i", "a_idx", "--schema-patch", str(write_patch(tmp_path)), "-o",
                str(out), "--key-sample-limit", limit, "--url", redis_url))
        sample = yaml.safe_load(out.read_text())["source"]["keyspace"]["key_sample"]
        assert len(sample) == expected
    from rvlm import MigrationPlanner

    plan = MigrationPlanner(key_sample_limit=3).create_plan(
        "a_idx", redis_url=redis_url, schema_patch_path=write_patch(tmp_path))
    assert len(plan.key_sample) == 3


def test_apply_async(redis_client: Any, redis_url: str, tmp_path: Path, protocol: int) -> None:
    """rvl's --async: the async executor, the same documents as the sync one."""
    make_index(redis_client, "a_idx", "a:", 12)
    make_index(redis_client, "b_idx", "b:", 12)   # the same data: the sync control
    for name in ("a_idx", "b_idx"):
        ok(rvlm("plan", "-i", name, "--schema-patch", str(write_patch(tmp_path, QUANTIZE)), "-o",
                str(tmp_path / f"{name}.yaml"), "--url", redis_url))
    done = ok(rvlm("apply", "--plan", str(tmp_path / "a_idx.yaml"), "--backup-dir",
                   str(tmp_path / "ba"), "--accept-data-loss", "--async", "--url", redis_url,
                   "--json"))
    report = json.loads(done.stdout)
    assert report["result"] == "succeeded"
    ok(rvlm("apply", "--plan", str(tmp_path / "b_idx.yaml"), "--backup-dir",
            str(tmp_path / "bb"), "--accept-data-loss", "--url", redis_url))
    a, b = snapshot(redis_client, "a:"), snapshot(redis_client, "b:")
    assert [d[b"v"] for d in a.values()] == [d[b"v"] for d in b.values()]
    assert all(len(d[b"v"]) == 4 * 2 for d in a.values())


@pytest.mark.parametrize("aof", ["--aof-enabled", "--aof-disabled", None])
def test_estimate_with_aof(redis_client: Any, redis_url: str, tmp_path: Path,
                           aof: str | None) -> None:
    """The guide's figures: RDB snapshot, AOF growth, total new disk."""
    dims, docs = 256, 200
    redis_client.execute_command(
        "FT.CREATE", "big", "ON", "HASH", "PREFIX", "1", "big:", "SCHEMA", "v", "VECTOR",
        "FLAT", "6", "TYPE", "FLOAT32", "DIM", str(dims), "DISTANCE_METRIC", "L2")
    rng = np.random.default_rng(0)
    for i in range(docs):
        redis_client.hset(f"big:{i}", "v", rng.random(dims, dtype=np.float32).tobytes())
    out = tmp_path / "plan.yaml"
    ok(rvlm("plan", "-i", "big", "--schema-patch", str(write_patch(tmp_path, QUANTIZE)), "-o",
            str(out), "--url", redis_url))
    args = ["estimate", "--plan", str(out), "--url", redis_url, "--json"]
    # the session server's dataset moves on its own (earlier tests' keys freed lazily):
    # read it on both sides of the estimate
    before = int(redis_client.info("memory")["used_memory_dataset"])
    est = json.loads(ok(rvlm(*args, *([aof] if aof else []))).stdout)
    after = int(redis_client.info("memory")["used_memory_dataset"])
    # the snapshot holds the dataset with every vector at float16: 2 bytes a component fewer
    shrink = docs * dims * 2
    low, high = min(before, after) - shrink, max(before, after) - shrink
    assert low - shrink / 4 < est["rdb_snapshot_bytes"] < high + shrink / 4, (est, before, after)
    if aof == "--aof-enabled":
        assert est["aof_enabled"] is True
        assert est["aof_growth_bytes"] >= est["bytes_rewritten"] > 0
    else:  # the embedded server runs without AOF, and says so when asked
        assert est["aof_enabled"] is False and est["aof_growth_bytes"] is None
    assert est["total_new_disk_bytes"] == (est["backup_bytes"] + est["rdb_snapshot_bytes"]
                                           + (est["aof_growth_bytes"] or 0))
    assert est["memory_savings_bytes"] == est["memory_before_bytes"] - est["memory_after_bytes"]
    text = ok(rvlm("estimate", "--plan", str(out), *([aof] if aof else []),
                   env={"REDIS_URL": ""})).stdout
    assert "RDB snapshot (BGSAVE)" in text and "AOF growth" in text
    assert "total new disk" in text
    if aof is None:   # no server to ask: not estimated, as the guide prints it
        assert "not estimated (pass --aof-enabled" in text
