"""Switching from ``rvl migrate`` without surprises (issue #11), the runs: backup dirs, re-runs,
the Python API's RedisVL shapes, batches, and RedisVL's own files handed to rvlm; on the real
server, under RESP2 and RESP3 where replies matter.

What a user checks: the exit code and the one line of a refusal, that nothing changed (the
index, every document), and the attributes RedisVL's guide reads.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_batch_helpers import answers, make_index, snapshot, write_patch
from typer.testing import CliRunner, Result

import rvlm
from rvlm import (
    BatchMigrationExecutor,
    BatchMigrationPlanner,
    MigrationExecutor,
    MigrationPlanner,
    RvlmError,
)
from rvlm.cli.main import app
from rvlm.core.multi.plan import BatchPlan
from rvlm.core.redis.connection import read_index
from rvlm.core.redis.lock import acquire_lock

DATA = Path(__file__).parent / "data" / "redisvl"
QUANTIZE = "version: 1\nchanges:\n  update_fields:\n    - {name: v, attrs: {datatype: float16}}\n"
runner = CliRunner()


def rvlm_cli(*args: str) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def one_line(result: Result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def fields(client: Any, index: str) -> list[tuple[str, str]]:
    schema = read_index(client, index).schema
    return [(f.name, getattr(f.attrs, "datatype", f.type)) for f in schema.fields]


# -- a backup dir that cannot be created is bad input ----------------------------------------

def test_a_backup_dir_that_cannot_be_created_is_one_line_and_nothing_changes(
        redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    make_index(redis_client, "a_idx", "a:", 6)
    before, schema = snapshot(redis_client, "a:"), fields(redis_client, "a_idx")
    plan = MigrationPlanner().create_plan("a_idx", redis_url=redis_url,
                                          schema_patch_path=write_patch(tmp_path))
    plan.write(tmp_path / "plan.yaml")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(RvlmError, match=r"backup dir .*a_file/b: cannot create it \(Not a "
                                        r"directory"):
        MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=blocker / "b")
    line = one_line(rvlm_cli("apply", "--plan", str(tmp_path / "plan.yaml"), "--backup-dir",
                             str(blocker / "b"), "--url", redis_url, "--yes"))
    assert "a_file/b: cannot create it" in line and "nothing was changed" in line
    # the empty name would be the current directory: refused, in the API and the CLI
    with pytest.raises(RvlmError, match="--backup-dir is empty"):
        MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir="")
    line = one_line(rvlm_cli("apply", "--plan", str(tmp_path / "plan.yaml"), "--backup-dir", "",
                             "--url", redis_url, "--yes"))
    assert "--backup-dir is empty" in line
    line = one_line(rvlm_cli("rollback", "--backup-dir", "", "--url", redis_url, "--yes"))
    assert "--backup-dir is empty" in line
    line = one_line(rvlm_cli("validate", "--plan", str(tmp_path / "plan.yaml"), "--backup-dir",
                             "", "--url", redis_url))
    assert "--backup-dir is empty" in line
    assert snapshot(redis_client, "a:") == before and fields(redis_client, "a_idx") == schema
    assert not (tmp_path / "b").exists()


# -- re-running a finished apply ---------------------------------------------------------------

def test_rerunning_a_finished_apply(redis_client: Any, redis_url: str, tmp_path: Path,
                                    protocol: int) -> None:
    make_index(redis_client, "a_idx", "a:", 8)
    plan = MigrationPlanner().create_plan("a_idx", redis_url=redis_url,
                                          schema_patch_path=write_patch(tmp_path, QUANTIZE))
    plan.write(tmp_path / "plan.yaml")
    backup = tmp_path / "b"
    assert MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=backup).succeeded
    migrated = snapshot(redis_client, "a:")
    # a no-op re-run: nothing changed, no downtime
    again = MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=backup)
    assert again.succeeded and again.downtime_duration_seconds == 0.0
    assert again.timings.downtime_duration_seconds == 0.0
    assert again.documents_rewritten == 0 and "already finished" in again.warnings[0]
    assert snapshot(redis_client, "a:") == migrated
    # the source index recreated by hand (float32 again): the old backup dir is refused
    redis_client.execute_command("FT.DROPINDEX", "a_idx")
    redis_client.execute_command(
        "FT.CREATE", "a_idx", "ON", "HASH", "PREFIX", "1", "a:", "SCHEMA", "title", "TEXT",
        "t", "TEXT", "g", "TAG", "v", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", "4",
        "DISTANCE_METRIC", "L2")
    with pytest.raises(RvlmError, match="already finished, and index 'a_idx' no longer has "
                                        "the plan's target schema"):
        MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=backup)
    line = one_line(rvlm_cli("apply", "--plan", str(tmp_path / "plan.yaml"), "--backup-dir",
                             str(backup), "--url", redis_url, "--accept-data-loss"))
    assert "with a new --backup-dir" in line
    assert snapshot(redis_client, "a:") == migrated
    assert ("v", "float32") in fields(redis_client, "a_idx")
    # the dropped index, the same
    redis_client.execute_command("FT.DROPINDEX", "a_idx")
    with pytest.raises(RvlmError, match="does not exist now"):
        MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=backup)


# -- the guide's Python attributes ---------------------------------------------------------------

def test_report_timings_have_redisvls_names(redis_client: Any, redis_url: str,
                                            tmp_path: Path) -> None:
    make_index(redis_client, "a_idx", "a:", 8)
    plan = MigrationPlanner().create_plan("a_idx", redis_url=redis_url,
                                          schema_patch_path=write_patch(tmp_path, QUANTIZE))
    report = MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=tmp_path / "b",
                                       batch_size=500, num_workers=1)
    t = report.timings
    print(f"Quantized in {t.quantize_duration_seconds}s")   # the guide's own line
    assert t.quantize_duration_seconds is not None and t.quantize_duration_seconds >= 0
    assert t.quantize_duration_seconds == round(t["transform"], 3)
    assert t.field_rename_duration_seconds is None and t.key_rename_duration_seconds is None
    assert t.downtime_duration_seconds == round(report.downtime_duration_seconds or 0, 3)
    assert t.total_migration_duration_seconds is not None
    for name in ("drop_duration_seconds", "recreate_duration_seconds",
                 "initial_indexing_duration_seconds", "validation_duration_seconds"):
        assert getattr(t, name) is not None, name
    written = yaml.safe_load(report.to_yaml())["timings"]
    assert written["quantize_duration_seconds"] == t.quantize_duration_seconds
    assert written["transform"] == round(t["transform"], 3)


def test_batch_report_summary_has_redisvls_attributes(redis_client: Any, redis_url: str,
                                                      tmp_path: Path) -> None:
    make_index(redis_client, "a_idx", "a:", 5)
    make_index(redis_client, "b_idx", "b:", 5, seed=1)
    make_index(redis_client, "c_idx", "c:", 5, title=False, seed=2)
    batch_plan = BatchMigrationPlanner().create_batch_plan(
        redis_url=redis_url, pattern="*_idx", schema_patch_path=write_patch(tmp_path))
    report = BatchMigrationExecutor().apply(
        batch_plan, redis_url=redis_url, state_path=tmp_path / "batch_state.yaml",
        report_dir=tmp_path / "reports", backup_dir=tmp_path / "backups",
        progress_callback=lambda name, pos, total, status: None)
    print(f"Successful: {report.summary.successful}/{report.summary.total_indexes}")
    assert (report.summary.successful, report.summary.total_indexes,
            report.summary.skipped, report.summary.failed) == (2, 3, 1, 0)
    written = yaml.safe_load((tmp_path / "reports" / "batch_report.yaml").read_text())
    assert written["summary"]["successful"] == 2 and written["status"] == "completed"


# -- lossy batches: one rule ----------------------------------------------------------------------

def test_batch_lossy_plans_one_rule(redis_client: Any, redis_url: str, tmp_path: Path,
                                    protocol: int) -> None:
    """The library applies what it is handed (as MigrationExecutor does); the CLI asks for
    --accept-data-loss on apply *and* on every resume, --retry-failed included."""
    make_index(redis_client, "a_idx", "a:", 6)
    make_index(redis_client, "b_idx", "b:", 6, seed=1)
    plan_out = tmp_path / "batch_plan.yaml"
    assert rvlm_cli("batch", "plan", "--schema-patch", str(write_patch(tmp_path, QUANTIZE)),
                    "--indexes", "a_idx,b_idx", "--failure-policy", "continue_on_error",
                    "--plan-out", str(plan_out), "--url", redis_url).exit_code == 0
    state, backups = tmp_path / "state.yaml", tmp_path / "backups"
    line = one_line(rvlm_cli("batch", "apply", "--plan", str(plan_out), "--backup-dir",
                             str(backups), "--state", str(state), "--url", redis_url))
    assert "accept-data-loss" in line and not state.exists()
    # b fails: another process holds its migration lock
    lock = acquire_lock(redis_client, "b_idx", "someone else")
    try:
        done = rvlm_cli("batch", "apply", "--plan", str(plan_out), "--backup-dir",
                        str(backups), "--state", str(state), "--url", redis_url,
                        "--accept-data-loss")
    finally:
        lock.release()
    assert done.exit_code == 1, done.output
    status = rvlm.BatchMigrationExecutor.status(state)
    assert (status.index("a_idx").status, status.index("b_idx").status) == ("succeeded",
                                                                              "failed")
    b_before = snapshot(redis_client, "b:")
    line = one_line(rvlm_cli("batch", "resume", "--state", str(state), "--retry-failed",
                             "--url", redis_url))
    assert "accept-data-loss" in line
    assert snapshot(redis_client, "b:") == b_before
    assert ("v", "float32") in fields(redis_client, "b_idx")
    done = rvlm_cli("batch", "resume", "--state", str(state), "--retry-failed",
                    "--accept-data-loss", "--url", redis_url)
    assert done.exit_code == 0, done.output
    assert ("v", "float16") in fields(redis_client, "b_idx")


# -- the batch plan's RedisVL fields -------------------------------------------------------------

def test_batch_plan_has_redisvls_fields(redis_client: Any, redis_url: str,
                                        tmp_path: Path) -> None:
    make_index(redis_client, "a_idx", "a:", 4)
    make_index(redis_client, "b_idx", "b:", 4, title=False, seed=1)
    for patch, quantizes in ((QUANTIZE, True), (None, False)):
        path = write_patch(tmp_path, patch) if patch else write_patch(tmp_path)
        bp = BatchMigrationPlanner().create_batch_plan(redis_url=redis_url, pattern="*_idx",
                                                       schema_patch_path=path)
        data = yaml.safe_load(bp.write(tmp_path / "bp.yaml").read_text())
        assert data["shared_patch"] == yaml.safe_load(path.read_text())
        assert data["requires_quantization"] is quantizes
        assert data["created_at"].endswith("Z") and data["batch_id"].startswith("batch")
        # b_idx has no title: the rename does not apply to it; the quantization does
        assert [(i["name"], i["applicable"]) for i in data["indexes"]] == [
            ("a_idx", True), ("b_idx", quantizes)]
        for key in ("version", "mode", "failure_policy"):
            assert key in data
        assert BatchPlan.load(tmp_path / "bp.yaml").fingerprint == \
            bp.fingerprint


# -- RedisVL's own files handed to rvlm ------------------------------------------------------------

RVL_BATCH_PLAN = """\
version: 1
batch_id: batch_3483c617f25f
mode: drop_recreate
failure_policy: fail_fast
requires_quantization: true
shared_patch:
  version: 1
  changes:
    add_fields: []
    remove_fields: []
    update_fields:
    - name: embedding
      attrs:
        datatype: float16
      options: {}
    rename_fields: []
    index: {}
