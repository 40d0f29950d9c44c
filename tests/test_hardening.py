"""Never report success on a wrong result, and never drop what a check could have saved
(issue #12): the cases not covered by a file of their own, each on the real server.

* a patch that changes nothing: apply does nothing (no drop, no backup; the alias survives);
* free disk space is checked against the estimate before the drop (a real 256 KB tmpfs when
  this process may mount one, else the free space the check reads is shrunk);
* a float16 overflow in a document the plan never sampled: the plan states the policy (clip
  and count) before the drop, apply clips, counts and says so;
* aliases: ``--keep-alias``, an alias recorded by an earlier rvlm run, ``--index`` given as the
  alias; the plan and apply say plainly that any other alias is lost, and with which flag to
  keep it;
* exit codes, messages, files: apply without a terminal needs ``--yes``; bad
  ``--index-timeout`` / ``--plan-out`` / ``--report-out`` exit 2 before anything changes; a
  symlinked journal in a backup dir is refused; validate of a never-applied plan prints no
  Python object dumps.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import yaml
from typer.testing import CliRunner

from rvlm.cli.main import app
from rvlm.core.redis.connection import index_exists, read_index, wait_indexed

runner = CliRunner()
N = 40
DIMS = 4


def _index(client: redis.Redis, name: str = "prod", prefix: str = "doc:") -> None:
    client.execute_command(
        "FT.CREATE", name, "ON", "HASH", "PREFIX", "1", prefix, "SCHEMA", "title", "TEXT",
        "emb", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", str(DIMS), "DISTANCE_METRIC",
        "L2")
    rng = np.random.default_rng(3)
    pipe = client.pipeline(transaction=False)
    for i in range(N):
        pipe.hset(f"{prefix}{i}", mapping={
            "title": f"t{i}", "emb": rng.normal(size=DIMS).astype(np.float32).tobytes()})
    pipe.execute()
    wait_indexed(client, name, 30)


def _docs(client: redis.Redis, prefix: str = "doc:") -> dict[bytes, dict[bytes, bytes]]:
    return {k: client.hgetall(k) for k in sorted(client.keys(f"{prefix}*"))}


def _plan(url: str, tmp: Path, patch: str, *extra: str, index: str = "prod",
          name: str = "plan.yaml") -> tuple[Any, Path]:
    p = tmp / f"{name}.patch.yaml"
    p.write_text(patch)
    out = tmp / name
    r = runner.invoke(app, ["plan", "-i", index, "--schema-patch", str(p), "--url", url, "-o",
                            str(out),
                            *extra])
    return r, out


RENAME = "version: 1\nchanges:\n  rename_fields: [{old_name: title, new_name: headline}]\n"
NOTHING = "version: 1\nchanges: {}\n"


def _apply(url: str, plan: Path, backup: Path, *extra: str) -> Any:
    return runner.invoke(app, ["apply", "--plan", str(plan), "--backup-dir", str(backup),
                               "--url", url, *extra])


def _one_line(result: Any) -> str:
    """The single ``error:`` line of a bad-input exit (2), no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# --------------------------------------------------------------------- a no-op patch

def test_a_patch_that_changes_nothing_does_nothing(redis_client, redis_url, tmp_path):
    c = redis_client
    _index(c)
    c.execute_command("FT.ALIASADD", "prod_live", "prod")  # an alias nobody names
    before = _docs(c)
    r, plan = _plan(redis_url, tmp_path, NOTHING)
    assert r.exit_code == 0, r.output
    assert "Nothing to do" in r.output and "changes nothing" in r.output
    backup = tmp_path / "backup"
    applied = _apply(redis_url, plan, backup)  # no terminal, no --yes: nothing to confirm
    assert applied.exit_code == 0, applied.output
    assert "nothing was dropped, written or backed up" in applied.output
    # the index was never dropped: its unnamed alias still answers, documents untouched
    assert read_index(c, "prod_live").schema.name == "prod"
    assert _docs(c) == before
    assert not backup.exists() or not any(backup.iterdir())


# ------------------------------------------------------------------- free disk space

@contextlib.contextmanager
def _small_disk(path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A directory with about 256 KB free: a real tmpfs when this process may mount one,
    else the free space the pre-drop check reads is shrunk to that."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)],
                             capture_output=True, check=False).returncode == 0
    if not mounted:
        real = shutil.disk_usage

        def small(p: Any) -> Any:
            u = real(p)
            return type(u)(u.total, u.total - 256 * 1024, 256 * 1024) \
                if str(p).startswith(str(path)) else u

        monkeypatch.setattr(shutil, "disk_usage", small)
    try:
        yield "tmpfs" if mounted else "simulated"
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=False)


