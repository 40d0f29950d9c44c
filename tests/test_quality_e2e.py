"""The quality gate end to end on the real server: the plan's estimate and --min-recall, apply
measuring the live indexes (drop_recreate and online), failure and rollback below the floor,
validate repeating it from the stored answers, query check files, the async API, batches, and
a crash between the source's answers and the target."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from test_apply_helpers import wait_indexed
from test_quality_helpers import cone, load, random_vectors, vector_index
from typer.testing import CliRunner

from rvlm.aio import AsyncMigrationExecutor
from rvlm.cli.main import app
from rvlm.core.errors import RvlmError
from rvlm.core.migrate.aliases import alias_index
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.planner import PlanOptions, make_plan
from rvlm.core.migrate.rollback import rollback
from rvlm.core.quality.answers import ANSWERS_NAME, read_answers
from rvlm.core.quality.estimate import estimate_recall
from rvlm.core.quality.model import QualityOptions
from rvlm.core.quality.probes import measure_field
from rvlm.core.redis.capabilities import Capabilities
from rvlm.core.redis.connection import index_exists, read_index
from rvlm.core.schema.patch import patch_from_dict

runner = CliRunner()
INT8_SERVER = Capabilities(redis_version="8.2.0", search_version=80200, json_version=80200)
POOR_HNSW = {"algorithm": "hnsw", "m": 2, "ef_construction": 2, "ef_runtime": 1}


def patch(changes):
    return patch_from_dict({"version": 1, "changes": changes}, "patch.yaml")


def write_patch(tmp_path, changes, name="patch.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"version": 1, "changes": changes}))
    return str(path)


def vectors_index(client, data, *, metric="L2", name="idx", prefix="doc:", **kw):
    vector_index(client, name, prefix, data.shape[1], metric=metric, **kw)
    load(client, prefix, data, **kw.get("load", {}))
    wait_indexed(client, name)


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def algorithm(client, index):
    return read_index(client, index).schema.field("emb").attrs.algorithm


# ------------------------------------------------------------------- float16 passes 0.99


def test_float16_on_flat_passes_099_and_validate_repeats_it(redis_client, redis_url, tmp_path):
    vectors_index(redis_client, random_vectors(600, 32), metric="COSINE")
    p = write_patch(tmp_path, {"update_fields": [{"name": "emb",
                                                  "attrs": {"datatype": "float16"}}]})
    plan_path, backup = tmp_path / "plan.yaml", tmp_path / "b"
    res = cli("plan", "-i", "idx", "--schema-patch", p, "-o", plan_path, "--url", redis_url,
              "--min-recall", "0.99")
    assert res.exit_code == 0, res.output
    assert "Recall" in res.output and "estimated recall@10" in res.output
    entry = yaml.safe_load(plan_path.read_text())["rvlm"]["quality"]["emb"]
    assert entry["estimated_recall_at_k"] >= 0.99
    assert (entry["k"], entry["sample"], entry["min_recall"]) == (10, 600, 0.99)
    # apply measures against the plan's floor without being told it again
    res = cli("apply", "--plan", plan_path, "--backup-dir", backup, "--url", redis_url,
              "--accept-data-loss", "--yes", "--report-out", tmp_path / "r.yaml")
    assert res.exit_code == 0, res.output
    assert "recall emb: recall@10" in res.output
    report = yaml.safe_load((tmp_path / "r.yaml").read_text())
    emb = report["quality"]["emb"]
    assert report["result"] == "succeeded"
    assert emb["recall_at_k"] >= 0.99 and emb["passed"] is True and emb["min_recall"] == 0.99
    assert emb["queries"] == 100 and emb["k"] == 10 and 0.9 <= emb["p5"] <= 1.0
    assert (backup / ANSWERS_NAME).exists()
    checks = {c["name"]: c for c in report["validation"]["checks"]}
    assert checks["recall:emb"]["passed"]
    # later, from the answers kept in the backup dir (the float32 source is long gone)
    res = cli("validate", "--plan", plan_path, "--backup-dir", backup, "--url", redis_url,
              "--min-recall", "0.99")
    assert res.exit_code == 0, res.output
    assert "ok   recall:emb" in res.output
    res = cli("validate", "--plan", plan_path, "--backup-dir", backup, "--url", redis_url,
              "--min-recall", "1.0")
    assert res.exit_code == (0 if emb["recall_at_k"] == 1.0 else 1), res.output


# ------------------------------------------------------------- a poor HNSW graph, refused


def test_poor_hnsw_online_keeps_the_alias_on_the_source(redis_client, redis_url, tmp_path,
                                                        protocol):
    vectors_index(redis_client, random_vectors(2000, 64))
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    plan = make_plan(redis_client, "idx", patch=patch({
        "update_fields": [{"name": "emb", "attrs": POOR_HNSW}], "index": {"name": "idx_v2"}}),
        options=PlanOptions(mode="online", alias="live"))
    assert plan.supported, plan.blocked_reasons
    assert plan.quality == {"emb": {
        "estimated_recall_at_k": None, "k": 10,
        "measured_at_apply": "algorithm flat -> hnsw, m default -> 2, ef_construction default "
                             "-> 2, ef_runtime default -> 1"}}
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b",
                        quality=QualityOptions(min_recall=0.9))
    assert report.result == "failed"
    emb = report.validation.quality["emb"]
    assert emb["recall_at_k"] < 0.9 and emb["passed"] is False
    assert emb["lost_first_neighbour"] > 0
    assert any("recall:emb" in e and "under --min-recall 0.9" in e
               for e in report.validation.errors)
    # the alias was not moved: clients are still served by the source; the target stays
    assert alias_index(redis_client, "live") == "idx"
    assert algorithm(redis_client, "idx") == "flat" and index_exists(redis_client, "idx_v2")
    assert any("still point at 'idx'" in a for a in report.manual_actions)
    undone = rollback(redis_url, tmp_path / "b")
    assert undone.succeeded and not index_exists(redis_client, "idx_v2")


def test_poor_hnsw_drop_recreate_fails_then_rolls_back_by_itself(redis_client, redis_url,
                                                                  tmp_path):
    vectors_index(redis_client, random_vectors(2000, 64))
    p = write_patch(tmp_path, {"update_fields": [{"name": "emb", "attrs": POOR_HNSW}]})
    plan_path = tmp_path / "plan.yaml"
    assert cli("plan", "-i", "idx", "--schema-patch", p, "-o", plan_path, "--url", redis_url,
               "--min-recall", "0.9").exit_code == 0  # not estimated: measured at apply
    res = cli("apply", "--plan", plan_path, "--backup-dir", tmp_path / "b1", "--url", redis_url,
              "-y", "--report-out", tmp_path / "r1.yaml")
    assert res.exit_code == 1, res.output
    first = yaml.safe_load((tmp_path / "r1.yaml").read_text())
    assert first["result"] == "failed" and first["quality"]["emb"]["recall_at_k"] < 0.9
    assert algorithm(redis_client, "idx") == "hnsw"  # failed, not undone
    # validate repeats the comparison later, from the answers kept in b1
    res = cli("validate", "--plan", plan_path, "--backup-dir", tmp_path / "b1", "--url",
              redis_url)
    assert res.exit_code == 1 and "FAIL recall:emb" in res.output, res.output
    low = first["quality"]["emb"]["recall_at_k"]
    res = cli("validate", "--plan", plan_path, "--backup-dir", tmp_path / "b1", "--url",
              redis_url, "--min-recall", str(max(0.0, low - 0.05)))
    assert res.exit_code == 0, res.output

    assert cli("rollback", "--backup-dir", tmp_path / "b1", "--url", redis_url,
               "-y").exit_code == 0
    assert algorithm(redis_client, "idx") == "flat"
    res = cli("apply", "--plan", plan_path, "--backup-dir", tmp_path / "b2", "--url", redis_url,
              "-y", "--rollback-below-recall", "--report-out", tmp_path / "r2.yaml")
    assert res.exit_code == 1, res.output
    assert "rolled back by itself" in res.output
    second = yaml.safe_load((tmp_path / "r2.yaml").read_text())
    assert second["result"] == "failed" and second["rvlm"]["rolled_back"] is True
    assert second["quality"]["emb"]["recall_at_k"] < 0.9
    # the source is back and answers as it did before the apply
    assert algorithm(redis_client, "idx") == "flat"
    probes = read_answers(tmp_path / "b2", Plan.load(plan_path).fingerprint).field("emb")
    again = measure_field(redis_client, "idx", probes)
    assert again.recall_at_k == 1.0 and again.lost_first_neighbour == 0


# ---------------------------------------------------------- the estimate against apply


@pytest.mark.parametrize("datatype", ["float16", "bfloat16"])
def test_plan_estimate_is_within_005_of_what_apply_measures(redis_client, redis_url, tmp_path,
                                                             datatype):
    vectors_index(redis_client, cone(1000, 64, 0.1), metric="COSINE")
    plan = make_plan(redis_client, "idx", patch=patch({"update_fields": [
        {"name": "emb", "attrs": {"datatype": datatype}}]}))
    estimate = plan.quality["emb"]["estimated_recall_at_k"]
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", accept_data_loss=True)
    assert report.succeeded, report.validation.errors  # no floor: measured and reported
    measured = report.validation.quality["emb"]["recall_at_k"]
    assert abs(estimate - measured) <= 0.05, (estimate, measured)
    assert measured < 0.99  # a narrow cone: the change is visible


# --------------------------------------------------------------------------- plan side


def test_plan_min_recall_blocks_with_the_figure_and_plans_are_stable(redis_client, redis_url,
                                                                     tmp_path):
    vectors_index(redis_client, cone(800, 64, 0.1), metric="COSINE")
    p = write_patch(tmp_path, {"update_fields": [{"name": "emb",
                                                  "attrs": {"datatype": "bfloat16"}}]})
    res = cli("plan", "-i", "idx", "--schema-patch", p,
              "-o", tmp_path / "a.yaml", "--url", redis_url,
              "--min-recall", "0.9")
    assert res.exit_code == 1, res.output
    assert "under --min-recall 0.9" in res.output and "estimated recall@10 0." in res.output
    data = yaml.safe_load((tmp_path / "a.yaml").read_text())
    assert data["diff_classification"]["supported"] is False
    assert any(r.startswith("quality: emb: estimated recall@10")
               for r in data["diff_classification"]["blocked_reasons"])
    # the same inputs give the same bytes; the fingerprint covers the quality section
    assert cli("plan", "-i", "idx", "--schema-patch", p,
               "-o", tmp_path / "b.yaml", "--url", redis_url,
               "--min-recall", "0.9").exit_code == 1
    assert (tmp_path / "a.yaml").read_bytes() == (tmp_path / "b.yaml").read_bytes()
    data["rvlm"]["quality"]["emb"]["estimated_recall_at_k"] = 0.99
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(RvlmError, match="edited after it was made"):
        Plan.load(tmp_path / "c.yaml")
    # without a floor the same change is supported, and the display still says the figure
    res = cli("plan", "-i", "idx", "--schema-patch", p,
              "-o", tmp_path / "d.yaml", "--url", redis_url)
    assert res.exit_code == 0 and "estimated recall@10 0." in res.output, res.output


@pytest.mark.parametrize("metric, datatype, positive", [
    ("COSINE", "int8", False), ("L2", "uint8", False), ("IP", "uint8", True)])
def test_int_plans_estimate_from_the_recorded_scheme(redis_client, metric, datatype, positive):
    # this server cannot index INT8/UINT8: plan as for Redis 8.2 (the scheme is still chosen and
    # recorded, and the estimate is computed from it)
    data = cone(500, 24, 0.4, clusters=3)
    data = np.abs(data) if positive else data
    vectors_index(redis_client, data, metric=metric)
    plan = make_plan(redis_client, "idx", capabilities=INT8_SERVER, patch=patch({
        "update_fields": [{"name": "emb", "attrs": {"datatype": datatype}}]}))
    assert plan.supported, plan.blocked_reasons
    scheme = plan.recorded_schemes()["emb"]
    expected = estimate_recall(data.astype(np.float64), source_datatype="float32",
                               source_metric=metric, target_datatype=datatype,
                               target_metric=metric, scheme=scheme, documents=500)
    entry = plan.quality["emb"]
    assert entry["estimated_recall_at_k"] == round(expected.recall_at_k, 4)
    assert entry["sample"] == 500 and 0.3 < entry["estimated_recall_at_k"] <= 1.0


# ----------------------------------------------------------------------- query checks


DIMS = 8
VEC = [round(float(x), 3) for x in np.linspace(-1, 1, DIMS)]
CHECKS = {"queries": [
    {"name": "red_cheap", "query": "@category:{red} @price:[0 50]"},
    {"name": "red_near", "query": "(@category:{red})=>[KNN 5 @emb $vec]",
     "params": {"vec": VEC}, "order": True},
    {"name": "items", "query": "@title:(item)"}],
    "fetch_ids": ["3"], "keys_exist": ["doc:5"]}


def shop(client):
    data = random_vectors(60, DIMS)
    vector_index(client, "idx", "doc:", DIMS, metric="L2",
                 extra=["title", "TEXT", "category", "TAG", "price", "NUMERIC"])
    load(client, "doc:", data, fields=lambda i: {
        "title": f"item {i}" if i % 3 else f"thing {i}",
        "category": "red" if i % 2 else "blue", "price": i})
    wait_indexed(client, "idx")


def test_query_checks_pass_an_index_only_change_and_fail_a_removed_filter(
        redis_client, redis_url, tmp_path):
    shop(redis_client)
    checks = tmp_path / "checks.yaml"
    checks.write_text(yaml.safe_dump(CHECKS))
    p = write_patch(tmp_path, {"update_fields": [{"name": "price", "attrs": {"sortable": True}}],
                               "index": {"name": "idx2"}})
    assert cli("plan", "-i", "idx", "--schema-patch", p, "-o", tmp_path / "p1.yaml", "--url",
               redis_url).exit_code == 0
    res = cli("apply", "--plan", tmp_path / "p1.yaml", "--backup-dir", tmp_path / "b1", "--url",
              redis_url, "-y", "--query-check-file", checks, "--report-out", tmp_path / "r1.yaml")
    assert res.exit_code == 0, res.output
    report = yaml.safe_load((tmp_path / "r1.yaml").read_text())
    got = {c["name"]: c for c in report["validation"]["query_checks"]}
    for name in ("query_check:red_cheap", "query_check:red_near", "query_check:items",
                 "fetch:3", "key:doc:5"):
        assert got[name]["passed"], got[name]
    assert "quality" not in report  # no vector field changed
    res = cli("validate", "--plan", tmp_path / "p1.yaml", "--backup-dir", tmp_path / "b1",
              "--url", redis_url, "--query-check-file", checks)
    assert res.exit_code == 0 and "ok   query_check:red_near" in res.output, res.output

    p = write_patch(tmp_path, {"remove_fields": ["category"]}, "remove.yaml")
    assert cli("plan", "-i", "idx2", "--schema-patch", p, "-o", tmp_path / "p2.yaml", "--url",
               redis_url).exit_code == 0
    res = cli("apply", "--plan", tmp_path / "p2.yaml", "--backup-dir", tmp_path / "b2", "--url",
              redis_url, "-y", "--query-check-file", checks, "--report-out", tmp_path / "r2.yaml")
    assert res.exit_code == 1, res.output
    report = yaml.safe_load((tmp_path / "r2.yaml").read_text())
    got = {c["name"]: c for c in report["validation"]["query_checks"]}
    assert report["result"] == "failed"
    assert not got["query_check:red_cheap"]["passed"]
    assert got["query_check:red_cheap"]["details"] == "the source found 25, the target 0"
    assert not got["query_check:red_near"]["passed"]
    assert got["query_check:items"]["passed"] and got["fetch:3"]["passed"]
    # a check apply never asked the source is named, not passed
    more = tmp_path / "more.yaml"
    more.write_text(yaml.safe_dump({"queries": [{"name": "new", "query": "*"}]}))
    res = cli("validate", "--plan", tmp_path / "p1.yaml", "--backup-dir", tmp_path / "b1",
              "--url", redis_url, "--query-check-file", more)
    assert res.exit_code == 1 and "no source answer stored" in res.output, res.output


def test_bad_input_is_refused_before_anything_changes(redis_client, redis_url, tmp_path):
    shop(redis_client)
    p = write_patch(tmp_path, {"update_fields": [{"name": "price", "attrs": {"sortable": True}}]})
    assert cli("plan", "-i", "idx", "--schema-patch", p, "-o", tmp_path / "p.yaml", "--url",
               redis_url).exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("queries: [{name: x}]\n")
    res = cli("apply", "--plan", tmp_path / "p.yaml", "--backup-dir", tmp_path / "b", "--url",
              redis_url, "-y", "--query-check-file", bad)
    assert res.exit_code == 2 and "queries[0] (x): query: expected" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists() and read_index(redis_client, "idx").schema
    # a query the source refuses: refused too, before the drop
    refused = tmp_path / "refused.yaml"
    refused.write_text(yaml.safe_dump({"queries": [{"name": "x", "query": "@price:[abc"}]}))
    res = cli("apply", "--plan", tmp_path / "p.yaml", "--backup-dir", tmp_path / "b", "--url",
              redis_url, "-y", "--query-check-file", refused)
    assert res.exit_code == 2 and "query check 'x' fails on the source index" in res.output
    assert not read_index(redis_client, "idx").schema.field("price").attrs.sortable
    res = cli("validate", "--plan", tmp_path / "p.yaml", "--url", redis_url,
              "--min-recall", "0.9")
    assert res.exit_code == 2 and "give --backup-dir" in res.output, res.output
    res = cli("apply", "--plan", tmp_path / "p.yaml", "--backup-dir", tmp_path / "b", "--url",
              redis_url, "-y", "--min-recall", "1.5")
    assert res.exit_code == 2


# ------------------------------------------------------------------ async API and batch


def test_async_api_takes_the_same_options(redis_client, redis_url, tmp_path):
    vectors_index(redis_client, random_vectors(1500, 64))
    plan = make_plan(redis_client, "idx", patch=patch({"update_fields": [
        {"name": "emb", "attrs": POOR_HNSW}]}))
    checks = tmp_path / "checks.yaml"
    checks.write_text(yaml.safe_dump({"fetch_ids": ["1"]}))

    async def go():
        executor = AsyncMigrationExecutor()
        report = await executor.apply(plan, redis_url=redis_url, backup_dir=tmp_path / "b",
                                      min_recall=0.9, recall_queries=30, recall_k=5,
                                      query_check_file=checks, rollback_below_recall=True)
        later = await executor.validate(plan, redis_url=redis_url, backup_dir=tmp_path / "b",
                                        query_check_file=checks)
        return report, later

    report, later = asyncio.run(go())
    emb = report.validation.quality["emb"]
    assert report.result == "failed" and report.rolled_back
    assert emb["queries"] == 30 and emb["k"] == 5 and emb["recall_at_k"] < 0.9
    assert algorithm(redis_client, "idx") == "flat"
    assert any(c["name"] == "fetch:1" and c["passed"] for c in report.validation.query_checks)
    # rolled back: validating the plan's target now finds the source's schema
    assert later.result == "failed"


def test_batch_takes_the_same_options(redis_client, redis_url, tmp_path):
    vectors_index(redis_client, random_vectors(1500, 64), name="a_idx", prefix="a:")
    p = write_patch(tmp_path, {"update_fields": [{"name": "emb", "attrs": POOR_HNSW}]})
    res = cli("batch", "plan", "--schema-patch", p, "--pattern", "*_idx", "-o",
              tmp_path / "bp.yaml", "--url", redis_url)
    assert res.exit_code == 0, res.output
    res = cli("batch", "apply", "--plan", tmp_path / "bp.yaml", "--backup-dir", tmp_path / "bb",
              "--state", tmp_path / "st.yaml", "--url", redis_url, "--min-recall", "0.9",
              "--recall-queries", "20", "--rollback-below-recall")
    assert res.exit_code == 1, res.output
    state = yaml.safe_load((tmp_path / "st.yaml").read_text())
    [a] = state["indexes"]
    assert a["status"] == "failed" and "recall:emb" in a["error"]
    with open(a["report_path"]) as f:
        report = yaml.safe_load(f)
    assert report["quality"]["emb"]["queries"] == 20 and report["rvlm"]["rolled_back"]
    assert algorithm(redis_client, "a_idx") == "flat"


# ------------------------------------------------------------------ a crash in between


def test_answers_survive_a_crash_after_the_drop(redis_client, redis_url, tmp_path):
    vectors_index(redis_client, random_vectors(300, 16), metric="COSINE")
    p = write_patch(tmp_path, {"update_fields": [{"name": "emb",
                                                  "attrs": {"datatype": "float16"}}]})
    assert cli("plan", "-i", "idx", "--schema-patch", p, "-o", tmp_path / "plan.yaml", "--url",
               redis_url).exit_code == 0
    args = [sys.executable, "-m", "rvlm", "apply", "--plan", str(tmp_path / "plan.yaml"),
            "--backup-dir", str(tmp_path / "b"), "--url", redis_url, "--accept-data-loss",
            "--yes", "--min-recall", "0.99", "--report-out", str(tmp_path / "r.yaml")]
    crashed = subprocess.run(args, env={**os.environ, "RVLM_FAULT": "after_drop"},
                             capture_output=True, text=True, timeout=120)
    assert crashed.returncode == 137, crashed.stderr
    assert not index_exists(redis_client, "idx")  # the source stopped serving
    assert (tmp_path / "b" / ANSWERS_NAME).exists()
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = yaml.safe_load((tmp_path / "r.yaml").read_text())
    assert report["rvlm"]["resumed"] and report["quality"]["emb"]["recall_at_k"] >= 0.99