indexes:
- name: prod_a
  applicable: true
- name: prod_b
  applicable: true
created_at: '2026-11-30T19:13:56Z'
"""

RVL_BATCH_STATE = """\
batch_id: batch_3483c617f25f
plan_path: /tmp/compat-research/batch_plan.yaml
backup_dir: /tmp/compat-research/rvl_backups
started_at: '2026-11-30T19:13:59Z'
updated_at: '2026-11-30T19:13:59Z'
completed:
- name: prod_a
  status: success
  completed_at: '2026-11-30T19:13:59Z'
remaining:
- prod_b
"""

RVL_HEADER = ('{"index_name": "prod_a", "fields": {"embedding": {"source": "float32", '
              '"target": "float16", "dims": 4}}, "batch_size": 500, "phase": "validated", '
              '"dump_completed_batches": 1, "quantize_completed_batches": 1}')


def test_redisvls_batch_plan_state_and_backup_dir_are_named_with_what_to_do(
        redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    """Files laid out as rvl migrate 0.28 writes them (the pickled .data is never read)."""
    (tmp_path / "batch_plan.yaml").write_text(RVL_BATCH_PLAN)
    line = one_line(rvlm_cli("batch", "apply", "--plan", str(tmp_path / "batch_plan.yaml"),
                             "--backup-dir", str(tmp_path / "b"), "--state",
                             str(tmp_path / "s.yaml"), "--url", redis_url))
    assert "is a RedisVL batch plan (rvl migrate batch-plan)" in line
    assert "rvlm batch plan --schema-patch PATCH --indexes prod_a,prod_b" in line
    (tmp_path / "batch_state.yaml").write_text(RVL_BATCH_STATE)
    for command in ("status", "resume"):
        line = one_line(rvlm_cli("batch", command, "--state",
                                 str(tmp_path / "batch_state.yaml")))
        assert "is a RedisVL batch state (rvl migrate batch-apply)" in line
        assert "rvl migrate batch-resume" in line and "--indexes prod_b" in line
    rvl = tmp_path / "rvl_backups"
    rvl.mkdir()
    (rvl / "migration_backup_prod_a_c5f5aa96.header").write_text(RVL_HEADER)
    (rvl / "migration_backup_prod_a_c5f5aa96.data").write_bytes(b"\x00\x00\x05\x0b\x80\x04")
    line = one_line(rvlm_cli("rollback", "--backup-dir", str(rvl), "--url", redis_url,
                             "--yes"))
    assert "is a RedisVL backup dir" in line and "'prod_a' (phase validated)" in line
    assert f"rvl migrate rollback --backup-dir {rvl}" in line
    make_index(redis_client, "a_idx", "a:", 3)
    plan = MigrationPlanner().create_plan("a_idx", redis_url=redis_url,
                                          schema_patch_path=write_patch(tmp_path))
    with pytest.raises(RvlmError, match=r"is a RedisVL backup dir.*use a new --backup-dir"):
        MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=rvl)


def test_a_redisvl_plan_is_named_with_the_rvlm_command(redis_client: Any, redis_url: str,
                                                       tmp_path: Path) -> None:
    """tests/data/redisvl/migration_plan_shop.yaml: what rvl migrate plan (0.28) wrote."""
    redis_client.execute_command("FT.CREATE", "shop", "ON", "HASH", "PREFIX", "1", "shop:",
                                 "SCHEMA", "title", "TEXT", "price", "NUMERIC")
    redis_client.hset("shop:1", mapping={"title": "a", "price": 1})
    before = fields(redis_client, "shop")
    rvl_plan = str(Path(__file__).parent / "data" / "redisvl" / "migration_plan_shop.yaml")
    for args in (["apply", "--plan", rvl_plan, "--backup-dir", str(tmp_path / "b"), "--yes"],
                 ["validate", "--plan", rvl_plan], ["estimate", "--plan", rvl_plan]):
        line = one_line(rvlm_cli(*args, "--url", redis_url))
        assert "is a RedisVL plan (rvl migrate plan)" in line, line
        assert "rvlm plan -i shop --schema-patch PATCH" in line
    with pytest.raises(RvlmError, match="is a RedisVL plan"):
        MigrationExecutor().apply(rvlm.Plan.load(rvl_plan), redis_url=redis_url,
                                  backup_dir=tmp_path / "b")
    assert fields(redis_client, "shop") == before and not (tmp_path / "b").exists()


# -- rollback --index: one index of a batch's backup dir ----------------------------------------

def test_rollback_index_picks_one_index_of_a_batch_backup_dir(
        redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    make_index(redis_client, "a_idx", "a:", 5)
    make_index(redis_client, "b_idx", "b:", 5, seed=1)
    originals = {p: snapshot(redis_client, p) for p in ("a:", "b:")}
    bp = BatchMigrationPlanner().create_batch_plan(
        redis_url=redis_url, pattern="*_idx", schema_patch_path=write_patch(tmp_path))
    report = BatchMigrationExecutor().apply(bp, redis_url=redis_url,
                                            state_path=tmp_path / "s.yaml",
                                            backup_dir=tmp_path / "backups")
    assert report.succeeded
    renamed_b = snapshot(redis_client, "b:")
    line = one_line(rvlm_cli("rollback", "--backup-dir", str(tmp_path / "backups"), "--url",
                             redis_url, "--yes"))
    assert "holds the backups of a batch (indexes a_idx, b_idx)" in line and "--index" in line
    line = one_line(rvlm_cli("rollback", "--backup-dir", str(tmp_path / "backups"), "--index",
                             "nope", "--url", redis_url, "--yes"))
    assert "no backup of index 'nope'" in line
    done = rvlm_cli("rollback", "--backup-dir", str(tmp_path / "backups"), "--index", "a_idx",
                    "--url", redis_url, "--yes")
    assert done.exit_code == 0, done.output
    assert snapshot(redis_client, "a:") == originals["a:"]
    assert snapshot(redis_client, "b:") == renamed_b
    assert answers(redis_client, "a_idx", "title")["text"]
    assert rvlm.rollback(tmp_path / "backups", redis_url=redis_url, index="b_idx").succeeded
    assert snapshot(redis_client, "b:") == originals["b:"]
    shutil.rmtree(tmp_path / "backups")


# -- the shared-keys block's way out ---------------------------------------------------------

def test_the_shared_keys_block_names_a_way_out_that_works_in_a_batch(
        redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    make_index(redis_client, "a_idx", "a:", 5)
    redis_client.execute_command("FT.CREATE", "a_titles", "ON", "HASH", "PREFIX", "1", "a:",
                                 "SCHEMA", "title", "TEXT")
    patch = write_patch(tmp_path, QUANTIZE)
    plan = MigrationPlanner().create_plan("a_idx", redis_url=redis_url, schema_patch_path=patch)
    [reason] = plan.blocked_reasons
    assert "a_titles" in reason and "--allow-shared-keys (to rvlm plan or rvlm batch plan" in reason
    bp = BatchMigrationPlanner().create_batch_plan(redis_url=redis_url, indexes="a_idx",
                                                   schema_patch_path=patch)
    assert not bp.entry("a_idx").applicable
    out = tmp_path / "bp.yaml"
    done = rvlm_cli("batch", "plan", "--schema-patch", str(patch), "--indexes", "a_idx",
                    "--allow-shared-keys", "--plan-out", str(out), "--url", redis_url)
    assert done.exit_code == 0, done.output
    allowed = BatchPlan.load(out)
    assert allowed.entry("a_idx").applicable
    assert allowed.plan_for("a_idx").overrides["allow_shared_keys"] == ["a_titles"]
    report = BatchMigrationExecutor().apply(allowed, redis_url=redis_url,
                                            state_path=tmp_path / "s.yaml",
                                            backup_dir=tmp_path / "backups")
    assert report.succeeded
    assert ("v", "float16") in fields(redis_client, "a_idx")


# -- RedisVL's call shapes ---------------------------------------------------------------------

def test_redisvls_call_shapes(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    """What an rvl user's code passes: a (step, detail) progress callback, key_sample_limit,
    batch_size/num_workers on the batch executor's apply, the models by their names."""
    make_index(redis_client, "a_idx", "a:", 6)
    make_index(redis_client, "b_idx", "b:", 6, seed=1)
    patch = write_patch(tmp_path, QUANTIZE)
    plan = MigrationPlanner(key_sample_limit=4).create_plan(
        "a_idx", redis_url=redis_url, schema_patch_path=str(patch), redis_client=redis_client)
    assert len(plan.key_sample) == 4
    steps: list[tuple[str, str | None]] = []
    report = MigrationExecutor().apply(
        plan, redis_url=redis_url, redis_client=redis_client, backup_dir=str(tmp_path / "b"),
        batch_size=2, num_workers=1,
        progress_callback=lambda step, detail: steps.append((step, detail)))
    assert report.result == "succeeded"
    assert ("transform", "3/3") in steps   # 6 documents in batches of 2
    batch_plan = BatchMigrationPlanner().create_batch_plan(
        indexes=["b_idx"], schema_patch_path=str(patch), redis_url=redis_url,
        failure_policy="fail_fast")
    assert isinstance(batch_plan, rvlm.BatchPlan)
    batch = BatchMigrationExecutor().apply(
        batch_plan, batch_plan_path=str(tmp_path / "bp.yaml"),
        state_path=str(tmp_path / "state.yaml"), report_dir=str(tmp_path / "reports"),
        redis_url=redis_url, backup_dir=str(tmp_path / "bb"), batch_size=2, num_workers=1)
    assert batch.status == "completed" and (tmp_path / "bp.yaml").is_file()
    state = rvlm.BatchState.load(tmp_path / "state.yaml")
    assert state.index("b_idx").status == "succeeded"
    assert isinstance(batch, rvlm.BatchReport)
