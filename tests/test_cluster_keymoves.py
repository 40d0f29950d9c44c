"""100,000 keys moved across the slots (and nodes) of a plain cluster by rvlm's transform
phase (tests/cluster_move_job.py: SCAN on every primary, backup, journal, DUMP/PTTL,
RESTORE on the new key's owner, DEL), killed twice and resumed:

1. killed between RESTORE and DEL of one batch (fault point ``mid_move``: both copies of its
   keys exist), the case where a re-run must not see a collision;
2. killed with SIGKILL (the whole process group, ``--workers 3``) at a moment the test does
   not choose precisely;
3. run to the end.

Every key must then exist exactly once, under its new name, with its value and its TTL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.crc import key_slot

from rvlm.core.redis import wire
from rvlm.core.redis.resp import to_int

pytestmark = pytest.mark.cluster

JOB = Path(__file__).with_name("cluster_move_job.py")
N = 100_000
BATCH = 1000
TTL_MS = 3_600_000


def _job(url: str, backup: Path, workers: int, fault: str | None = None,
         new_session: bool = False) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("RVLM_FAULT", "RVLM_RENAME_MODE")}
    if fault:
        env["RVLM_FAULT"] = fault
    return subprocess.Popen([sys.executable, str(JOB), url, str(backup), str(BATCH),
                             str(workers)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=new_session)


def _done_batches(backup: Path) -> int:
    n = 0
    for j in backup.glob("journal-*.jsonl"):
        n += j.read_bytes().count(b'"batch_done"')
    return n


def _count(rc, keys: list[bytes]) -> int:
    return sum(to_int(r) for r in wire.execute(rc, [(b"EXISTS", k) for k in keys]))


def test_100k_keys_move_across_slots_through_crashes(redis_cluster, cluster_client,
                                                     tmp_path) -> None:
    rc = cluster_client
    old = [f"doc:{i}".encode() for i in range(N)]
    new = [f"moved:{i}".encode() for i in range(N)]
    for start in range(0, N, 10_000):
        cmds: list[tuple[object, ...]] = []
        for i in range(start, start + 10_000):
            cmds.append((b"HSET", old[i], b"v", str(i).encode()))
            if i % 10 == 0:
                cmds.append((b"PEXPIRE", old[i], TTL_MS))
        wire.raise_first(wire.execute(rc, cmds))
    owners = redis_cluster.slot_owners()
    nodes = {owners[key_slot(k)] for k in old[:50]}
    assert len(nodes) == 3  # the keys, and their new names, are on every primary
    backup = tmp_path / "backup"
    url = redis_cluster.nodes[1].url

    # 1. killed between RESTORE and DEL of batch 7: its keys exist under both names
    first = _job(url, backup, workers=1, fault="mid_move:7")
    _out, err = first.communicate(timeout=300)
    assert first.returncode == 137, err.decode()
    assert _count(rc, new) == 8 * BATCH and _count(rc, old) == N - 7 * BATCH

    # 2. --workers 3, the whole process group killed with SIGKILL part way
    second = _job(url, backup, workers=3, new_session=True)
    deadline = time.monotonic() + 240
    while _done_batches(backup) < 30 and second.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(second.pid, signal.SIGKILL)
    second.wait(timeout=30)
    assert second.returncode == -signal.SIGKILL
    moved = _count(rc, new)
    assert BATCH * 8 < moved < N  # part way: some batches done, not all

    # 3. the same command again, to the end
    third = _job(url, backup, workers=3)
    _out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err.decode()[-2000:]

    assert _count(rc, old) == 0
    for start in range(0, N, 20_000):
        part = range(start, start + 20_000)
        replies = wire.execute(rc, [c for i in part for c in ((b"HGET", new[i], b"v"),
                                                              (b"PTTL", new[i]))])
        for j, i in enumerate(part):
            value, ttl = replies[2 * j], to_int(replies[2 * j + 1])
            assert value == str(i).encode(), (new[i], value)
            if i % 10 == 0:
                assert 0 < ttl <= TTL_MS, (new[i], ttl)
            else:
                assert ttl == -1, (new[i], ttl)
    sizes = [to_int(c.dbsize()) for _n, c in wire_primaries(rc)]
    assert sum(sizes) == N  # nothing else was left behind (no copy, no stray key)


def wire_primaries(rc):
    from rvlm.core.redis.routing import primaries

    return primaries(rc)
