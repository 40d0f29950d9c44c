"""End to end through the planner and the built-in plugins: plan -> apply -> rollback."""

from __future__ import annotations

import numpy as np
import pytest
from test_apply_helpers import make_hash_index, make_json_index, search, snapshot

from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.planner import make_plan
from rvlm.core.migrate.rollback import rollback
from rvlm.core.schema.patch import patch_from_dict


def _plan(client, index, changes):
    return make_plan(client, index, patch=patch_from_dict({"version": 1, "changes": changes}))


@pytest.mark.parametrize("protocol", [2, 3])
def test_rename_field_hash(redis_client, redis_url, tmp_path, monkeypatch, protocol):
    monkeypatch.setenv("RVLM_PROTOCOL", str(protocol))
    make_hash_index(redis_client, n=50)
    before = snapshot(redis_client)
    q = search(redis_client, "idx")
    plan = _plan(redis_client, "idx", {"rename_fields": [{"old_name": "t", "new_name": "title"}]})
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=8)
    assert report.succeeded, report.to_yaml()
    assert redis_client.hget("doc:4", "title") == before[b"doc:4"][0][b"t"]
    assert redis_client.hget("doc:4", "t") is None
    assert search(redis_client, "idx", "@title:hello")[0] == 50
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert snapshot(redis_client) == before and search(redis_client, "idx") == q


def test_quantize_hash_float16(redis_client, redis_url, tmp_path):
    make_hash_index(redis_client, n=60)
    before = snapshot(redis_client)
    plan = _plan(redis_client, "idx",
                 {"update_fields": [{"name": "v", "attrs": {"datatype": "float16"}}]})
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=9,
                        accept_data_loss=plan.lossy)
    assert report.succeeded, report.to_yaml()
    for k, (h, _ttl) in before.items():
        want = np.frombuffer(h[b"v"], np.float32).astype(np.float16)
        got = np.frombuffer(redis_client.hget(k, "v"), np.float16)
        assert np.array_equal(got, want)
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert snapshot(redis_client) == before


def test_quantize_json_float16_is_index_only(redis_client, redis_url, tmp_path):
    make_json_index(redis_client, n=40)
    before = snapshot(redis_client)
    plan = _plan(redis_client, "jidx",
                 {"update_fields": [{"name": "v", "attrs": {"datatype": "float16"}}]})
    assert plan.supported and not plan.lossy and not plan.operations
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=6)
    assert report.succeeded, report.to_yaml()
    assert report.documents_rewritten == 0
    assert snapshot(redis_client) == before      # every number as it was
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert snapshot(redis_client) == before


def test_quantize_with_prefix_change_validates_the_moved_keys(redis_client, redis_url,
                                                               tmp_path):
    make_hash_index(redis_client, n=30)
    plan = _plan(redis_client, "idx",
                 {"index": {"name": "idx_v2", "prefix": "item:"},
                  "update_fields": [{"name": "v", "attrs": {"datatype": "float16"}}]})
    assert plan.key_sample_after() and all(k.startswith(b"item:")
                                           for k in plan.key_sample_after())
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=7,
                        accept_data_loss=plan.lossy)
    assert report.succeeded, report.to_yaml()
    checks = {c.name: c for c in report.validation.checks}
    assert report.validation.key_sample_exists
    assert checks["quantize:v"].passed, checks["quantize:v"].details
    assert "float16" in checks["quantize:v"].details


def test_prefix_change_and_index_rename(redis_client, redis_url, tmp_path):
    make_hash_index(redis_client, n=45, ttl_every=5)
    before = snapshot(redis_client)
    plan = _plan(redis_client, "idx", {"index": {"name": "idx_v2", "prefix": "item:"}})
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=10)
    assert report.succeeded, report.to_yaml()
    after = snapshot(redis_client)
    assert after == {k.replace(b"doc:", b"item:"): v for k, v in before.items()}
    assert search(redis_client, "idx_v2")[0] == 45
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert snapshot(redis_client) == before
