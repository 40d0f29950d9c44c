"""Move every ``doc:*`` hash of a plain Redis Cluster to ``moved:*`` with rvlm's own executor
phases, no search index involved (run as a process by test_cluster_keymoves.py, which kills
it and runs it again):

* the keys: :func:`rvlm.core.redis.docio.keys.enumerate_keys` by SCAN on every primary, into
  the backup dir's key file (once; a re-run keeps it);
* the moves: :meth:`rvlm.core.migrate.drop_recreate.DropRecreate.transform`, the transform
  phase of ``rvlm apply`` (backup fsynced, ``batch_started`` journaled, DUMP/PTTL then RESTORE
  on the new key's owner then DEL, ``batch_done``), which on a re-run restores every batch
  started but not done from its backup and redoes it, in ``--workers`` processes.

Usage: ``python cluster_move_job.py URL BACKUP_DIR BATCH WORKERS``. Exit 0 when every batch is
done.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rvlm.core.migrate.backup_dir import KEYS_NAME, prepare_backup_dir
from rvlm.core.migrate.drop_recreate import DropRecreate
from rvlm.core.migrate.plan import Plan, PlannedChange
from rvlm.core.migrate.run import Run
from rvlm.core.plugins.documents import DocumentOperation
from rvlm.core.plugins.host import host_with
from rvlm.core.redis.docio.keys import enumerate_keys
from rvlm.core.schema.ftinfo import IndexStats
from rvlm.core.schema.model import Field, IndexDefinition, IndexSchema, TextAttrs
from rvlm.core.storage.journal import RunState

OLD, NEW = "doc:", "moved:"


def plan() -> Plan:
    fields = [Field(name="v", type="text", attrs=TextAttrs())]
    source = IndexSchema(index=IndexDefinition(name="moves", prefix=(OLD,)), fields=fields)
    target = IndexSchema(index=IndexDefinition(name="moves", prefix=(NEW,)), fields=fields)
    return Plan(
        source_schema=source, source_stats=IndexStats(), key_sample=(), requested_changes={},
        target_schema=target,
        changes=(PlannedChange(type="change_prefix", plugin="change_prefix",
                               plugin_version="builtin", summary=f"{OLD} -> {NEW}"),),
        operations=(DocumentOperation(plugin="change_prefix", kind="rename_keys",
                                      rename_prefix=(OLD, NEW)),))


def main(url: str, backup_dir: str, batch: int, workers: int) -> int:
    p = plan()
    directory = Path(backup_dir)
    prepare_backup_dir(directory, p, batch)
    run = Run(url=url, plan=p, backup_dir=directory, batch_size=batch, workers=workers,
              accept_data_loss=False, progress=None, host=host_with(), index_timeout=60)
    try:
        keyfile = directory / KEYS_NAME
        if not RunState.load(directory).reached("keys_enumerated"):
            # failures=1: SCAN (on every primary), the path for keys no index lists
            found = enumerate_keys(run.client, p.source_schema, 0, 1, keyfile)
            run.phase("keys_enumerated", count=found.count, method=found.method)
        run.mutated = True
        DropRecreate(run).transform(keyfile)
        run.phase("transformed")
    finally:
        run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
