"""The examples of RedisVL's guide ("Migrate an Index", ``../shared/rvl-migrate-guide.md``) run
against rvlm and the embedded server, as an rvl user would paste them: its Python blocks, and
its shell blocks with ``rvl migrate`` as ``rvlm`` (a shell function; nothing else changed but
the URL and ``/tmp``).

The guide is read where the project keeps it (``../shared``, next to the repository, or
``$RVL_MIGRATE_GUIDE``); its
``python`` blocks run with three substitutions only: ``redisvl.migration`` becomes ``rvlm``,
``redis://localhost:6379`` the test server, ``/tmp/migration_backups`` a fresh directory. The
files they read are the guide's own: ``schema_patch.yaml`` is its "Write a Schema Patch"
block, ``quantize_patch.yaml`` its batch heredoc. The data is what the examples assume: an
index ``myindex`` with ``title``, ``legacy_field`` and ``embedding``; indexes ``*_idx``.

One block is not run, on purpose: the rollback example loads RedisVL's pickled backup
(``redisvl.migration.backup.VectorBackup``), which rvlm never does (``rvlm.rollback(backup_dir)``
restores instead; see docs/migrating-from-rvl.md). The test checks that it is the only one.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rvlm.core.redis.connection import read_index

ROOT = Path(__file__).resolve().parent.parent
NAME = "rvl-migrate-guide.md"
DIMS = 8
DOCS = 12


#: Where the guide is when the repository is not next to ``shared/`` (a copy elsewhere).
GUIDE_ENV = "RVL_MIGRATE_GUIDE"


def guide() -> str:
    if os.environ.get(GUIDE_ENV):
        return Path(os.environ[GUIDE_ENV]).read_text(encoding="utf-8")
    for parent in ROOT.parents:   # ../shared (CI), or further up (a git worktree)
        if (parent / "shared" / NAME).is_file():
            return (parent / "shared" / NAME).read_text(encoding="utf-8")
    # The guide is RedisVL's text, not ours: it is not copied into this repository. A checkout
    # without ../shared (a copy of the tree elsewhere, a fresh machine) cannot run these tests;
    # .ci/run passes the guide's path in $RVL_MIGRATE_GUIDE whenever the project has it.
    pytest.skip(f"RedisVL's guide {NAME} is not in ../shared next to the repository "
                f"({ROOT.parent / 'shared'}) and {GUIDE_ENV} is not set")


def fenced(text: str) -> list[tuple[int, str, str]]:
    """(line, info, code) of every fenced block (MyST directives like ```{note} included)."""
    out: list[tuple[int, str, str]] = []
    current: tuple[int, str, list[str]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if current is None and line.startswith("```"):
            current = (number, line[3:].strip(), [])
        elif current is not None and line.strip() == "```":
            out.append((current[0], current[1], "\n".join(current[2]) + "\n"))
            current = None
        elif current is not None:
            current[2].append(line)
    return out


def python_blocks() -> dict[str, str]:
    """The guide's Python examples by what they show."""
    found: dict[str, str] = {}
    for _line, info, code in fenced(guide()):
        if info != "python":
            continue
        if "VectorBackup" in code:
            key = "pickled_rollback"
        elif "BatchMigrationPlanner" in code:
            key = "batch"
        elif "AsyncMigrationPlanner" in code:
            key = "async"
        elif "MigrationPlanner" in code:
            key = "sync"
        elif "quantize_duration_seconds" in code:
            key = "workers"
        else:
            key = f"unknown:{_line}"
        found[key] = code
    return found


def schema_patch_block() -> str:
    for _line, info, code in fenced(guide()):
        if info == "yaml" and code.startswith("version: 1\nchanges:") and "add_fields" in code:
            return code
    pytest.fail("the guide's schema patch block is gone")


def quantize_patch_block() -> str:
    for _line, info, code in fenced(guide()):
        match = re.search(r"cat > quantize_patch\.yaml << 'EOF'\n(.*?)\nEOF", code, re.S)
        if info == "bash" and match:
            return match.group(1) + "\n"
    pytest.fail("the guide's quantize_patch.yaml heredoc is gone")


def adapt(code: str, url: str, backups: Path) -> str:
    return (code.replace("from redisvl.migration import", "from rvlm import")
            .replace("redis://localhost:6379", url)
            .replace("/tmp/migration_backups", str(backups)))


def run(code: str, namespace: dict[str, Any]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "rvl-migrate-guide.md", "exec"), namespace)
    return out.getvalue()


