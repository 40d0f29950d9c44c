"""A plan file is applied only as 'rvlm plan' wrote it (issue #12, fingerprint bypass).

Deleting the ``fingerprint:`` line, editing the target (``hacked_idx``), or editing a key that
apply would otherwise ignore (``source.index_name``, ``diff_classification.supported``, an added
key) is refused by ``rvlm apply``, ``rvlm validate`` and ``rvlm estimate``: one line, exit
code 2, nothing on the server changed and no backup dir made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from rvlm.cli.main import app
from rvlm.core.redis.connection import list_indexes, read_index

runner = CliRunner()


@pytest.fixture
def planned(redis_client, redis_url, tmp_path) -> Path:
    redis_client.execute_command(
        "FT.CREATE", "prod", "ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA", "title", "TEXT",
        "emb", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", "4", "DISTANCE_METRIC", "L2")
    rng = np.random.default_rng(3)
    for i in range(10):
        redis_client.hset(f"doc:{i}", mapping={
            "title": f"t{i}", "emb": rng.normal(size=4).astype(np.float32).tobytes()})
    patch = tmp_path / "patch.yaml"
    patch.write_text("version: 1\nchanges:\n  rename_fields: [{old_name: title, "
                     "new_name: headline}]\n")
    out = tmp_path / "plan.yaml"
    r = runner.invoke(app, ["plan", "-i", "prod", "--schema-patch", str(patch), "--url", redis_url,
                            "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out


def _drop_fingerprint(d):
    del d["rvlm"]["fingerprint"]


def _hack_target(d):
    d["merged_target_schema"]["index"]["name"] = "hacked_idx"
    _drop_fingerprint(d)


def _hack_target_keep_fingerprint(d):
    d["merged_target_schema"]["index"]["name"] = "hacked_idx"


def _index_name(d):
    d["source"]["index_name"] = "other"


def _supported(d):
    d["diff_classification"]["supported"] = False


def _blocked_reasons(d):
    d["diff_classification"]["blocked_reasons"] = ["nothing"]


def _rename_operations(d):
    d["rename_operations"]["rename_index"] = "x"


def _warning(d):
    d["warnings"].append("all good")


def _extra_key(d):
    d["rvlm"]["accept_everything"] = True


def _lossy(d):
    d["rvlm"]["lossy"] = True


def _empty_fingerprint(d):
    d["rvlm"]["fingerprint"] = ""


EDITS = [_drop_fingerprint, _hack_target, _hack_target_keep_fingerprint, _index_name,
         _supported, _blocked_reasons, _rename_operations, _warning, _extra_key, _lossy,
         _empty_fingerprint]


@pytest.mark.parametrize("edit", EDITS, ids=[e.__name__.strip("_") for e in EDITS])
@pytest.mark.parametrize("command", ["apply", "validate", "estimate"])
def test_an_edited_plan_is_refused(planned, redis_client, redis_url, tmp_path, edit, command):
    data = yaml.safe_load(planned.read_text())
    edit(data)
    planned.write_text(yaml.safe_dump(data, sort_keys=False))
    before = read_index(redis_client, "prod").schema
    backup = tmp_path / "backup"
    args = {"apply": ["apply", "--plan", str(planned), "--backup-dir", str(backup), "--yes"],
            "validate": ["validate", "--plan", str(planned)],
            "estimate": ["estimate", "--plan", str(planned)]}[command]
    r = runner.invoke(app, [*args, "--url", redis_url])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "plan.yaml" in lines[0], lines
    assert "fingerprint" in lines[0] or "edited" in lines[0], lines[0]
    assert r.stdout == ""
    assert not backup.exists()
    assert list_indexes(redis_client) == ["prod"]
    assert read_index(redis_client, "prod").schema == before
    assert redis_client.hget("doc:0", "title") == b"t0"


def test_the_plan_as_written_still_applies(planned, redis_client, redis_url, tmp_path):
    r = runner.invoke(app, ["apply", "--plan", str(planned), "--backup-dir",
                            str(tmp_path / "b"), "--yes", "--url", redis_url])
    assert r.exit_code == 0, r.output
    assert redis_client.hget("doc:0", "headline") == b"t0"
