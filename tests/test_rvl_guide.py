"""The Python examples of RedisVL's guide ("Migrate an Index", ``../shared/rvl-migrate-guide.md``)
run against rvlm and the embedded server, as an rvl user would paste them.

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
    pytest.fail(f"RedisVL's guide {NAME} is not in ../shared next to the repository "
                f"({ROOT.parent / 'shared'}), where the project keeps it; or set {GUIDE_ENV}")


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