def wait_indexed(client: Any, name: str) -> None:
    for _ in range(400):
        if not read_index(client, name).stats.indexing:
            return
        time.sleep(0.025)


def make_myindex(client: Any) -> None:
    """The index the examples migrate (fresh each time: dropped with its documents first)."""
    if b"myindex" in client.execute_command("FT._LIST"):
        client.execute_command("FT.DROPINDEX", "myindex", "DD")
    client.execute_command(
        "FT.CREATE", "myindex", "ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA",
        "title", "TEXT", "legacy_field", "TAG", "embedding", "VECTOR", "HNSW", "6", "TYPE",
        "FLOAT32", "DIM", str(DIMS), "DISTANCE_METRIC", "COSINE")
    rng = np.random.default_rng(5)
    for i in range(DOCS):
        client.hset(f"doc:{i}", mapping={
            "title": f"document {i}", "legacy_field": "old", "category": "news|sport",
            "embedding": rng.random(DIMS, dtype=np.float32).tobytes()})
    wait_indexed(client, "myindex")


def check_myindex_migrated(client: Any) -> None:
    """What the guide's patch asks for, as the server now has it."""
    schema = read_index(client, "myindex").schema
    assert [f.name for f in schema.fields] == ["title", "embedding", "category"]
    assert schema.field("title").attrs.sortable  # type: ignore[union-attr]
    assert schema.field("embedding").attrs.datatype == "float16"  # type: ignore[union-attr]
    assert all(len(client.hget(f"doc:{i}", "embedding")) == DIMS * 2 for i in range(DOCS))
    reply = client.execute_command("FT.SEARCH", "myindex", "@category:{sport}", "NOCONTENT")
    total = reply[b"total_results"] if isinstance(reply, dict) else reply[0]
    assert total == DOCS


def test_the_guide_has_the_examples_this_test_runs() -> None:
    blocks = python_blocks()
    assert set(blocks) == {"pickled_rollback", "sync", "workers", "async", "batch"}, set(blocks)
    assert "import pickle" not in blocks["sync"]


def test_single_index_examples(redis_client: Any, redis_url: str, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch, protocol: int) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "schema_patch.yaml").write_text(schema_patch_block())
    blocks = python_blocks()
    make_myindex(redis_client)
    namespace: dict[str, Any] = {"__name__": "__guide__"}
    printed = run(adapt(blocks["sync"], redis_url, tmp_path / "backups-sync"), namespace)
    assert printed == "Migration result: succeeded\n"
    check_myindex_migrated(redis_client)
    # "With backup and multi-worker quantization": the same plan, on the same fresh data
    make_myindex(redis_client)
    printed = run(adapt(blocks["workers"], redis_url, tmp_path / "backups-workers"), namespace)
    seconds = re.fullmatch(r"Quantized in (\d+\.\d+)s\n", printed)
    assert seconds is not None, printed
    report = namespace["report"]
    assert report.result == "succeeded"
    # num_workers=4 on a few batches: rvlm starts fewer workers and says why in the report
    assert report.workers == 4 or any(w.startswith(f"--workers 4 capped at {report.workers}: ")
                                      for w in report.warnings), (report.workers, report.warnings)
    check_myindex_migrated(redis_client)
    # the async API
    make_myindex(redis_client)
    printed = run(adapt(blocks["async"], redis_url, tmp_path / "backups-async"),
                  {"__name__": "__guide__"})
    assert printed == "Migration result: succeeded\n"
    check_myindex_migrated(redis_client)


