"""The apply / validate / rollback commands: exit codes, reports, one-line refusals."""

from __future__ import annotations

import pytest
from test_apply_helpers import (
    HalfPlugin,
    RenamePlugin,
    build_plan,
    f16_target,
    half_op,
    make_hash_index,
    rename_field_target,
    rename_op,
    snapshot,
)
from typer.testing import CliRunner

from rvlm.cli.main import app
from rvlm.core.redis.connection import read_index
from rvlm.core.schema.yaml_format import load_yaml

runner = CliRunner()


@pytest.fixture
def plugins(rvlm_plugin):
    rvlm_plugin(RenamePlugin())
    rvlm_plugin(HalfPlugin())


def test_lossy_without_flag_exits_2_and_changes_nothing(redis_client, redis_url, tmp_path,
                                                        plugins):
    make_hash_index(redis_client, n=20)
    src = read_index(redis_client, "idx").schema
    build_plan(redis_client, "idx", f16_target(src), [half_op()], lossy=True).write(
        tmp_path / "p.yaml")
    before = snapshot(redis_client)
    res = runner.invoke(app, ["apply", "--plan", str(tmp_path / "p.yaml"), "--backup-dir",
                              str(tmp_path / "b"), "--url", redis_url])
    assert res.exit_code == 2, res.output
    assert "lossy" in res.output and "--accept-data-loss" in res.output
    assert snapshot(redis_client) == before


def test_apply_validate_rollback(redis_client, redis_url, tmp_path, plugins):
    make_hash_index(redis_client, n=40)
    before = snapshot(redis_client)
    src = read_index(redis_client, "idx").schema
    target = f16_target(rename_field_target(src, "t", "title"))
    plan_path = tmp_path / "p.yaml"
    build_plan(redis_client, "idx", target, [rename_op(), half_op()], lossy=True).write(plan_path)
    res = runner.invoke(app, ["apply", "--plan", str(plan_path), "--backup-dir",
                              str(tmp_path / "b"), "--url", redis_url, "--batch-size", "7",
                              "--accept-data-loss", "--yes", "--report-out",
                              str(tmp_path / "r.yaml"),
                              "--benchmark-out", str(tmp_path / "bench.yaml")])
    assert res.exit_code == 0, res.output
    report = load_yaml(tmp_path / "r.yaml")
    assert report["result"] == "succeeded"
    assert set(report) >= {"version", "mode", "source_index", "target_index", "result",
                           "started_at", "finished_at", "timings", "validation",
                           "benchmark_summary", "backup", "warnings", "manual_actions"}
    assert report["validation"]["schema_match"] and report["validation"]["doc_count_match"]
    assert report["rvlm"]["documents_rewritten"] == 40 and report["rvlm"]["batches"] == 6
    assert "downtime_duration_seconds" in report["timings"]
    assert (tmp_path / "bench.yaml").exists()
    res = runner.invoke(app, ["validate", "--plan", str(plan_path), "--url", redis_url,
                              "--backup-dir", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    # an unrelated key under the prefix does not fail a correct migration
    redis_client.set("doc:unrelated", "a string, not a hash")
    res = runner.invoke(app, ["validate", "--plan", str(plan_path), "--url", redis_url,
                              "--backup-dir", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    redis_client.delete("doc:unrelated")
    # a changed index fails validation with exit 1
    redis_client.execute_command("FT.ALTER", "idx", "SCHEMA", "ADD", "n", "NUMERIC")
    res = runner.invoke(app, ["validate", "--plan", str(plan_path), "--url", redis_url,
                              "--backup-dir", str(tmp_path / "b")])
    assert res.exit_code == 1, res.output
    res = runner.invoke(app, ["rollback", "--backup-dir", str(tmp_path / "b"), "--url",
                              redis_url, "--yes"])
    assert res.exit_code == 0, res.output
    assert snapshot(redis_client) == before


def test_corrupt_backup_refuses_rollback_with_one_line(redis_client, redis_url, tmp_path,
                                                       plugins):
    make_hash_index(redis_client, n=40)
    src = read_index(redis_client, "idx").schema
    plan_path = tmp_path / "p.yaml"
    build_plan(redis_client, "idx", rename_field_target(src, "t", "title"),
               [rename_op()]).write(plan_path)
    res = runner.invoke(app, ["apply", "--plan", str(plan_path), "--backup-dir",
                              str(tmp_path / "b"), "--url", redis_url, "--batch-size", "5",
                              "--yes"])
    assert res.exit_code == 0, res.output
    data = tmp_path / "b" / "data-0.rvb"
    raw = bytearray(data.read_bytes())
    raw[200] ^= 0xFF  # a bit flip inside an early batch
    data.write_bytes(bytes(raw))
    after = snapshot(redis_client)
    res = runner.invoke(app, ["rollback", "--backup-dir", str(tmp_path / "b"), "--url",
                              redis_url, "--yes"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "data-0.rvb" in lines[0], res.output
    assert snapshot(redis_client) == after  # nothing restored
