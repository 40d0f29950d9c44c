"""The indexing waits (``wait_indexed`` of drop_recreate, rollback and the CLI; online mode's
wait before the cut-over) poll FT.INFO less while the end of an HNSW build is far (each call
holds Redis's main thread for milliseconds during a build), and still end only once the index
is built, and soon after; a timeout names the index and how far it got."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
from online_helpers import RENAME_QUANTIZE, copy_plan

from rvlm.core.errors import MigrationFailed
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.redis.capture import CLIENT_NAME
from rvlm.core.redis.connection import indexing_progress, next_poll, read_index, wait_indexed

N, DIMS = 10_000, 128


def load_then_index(client, n: int = N, dims: int = DIMS) -> np.ndarray:
    """``n`` hashes doc:i (text t, tag g, float32 vector v), then an HNSW index ``idx`` over
    them, which builds in the background; returns the vectors."""
    vecs = np.random.default_rng(3).standard_normal((n, dims)).astype(np.float32)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.hset(f"doc:{i}", mapping={"t": f"hello doc {i}", "g": f"g{i % 3}",
                                       "v": vecs[i].tobytes()})
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    client.execute_command(
        "FT.CREATE", "idx", "ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA", "t", "TEXT",
        "g", "TAG", "v", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", str(dims),
        "DISTANCE_METRIC", "L2")
    return vecs


def nearest(client, index: str, vec: np.ndarray) -> bytes:
    reply = client.execute_command("FT.SEARCH", index, "*=>[KNN 1 @v $q EF_RUNTIME 2000]",
                                   "PARAMS", "2", "q", vec.tobytes(), "RETURN", "0",
                                   "DIALECT", "2")
    if isinstance(reply, dict):  # RESP3
        return bytes(reply[b"results"][0][b"id"])
    return bytes(reply[1])


def test_next_poll_is_half_the_remaining_time_within_its_bounds():
    # 10% an interval of 1 s: 9 s left, half is 4.5 s, capped by the growth (1.5 s)
    assert next_poll(1.0, 0.1, 0.2, 1.0, low=0.25, high=2.0) == pytest.approx(1.5)
    # and by high
    assert next_poll(1.9, 0.1, 0.2, 1.0, low=0.25, high=2.0) == pytest.approx(2.0)
    # 10% a second at 80%: 2 s left, next poll after 1 s
    assert next_poll(2.0, 0.7, 0.8, 1.0, low=0.25, high=2.0) == pytest.approx(1.0)
    # near the end: low
    assert next_poll(2.0, 0.9, 0.99, 1.0, low=0.25, high=2.0) == pytest.approx(0.25)
    # no progress seen (or none yet): only the growth
    assert next_poll(0.4, 0.5, 0.5, 1.0, low=0.25, high=2.0) == pytest.approx(0.6)
    assert next_poll(0.4, 0.5, 0.5, 0.0, low=0.25, high=2.0) == pytest.approx(0.6)
    # fully indexed but still flagged indexing: low at once
    assert next_poll(2.0, 1.0, 1.0, 1.0, low=0.25, high=2.0) == pytest.approx(0.25)
    # the fast first polls are kept: the growth is below low
    assert next_poll(0.002, 0.0, 0.01, 0.002, low=0.05, high=2.0) == pytest.approx(0.003)


def test_the_wait_ends_soon_after_the_build_and_polls_less_while_far(redis_client):
    vecs = load_then_index(redis_client)
    seen: list[tuple[float, int]] = []
    built_at: list[float] = []

    def watch() -> None:  # another client: when did the build end? (it may see it last)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            indexing, pct = indexing_progress(redis_client, "idx")
            if not indexing and pct >= 1.0:
                built_at.append(time.monotonic())
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    wait_indexed(redis_client, "idx", 300,
                 progress=lambda pct: seen.append((time.monotonic(), pct)))
    returned = time.monotonic()
    watcher.join(300)
    # not earlier: every document is indexed and found by its own vector
    stats = read_index(redis_client, "idx").stats
    assert not stats.indexing and stats.percent_indexed == 1.0 and stats.num_docs == N
    for i in (0, 4321, N - 1):
        assert nearest(redis_client, "idx", vecs[i]) == f"doc:{i}".encode()
    # not much later than the build's end (the watcher polls every 20 ms)
    assert built_at, "the watcher never saw the build end"
    assert returned - built_at[0] < 0.5, (returned - built_at[0], seen)
    # fewer polls while far from the end: some gap between two polls before 80% is over
    # 0.1 s, twice the old wait's longest (it polled every 50 ms). Not more: the first polls
    # grow by half from 2 ms, and a quiet machine can build the first half within 0.5 s
    far = [b[0] - a[0] for a, b in itertools.pairwise(seen) if b[1] < 80]
    build = seen[-1][0] - seen[0][0]
    assert build > 1.0, f"the build took {build:.2f} s: too short to show the schedule"
    assert max(far) > 0.1, (far, seen)


def test_a_timeout_names_the_index_and_how_far_it_got(redis_client):
    load_then_index(redis_client)
    with pytest.raises(MigrationFailed) as err:
        wait_indexed(redis_client, "idx", 0.3, hint="raise --index-timeout")
    message = str(err.value)
    assert message.startswith("index 'idx' still indexing (")
    assert message.endswith("%) after 0s; raise --index-timeout")
    assert read_index(redis_client, "idx").stats.indexing  # it really was still building


def test_online_cuts_over_only_once_the_target_is_built_and_a_timeout_resumes(
        redis_client, redis_url, tmp_path, notify):
    vecs = load_then_index(redis_client, n=N // 2)
    wait_indexed(redis_client, "idx", 300)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    plan = copy_plan(redis_client, RENAME_QUANTIZE)
    assert plan.supported, plan.blocked_reasons
    # the target (float16 HNSW over new:*) cannot be built in 0.3 s: the run stops before
    # the cut-over, naming the index and how far it got; the alias did not move
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=1000,
                        accept_data_loss=True, index_timeout=0.3)
    assert not report.succeeded
    assert report.error is not None
    assert report.error.startswith("index 'idx_v2' still indexing ("), report.error
    assert "re-run the same command to keep waiting" in report.error
    assert nearest(redis_client, "live", vecs[7]) == b"doc:7"
    assert read_index(redis_client, "live").schema.name == "idx"
    # the same command resumes and cuts over once the target is fully indexed
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=1000,
                        accept_data_loss=True, index_timeout=300)
    assert report.succeeded, report.to_yaml()
    stats = read_index(redis_client, "idx_v2").stats
    assert not stats.indexing and stats.percent_indexed == 1.0 and stats.num_docs == N // 2
    assert nearest(redis_client, "live", vecs[7].astype(np.float16)) == b"new:7"


def test_online_stops_at_once_when_capture_is_lost_during_the_build(
        redis_client, redis_url, tmp_path, notify):
    # FT.INFO is polled in a thread of its own during the target's build: when the engine's
    # thread fails, that thread stops too, and the run ends before the build does
    vecs = load_then_index(redis_client)
    wait_indexed(redis_client, "idx", 300)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    plan = copy_plan(redis_client, RENAME_QUANTIZE)
    killed: list[int] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "indexing" and done < 50 and not killed:
            for c in redis_client.client_list():
                if c.get("name") == CLIENT_NAME:
                    redis_client.client_kill_filter(_id=c["id"])
                    killed.append(c["id"])

    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=1000,
                        accept_data_loss=True, index_timeout=300, progress=progress)
    assert killed and not report.succeeded
    assert "lost its subscription" in (report.error or ""), report.error
    assert read_index(redis_client, "idx_v2").stats.indexing  # ended before the build did
    assert read_index(redis_client, "live").schema.name == "idx"
    assert nearest(redis_client, "live", vecs[7]) == b"doc:7"
