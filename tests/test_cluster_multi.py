"""A multi-index run (``rvlm batch``) on a real Redis Cluster (3 primaries, no search
coordinator): one hash-tagged index on each primary, and one index that is not complete on the
cluster (no hash tag), which the batch plan skips with the reason.

The run is planned from one node's URL (the indexes of every primary are found), applied
under RESP2 and killed in the middle of one index's transform, resumed under RESP3 from
another node's URL with two indexes at once (``--parallel 2``: the killed one and the one
still pending, on different primaries); every index must end migrated (documents, TTLs,
answers), and one index's backup rolls it back on its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cluster_data import cli, load, one_tag_per_primary, snapshot, total, write_patch

pytestmark = pytest.mark.cluster

RENAME = {"rename_fields": [{"old_name": "title", "new_name": "headline"}]}


def renamed(snap: dict[bytes, tuple]) -> dict[bytes, tuple]:
    out = {}
    for k, (fields, ttl) in snap.items():
        f = dict(fields)
        f[b"headline"] = f.pop(b"title")
        out[k] = (f, ttl)
    return out


def test_multi_index_run_over_every_primary_crash_resume_rollback(
        redis_cluster, cluster_client, tmp_path: Path) -> None:
    rc = cluster_client
    tags = one_tag_per_primary(redis_cluster)
    sizes = dict(zip(tags, (12, 90, 12), strict=True))  # the middle one is killed mid-way
    for tag, n in sizes.items():
        load(rc, "hash", n, index=f"{{{tag}}}idx", prefix=f"{{{tag}}}doc:")
    load(rc, "hash", 10, index="plain_idx", prefix="plain:", wait=False)
    owners = {redis_cluster.owner_of(f"{{{t}}}idx".encode()).port for t in tags}
    assert len(owners) == 3  # one index on each primary
    before = {t: snapshot(rc, f"{{{t}}}doc:".encode(), n) for t, n in sizes.items()}

    plan_out = tmp_path / "batch_plan.yaml"
    r = cli("batch", "plan", "--schema-patch", str(write_patch(tmp_path / "p.yaml", RENAME)),
            "--pattern", "*idx", "--failure-policy", "continue_on_error", "--plan-out",
            str(plan_out), "--url", redis_cluster.nodes[0].url, "--cluster")
    assert r.returncode == 0, r.stdout + r.stderr
    bp = yaml.safe_load(plan_out.read_text())
    rows = {i["name"]: i for i in bp["indexes"]}
    assert sorted(rows) == sorted([*(f"{{{t}}}idx" for t in tags), "plain_idx"])
    assert {n: i["applicable"] for n, i in rows.items()} == {
        **{f"{{{t}}}idx": True for t in tags}, "plain_idx": False}
    assert "not complete on this cluster" in rows["plain_idx"]["skip_reason"]

    state, backups = tmp_path / "state.yaml", tmp_path / "backups"
    crashed = cli("batch", "apply", "--plan", str(plan_out), "--backup-dir", str(backups),
                  "--state", str(state), "--batch-size", "20", "--url",
                  redis_cluster.nodes[1].url, env={"RVLM_FAULT": "mid_write:2",
                                                   "RVLM_PROTOCOL": "2"})
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    st = yaml.safe_load(state.read_text())
    killed = f"{{{tags[1]}}}idx"
    statuses = {i["name"]: i["status"] for i in st["indexes"]}
    assert statuses[killed] == "in_progress" and statuses["plain_idx"] == "skipped"
    assert statuses[f"{{{tags[0]}}}idx"] == "succeeded"

    resumed = cli("batch", "resume", "--state", str(state), "--parallel", "2", "--url",
                  redis_cluster.nodes[2].url, env={"RVLM_PROTOCOL": "3"})
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    report = yaml.safe_load((tmp_path / "reports" / "batch_report.yaml").read_text())
    assert report["status"] == "completed"
    got = {x["name"]: x for x in report["indexes"]}
    assert got[killed]["resumed"] and got[killed]["documents"] == sizes[tags[1]]
    for t, n in sizes.items():
        prefix = f"{{{t}}}doc:".encode()
        assert snapshot(rc, prefix, n) == renamed(before[t]), t
        assert total(rc, f"{{{t}}}idx", "@headline:hello") == n
    assert total(rc, "plain_idx", "@title:hello") > 0  # skipped, untouched

    # one index of the run rolls back from its own backup, the others stay migrated
    row = next(i for i in st["indexes"] if i["name"] == killed)
    back = cli("rollback", "--backup-dir", row["backup_dir"], "--url", redis_cluster.url,
               "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    assert snapshot(rc, f"{{{tags[1]}}}doc:".encode(), sizes[tags[1]]) == before[tags[1]]
    assert total(rc, killed, "@title:hello") == sizes[tags[1]]
    assert total(rc, f"{{{tags[0]}}}idx", "@headline:hello") == sizes[tags[0]]
