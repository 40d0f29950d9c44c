"""The collision checks before the first change, counted on each page of keys as the key
enumeration finds it (:mod:`rvlm.core.migrate.collisions`), on a real server, RESP2 and RESP3.

A collision on the last page SCAN returns must still refuse the apply with nothing changed,
and the source's answers (asked beside the enumeration) must not be kept by a refused apply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_apply_helpers import (
    all_plugins,
    build_plan,
    f16_target,
    half_op,
    make_hash_index,
    make_json_index,
    prefix_op,
    rename_field_target,
    rename_op,
)

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.collisions import PAGES_IN_FLIGHT, CollisionCheck, StreamedCollisions
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.plugins.documents import DocumentOperation
from rvlm.core.quality.answers import ANSWERS_NAME
from rvlm.core.redis.connection import index_exists, read_index
from rvlm.core.redis.docio.keys import SCAN_COUNT, scan_keys
from rvlm.core.storage.keyfile import KeyFileWriter

#: documents: SCAN returns them in at least three pages of about SCAN_COUNT keys
DOCS = 3 * SCAN_COUNT


def pages(client: Any, index: str) -> list[list[bytes]]:
    """The non-empty pages of keys the apply's enumeration SCANs, in order."""
    got = [p for p in scan_keys(client, read_index(client, index).schema) if p]
    assert len(got) >= 3, "the test needs several SCAN pages"
    return got


def contents(client: Any, match: str = "*") -> dict[bytes, Any]:
    """Every key and its whole content (hashes), pipelined."""
    keys = sorted(client.scan_iter(match=match, count=5000))
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.hgetall(k)
    return dict(zip(keys, pipe.execute(), strict=True))


def test_a_field_collision_on_the_last_scan_page_refuses_before_any_change(
        redis_client: Any, redis_url: str, tmp_path: Path, protocol: int) -> None:
    """Rename + quantize; one document of the last SCAN page already holds the new name: the
    apply is refused naming it, nothing changed, the source index still there, and the
    source's answers (asked while the keys were enumerated) were not kept. Without the
    collision the same command then succeeds and keeps them."""
    make_hash_index(redis_client, n=DOCS)
    late = pages(redis_client, "idx")[-1][-1]
    redis_client.hset(late, "title", "already")
    before = contents(redis_client)
    src = read_index(redis_client, "idx").schema
    plan = build_plan(redis_client, "idx", f16_target(rename_field_target(src, "t", "title")),
                      [rename_op(), half_op()], lossy=True)
    backup = tmp_path / "b"
    with pytest.raises(RvlmError, match=rf"^1 document\(s\) already hold a field .*"
                                        rf"'{late.decode()}' \(title\); nothing was changed"):
        apply_plan(redis_url, plan, backup_dir=backup, plugins=all_plugins(),
                   accept_data_loss=True)
    assert contents(redis_client) == before
    assert index_exists(redis_client, "idx")
    assert not (backup / ANSWERS_NAME).exists()
    redis_client.hdel(late, "title")
    report = apply_plan(redis_url, plan, backup_dir=backup, plugins=all_plugins(),
                        accept_data_loss=True)
    assert report.succeeded, report.error or report.validation.errors
    assert (backup / ANSWERS_NAME).exists()
    assert redis_client.hget(late, "title") == before[late][b"t"]


def test_a_key_collision_on_the_last_scan_page_refuses_before_any_change(
        redis_client: Any, redis_url: str, tmp_path: Path, protocol: int) -> None:
    """A prefix change; the new key of a document of the last SCAN page exists already."""
    make_hash_index(redis_client, n=DOCS)
    late = pages(redis_client, "idx")[-1][0]
    taken = b"item:" + late[len(b"doc:"):]
    redis_client.hset(taken, "x", "1")
    before = contents(redis_client)
    src = read_index(redis_client, "idx").schema
    plan = build_plan(redis_client, "idx", src.with_index(prefix=("item:",)), [prefix_op()])
    with pytest.raises(RvlmError, match=rf"^1 key\(s\) the prefix change would create already "
                                        rf"exist, e.g. '{taken.decode()}'"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "b", plugins=all_plugins())
    assert contents(redis_client) == before
    assert index_exists(redis_client, "idx")


def test_json_documents_are_counted_per_key_on_each_page(redis_client: Any,
                                                         protocol: int) -> None:
    """JSON has no one-command count: the page's check asks per key and path (JSON.TYPE),
    and a document holding the new path on a late page counts, then is named."""
    make_json_index(redis_client, n=DOCS // 10)
    keys = sorted(redis_client.scan_iter(match="j:*", count=5000))
    redis_client.execute_command("JSON.SET", keys[-7], "$.title", json.dumps("taken"))
    src = read_index(redis_client, "jidx").schema
    op = DocumentOperation(plugin="t_move", kind="move_json_path", reads=("$.t",),
                           writes=("$.t", "$.title"), creates=("$.title",))
    plan = build_plan(redis_client, "jidx", src, [op])
    check = CollisionCheck(plan, redis_client, cluster=False)
    assert check.count(keys[:-10]) == 0
    assert check.count(keys[-10:]) == 1


def test_the_key_file_decides_what_a_page_counted(redis_client: Any, tmp_path: Path,
                                                  protocol: int) -> None:
    """A page may hold a key the key file does not (a duplicate SCAN left out, the cursor's
    pages before a fallback to SCAN): a collision counted there is looked for in the key file,
    which alone refuses. At most PAGES_IN_FLIGHT pages wait for their check."""
    make_hash_index(redis_client, n=300)
    redis_client.hset("doc:7", "title", "already")
    src = read_index(redis_client, "idx").schema
    plan = build_plan(redis_client, "idx", rename_field_target(src, "t", "title"),
                      [rename_op()])
    keys = [b"doc:%d" % i for i in range(300)]
    without, with_it = tmp_path / "without", tmp_path / "with"
    with KeyFileWriter(without) as w:
        w.add_many(k for k in keys if k != b"doc:7")
        w.close()
    with KeyFileWriter(with_it) as w:
        w.add_many(keys)
        w.close()
    check = CollisionCheck(plan, redis_client, cluster=False)
    with StreamedCollisions(check) as streamed:
        for i in range(0, 300, 20):
            streamed.add(keys[i:i + 20])
            assert len(streamed.pending) <= PAGES_IN_FLIGHT
        streamed.finish(without)  # counted one, the key file has none: no refusal
        assert streamed.found == 1
    with StreamedCollisions(check) as streamed:
        for i in range(0, 300, 20):
            streamed.add(keys[i:i + 20])
        with pytest.raises(RvlmError, match=r"1 document\(s\) .*'doc:7' \(title\)"):
            streamed.finish(with_it)
