"""move_path (``update_fields`` with a new ``path``) on the real server, under RESP2 and RESP3.

What a user checks: after the apply every value sits at the new path (parent objects created
where a document had none), nothing is left at the old one, the same queries find the same
documents, TTLs are kept; a crash at any point resumes to exactly the documents of an
uninterrupted run; rollback gives back every document byte for byte. Refusals come before
anything changes: at plan time on the sample, and before the drop over every document.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import rvlm
from rvlm import MigrationExecutor, MigrationPlanner, Plan, RvlmError
from rvlm.cli.main import app

COUNT = 30
runner = CliRunner()


def doc(i: int) -> dict[str, Any]:
    """Most documents have a ``meta`` object; every fourth has none; j:7 has no title."""
    d: dict[str, Any] = {"title": f"title {i} {'space' if i % 3 else 'earth'} \u00e9",
                         "score": i / 7, "tags": ["a", f"t{i % 4}"]}
    if i % 4:
        d["meta"] = {"year": 2000 + i}
    if i == 7:
        del d["title"]
    return d


def make_index(client: Any) -> None:
    client.execute_command(
        "FT.CREATE", "jdocs", "ON", "JSON", "PREFIX", "1", "j:", "SCHEMA",
        "$.title", "AS", "title", "TEXT", "$.meta.year", "AS", "year", "NUMERIC",
        "$.tags[*]", "AS", "tags", "TAG")
    for i in range(COUNT):
        client.execute_command("JSON.SET", f"j:{i}", "$", json.dumps(doc(i)))
    client.pexpire("j:3", 3_600_000)
    wait_indexed(client, "jdocs")


def wait_indexed(client: Any, index: str) -> None:
    for _ in range(500):
        info = client.execute_command("FT.INFO", index)
        d = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2], strict=True))
        if not int(d.get(b"indexing", d.get("indexing", 0))):
            return
        time.sleep(0.01)


def state(client: Any) -> dict[bytes, tuple[bytes, bool]]:
    """Every document: its JSON exactly as the server prints it, and whether it has a TTL."""
    return {k: (client.execute_command("JSON.GET", k, "$"), client.pttl(k) > 0)
            for k in sorted(client.scan_iter(match="j:*"))}


def search(client: Any, query: str) -> list[bytes]:
    reply = client.execute_command("FT.SEARCH", "jdocs", query, "NOCONTENT", "LIMIT", "0",
                                   "100", "DIALECT", "2")
    if isinstance(reply, dict) or not isinstance(reply, list):
        return sorted(r[b"id"] for r in reply[b"results"])
    return sorted(reply[1:])


QUERIES = ["@title:space", "@title:earth", "@year:[2010 2020]", "@tags:{t1}"]


def plan_move(client: Any, path: str = "$.meta.title", **planner: Any) -> Plan:
    return MigrationPlanner(**planner).create_plan(
        "jdocs", redis_client=client,
        schema_patch={"version": 1, "changes": {"update_fields": [{"name": "title",
                                                                   "path": path}]}})


def root(client: Any, key: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(client.execute_command("JSON.GET", key, "$"))[0]
    return found


def test_move_apply_and_rollback(redis_client: Any, redis_url: str, tmp_path: Path,
                                 protocol: int) -> None:
    make_index(redis_client)
    original = state(redis_client)
    before = {q: search(redis_client, q) for q in QUERIES}
    plan = plan_move(redis_client)
    assert plan.supported, plan.blocked_reasons
    [change] = plan.changes
    assert (change.type, change.plugin) == ("move_path", "move_path")

    report = MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=tmp_path / "b",
                                       batch_size=7)
    assert report.succeeded, report.to_yaml()
    assert report.documents_rewritten == COUNT - 1  # j:7 has no title: left alone
    for i in range(COUNT):
        want = doc(i)
        title = want.pop("title", None)
        if title is not None:
            want["meta"] = {**want.get("meta", {}), "title": title}
        assert root(redis_client, f"j:{i}") == want, i
    assert {q: search(redis_client, q) for q in QUERIES} == before
    assert 0 < redis_client.pttl("j:3") <= 3_600_000
    [check] = [c for c in report.validation.checks if c.name == "move_path:title"]
    assert check.passed

    assert rvlm.rollback(tmp_path / "b", redis_url=redis_url).succeeded
    assert state(redis_client) == original
    assert {q: search(redis_client, q) for q in QUERIES} == before


def test_move_to_a_new_parent_object(redis_client: Any, redis_url: str,
                                     tmp_path: Path) -> None:
    make_index(redis_client)
    plan = plan_move(redis_client, "$.info.labels.title")
    assert plan.supported, plan.blocked_reasons
    assert MigrationExecutor().apply(plan, redis_url=redis_url,
                                     backup_dir=tmp_path / "b").succeeded
    moved = root(redis_client, "j:5")
    assert moved["info"] == {"labels": {"title": doc(5)["title"]}} and "title" not in moved
    assert search(redis_client, "@title:earth") == sorted(
        f"j:{i}".encode() for i in range(COUNT) if i % 3 == 0 and i != 7)


def _apply_in_subprocess(url: str, plan_path: Path, backup: Path,
                         fault: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RVLM_FAULT"}
    if fault:
        env["RVLM_FAULT"] = fault
    code = ("import sys; from rvlm import MigrationExecutor, Plan; "
            "r = MigrationExecutor().apply(Plan.load(sys.argv[2]), redis_url=sys.argv[1], "
            "backup_dir=sys.argv[3], batch_size=7); print(r.result, r.error or ''); "
            "sys.exit(0 if r.succeeded else 1)")
    return subprocess.run([sys.executable, "-c", code, url, str(plan_path), str(backup)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("fault", ["after_backup:1", "mid_write:2"])
def test_crash_resume_then_rollback(redis_client: Any, redis_url: str, tmp_path: Path,
                                    protocol: int, fault: str) -> None:
    """Killed mid-move (RVLM_FAULT) and re-run: the documents equal an uninterrupted run's;
    rolled back: they equal the originals, byte for byte."""
    make_index(redis_client)
    original = state(redis_client)
    plan_path = tmp_path / "plan.yaml"
    plan_move(redis_client).write(plan_path)
    done = _apply_in_subprocess(redis_url, plan_path, tmp_path / "control", None)
    assert done.returncode == 0, done.stdout + done.stderr
    control = state(redis_client)
    assert control != original
    assert rvlm.rollback(tmp_path / "control", redis_url=redis_url).succeeded
    assert state(redis_client) == original

    crashed = _apply_in_subprocess(redis_url, plan_path, tmp_path / "b", fault)
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    resumed = _apply_in_subprocess(redis_url, plan_path, tmp_path / "b", None)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert state(redis_client) == control
    assert rvlm.rollback(tmp_path / "b", redis_url=redis_url).succeeded
    assert state(redis_client) == original


def test_hash_path_renames_the_hash_field(redis_client: Any, redis_url: str,
                                         tmp_path: Path, protocol: int) -> None:
    redis_client.execute_command("FT.CREATE", "hdocs", "ON", "HASH", "PREFIX", "1", "h:",
                                 "SCHEMA", "title", "TEXT", "n", "NUMERIC")
    for i in range(12):
        redis_client.hset(f"h:{i}", mapping={"title": f"hello {i}", "n": i})
    original = {k: redis_client.hgetall(k) for k in redis_client.scan_iter(match="h:*")}
    plan = MigrationPlanner().create_plan("hdocs", redis_client=redis_client, schema_patch={
        "version": 1, "changes": {"update_fields": [{"name": "title", "path": "headline"}]}})
    assert plan.supported, plan.blocked_reasons
    assert MigrationExecutor().apply(plan, redis_url=redis_url,
                                     backup_dir=tmp_path / "b").succeeded
    assert redis_client.hgetall("h:4") == {b"headline": b"hello 4", b"n": b"4"}
    found = redis_client.execute_command("FT.SEARCH", "hdocs", "@title:hello", "NOCONTENT")
    assert (found[0] if isinstance(found, list) else found[b"total_results"]) == 12
    assert rvlm.rollback(tmp_path / "b", redis_url=redis_url).succeeded
    assert {k: redis_client.hgetall(k) for k in redis_client.scan_iter(match="h:*")} == original


@pytest.mark.parametrize(("path", "setup", "reason"), [
    ("$.meta.title", {"j:2": ("$.meta.title", '"taken"')}, "already hold $.meta.title (e.g. j:2)"),
    ("$.meta.title", {"j:5": ("$.meta", '"not an object"')},
     "$.meta is not an object in 1 sampled documents (e.g. j:5)"),
    ("$.tags[0]", {}, "the new path '$.tags[0]' is not a plain $.a.b path"),
    ("$.title.text", {}, "one path is inside the other"),
    ("$.headline", {"index": ("title_tag", "")}, "field 'title_tag' also reads $.title"),
])
def test_plan_refusals(redis_client: Any, path: str, setup: dict[str, tuple[str, str]],
                       reason: str) -> None:
    make_index(redis_client)
    for key, (where, value) in setup.items():
        if key == "index":  # a second field over the same path
            redis_client.execute_command("FT.ALTER", "jdocs", "SCHEMA", "ADD", "$.title",
                                         "AS", where, "TAG")
            wait_indexed(redis_client, "jdocs")
            continue
        redis_client.execute_command("JSON.SET", key, where, value)
    plan = plan_move(redis_client, path)
    assert not plan.supported
    [change] = plan.changes
    assert change.type == "move_path" and reason in change.blocked_reasons[0], change
    assert not plan.operations


def test_a_bad_parent_outside_the_sample_is_refused_before_the_drop(
        redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    make_index(redis_client)
    plan = plan_move(redis_client, sample_size=3)  # j:25 is not in the sample
    assert plan.supported, plan.blocked_reasons
    redis_client.execute_command("JSON.SET", "j:25", "$.meta", '"not an object"')
    original = state(redis_client)
    with pytest.raises(RvlmError, match=r"move_path 'title': 1 documents hold something other "
                                        r"than an object where \$.meta.title needs one \(e.g. "
                                        r"j:25\)"):
        MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=tmp_path / "b")
    assert state(redis_client) == original
    assert b"jdocs" in redis_client.execute_command("FT._LIST")


def test_estimate_measures_the_moved_values(redis_client: Any, redis_url: str,
                                            tmp_path: Path) -> None:
    make_index(redis_client)
    plan = plan_move(redis_client)
    plan.write(tmp_path / "plan.yaml")
    result = runner.invoke(app, ["estimate", "--plan", str(tmp_path / "plan.yaml"), "--url",
                                 redis_url, "--json"])
    assert result.exit_code == 0, result.output
    estimate = json.loads(result.stdout)
    sampled = [doc(int(k.split(":")[1])) for k in plan.key_sample]
    per_doc = sum(len(json.dumps(d["title"])) for d in sampled if "title" in d) / len(sampled)
    assert estimate["documents_rewritten"] == COUNT
    assert estimate["bytes_rewritten"] == pytest.approx(per_doc * COUNT)
    offline = runner.invoke(app, ["estimate", "--plan", str(tmp_path / "plan.yaml"), "--json"])
    assert json.loads(offline.stdout)["bytes_rewritten"] is None
