"""Batch migrations end to end through the CLI and the real executor, on the real server.

The scenario of the issue: five indexes, one not applicable, one that fails its collision
check at apply time, one killed mid-transform; ``rvlm batch resume`` finishes every index that
can be finished, each with its documents intact, and the report says what happened to each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from test_apply_helpers import reset
from test_batch_helpers import answers, make_index, renamed, rvlm, snapshot, write_patch

from rvlm.core.multi.executor import BatchMigrationExecutor
from rvlm.core.multi.planner import BatchMigrationPlanner
from rvlm.core.redis.connection import read_index
from rvlm.core.storage.journal import RunState

SIZES = {"a_idx": 8, "b_idx": 12, "c_idx": 30, "d_idx": 8}


def _setup(client: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    reset(client)
    for n, (name, size) in enumerate(SIZES.items()):
        make_index(client, name, name[0] + ":", size, seed=n)
    make_index(client, "e_idx", "e:", 5, title=False, seed=9)
    snaps = {name: snapshot(client, name[0] + ":") for name in SIZES}
    before = {name: answers(client, name, "title") for name in SIZES}
    for name, size in SIZES.items():  # the answers are real, not empty
        assert len(before[name]["text"]) == size and len(before[name]["knn"]) == 5
        assert len(snaps[name]) == size
    return snaps, before


def _field_names(client: Any, index: str) -> list[str]:
    return [f.name for f in read_index(client, index).schema.fields]


def _assert_migrated(client: Any, name: str, snaps: dict[str, Any],
                     before: dict[str, Any]) -> None:
    assert snapshot(client, name[0] + ":") == renamed(snaps[name]), name
    assert _field_names(client, name) == ["headline", "t", "g", "v"], name
    assert answers(client, name, "headline") == before[name], name
    assert read_index(client, name).stats.num_docs == SIZES[name]


def _assert_untouched(client: Any, name: str, snaps: dict[str, Any],
                      before: dict[str, Any]) -> None:
    assert snapshot(client, name[0] + ":") == snaps[name], name
    assert _field_names(client, name) == ["title", "t", "g", "v"], name
    assert answers(client, name, "title") == before[name], name


def test_batch_fail_kill_resume(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    snaps, before = _setup(redis_client)
    plan_out = tmp_path / "batch_plan.yaml"
    r = rvlm("batch", "plan", "--schema-patch", str(write_patch(tmp_path)), "--pattern",
             "*_idx", "--failure-policy", "continue_on_error", "--plan-out", str(plan_out),
             "--url", redis_url)
    assert r.returncode == 0, r.stdout + r.stderr
    bp = yaml.safe_load(plan_out.read_text())
    assert [(i["name"], i["applicable"]) for i in bp["indexes"]] == [
        ("a_idx", True), ("b_idx", True), ("c_idx", True), ("d_idx", True), ("e_idx", False)]

    # After the plan was reviewed, a document of b_idx starts to hold the field the rename
    # creates: b's collision check (over every key, before the drop) must refuse it.
    redis_client.hset("b:3", "headline", "squatter")
    snaps["b_idx"] = snapshot(redis_client, "b:")

    state = tmp_path / "state.yaml"
    backups = tmp_path / "backups"
    reports = tmp_path / "reports"
    # c_idx (30 docs, batches of 10) is killed while batch 1 is half written; a_idx has
    # one batch only and b_idx never reaches the transform, so the fault hits c_idx.
    r = rvlm("batch", "apply", "--plan", str(plan_out), "--backup-dir", str(backups),
             "--state", str(state), "--report-dir", str(reports), "--batch-size", "10",
             "--url", redis_url, env={"RVLM_FAULT": "mid_write:1", "RVLM_PROTOCOL": "2"})
    assert r.returncode == 137, r.stdout + r.stderr

    st = yaml.safe_load(state.read_text())
    assert {i["name"]: i["status"] for i in st["indexes"]} == {
        "a_idx": "succeeded", "b_idx": "failed", "c_idx": "in_progress", "d_idx": "pending",
        "e_idx": "skipped"}
    assert read_index(redis_client, "a_idx").stats.num_docs == 8
    assert RunState.load(backups / "c_idx").phase == "transforming"
    assert "c_idx" not in [x.decode() for x in redis_client.execute_command("FT._LIST")]

    r = rvlm("batch", "status", "--state", str(state), "--json")
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    rows = {x["name"]: x for x in status["indexes"]}
    assert rows["b_idx"]["status"] == "failed" and "already hold" in rows["b_idx"]["error"]
    assert rows["c_idx"]["status"] == "in_progress"
    assert rows["c_idx"]["journal_phase"] == "transforming"
    assert rows["c_idx"]["batches_done"] == 1
    assert status["status"] == "interrupted"  # the process that held it is gone
    assert status["counts"] == {"pending": 1, "in_progress": 1, "succeeded": 1, "failed": 1,
                                "skipped": 1}
    r = rvlm("batch", "status", "--state", str(state))
    assert r.returncode == 0 and "remaining" in r.stdout and "in_progress" in r.stdout

    # A resume with another backup dir is refused with one line; nothing runs.
    r = rvlm("batch", "resume", "--state", str(state), "--backup-dir", str(tmp_path / "x"),
             "--url", redis_url)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "started with backup dir" in r.stderr

    # Resume (RESP3 this time): c_idx continues from its journal, d_idx runs, b_idx stays
    # failed (its collision is still there); exit 1 because not every index succeeded.
    r = rvlm("batch", "resume", "--state", str(state), "--url", redis_url,
             env={"RVLM_PROTOCOL": "3"})
    assert r.returncode == 1, r.stdout + r.stderr
    report = yaml.safe_load((reports / "batch_report.yaml").read_text())
    assert report["status"] == "partial_failure"
    got = {x["name"]: x for x in report["indexes"]}
    assert {n: x["result"] for n, x in got.items()} == {
        "a_idx": "succeeded", "b_idx": "failed", "c_idx": "succeeded", "d_idx": "succeeded",
        "e_idx": "skipped"}
    assert {n: x["documents"] for n, x in got.items() if x["result"] == "succeeded"} == {
        "a_idx": 8, "c_idx": 30, "d_idx": 8}
    assert got["c_idx"]["resumed"] and got["c_idx"]["attempts"] == 2
    assert not got["a_idx"]["resumed"] and not got["d_idx"]["resumed"]
    assert "already hold" in got["b_idx"]["error"] and "b:3" in got["b_idx"]["error"]
    assert "no field named 'title'" in got["e_idx"]["skip_reason"]
    assert all(got[n]["duration_seconds"] > 0 for n in SIZES)
    assert report["summary"]["successful"] == 3 and report["summary"]["failed"] == 1
    assert report["summary"]["skipped"] == 1
    c_report = yaml.safe_load((reports / "c_idx_report.yaml").read_text())
    assert c_report["result"] == "succeeded" and c_report["rvlm"]["resumed"]

    for name in ("a_idx", "c_idx", "d_idx"):
        _assert_migrated(redis_client, name, snaps, before)
    _assert_untouched(redis_client, "b_idx", snaps, before)
    assert _field_names(redis_client, "e_idx") == ["t", "g", "v"]

    # Clear the collision and retry the failed index: the batch completes, exit 0.
    redis_client.hdel("b:3", "headline")
    snaps["b_idx"] = snapshot(redis_client, "b:")
    r = rvlm("batch", "resume", "--state", str(state), "--retry-failed", "--url", redis_url)
    assert r.returncode == 0, r.stdout + r.stderr
    report = yaml.safe_load((reports / "batch_report.yaml").read_text())
    assert report["status"] == "completed"
    assert {x["name"]: x["result"] for x in report["indexes"]}["b_idx"] == "succeeded"
    for name in SIZES:
        _assert_migrated(redis_client, name, snaps, before)


def test_batch_sigkill_mid_index_then_resume(redis_client: Any, redis_url: str,
                                             tmp_path: Path) -> None:
    """A real SIGKILL (not a fault point) while c_idx's journal shows transform work."""
    reset(redis_client)
    sizes = {"a_idx": 6, "c_idx": 400}
    for n, (name, size) in enumerate(sizes.items()):
        make_index(redis_client, name, name[0] + ":", size, seed=n)
    snaps = {n: snapshot(redis_client, n[0] + ":") for n in sizes}
    plan_out = tmp_path / "bp.yaml"
    r = rvlm("batch", "plan", "--schema-patch", str(write_patch(tmp_path)), "--indexes",
             "a_idx,c_idx", "--plan-out", str(plan_out), "--url", redis_url)
    assert r.returncode == 0, r.stderr
    state, backups = tmp_path / "s.yaml", tmp_path / "bk"
    env = {k: v for k, v in os.environ.items() if k != "RVLM_FAULT"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rvlm", "batch", "apply", "--plan", str(plan_out),
         "--backup-dir", str(backups), "--state", str(state), "--batch-size", "2",
         "--url", redis_url], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = backups / "c_idx" / "journal-0.jsonl"
    deadline = time.monotonic() + 60
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_bytes().count(b'"batch_done"') >= 3:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.002)
    proc.wait(timeout=30)
    st = yaml.safe_load(state.read_text())
    statuses = {i["name"]: i["status"] for i in st["indexes"]}
    assert statuses["a_idx"] == "succeeded"
    if killed:
        assert statuses["c_idx"] == "in_progress"
    r = rvlm("batch", "resume", "--state", str(state), "--url", redis_url)
    assert r.returncode == 0, r.stdout + r.stderr
    report = yaml.safe_load((Path(st["report_dir"]) / "batch_report.yaml").read_text())
    assert report["status"] == "completed"
    rows = {x["name"]: x for x in report["indexes"]}
    assert rows["c_idx"]["documents"] == 400 and rows["c_idx"]["resumed"] == killed
    for name in sizes:
        assert snapshot(redis_client, name[0] + ":") == renamed(snaps[name])
        assert read_index(redis_client, name).stats.num_docs == sizes[name]


