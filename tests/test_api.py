"""The public API: RedisVL's call shapes, lazy exports, one-run plugins, validate, rollback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import rvlm
from rvlm import MigrationExecutor, MigrationPlanner, RvlmError, hookimpl
from rvlm.core.plugins.checks import CheckResult


def make_index(client: Any) -> None:
    client.execute_command("FT.CREATE", "myindex", "ON", "HASH", "PREFIX", "1", "item:",
                           "SCHEMA", "title", "TEXT", "tag", "TAG")
    for i in range(25):
        client.hset(f"item:{i}", mapping={"title": f"t{i}", "tag": "x"})


def test_import_is_lazy() -> None:
    code = ("import sys, rvlm; assert 'redis' not in sys.modules, 'redis imported'; "
            "assert 'rvlm.core.migrate.executor' not in sys.modules; "
            "from rvlm import MigrationPlanner, AsyncMigrationExecutor, BatchMigrationPlanner; "
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
    for name in rvlm.__all__:
        assert getattr(rvlm, name) is not None
    with pytest.raises(AttributeError):
        rvlm.NoSuchThing  # noqa: B018


def test_redisvl_call_shapes(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    make_index(redis_client)
    patch = tmp_path / "patch.yaml"
    patch.write_text(yaml.safe_dump({"version": 1, "changes": {
        "rename_fields": [{"old_name": "title", "new_name": "headline"}]}}))
    plan = MigrationPlanner().create_plan("myindex", redis_url=redis_url,
                                          schema_patch_path=str(patch))
    assert plan.supported
    # the same plan `rvlm plan` writes
    out = subprocess.run([Path(sys.executable).parent / "rvlm", "plan", "--url", redis_url,
                          "--index", "myindex", "--schema-patch", str(patch), "--plan-out",
                          str(tmp_path / "cli.yaml")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cli.yaml").read_text() == plan.to_yaml()
    report = MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=tmp_path / "b",
                                       batch_size=500, num_workers=1)
    assert report.result == "succeeded"
    assert redis_client.hget("item:3", "headline") == b"t3"
    assert rvlm.validate(plan, redis_url=redis_url,
                         backup_dir=tmp_path / "b").result == "succeeded"
    back = rvlm.rollback(tmp_path / "b", redis_url=redis_url)
    assert back.result == "succeeded", back.error
    assert redis_client.hget("item:3", "title") == b"t3"


def test_target_schema_path(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    make_index(redis_client)
    target = tmp_path / "target.yaml"
    target.write_text(yaml.safe_dump({"index": {"name": "myindex", "prefix": "item:"},
                                      "fields": [{"name": "title", "type": "text"}]}))
    plan = MigrationPlanner().create_plan("myindex", redis_url=redis_url,
                                          target_schema_path=target)
    assert [c.type for c in plan.changes] == ["remove_field"]


def test_bad_input_is_one_clear_error(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    make_index(redis_client)
    with pytest.raises(RvlmError, match="exactly one"):
        MigrationPlanner().create_plan("myindex", redis_url=redis_url)
    with pytest.raises(RvlmError, match="no such file"):
        MigrationPlanner().create_plan("myindex", redis_url=redis_url,
                                       schema_patch_path=tmp_path / "missing.yaml")
    with pytest.raises(RvlmError, match="no field named 'nope'"):
        MigrationPlanner().create_plan("myindex", redis_url=redis_url, schema_patch={
            "version": 1, "changes": {"remove_fields": ["nope"]}})


class Audit:
    """A plugin for one run, not packaged: it vetoes nothing and adds a validation check."""

    name = "audit"

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def pre_drop(self, plan: Any, context: Any) -> list[str]:
        self.seen.append(plan.source_index)
        return []

    @hookimpl
    def validate(self, plan: Any, context: Any) -> list[CheckResult]:
        return [CheckResult(name="audit", passed=True)]


def test_plugin_for_one_run(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    make_index(redis_client)
    plan = MigrationPlanner().create_plan("myindex", redis_url=redis_url, schema_patch={
        "version": 1, "changes": {"remove_fields": ["tag"]}})
    audit = Audit()
    report = MigrationExecutor().apply(plan, redis_url=redis_url, backup_dir=tmp_path / "b",
                                       plugins=[audit])
    assert report.result == "succeeded"
    assert audit.seen == ["myindex"]
    assert [c.name for c in report.validation.checks if c.name == "audit"] == ["audit"]
    from rvlm.core.plugins.host import get_host

    assert not get_host().has("audit")  # registered for that run only


def test_batch_through_the_facade(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    from rvlm import BatchMigrationExecutor, BatchMigrationPlanner

    for n in ("a_idx", "b_idx"):
        redis_client.execute_command("FT.CREATE", n, "ON", "HASH", "PREFIX", "1", f"{n}:",
                                     "SCHEMA", "title", "TEXT", "tag", "TAG")
        redis_client.hset(f"{n}:1", mapping={"title": "t", "tag": "x"})
    patch = tmp_path / "patch.yaml"
    patch.write_text(yaml.safe_dump({"version": 1, "changes": {"remove_fields": ["tag"]}}))
    batch = BatchMigrationPlanner().create_batch_plan(redis_url=redis_url, pattern="*_idx",
                                                      schema_patch_path=patch)
    events: list[Any] = []
    report = BatchMigrationExecutor().apply(
        batch, redis_url=redis_url, state_path=tmp_path / "state.yaml",
        report_dir=tmp_path / "reports", backup_dir=tmp_path / "backups",
        progress_callback=lambda *a: events.append(a))
    assert report.succeeded, report.summary
    assert events
