"""rollback: restores bytes and query answers; refuses damaged backups before restoring."""

from __future__ import annotations

import pytest
from test_apply_helpers import (
    all_plugins,
    build_plan,
    f16_target,
    half_op,
    make_hash_index,
    rename_field_target,
    rename_op,
    reset,
    search,
    snapshot,
)

from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.rollback import rollback
from rvlm.core.redis.connection import read_index
from rvlm.core.storage.files import BackupCorrupt


def _migrate(client, url, backup, batch=6):
    make_hash_index(client, n=50, ttl_every=4)
    src = read_index(client, "idx").schema
    target = f16_target(rename_field_target(src, "t", "title")).with_index(name="idx_new")
    plan = build_plan(client, "idx", target, [rename_op(), half_op()], lossy=True)
    report = apply_plan(url, plan, backup_dir=backup, batch_size=batch, accept_data_loss=True,
                        plugins=all_plugins())
    assert report.succeeded, report.to_yaml()


def test_rollback_restores_bytes_ttls_and_queries(redis_client, redis_url, tmp_path):
    make_hash_index(redis_client, n=50, ttl_every=4)
    before = snapshot(redis_client)
    q = search(redis_client, "idx")
    knn_vec = before[b"doc:1"][0][b"v"]
    knn_query = ["FT.SEARCH", "idx", "*=>[KNN 5 @v $q]", "PARAMS", "2", "q", knn_vec,
                 "SORTBY", "__v_score", "NOCONTENT", "DIALECT", "2"]
    knn = redis_client.execute_command(*knn_query)
    reset(redis_client)
    _migrate(redis_client, redis_url, tmp_path / "b")
    report = rollback(redis_url, tmp_path / "b")
    assert report.succeeded and report.restored_records == 50, report.to_yaml()
    assert snapshot(redis_client) == before
    assert search(redis_client, "idx") == q
    assert redis_client.execute_command(*knn_query) == knn
    assert b"idx_new" not in redis_client.execute_command("FT._LIST")
    assert rollback(redis_url, tmp_path / "b").succeeded  # twice is fine
    with pytest.raises(Exception, match="another plan"):
        apply_plan(redis_url, build_plan(redis_client, "idx", read_index(
            redis_client, "idx").schema.with_index(name="idx_other"), []),
            backup_dir=tmp_path / "b")


def test_truncated_backup_refused_before_restoring(redis_client, redis_url, tmp_path):
    _migrate(redis_client, redis_url, tmp_path / "b")
    after = snapshot(redis_client)
    data = tmp_path / "b" / "data-0.rvb"
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size - 40)  # the last batch, which was applied
    with pytest.raises(BackupCorrupt, match=r"the last frame \(batch \d+, .*\) is damaged .*"
                                            r"the backup is corrupt"):
        rollback(redis_url, tmp_path / "b")
    assert snapshot(redis_client) == after


def test_edited_manifest_or_plan_refused(redis_client, redis_url, tmp_path):
    _migrate(redis_client, redis_url, tmp_path / "b")
    plan = tmp_path / "b" / "plan.yaml"
    plan.write_text(plan.read_text().replace("idx_new", "idx_other"))
    with pytest.raises(Exception, match=r"fingerprint|edited"):
        rollback(redis_url, tmp_path / "b")