def test_batch_parallel_python_api(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    """RedisVL-style API, K=3 at once, every index migrated with its documents intact."""
    reset(redis_client)
    names = {"p_idx": "p:", "q_idx": "q:", "r_idx": "r:", "s_idx": "s:"}
    for n, (name, prefix) in enumerate(names.items()):
        make_index(redis_client, name, prefix, 15, seed=n)
    snaps = {n: snapshot(redis_client, p) for n, p in names.items()}
    before = {n: answers(redis_client, n, "title") for n in names}
    bp = BatchMigrationPlanner().create_batch_plan(
        redis_url=redis_url, pattern="*_idx", schema_patch_path=write_patch(tmp_path),
        indexes=None, indexes_file=None, failure_policy="fail_fast")
    seen: list[tuple[str, str]] = []
    report = BatchMigrationExecutor().apply(
        bp, redis_url=redis_url, state_path=str(tmp_path / "state.yaml"),
        report_dir=str(tmp_path / "reports"), backup_dir=str(tmp_path / "bk"),
        progress_callback=lambda name, pos, total, status: seen.append((name, status)),
        accept_data_loss=False, parallel=3)
    assert report.status == "completed", report.to_yaml()
    assert sorted(seen) == sorted([(n, s) for n in names for s in ("starting", "succeeded")])
    assert (tmp_path / f"{bp.batch_id}_plan.yaml").exists()  # written for resume
    for name, prefix in names.items():
        assert snapshot(redis_client, prefix) == renamed(snaps[name])
        assert answers(redis_client, name, "headline") == before[name]
