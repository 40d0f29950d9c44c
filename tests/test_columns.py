"""The columnar transform (``transform_columns``): the built-in rename and quantization take
it, with the same documents, bytes and backup as the per-document path; a crash in the middle
of it resumes to the same bytes; a plugin's columnar form is held to its declared writes and
may hand a batch back to ``transform_documents``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from test_apply_helpers import make_hash_index, reset, search, snapshot

from rvlm.core.migrate import columns
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.planner import make_plan
from rvlm.core.plugins.host import get_host, host_with
from rvlm.core.schema.patch import patch_from_dict
from rvlm.core.storage.backup.reader import BackupReader
from rvlm.plugin import (
    MISSING,
    NO_CHANGE,
    DocumentOperation,
    DocumentUpdate,
    hookimpl,
)

HELPER = Path(__file__).with_name("test_apply_helpers.py")

PATCHES: dict[str, dict[str, Any]] = {
    "rename": {"rename_fields": [{"old_name": "t", "new_name": "title"}]},
    "quantize": {"update_fields": [{"name": "v", "attrs": {"datatype": "float16"}}]},
    "prefix": {"index": {"prefix": "item:"}},
    "rename_quantize_prefix": {
        "rename_fields": [{"old_name": "t", "new_name": "title"}],
        "update_fields": [{"name": "v", "attrs": {"datatype": "float16"}}],
        "index": {"prefix": "item:"}},
}


def _plan(client: Any, changes: dict[str, Any]) -> Any:
    host = get_host()
    patch = patch_from_dict({"version": 1, "changes": changes}, "test",
                            tuple(host.patch_sections()))
    return make_plan(client, "idx", patch=patch, host=host)


def _data(client: Any) -> None:
    reset(client)
    make_hash_index(client, n=90, ttl_every=9)
    client.hdel("doc:5", "t")  # a document without the renamed field
    client.hset("doc:6", "v", b"\x00" * 5)  # a vector of the wrong size: left as it is


def _records(backup: Path, fingerprint: str) -> dict[bytes, Any]:
    """Every backup record by key (a TTL as whether there is one: it counts down)."""
    reader = BackupReader(backup, fingerprint)
    return {r.key: attrs.evolve(r, ttl_ms=None if r.ttl_ms is None else 1)
            for b in reader.batch_numbers() for r in reader.batch(b)}


@pytest.mark.parametrize("name", sorted(PATCHES))
def test_builtin_changes_take_the_columnar_path_with_the_same_result(
        redis_client, redis_url, tmp_path, monkeypatch, name):
    got = {}
    for path in ("documents", "columns"):
        _data(redis_client)
        plan = _plan(redis_client, PATCHES[name])
        monkeypatch.setattr(columns, "COLUMNS", True)
        assert columns.columnar(get_host(), plan)  # the built-ins have the columnar form
        monkeypatch.setattr(columns, "COLUMNS", path == "columns")
        backup = tmp_path / path
        report = apply_plan(redis_url, plan, backup_dir=backup, batch_size=7,
                            accept_data_loss=True)
        assert report.succeeded, report.to_yaml()
        assert report.documents_rewritten >= 89
        got[path] = (snapshot(redis_client), _records(backup, plan.fingerprint),
                     search(redis_client, plan.target_index, "@g:{g1}"))
    assert got["columns"][0] == got["documents"][0]  # every document, byte for byte
    assert got["columns"][1] == got["documents"][1]  # the backup: originals and digests
    assert got["columns"][2] == got["documents"][2]


def _run(url: str, plan_path: Path, backup: Path, fault: str | None = None) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "RVLM_FAULT"}
    if fault:
        env["RVLM_FAULT"] = fault
    return subprocess.run([sys.executable, str(HELPER), url, str(plan_path), str(backup),
                           "10", "1"], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize("fault", ["after_backup:2", "mid_write:3", "after_batch:4"])
def test_columnar_crash_then_resume_equals_control(redis_client, redis_url, tmp_path, fault):
    changes = PATCHES["rename_quantize_prefix"]
    _data(redis_client)
    plan = _plan(redis_client, changes)
    plan_path = tmp_path / "plan.yaml"
    plan.write(plan_path)
    assert _run(redis_url, plan_path, tmp_path / "control").returncode == 0
    control = (snapshot(redis_client), search(redis_client, plan.target_index, "@g:{g1}"))
    _data(redis_client)
    first = _run(redis_url, plan_path, tmp_path / "b", fault=fault)
    assert first.returncode == 137, first.stdout + first.stderr
    second = _run(redis_url, plan_path, tmp_path / "b")
    assert second.returncode == 0, second.stdout + second.stderr
    assert snapshot(redis_client) == control[0]  # nothing converted twice, nothing lost
    assert search(redis_client, plan.target_index, "@g:{g1}") == control[1]


class UpperPlugin:
    """A third-party change with both forms: upper-cases hash field ``g``. Its columnar form
    (``mode="columns"``) takes every batch, hands each back to ``transform_documents``
    (``"refuse"``), or writes a field it did not declare (``"stray"``)."""

    name = "t_upper"

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.columns_calls = 0
        self.documents_calls = 0

    @hookimpl
    def transform_columns(self, operation: DocumentOperation,
                          columns: Any) -> dict[str, list[Any]] | None:
        if self.mode == "refuse":
            return None
        self.columns_calls += 1
        values = columns["g"]
        out: dict[str, list[Any]] = {"g": [NO_CHANGE if v is MISSING else v.upper()
                                           for v in values]}
        if self.mode == "stray":
            out["t"] = [b"x"] * len(values)
        return out

    @hookimpl
    def transform_documents(self, operation: DocumentOperation,
                            documents: Any) -> list[DocumentUpdate]:
        self.documents_calls += 1
        return [NO_CHANGE if d.get("g") is MISSING else
                DocumentUpdate(set={"g": d.get("g").upper()}) for d in documents]


def _upper_plan(client: Any) -> Any:
    from test_apply_helpers import build_plan

    from rvlm.core.redis.connection import read_index

    src = read_index(client, "idx").schema
    op = DocumentOperation(plugin="t_upper", kind="upper_tag", reads=("g",), writes=("g",))
    return build_plan(client, "idx", src.with_index(name="idx2"), [op])


@pytest.mark.parametrize("mode", ["columns", "refuse"])
def test_a_plugin_columnar_form_or_its_fallback(redis_client, redis_url, tmp_path, mode):
    reset(redis_client)
    make_hash_index(redis_client, n=30)
    plugin = UpperPlugin(mode)
    plan = _upper_plan(redis_client)
    assert columns.columnar(host_with([plugin]), plan)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=3,
                        plugins=[plugin])
    assert report.succeeded, report.to_yaml()
    assert {redis_client.hget(f"doc:{i}", "g") for i in range(30)} == {b"G0", b"G1", b"G2"}
    assert search(redis_client, "idx2", "@g:{G1}")[0] == 10
    # the columnar form took every batch, or handed each back to transform_documents
    calls = (plugin.columns_calls, plugin.documents_calls)
    assert calls == ((10, 0) if mode == "columns" else (0, 10))


def test_a_plugin_columnar_form_writing_outside_its_writes_fails_before_writing(
        redis_client, redis_url, tmp_path):
    reset(redis_client)
    make_hash_index(redis_client, n=30)
    before = snapshot(redis_client)
    plugin = UpperPlugin("stray")
    plan = _upper_plan(redis_client)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=3,
                        plugins=[plugin])
    assert not report.succeeded
    assert "t_upper" in (report.error or "") and "'t'" in (report.error or "")
    assert snapshot(redis_client) == before  # not one document written
