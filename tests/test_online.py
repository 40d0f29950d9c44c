"""Online mode (build next to the source, move the alias) and aliases kept across a
drop_recreate migration, against the real server, under RESP2 and RESP3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import attrs
import pytest
import redis
from test_apply_helpers import (
    all_plugins,
    build_plan,
    make_hash_index,
    rename_field_target,
    rename_op,
    search,
    snapshot,
)
from typer.testing import CliRunner

from rvlm.cli.main import app
from rvlm.core.errors import RvlmError
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.planner import PlanOptions, make_plan
from rvlm.core.migrate.rollback import rollback
from rvlm.core.redis.connection import connect, index_exists, read_index
from rvlm.core.schema.patch import patch_from_dict
from rvlm.core.storage.journal import RunState

HELPER = Path(__file__).with_name("test_apply_helpers.py")
N = 400

#: index-side changes only: a new tag field on an existing hash field, HNSW instead of FLAT,
#: and the new name online mode needs
ONLINE_CHANGES = {
    "add_fields": [{"name": "g2", "type": "tag", "path": "g"}],
    "update_fields": [{"name": "v", "attrs": {"algorithm": "hnsw", "m": 8}}],
    "index": {"name": "idx_v2"},
}


def patch(changes: dict[str, Any]):
    return patch_from_dict({"version": 1, "changes": changes}, "patch.yaml")


def online_plan(client, changes=None, index: str = "idx", **options: Any) -> Plan:
    opts = {"mode": "online", "alias": "live", **options}
    return make_plan(client, index, patch=patch(ONLINE_CHANGES if changes is None else changes),
                     options=PlanOptions(**opts))


def total(client, index: str, query: str = "*") -> int:
    reply = client.execute_command("FT.SEARCH", index, query, "LIMIT", "0", "0", "DIALECT", "2")
    if isinstance(reply, dict):
        return int(reply[b"total_results"])
    return int(reply[0])


def points_at(client, alias: str) -> str | None:
    return read_index(client, alias).schema.name if index_exists(client, alias) else None


def indexes(client) -> set[bytes]:
    return set(client.execute_command("FT._LIST"))


class Reader(threading.Thread):
    """Queries the alias in a loop on its own connection; records every error and count."""

    def __init__(self, url: str, protocol: int) -> None:
        super().__init__(daemon=True)
        self.client = connect(url, protocol=protocol)
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.totals: list[int] = []
        self.served_by: list[str] = []
        self.new_field: list[int] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.totals.append(total(self.client, "live", "@g:{g1}"))
                self.new_field.append(self._new_field())
            except redis.RedisError as exc:
                self.errors.append(str(exc))

    def _new_field(self) -> int:
        try:
            return total(self.client, "live", "@g2:{g1}")
        except redis.ResponseError:  # servers that refuse an unknown field: the source
            return 0


def test_online_apply_serves_every_query_and_swaps_at_once(redis_client, redis_url, tmp_path,
                                                           protocol):
    make_hash_index(redis_client, n=N)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    before = snapshot(redis_client)
    want = total(redis_client, "idx", "@g:{g1}")
    plan = online_plan(redis_client)
    assert plan.supported, plan.blocked_reasons
    assert plan.mode == "online" and plan.aliases == ("live",) and plan.drop_source
    assert any(w.startswith("downtime: none (online)") for w in plan.all_warnings())
    assert any(w.startswith("memory: both indexes exist") for w in plan.all_warnings())

    reader = Reader(redis_url, protocol)
    during: list[int] = []

    def progress(phase: str, done: int, total_: int) -> None:
        if phase == "indexing" and not during:  # the target is being built: the alias serves
            n = len(reader.totals)
            reader.stop.wait(0.3)
            during.append(len(reader.totals) - n)

    reader.start()
    try:
        while len(reader.totals) < 5 and not reader.errors:
            reader.stop.wait(0.01)
        report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", progress=progress)
        n = len(reader.totals)
        while len(reader.totals) < n + 5 and not reader.errors:
            reader.stop.wait(0.01)
    finally:
        reader.stop.set()
        reader.join(10)
        reader.client.close()
    assert report.succeeded, report.to_yaml()
    assert reader.errors == []
    assert during and during[0] > 0  # queries answered while the target was building
    assert reader.totals and set(reader.totals) == {want}
    # before the swap the source answered (no g2: no results), after it the target, at once
    seen = reader.new_field
    assert seen[0] == 0 and seen[-1] == want
    swap = seen.index(want)
    assert set(seen[:swap]) == {0} and set(seen[swap:]) == {want}
    assert report.downtime_duration_seconds == 0
    assert report.to_dict()["timings"]["downtime_duration_seconds"] == 0
    assert {"checks", "build", "validation", "alias", "drop_source"} <= set(report.timings)
    assert report.documents == N and report.documents_rewritten == 0
    assert points_at(redis_client, "live") == "idx_v2"
    assert read_index(redis_client, "live").schema.field("v").attrs.algorithm == "hnsw"
    assert indexes(redis_client) == {b"idx_v2"}
    assert snapshot(redis_client) == before  # documents never touched
    assert RunState.load(tmp_path / "b").phase == "done"
    # re-running a finished apply is harmless
    again = apply_plan(redis_url, plan, backup_dir=tmp_path / "b")
    assert again.succeeded and again.resumed, again.to_yaml()


def test_online_rollback_recreates_the_dropped_source(redis_client, redis_url, tmp_path,
                                                      protocol):
    make_hash_index(redis_client, n=120)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    before = snapshot(redis_client)
    answer = search(redis_client, "live", "@g:{g2}")
    plan = online_plan(redis_client)
    assert apply_plan(redis_url, plan, backup_dir=tmp_path / "b").succeeded
    assert search(redis_client, "live", "@g:{g2}") == answer
    report = rollback(redis_url, tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert points_at(redis_client, "live") == "idx"
    assert indexes(redis_client) == {b"idx"}
    assert search(redis_client, "live", "@g:{g2}") == answer
    assert read_index(redis_client, "live").schema.field("v").attrs.algorithm == "flat"
    assert snapshot(redis_client) == before
    assert rollback(redis_url, tmp_path / "b").succeeded  # twice is fine
    with pytest.raises(RvlmError, match="rolled back"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "b")


def test_online_keep_source_and_a_new_alias(redis_client, redis_url, tmp_path, protocol):
    make_hash_index(redis_client, n=60)
    plan = online_plan(redis_client, alias="fresh", drop_source=False)
    assert plan.supported, plan.blocked_reasons
    assert any("alias 'fresh' does not exist: apply creates it" in w for w in plan.warnings)
    assert Plan.from_dict(plan.to_dict()) == plan
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert "drop_source" not in report.timings
    assert any("'idx' was kept" in a for a in report.manual_actions)
    assert indexes(redis_client) == {b"idx", b"idx_v2"}
    assert points_at(redis_client, "fresh") == "idx_v2"
    assert total(redis_client, "fresh") == 60
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert indexes(redis_client) == {b"idx"}
    assert points_at(redis_client, "fresh") is None  # the apply created it: rollback deletes it


def test_online_blocked_cases(redis_client, redis_url, tmp_path):
    make_hash_index(redis_client, n=30)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    changes_same_name = {"update_fields": [{"name": "v", "attrs": {"algorithm": "hnsw"}}]}
    same = online_plan(redis_client, changes_same_name)
    assert not same.supported
    assert any("needs a name of its own" in r and "index: {name: idx_v2}" in r
               for r in same.blocked_reasons), same.blocked_reasons
    # a plan that rewrites documents in place: one clear reason, and the exact remedy
    rewrite = online_plan(redis_client, {"rename_fields": [{"old_name": "t", "new_name": "title"}],
                                         "index": {"name": "idx_v2"}})
    [reason] = [r for r in rewrite.blocked_reasons if r.startswith("online_mode")]
    assert "new keys next to the source's, under a target prefix" in reason
    assert "'index: {prefix: \"doc_v2:\"}'" in reason and "--target-prefix doc_v2:" in reason
    # the same patch plans fine as drop_recreate
    assert make_plan(redis_client, "idx", patch=patch({"rename_fields": [
        {"old_name": "t", "new_name": "title"}]})).supported
    # no alias at all
    none = online_plan(redis_client, alias=None)
    assert any("pass --alias" in r for r in none.blocked_reasons)
    # an alias that points at another index
    redis_client.execute_command("FT.CREATE", "other", "ON", "HASH", "PREFIX", "1", "o:",
                                 "SCHEMA", "a", "TEXT")
    redis_client.execute_command("FT.ALIASADD", "elsewhere", "other")
    away = online_plan(redis_client, alias="elsewhere")
    assert any("alias 'elsewhere' points at index 'other', not at the source 'idx'" in r
               for r in away.blocked_reasons), away.blocked_reasons
    # an index name is no alias
    assert any("is the name of an index" in r
               for r in online_plan(redis_client, alias="other").blocked_reasons)
    # apply refuses every one of them with nothing changed
    before = snapshot(redis_client)
    for i, p in enumerate((same, rewrite, none, away)):
        with pytest.raises(RvlmError, match="blocked"):
            apply_plan(redis_url, p, backup_dir=tmp_path / f"b{i}")
    # a plan built by hand (not by the planner) that rewrites documents is refused too
    hand = attrs.evolve(build_plan(redis_client, "idx", rename_field_target(
        read_index(redis_client, "idx").schema, "t", "title").with_index(name="idx_v2"),
        [rename_op()]), mode="online", alias="live")
    with pytest.raises(RvlmError, match="cannot run online: online mode writes the "
                                        "rewritten documents as new keys"):
        apply_plan(redis_url, hand, backup_dir=tmp_path / "hand", plugins=all_plugins())
    # the alias moved elsewhere after the plan was made: refused before anything changes
    ok = online_plan(redis_client)
    assert ok.supported
    redis_client.execute_command("FT.ALIASUPDATE", "live", "other")
    with pytest.raises(RvlmError, match="points at index 'other'"):
        apply_plan(redis_url, ok, backup_dir=tmp_path / "late")
    assert snapshot(redis_client) == before
    assert indexes(redis_client) == {b"idx", b"other"}


def test_unknown_mode_and_edited_online_options_are_refused(redis_client):
    make_hash_index(redis_client, n=10)
    with pytest.raises(RvlmError, match="unknown mode 'fast'"):
        online_plan(redis_client, mode="fast")
    plan = online_plan(redis_client)
    data = plan.to_dict()
    assert data["mode"] == "online"
    assert data["rvlm"]["alias"] == "live" and data["rvlm"]["drop_source"] is True
    assert Plan.from_dict(plan.to_dict()).fingerprint == plan.fingerprint
    for key, value in (("drop_source", False), ("alias", "other")):
        edited = plan.to_dict()
        edited["rvlm"][key] = value
        with pytest.raises(RvlmError, match="edited"):
            Plan.from_dict(edited)
    edited = plan.to_dict()
    edited["mode"] = "drop_recreate"
    with pytest.raises(RvlmError, match="edited"):
        Plan.from_dict(edited)
    edited["mode"] = "sideways"
    with pytest.raises(RvlmError, match="unknown mode"):
        Plan.from_dict(edited)
    # a drop_recreate plan's YAML has no online keys (its fingerprint is as before)
    plain = make_plan(redis_client, "idx", patch=patch(ONLINE_CHANGES)).to_dict()
    assert plain["mode"] == "drop_recreate"
    assert "drop_source" not in plain["rvlm"] and "alias" not in plain["rvlm"]


def _run(url: str, plan_path: Path, backup: Path, fault: str | None = None):
    env = {k: v for k, v in os.environ.items() if k != "RVLM_FAULT"}
    if fault:
        env["RVLM_FAULT"] = fault
    return subprocess.run([sys.executable, str(HELPER), url, str(plan_path), str(backup), "50",
                           "1"], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize("fault,alias_at,source_left", [
    ("online_after_checks", "idx", True),
    ("online_after_create", "idx", True),
    ("online_after_validate", "idx", True),
    ("online_after_alias", "idx_v2", True),
    ("online_after_drop", "idx_v2", False),
])
def test_online_crash_then_resume(redis_client, redis_url, tmp_path, fault, alias_at,
                                  source_left):
    make_hash_index(redis_client, n=150)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    before = snapshot(redis_client)
    plan = online_plan(redis_client)
    plan.write(tmp_path / "plan.yaml")
    crashed = _run(redis_url, tmp_path / "plan.yaml", tmp_path / "b", fault)
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    assert points_at(redis_client, "live") == alias_at  # queries were served all along
    assert total(redis_client, "live") == 150
    assert (b"idx" in indexes(redis_client)) == source_left
    done = _run(redis_url, tmp_path / "plan.yaml", tmp_path / "b")
    assert done.returncode == 0, done.stdout + done.stderr
    assert points_at(redis_client, "live") == "idx_v2"
    assert indexes(redis_client) == {b"idx_v2"}
    assert snapshot(redis_client) == before


@pytest.mark.parametrize("fault", ["online_after_create", "online_after_alias",
                                   "online_after_drop"])
def test_online_crash_then_rollback(redis_client, redis_url, tmp_path, fault):
    make_hash_index(redis_client, n=80)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    before = snapshot(redis_client)
    plan = online_plan(redis_client)
    plan.write(tmp_path / "plan.yaml")
    assert _run(redis_url, tmp_path / "plan.yaml", tmp_path / "b", fault).returncode == 137
    report = rollback(redis_url, tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert points_at(redis_client, "live") == "idx"
    assert indexes(redis_client) == {b"idx"}
    assert total(redis_client, "live") == 80
    assert snapshot(redis_client) == before


def test_rollback_of_an_online_apply_that_never_started(redis_client, redis_url, tmp_path):
    make_hash_index(redis_client, n=10)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    plan = online_plan(redis_client)
    plan.write(tmp_path / "plan.yaml")
    assert _run(redis_url, tmp_path / "plan.yaml", tmp_path / "b",
                "online_after_checks").returncode == 137
    # the checks passed, nothing was created: rollback has nothing to drop
    report = rollback(redis_url, tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert points_at(redis_client, "live") == "idx" and indexes(redis_client) == {b"idx"}


# ----------------------------------------------------------------- drop_recreate and aliases


@pytest.mark.parametrize("renamed", [False, True], ids=["same-name", "renamed"])
def test_drop_recreate_keeps_the_alias_named_by_index(redis_client, redis_url, tmp_path,
                                                      protocol, renamed):
    make_hash_index(redis_client, n=90)
    redis_client.execute_command("FT.ALIASADD", "current", "idx")
    before = snapshot(redis_client)
    answer = search(redis_client, "current", "@t:hello")
    changes: dict[str, Any] = {"rename_fields": [{"old_name": "t", "new_name": "title"}]}
    if renamed:
        changes["index"] = {"name": "idx_new"}
    plan = make_plan(redis_client, "current", patch=patch(changes))
    assert plan.supported and plan.source_alias == "current" and plan.aliases == ("current",)
    target = plan.target_index
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert points_at(redis_client, "current") == target
    assert search(redis_client, "current", "@title:hello")[0] == answer[0]
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert points_at(redis_client, "current") == "idx"
    assert search(redis_client, "current", "@t:hello") == answer
    assert snapshot(redis_client) == before


def test_drop_recreate_with_a_named_alias(redis_client, redis_url, tmp_path):
    make_hash_index(redis_client, n=40)
    plan = make_plan(redis_client, "idx", patch=patch({"index": {"name": "idx_new"}}),
                     options=PlanOptions(alias="app"))
    assert plan.supported and plan.mode == "drop_recreate" and plan.aliases == ("app",)
    assert not plan.to_dict()["rvlm"].get("drop_source")
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert points_at(redis_client, "app") == "idx_new"
    assert total(redis_client, "app") == 40
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert points_at(redis_client, "app") is None  # created by the apply: deleted again
    assert indexes(redis_client) == {b"idx"}
    # an alias of another index is blocked in drop_recreate mode too
    redis_client.execute_command("FT.CREATE", "other", "ON", "HASH", "PREFIX", "1", "o:",
                                 "SCHEMA", "a", "TEXT")
    redis_client.execute_command("FT.ALIASADD", "theirs", "other")
    blocked = make_plan(redis_client, "idx", patch=patch({"index": {"name": "idx_new"}}),
                        options=PlanOptions(alias="theirs"))
    assert any("points at index 'other'" in r for r in blocked.blocked_reasons)


def test_drop_recreate_crash_after_drop_then_rollback_restores_the_alias(
        redis_client, redis_url, tmp_path):
    make_hash_index(redis_client, n=60)
    redis_client.execute_command("FT.ALIASADD", "current", "idx")
    plan = make_plan(redis_client, "current", patch=patch({"index": {"name": "idx_new"}}))
    plan.write(tmp_path / "plan.yaml")
    assert _run(redis_url, tmp_path / "plan.yaml", tmp_path / "b", "after_drop"
                ).returncode == 137
    assert points_at(redis_client, "current") is None  # the drop took the alias with it
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert points_at(redis_client, "current") == "idx"
    assert total(redis_client, "current") == 60


# ----------------------------------------------------------------- CLI


def test_cli_plan_online(redis_client, redis_url, tmp_path):
    make_hash_index(redis_client, n=20)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    (tmp_path / "p.yaml").write_text(
        "version: 1\nchanges:\n  update_fields: [{name: v, attrs: {algorithm: hnsw}}]\n"
        "  index: {name: idx_v2}\n")
    runner = CliRunner()
    out = tmp_path / "plan.yaml"
    res = runner.invoke(app, ["plan", "--url", redis_url, "--index", "idx", "--schema-patch",
                              str(tmp_path / "p.yaml"), "--mode", "online", "--alias", "live",
                              "--keep-source", "--plan-out", str(out)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "Downtime: none (online)" in text and "Mode: online" in text
    loaded = Plan.load(out)
    assert loaded.online and loaded.alias == "live" and not loaded.drop_source
    res = runner.invoke(app, ["estimate", "--plan", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["expected_downtime_seconds"] == 0
    res = runner.invoke(app, ["apply", "--url", redis_url, "--plan", str(out), "--backup-dir",
                              str(tmp_path / "b"), "--yes"])
    assert res.exit_code == 0, res.output
    assert "downtime none (online)" in res.output
    assert points_at(redis_client, "live") == "idx_v2"
    res = runner.invoke(app, ["plan", "--url", redis_url, "--index", "idx", "--schema-patch",
                              str(tmp_path / "p.yaml"), "--mode", "fast"])
    assert res.exit_code == 2 and "'drop_recreate', 'online'" in res.output
