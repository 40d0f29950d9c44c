"""Rollback never overwrites a write made after the migration without being told to (#12).

After a successful apply (rename ``title`` -> ``headline``, float32 -> float16), a client
changes the renamed field of one document and writes a new vector into another. Rollback keeps
both as they are and names them (exit code 1, ``restore_conflicts: 2``), restores every other
document exactly, and ``--force`` then puts the originals back over the two. A change to a
field the migration never wrote is no conflict: rollback restores what the migration changed
and leaves that field alone. Real server, RESP2 and RESP3.
"""

from __future__ import annotations

import numpy as np
import yaml
from typer.testing import CliRunner

from rvlm.cli.main import app
from rvlm.core.redis.connection import wait_indexed

runner = CliRunner()
N = 30


def _data(client) -> dict[bytes, dict[bytes, bytes]]:
    client.execute_command(
        "FT.CREATE", "prod", "ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA", "title", "TEXT",
        "price", "NUMERIC",
        "emb", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", "4", "DISTANCE_METRIC", "L2")
    rng = np.random.default_rng(5)
    for i in range(N):
        client.hset(f"doc:{i}", mapping={
            "title": f"t{i}", "price": i, "emb": rng.normal(size=4).astype(np.float32).tobytes()})
    wait_indexed(client, "prod", 30)
    return {k: client.hgetall(k) for k in sorted(client.keys("doc:*"))}


def _migrate(client, url, tmp_path):
    patch = tmp_path / "patch.yaml"
    patch.write_text("version: 1\nchanges:\n  rename_fields: [{old_name: title, new_name: "
                     "headline}]\n  update_fields: [{name: emb, attrs: {datatype: float16}}]\n")
    plan = tmp_path / "plan.yaml"
    assert runner.invoke(app, ["plan", "-i", "prod", "--schema-patch", str(patch), "--url", url,
                               "-o",
                               str(plan)]).exit_code == 0
    backup = tmp_path / "backup"
    r = runner.invoke(app, ["apply", "--plan", str(plan), "--backup-dir", str(backup), "--url",
                            url, "--yes", "--accept-data-loss"])
    assert r.exit_code == 0, r.output
    return backup


def test_rollback_keeps_and_names_documents_changed_since(redis_client, redis_url, tmp_path,
                                                          protocol):
    c = redis_client
    before = _data(c)
    backup = _migrate(c, redis_url, tmp_path)
    new_vec = np.array([9, 9, 9, 9], dtype=np.float16).tobytes()
    c.hset("doc:3", "headline", "edited by a client")
    c.hset("doc:7", "emb", new_vec)
    c.hset("doc:11", "price", 999)  # not a field the migration wrote: no conflict

    r = runner.invoke(app, ["rollback", "--backup-dir", str(backup), "--url", redis_url,
                            "--yes", "--report-out", str(tmp_path / "report.yaml")])
    assert r.exit_code == 1, r.output
    assert "doc:3" in r.output and "doc:7" in r.output and "--force" in r.output
    assert "doc:3" in r.stderr  # the failure reaches stderr too
    report = yaml.safe_load((tmp_path / "report.yaml").read_text())
    assert report["rvlm"]["restore_conflicts"] == 2
    assert c.hgetall("doc:3") == {b"headline": b"edited by a client", b"price": b"3",
                                  b"emb": c.hget("doc:3", "emb")}
    assert b"title" not in c.hgetall("doc:3")
    assert c.hget("doc:7", "emb") == new_vec and c.hexists("doc:7", "headline")
    assert c.hgetall("doc:11") == {**before[b"doc:11"], b"price": b"999"}
    for k, doc in before.items():
        if k not in (b"doc:3", b"doc:7", b"doc:11"):
            assert c.hgetall(k) == doc, k

    forced = runner.invoke(app, ["rollback", "--backup-dir", str(backup), "--url", redis_url,
                                 "--yes", "--force"])
    assert forced.exit_code == 0, forced.output
    assert c.hgetall("doc:3") == before[b"doc:3"]
    assert c.hgetall("doc:7") == before[b"doc:7"]
    assert c.hgetall("doc:11") == {**before[b"doc:11"], b"price": b"999"}


def test_rollback_twice_is_no_conflict(redis_client, redis_url, tmp_path):
    """Documents already holding their originals (a rollback that ran before) are fine."""
    c = redis_client
    before = _data(c)
    backup = _migrate(c, redis_url, tmp_path)
    assert runner.invoke(app, ["rollback", "--backup-dir", str(backup), "--url", redis_url,
                               "--yes"]).exit_code == 0
    again = runner.invoke(app, ["rollback", "--backup-dir", str(backup), "--url", redis_url,
                                "--yes"])
    assert again.exit_code == 0, again.output
    assert {k: c.hgetall(k) for k in sorted(c.keys("doc:*"))} == before