def test_free_space_is_checked_before_the_drop(redis_client, redis_url, tmp_path, monkeypatch):
    c = redis_client
    c.execute_command(
        "FT.CREATE", "prod", "ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA", "title", "TEXT",
        "emb", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", "256", "DISTANCE_METRIC", "L2")
    rng = np.random.default_rng(1)
    pipe = c.pipeline(transaction=False)
    for i in range(2000):  # 2,000 x 1 KB vectors: a backup of about 2 MB
        pipe.hset(f"doc:{i}", mapping={"title": f"t{i}",
                                       "emb": rng.normal(size=256).astype(np.float32).tobytes()})
    pipe.execute()
    wait_indexed(c, "prod", 60)
    r, plan = _plan(redis_url, tmp_path, "version: 1\nchanges:\n  update_fields: [{name: emb, "
                                         "attrs: {datatype: float16}}]\n")
    assert r.exit_code == 0, r.output
    with _small_disk(tmp_path / "small", monkeypatch):
        applied = _apply(redis_url, plan, tmp_path / "small" / "backup", "--yes",
                         "--accept-data-loss")
    line = _one_line(applied)
    assert "not enough free disk space" in line and "nothing was changed" in line
    assert index_exists(c, "prod")  # never dropped
    assert read_index(c, "prod").schema.field("emb").attrs.datatype.lower() == "float32"
    assert len(c.hget("doc:5", "emb")) == 1024


# ---------------------------------------------------------------- float16 overflow

def test_float16_overflow_outside_the_sample_is_clipped_as_the_plan_says(
        redis_client, redis_url, tmp_path):
    c = redis_client
    _index(c)
    r, plan = _plan(redis_url, tmp_path, "version: 1\nchanges:\n  update_fields: [{name: emb, "
                                         "attrs: {datatype: float16}}]\n")
    assert r.exit_code == 0, r.output
    data = yaml.safe_load(plan.read_text())
    (op,) = data["rvlm"]["operations"]
    assert op["params"]["scheme"]["overflow"] == "clip"  # decided before the drop
    assert any("clipped" in w for w in data["warnings"])
    # a document the plan never saw: a component beyond float16's range (65504)
    c.hset("doc:late", mapping={"title": "late", "emb": np.array(
        [1.0, 1e6, -2e5, 0.5], dtype=np.float32).tobytes()})
    wait_indexed(c, "prod", 30)
    applied = _apply(redis_url, plan, tmp_path / "b", "--yes", "--accept-data-loss",
                     "--report-out", str(tmp_path / "r.yaml"))
    assert applied.exit_code == 0, applied.output
    got = np.frombuffer(c.hget("doc:late", "emb"), dtype=np.float16).tolist()
    assert got == [1.0, 65504.0, -65504.0, 0.5]
    report = yaml.safe_load((tmp_path / "r.yaml").read_text())
    assert any(w.startswith("2 components of 'emb'") and "clipped" in w
               for w in report["warnings"]), report["warnings"]
    assert "2 components of 'emb'" in applied.output


# -------------------------------------------------------------------------- aliases

def test_keep_alias_survives_apply_and_rollback(redis_client, redis_url, tmp_path):
    c = redis_client
    _index(c)
    c.execute_command("FT.ALIASADD", "prod_live", "prod")
    c.execute_command("FT.ALIASADD", "prod_other", "prod")
    r, plan = _plan(redis_url, tmp_path, RENAME, "--keep-alias", "prod_live")
    assert r.exit_code == 0, r.output
    text = plan.read_text()
    assert "keep_aliases:\n  - prod_live" in text
    # the plan says plainly that any other alias is lost, and the flag that keeps it
    assert "any other alias of 'prod' is lost" in " ".join(r.output.split())
    assert "--keep-alias" in r.output
    applied = _apply(redis_url, plan, tmp_path / "b", "--yes")
    assert applied.exit_code == 0, applied.output
    assert "any other alias of 'prod' is lost" in " ".join(applied.stderr.split())
    assert read_index(c, "prod_live").schema.field("headline") is not None
    assert not index_exists(c, "prod_other")  # unnamed: lost, as the plan said
    undone = runner.invoke(app, ["rollback", "--backup-dir", str(tmp_path / "b"), "--url",
                                 redis_url, "--yes"])
    assert undone.exit_code == 0, undone.output
    assert read_index(c, "prod_live").schema.field("title") is not None


def test_an_alias_recorded_by_an_earlier_run_is_kept_without_naming_it(
        redis_client, redis_url, tmp_path):
    c = redis_client
    _index(c)
    c.execute_command("FT.ALIASADD", "prod_live", "prod")
    r, plan = _plan(redis_url, tmp_path, RENAME, "--keep-alias", "prod_live")
    assert _apply(redis_url, plan, tmp_path / "b1", "--yes").exit_code == 0
    # a second migration, the alias not named: rvlm remembers it
    r, plan2 = _plan(redis_url, tmp_path, "version: 1\nchanges:\n  rename_fields: "
                     "[{old_name: headline, new_name: subject}]\n", name="plan2.yaml")
    assert r.exit_code == 0, r.output
    assert "apply points 'prod_live' at the new index" in " ".join(r.output.split())
    assert _apply(redis_url, plan2, tmp_path / "b2", "--yes").exit_code == 0
    assert read_index(c, "prod_live").schema.field("subject") is not None


def test_index_given_as_the_alias_is_kept(redis_client, redis_url, tmp_path):
    c = redis_client
    _index(c)
    c.execute_command("FT.ALIASADD", "prod_live", "prod")
    r, plan = _plan(redis_url, tmp_path, RENAME, index="prod_live")
    assert r.exit_code == 0, r.output
    assert _apply(redis_url, plan, tmp_path / "b", "--yes").exit_code == 0
    assert read_index(c, "prod_live").schema.field("headline") is not None


def test_keep_alias_must_be_an_alias_of_the_source(redis_client, redis_url, tmp_path):
    c = redis_client
    _index(c)
    _index(c, "other", "o:")
    c.execute_command("FT.ALIASADD", "other_live", "other")
    for name, said in (("nope", "is no alias"), ("other_live", "points at 'other'"),
                       ("other", "is the name of an index")):
        r, plan = _plan(redis_url, tmp_path, RENAME, "--keep-alias", name)
        assert r.exit_code == 1, r.output  # blocked, with the reason
        assert said in " ".join(r.output.split()), r.output
        assert _apply(redis_url, plan, tmp_path / f"b-{name}", "--yes").exit_code == 2
    assert index_exists(c, "prod") and index_exists(c, "other_live")


# ------------------------------------------------------------ exit codes, messages, files

def test_apply_without_a_terminal_needs_yes(redis_client, redis_url, tmp_path):
    c = redis_client
    _index(c)
    before = _docs(c)
    r, plan = _plan(redis_url, tmp_path, RENAME)
    assert r.exit_code == 0
    line = _one_line(_apply(redis_url, plan, tmp_path / "b"))
    assert "no terminal to confirm" in line and "--yes" in line
    assert _docs(c) == before and index_exists(c, "prod")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(("args", "said"), [
    (("--index-timeout", "-1"), "--index-timeout must be a positive number"),
    (("--index-timeout", "0"), "--index-timeout must be a positive number"),
    (("--report-out", "{tmp}/missing/r.yaml"), "does not exist"),
    (("--report-out", "{tmp}"), "is a directory"),
])
def test_bad_apply_options_exit_2_before_anything(redis_client, redis_url, tmp_path, args, said):
    c = redis_client
    _index(c)
    before = _docs(c)
    r, plan = _plan(redis_url, tmp_path, RENAME)
    assert r.exit_code == 0
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    line = _one_line(_apply(redis_url, plan, tmp_path / "b", "--yes", *args))
    assert said in line
    assert _docs(c) == before and index_exists(c, "prod")


@pytest.mark.parametrize(("out", "said"), [("missing/plan.yaml", "does not exist"),
                                           (".", "is a directory")])
def test_plan_out_that_cannot_be_written_exits_2(redis_client, redis_url, tmp_path, out, said):
    _index(redis_client)
    p = tmp_path / "patch.yaml"
    p.write_text(RENAME)
    r = runner.invoke(app, ["plan", "-i", "prod", "--schema-patch", str(p), "--url", redis_url,
                            "-o",
                            str(tmp_path / out)])
    assert said in _one_line(r)


def test_a_symlinked_journal_is_refused(redis_client, redis_url, tmp_path):
    c = redis_client
    _index(c)
    _r, plan = _plan(redis_url, tmp_path, RENAME)
    backup = tmp_path / "b"
    assert _apply(redis_url, plan, backup, "--yes").exit_code == 0
    journal = next(backup.glob("journal*"))
    elsewhere = tmp_path / "someone-elses-file"
    elsewhere.write_bytes(journal.read_bytes())
    journal.unlink()
    journal.symlink_to(elsewhere)
    kept = elsewhere.read_bytes()
    for command in (["rollback", "--backup-dir", str(backup), "--yes"],
                    ["apply", "--plan", str(plan), "--backup-dir", str(backup), "--yes"],
                    ["validate", "--backup-dir", str(backup)]):
        line = _one_line(runner.invoke(app, [*command, "--url", redis_url]))
        assert "is a symbolic link" in line
    assert elsewhere.read_bytes() == kept  # nothing appended through the link
    assert read_index(c, "prod").schema.field("headline") is not None  # not rolled back


def test_validate_of_a_never_applied_plan_says_so_in_words(redis_client, redis_url, tmp_path):
    c = redis_client
    _index(c)
    # an index-only plan, never applied: the checks fail, in words
    r, plan = _plan(redis_url, tmp_path, "version: 1\nchanges:\n  add_fields: [{name: tag, "
                                         "type: tag}]\n")
    assert r.exit_code == 0, r.output
    v = runner.invoke(app, ["validate", "--plan", str(plan), "--url", redis_url])
    assert v.exit_code == 1, v.output
    for dump in ("Field(", "IndexSchema(", "attrs=", "<", "{'"):
        assert dump not in v.output, v.output
    assert "tag" in v.output
    # a plan that rewrites documents needs the apply's backup dir: one line, exit 2
    r, plan = _plan(redis_url, tmp_path, RENAME, name="p2.yaml")
    line = _one_line(runner.invoke(app, ["validate", "--plan", str(plan), "--url", redis_url]))
    assert "--backup-dir" in line


def test_a_corrupted_last_backup_frame_is_reported_as_corrupt_not_incomplete(
        redis_client, redis_url, tmp_path):
    c = redis_client
    _index(c)
    _r, plan = _plan(redis_url, tmp_path, RENAME)
    backup = tmp_path / "b"
    assert _apply(redis_url, plan, backup, "--yes", "--batch-size", "10").exit_code == 0
    after = _docs(c)
    data = next(backup.glob("data-*.rvb"))
    with open(data, "r+b") as f:  # the last frame, of a batch the journal says was applied
        f.truncate(data.stat().st_size - 30)
    undone = runner.invoke(app, ["rollback", "--backup-dir", str(backup), "--url", redis_url,
                                 "--yes"])
    line = _one_line(undone)
    assert "the last frame" in line and "the backup is corrupt" in line
    assert "incomplete" not in undone.output and "never applied" not in undone.output
    assert _docs(c) == after  # nothing restored


# -------------------------------------------------- the exact target before the drop

def test_a_bad_filter_is_refused_before_the_drop(redis_client, redis_url, tmp_path):
    """The pre-drop check creates the exact target, FILTER included: a filter the server
    refuses stops the apply with the server's words before the source index is dropped."""
    c = redis_client
    _index(c)
    c.execute_command("FT.ALIASADD", "prod_live", "prod")
    before = _docs(c)
    r, plan = _plan(redis_url, tmp_path, "version: 1\nchanges:\n  index: {filter: "
                                         "'@title >>>> ('}\n")
    assert r.exit_code == 0, r.output  # the planner does not parse filters: apply checks
    line = _one_line(_apply(redis_url, plan, tmp_path / "b", "--yes"))
    assert "refuses the target schema" in line and "nothing was changed" in line
    assert read_index(c, "prod_live").schema.name == "prod"  # never dropped: alias intact
    assert _docs(c) == before


@pytest.mark.parametrize(("content", "said"), [(b"\x00\xff\xfe\x89PNG\r\n", "not a text file"),
                                               (None, "is a directory")])
def test_a_binary_or_directory_patch_file_is_one_line(redis_client, redis_url, tmp_path,
                                                       content, said):
    _index(redis_client)
    patch = tmp_path / "patch.yaml"
    if content is None:
        patch.mkdir()
    else:
        patch.write_bytes(content)
    r = runner.invoke(app, ["plan", "-i", "prod", "--schema-patch", str(patch), "--url", redis_url,
                            "-o",
                            str(tmp_path / "plan.yaml")])
    assert said in _one_line(r)
    assert not (tmp_path / "plan.yaml").exists()
