"""The quality gate (issue #14) in an online apply that copies documents: the source is asked
before the first change, the copies under the target prefix are asked once indexed, and the
recall check runs before the alias moves; under the floor the alias stays on the source."""

from __future__ import annotations

from online_helpers import dumps, points_at
from test_apply_helpers import wait_indexed
from test_quality_helpers import cone, load, random_vectors, vector_index

from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.planner import PlanOptions, make_plan
from rvlm.core.migrate.rollback import rollback
from rvlm.core.quality.answers import ANSWERS_NAME
from rvlm.core.quality.model import QualityOptions
from rvlm.core.redis.notify import read_setting
from rvlm.core.schema.patch import patch_from_dict
from rvlm.core.storage.journal import RunState

POOR_HNSW = {"algorithm": "hnsw", "m": 2, "ef_construction": 2, "ef_runtime": 1}


def titled_index(client, data) -> None:
    """``idx`` over ``doc:*``: a text field ``title`` and the vector ``emb``, alias ``live``."""
    vector_index(client, "idx", "doc:", data.shape[1], metric="L2", extra=("title", "TEXT"))
    load(client, "doc:", data, fields=lambda i: {"title": f"hello {i}"})
    wait_indexed(client, "idx")
    client.execute_command("FT.ALIASADD", "live", "idx")


def copy_plan(client, emb_attrs: dict) -> Plan:
    """Rename ``title`` -> ``name`` (a document rewrite: online copies to ``new:``) and change
    ``emb``'s attributes."""
    patch = patch_from_dict({"version": 1, "changes": {
        "index": {"name": "idx_v2"},
        "rename_fields": [{"old_name": "title", "new_name": "name"}],
        "update_fields": [{"name": "emb", "attrs": emb_attrs}]}}, "patch.yaml")
    plan = make_plan(client, "idx", patch=patch, options=PlanOptions(
        mode="online", alias="live", target_prefix="new:"))
    assert plan.supported, plan.blocked_reasons
    assert plan.operations, "the rename rewrites documents: an online copy"
    return plan


def test_the_gate_measures_the_copies_before_the_alias_moves(redis_client, redis_url,
                                                             tmp_path, notify):
    titled_index(redis_client, cone(1500, 32, 0.5, clusters=8))
    plan = copy_plan(redis_client, {"datatype": "float16"})
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", accept_data_loss=True,
                        quality=QualityOptions(min_recall=0.95))
    assert report.succeeded, report.to_yaml()
    emb = report.validation.quality["emb"]
    # the source's answers (doc:N) were compared with the copies' (new:N): a recall near 1
    # shows each answer was mapped to its copy
    assert emb["recall_at_k"] >= 0.95 and emb["passed"] is True and emb["min_recall"] == 0.95
    checks = {c.name: c for c in report.validation.checks}
    assert checks["recall:emb"].passed
    assert (tmp_path / "b" / ANSWERS_NAME).exists()
    assert points_at(redis_client, "live") == "idx_v2"
    assert RunState.load(tmp_path / "b").phase == "done"


def test_under_the_floor_the_alias_stays_and_the_copy_rolls_back_by_itself(
        redis_client, redis_url, tmp_path, notify):
    titled_index(redis_client, random_vectors(2000, 64))
    source = dumps(redis_client, "doc:*")
    plan = copy_plan(redis_client, POOR_HNSW)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", accept_data_loss=True,
                        quality=QualityOptions(min_recall=0.9), rollback_below_recall=True)
    assert report.result == "failed" and report.rolled_back, report.to_yaml()
    emb = report.validation.quality["emb"]
    assert emb["recall_at_k"] < 0.9 and emb["passed"] is False
    assert any("recall:emb" in e and "under --min-recall 0.9" in e
               for e in report.validation.errors)
    # the alias never moved, and the copies, the target index and the setting are gone
    assert points_at(redis_client, "live") == "idx"
    assert dumps(redis_client, "doc:*") == source
    assert list(redis_client.scan_iter(match="new:*")) == []
    assert set(redis_client.execute_command("FT._LIST")) == {b"idx"}
    assert read_setting(redis_client) == ""
    assert RunState.load(tmp_path / "b").phase == "rolled_back"


def test_under_the_floor_without_rollback_the_source_keeps_serving(redis_client, redis_url,
                                                                   tmp_path, notify):
    titled_index(redis_client, random_vectors(2000, 64))
    plan = copy_plan(redis_client, POOR_HNSW)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", accept_data_loss=True,
                        quality=QualityOptions(min_recall=0.9))
    assert report.result == "failed" and not report.rolled_back
    assert points_at(redis_client, "live") == "idx"
    assert any("still point at 'idx'" in a for a in report.manual_actions)
    assert RunState.load(tmp_path / "b").phase == "indexed"
    undone = rollback(redis_url, tmp_path / "b")
    assert undone.succeeded, undone.to_yaml()
    assert list(redis_client.scan_iter(match="new:*")) == []
    assert read_setting(redis_client) == ""
