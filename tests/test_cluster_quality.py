"""Validation and the quality gate on a real Redis Cluster (3 primaries, no search
coordinator, a hash-tagged index), under RESP2 and RESP3.

The gate's KNN queries go to the node that holds the index (the source before the drop, the
target after), and the validation's document checks read keys on their owners: a quantization
keeps recall over the floor and ``rvlm validate`` passes again later; a metric change that
reorders the neighbours falls under the floor and rolls itself back.
"""

from __future__ import annotations

import pytest
from cluster_data import load, snapshot, total

from rvlm import MigrationExecutor, MigrationPlanner, validate
from rvlm.core.redis.connection import read_index

pytestmark = pytest.mark.cluster

N = 150


def test_quantize_passes_the_gate_and_validates_again(redis_cluster, cluster_client, tmp_path,
                                                      protocol) -> None:
    rc = cluster_client
    load(rc, "hash", N)
    url = redis_cluster.nodes[1].url
    plan = MigrationPlanner().create_plan("{t1}idx", redis_url=url, schema_patch={
        "version": 1, "changes": {
            "update_fields": [{"name": "vec", "attrs": {"datatype": "float16"}}]}})
    assert plan.supported, plan.blocked_reasons
    backup = tmp_path / "b"
    report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=backup,
                                       min_recall=0.9, recall_queries=30, recall_k=5)
    assert report.result == "succeeded", report.to_yaml()
    checks = {c.name: c for c in report.validation.checks}
    assert checks["recall:vec"].passed and checks["doc_count_match"].passed
    vec = report.validation.quality["vec"]
    assert vec["passed"] and vec["recall_at_k"] >= 0.9, vec
    again = validate(plan, redis_url=redis_cluster.nodes[2].url, backup_dir=backup,
                     min_recall=0.9)
    assert again.result == "succeeded", again.to_yaml()
    assert any(c.name == "recall:vec" and c.passed for c in again.validation.checks)


def test_recall_under_the_floor_rolls_back(redis_cluster, cluster_client, tmp_path,
                                           protocol) -> None:
    rc = cluster_client
    load(rc, "hash", N)
    before = snapshot(rc, b"{t1}doc:", N)
    url = redis_cluster.url
    plan = MigrationPlanner().create_plan("{t1}idx", redis_url=url, schema_patch={
        "version": 1, "changes": {
            "update_fields": [{"name": "vec", "attrs": {"distance_metric": "l2"}}]}})
    assert plan.supported, plan.blocked_reasons
    report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=tmp_path / "b",
                                       min_recall=0.99, recall_queries=30, recall_k=5,
                                       rollback_below_recall=True)
    assert report.result == "failed" and report.rolled_back, report.to_yaml()
    vec = report.validation.quality["vec"]
    assert vec["recall_at_k"] < 0.99 and not vec["passed"], vec
    assert snapshot(rc, b"{t1}doc:", N) == before
    vec_field = next(f for f in read_index(rc, "{t1}idx").schema.fields if f.name == "vec")
    assert vec_field.attrs.distance_metric == "cosine"  # the source index is back
    assert total(rc, "{t1}idx", "@title:hello") == N
