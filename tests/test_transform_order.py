"""The pipelined transform keeps the order of effects: when a batch is written, its backup
frame is on disk and its batch_started is journaled, and the batch before it is done."""

from __future__ import annotations

import pytest
from test_apply_helpers import (
    all_plugins,
    build_plan,
    f16_target,
    half_op,
    make_hash_index,
    prefix_op,
    rename_field_target,
    rename_op,
)

from rvlm.core.migrate import drop_recreate
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.redis.connection import read_index
from rvlm.core.storage.backup.reader import BackupReader
from rvlm.core.storage.journal import Journal


@pytest.mark.parametrize("workers", [1, 2])
def test_backup_and_batch_started_precede_every_write(redis_client, redis_url, tmp_path,
                                                      monkeypatch, workers):
    make_hash_index(redis_client, n=60)
    src = read_index(redis_client, "idx").schema
    target = f16_target(rename_field_target(src, "t", "title")).with_index(
        name="idx2", prefix=("item:",))
    plan = build_plan(redis_client, "idx", target, [rename_op(), half_op(), prefix_op()],
                      lossy=True)
    backup = tmp_path / "b"
    real = drop_recreate.write_batch
    seen: list[tuple[int, int, int]] = []

    def checked(client, storage, writes, **kw):
        keys = {w.key for w in writes}
        reader = BackupReader(backup, plan.fingerprint)
        backed = [b for b in reader.batch_numbers()
                  if keys <= {r.key for r in reader.batch(b)}]
        assert len(backed) == 1, "the batch's backup is not on disk"
        batch = backed[0]
        events = [e for w in range(workers) for e in Journal(backup, w).events()]
        started = {e["batch"] for e in events if e["event"] == "batch_started"}
        done = {e["batch"] for e in events if e["event"] == "batch_done"}
        assert batch in started and batch not in done
        seen.append((batch, len(started), len(done)))
        return real(client, storage, writes, **kw)

    monkeypatch.setattr(drop_recreate, "write_batch", checked)
    report = apply_plan(redis_url, plan, backup_dir=backup, batch_size=7, workers=workers,
                        accept_data_loss=True, plugins=all_plugins())
    assert report.succeeded, report.to_yaml()
    if workers == 1:  # (forked workers' calls are not seen here)
        assert [b for b, _s, _d in seen] == list(range(9))
        # one batch in flight at a time: b is written after b-1 is done
        assert all(d == b for b, _s, d in seen)