def test_batch_example(redis_client: Any, redis_url: str, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quantize_patch.yaml").write_text(quantize_patch_block())
    rng = np.random.default_rng(9)
    for name in ("products_idx", "users_idx"):
        prefix = name.split("_")[0] + ":"
        redis_client.execute_command(
            "FT.CREATE", name, "ON", "HASH", "PREFIX", "1", prefix, "SCHEMA", "name", "TEXT",
            "embedding", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", str(DIMS),
            "DISTANCE_METRIC", "COSINE")
        for i in range(5):
            redis_client.hset(f"{prefix}{i}", mapping={
                "name": f"n{i}", "embedding": rng.random(DIMS, dtype=np.float32).tobytes()})
    redis_client.execute_command("FT.CREATE", "legacy_idx", "ON", "HASH", "PREFIX", "1",
                                 "legacy:", "SCHEMA", "name", "TEXT")
    for name in ("products_idx", "users_idx", "legacy_idx"):
        wait_indexed(redis_client, name)
    namespace: dict[str, Any] = {"__name__": "__guide__"}
    printed = run(adapt(python_blocks()["batch"], redis_url, tmp_path / "backups"), namespace)
    lines = printed.splitlines()
    assert "Will migrate: products_idx" in lines and "Will migrate: users_idx" in lines
    assert any(line.startswith("Skipping legacy_idx: ") and "embedding" in line
               for line in lines), lines
    assert "[2/2] users_idx: succeeded" in lines
    assert lines[-2:] == ["Batch status: completed", "Successful: 2/3"]
    for prefix in ("products:", "users:"):
        assert all(len(redis_client.hget(f"{prefix}{i}", "embedding")) == DIMS * 2
                   for i in range(5))
    assert (tmp_path / "batch_state.yaml").is_file()
    assert (tmp_path / "reports" / "batch_report.yaml").is_file()


# -- the guide's commands ------------------------------------------------------------------------

def bash_blocks() -> dict[str, str]:
    """The guide's shell examples that run ``rvl``, by what they show (the wizard, which is
    interactive, and the docker line are left out)."""
    found: dict[str, str] = {}
    for line, info, code in fenced(guide()):
        if info != "bash" or "rvl " not in code or "rvl migrate wizard" in code:
            continue
        if "quantize_patch.yaml << 'EOF'" in code:
            key = "batch"
        elif "--failure-policy" in code:
            key = "batch_policies"
        elif "batch-resume" in code:
            key = "batch_resume"
        elif "batch-status" in code:
            key = "batch_status"
        elif "--pattern" in code:
            key = "batch_plan_pattern"
        elif "--indexes-file" in code:
            key = "batch_plan_file"
        elif "--indexes " in code:
            key = "batch_plan_list"
        elif "rvl index listall" in code and "rvl migrate" not in code:
            key = "listall"
        elif "--schema-patch schema_patch.yaml" in code:
            key = "plan_patch"
        elif "--target-schema" in code:
            key = "plan_target"
        elif "--benchmark-out" in code:
            key = "apply_reports"
        elif "rvl migrate apply" in code and "--report-out" in code:
            key = "apply_report"
        elif "--async" in code:
            key = "apply_async"
        elif "--aof-enabled" in code:
            key = "estimate_aof"
        elif "rvl migrate estimate" in code:
            key = "estimate"
        elif "--workers 4" in code:
            key = "resume"
        elif "rvl migrate rollback" in code:
            key = "rollback"
        elif "rvl index create" in code:
            key = "index_create"
        elif "rvl migrate validate" in code and "apply" not in code:
            key = "validate"
        else:
            key = f"other:{line}"
        found.setdefault(key, code)
    return found


#: rvl's command prefix, as a shell function: ``rvl migrate X`` runs ``rvlm X`` and ``rvl index
#: X`` runs ``rvlm index X``; nothing else of the guide's command lines is changed.
RVL_AS_RVLM = 'rvl() { if [ "$1" = migrate ]; then shift; fi; "$RVLM" "$@"; }\n'


def sh(code: str, url: str, tmp: Path) -> Any:
    import shutil
    import subprocess
    import sys

    rvlm = shutil.which("rvlm", path=str(Path(sys.executable).parent)) or "rvlm"
    (tmp / "tmp").mkdir(exist_ok=True)   # the guide's /tmp/..., apart from ./...
    script = RVL_AS_RVLM + (code.replace("redis://localhost:6379", url)
                            .replace("/tmp/", f"{tmp}/tmp/"))
    return subprocess.run(["bash", "-e", "-c", script], cwd=tmp, capture_output=True,
                          text=True, env={**os.environ, "RVLM": rvlm, "COLUMNS": "200"},
                          stdin=subprocess.DEVNULL)


def ok(result: Any) -> Any:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result


def test_the_guide_has_the_commands_this_test_runs() -> None:
    assert set(bash_blocks()) == {
        "listall", "plan_patch", "plan_target", "apply_reports", "apply_async", "estimate",
        "estimate_aof", "validate", "resume", "rollback", "index_create", "batch",
        "batch_plan_list", "batch_plan_file", "apply_report", "batch_plan_pattern",
        "batch_policies", "batch_resume", "batch_status"}, set(bash_blocks())


def test_the_guides_commands_run_as_typed(redis_client: Any, redis_url: str,
                                          tmp_path: Path) -> None:
    """Each shell example with ``rvl migrate`` as ``rvlm``: the flags, files and URLs are the
    guide's. One difference shows: a lossy single-index apply needs --accept-data-loss in a
    script (rvl's applies without asking), and the refusal says so."""
    blocks = bash_blocks()
    (tmp_path / "schema_patch.yaml").write_text(schema_patch_block())
    make_myindex(redis_client)
    listed = ok(sh(blocks["listall"], redis_url, tmp_path)).stdout
    assert "myindex" in listed
    ok(sh(blocks["plan_patch"], redis_url, tmp_path))
    assert (tmp_path / "migration_plan.yaml").is_file()
    # a target schema: what `rvlm index info --yaml` prints, with the guide's changes made
    target = ok(sh(f'rvl index info -i myindex --url {redis_url} --yaml', redis_url,
                   tmp_path)).stdout
    (tmp_path / "target_schema.yaml").write_text(target.replace("sortable: false", "sortable: "
                                                                "true", 1))
    ok(sh(blocks["plan_target"], redis_url, tmp_path))
    ok(sh(blocks["plan_patch"], redis_url, tmp_path))   # back to the patch's plan
    estimate = ok(sh(blocks["estimate"], redis_url, tmp_path)).stdout
    assert "RDB snapshot" in estimate and "expected downtime" in estimate
    assert "AOF growth (est.)" in ok(sh(blocks["estimate_aof"], redis_url, tmp_path)).stdout
    refused = sh(blocks["apply_reports"], redis_url, tmp_path)
    assert refused.returncode == 2 and "--accept-data-loss" in refused.stderr, refused.stderr
    ok(sh(blocks["apply_reports"].rstrip() + " --accept-data-loss\n", redis_url, tmp_path))
    check_myindex_migrated(redis_client)
    assert (tmp_path / "migration_report.yaml").is_file()
    assert (tmp_path / "benchmark_report.yaml").is_file()
    # the same command with --async: the same backup dir, a finished apply: validated again
    ok(sh(blocks["apply_async"].rstrip() + " --accept-data-loss\n", redis_url, tmp_path))
    ok(sh(blocks["validate"], redis_url, tmp_path))
    # the disk section's apply, with its report
    make_myindex(redis_client)
    ok(sh(blocks["apply_report"].rstrip() + " --accept-data-loss\n", redis_url, tmp_path))
    check_myindex_migrated(redis_client)
    # resume: "just re-run it", then roll back from the same backup dir
    make_myindex(redis_client)
    ok(sh("cp migration_plan.yaml plan.yaml\n", redis_url, tmp_path))
    resume = blocks["resume"].replace("--workers 4", "--workers 4 --accept-data-loss")
    ok(sh(resume, redis_url, tmp_path))
    check_myindex_migrated(redis_client)
    ok(sh(blocks["rollback"], redis_url, tmp_path))
    assert read_index(redis_client, "myindex").schema.field(
        "embedding").attrs.datatype == "float32"  # type: ignore[union-attr]
    # "recreate the original index if needed": from a schema file
    original = ok(sh(f"rvl index info -i myindex --url {redis_url} --yaml", redis_url,
                     tmp_path)).stdout
    (tmp_path / "original_schema.yaml").write_text(original)
    ok(sh(f"rvl index delete -i myindex --url {redis_url}", redis_url, tmp_path))
    ok(sh(blocks["index_create"], redis_url, tmp_path))
    wait_indexed(redis_client, "myindex")
    assert read_index(redis_client, "myindex").stats.num_docs == DOCS


def make_batch_indexes(client: Any) -> None:
    """products_idx, users_idx, orders_idx with float32 vectors (fresh each time)."""
    rng = np.random.default_rng(3)
    listed = client.execute_command("FT._LIST")
    for name in ("products_idx", "users_idx", "orders_idx"):
        if name.encode() in listed:
            client.execute_command("FT.DROPINDEX", name, "DD")
        prefix = name.split("_")[0] + ":"
        client.execute_command(
            "FT.CREATE", name, "ON", "HASH", "PREFIX", "1", prefix, "SCHEMA", "name", "TEXT",
            "embedding", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", str(DIMS),
            "DISTANCE_METRIC", "COSINE")
        for i in range(4):
            client.hset(f"{prefix}{i}", mapping={
                "name": f"n{i}", "embedding": rng.random(DIMS, dtype=np.float32).tobytes()})
        wait_indexed(client, name)


def all_float16(client: Any) -> bool:
    return all(len(client.hget(f"{p}{i}", "embedding")) == DIMS * 2
               for p in ("products:", "users:", "orders:") for i in range(4))


def test_the_guides_batch_commands_run_as_typed(redis_client: Any, redis_url: str,
                                                tmp_path: Path) -> None:
    """The batch examples as typed. One difference shows: the failure-policy example applies
    two batch plans with the same default --state file; rvlm refuses the second (the state
    belongs to the first batch, whose resume it is) and names the way out."""
    blocks = bash_blocks()
    make_batch_indexes(redis_client)
    (tmp_path / "quantize_patch.yaml").write_text(quantize_patch_block())
    for key in ("batch_plan_list", "batch_plan_file", "batch_plan_pattern"):
        ok(sh(blocks[key], redis_url, tmp_path))
        assert "orders_idx" in (tmp_path / "batch_plan.yaml").read_text()
    status = ok(sh(blocks["batch"], redis_url, tmp_path)).stdout
    assert "completed" in status, status
    assert all_float16(redis_client)
    for key in ("batch_resume", "batch_status"):   # a finished run: nothing left to do
        assert "completed" in ok(sh(blocks[key], redis_url, tmp_path)).stdout
    # the failure-policy examples, in a directory of their own, on fresh indexes
    make_batch_indexes(redis_client)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "quantize_patch.yaml").write_text(quantize_patch_block())
    ok(sh(blocks["batch_plan_pattern"], redis_url, policies))
    done = sh(blocks["batch_policies"], redis_url, policies)
    assert all_float16(redis_client)   # the fail-fast apply ran
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "belongs to batch" in done.stderr and "use another --state file" in done.stderr
