"""Undo a migration as far as it went, from its backup dir alone.

The backup dir holds the plan (``plan.yaml``), the manifest, the journals and the backup data.
:func:`rollback` verifies all of it first (a corrupt or truncated backup is refused with one
line before anything is restored), takes the index lock, drops the target index if it exists,
restores every backup record newest batch first (values, deleted fields, key names, TTLs;
whole documents a ``converts_to`` operation replaced are recreated as they were),
recreates the source index from the plan's source schema if it is not there, waits until it is
indexed and journals ``rolled_back``. Running it twice is fine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from rvlm.core.errors import MigrationFailed
from rvlm.core.migrate.aliases import restore_aliases
from rvlm.core.migrate.backup_dir import backup_dir_for, load_backup_plan
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.report import MigrationReport, Timer, Timings
from rvlm.core.migrate.validate import validate_source
from rvlm.core.migrate.verify import written_refs
from rvlm.core.redis import durability
from rvlm.core.redis.connection import connect, index_exists, read_index, wait_indexed
from rvlm.core.redis.docio.restore import conflict_actions, conflict_message, restore_records
from rvlm.core.redis.docio.verify import CHANGED, check_written, originals_match
from rvlm.core.redis.lock import hold_locks, lock_owner
from rvlm.core.redis.resp import to_str
from rvlm.core.schema.ftcreate import create_arguments
from rvlm.core.storage.backup.reader import BackupReader
from rvlm.core.storage.backup.records import BackupRecord
from rvlm.core.storage.journal import Journal, RunState, phase_data


def _indexing(progress: Callable[[str, int, int], None] | None) -> Callable[[int], None] | None:
    """``wait_indexed``'s percentage as the ``indexing`` progress step."""
    if progress is None:
        return None
    return lambda pct: progress("indexing", pct, 100)

def rollback(
    url: str | None,
    backup_dir: str | Path,
    *,
    index_timeout: float = 600.0,
    progress: Callable[[str, int, int], None] | None = None,
    client: Any = None,
    index: str | None = None,
    force: bool = False,
) -> MigrationReport:
    """Restore the source index and documents from ``backup_dir``; returns a report
    (``mode: rollback``). ``backup_dir`` may be a batch's backup dir with ``index`` naming
    the index (:func:`~rvlm.core.migrate.backup_dir.backup_dir_for`). ``client`` replaces the
    connection made from ``url`` (and is left open). Raises :class:`RvlmError` (nothing
    restored) for a corrupt or foreign backup dir or a held lock; a failure while restoring
    gives a failed report and re-running resumes (every step is idempotent).

    A document changed since the migration wrote it (its digest differs from the backup's
    record of the write, and it does not hold the originals either) was written by someone
    else: it is kept as it is and named in the report (a conflict, result failed), unless
    ``force`` restores its originals over it.
    """
    directory = backup_dir_for(backup_dir, index)
    plan = load_backup_plan(directory)
    state = RunState.load(directory)
    reader = BackupReader(directory, plan.fingerprint)
    reader.require(state.started)
    reader.verify()
    report = MigrationReport(mode="rollback", source_index=plan.source_index,
                             target_index=plan.target_index, backup_dir=str(directory),
                             plan_fingerprint=plan.fingerprint, resumed=False)
    report.backup_paths = sorted(str(p) for p in directory.glob("data-*.rvb"))
    timer = Timer()
    owns_client = client is None
    client = connect(url) if client is None else client
    durability.install(client)  # rolled_back is journaled once the replicas have it all
    storage = plan.source_schema.storage_type
    journal = Journal(directory, 0)
    try:
        with hold_locks(client, (plan.source_index, plan.target_index),
                        lock_owner("rollback")) as leases:
            if state.phase == "rolled_back":
                report.warnings.append("already rolled back; nothing to do")
                report.validation = validate_source(client, plan)
                return report.finish(report.validation.passed)
            if plan.online:  # nothing was dropped before the alias moved
                from rvlm.core.migrate.online.executor import rollback_online

                return rollback_online(client, directory, plan, state, report, timer, journal,
                                       index_timeout, progress=progress)
            dropped = state.reached("dropped") or (
                state.phase == "pre_drop_done" and not index_exists(client, plan.source_index)
            ) or bool(reader.batch_numbers())
            if not dropped:
                report.warnings.append("the source index was never dropped; nothing to restore")
                report.validation = validate_source(client, plan)
                return report.finish(report.validation.passed)
            try:
                with timer.step("drop"):
                    if index_exists(client, plan.target_index):
                        live = read_index(client, plan.target_index).schema.index.name
                        if live == plan.target_index:
                            client.execute_command("FT.DROPINDEX", plan.target_index)
                conflicts: list[tuple[bytes, bytes]] = []
                kept: list[bytes] = []
                with timer.step("restore"):
                    total = len(reader.batch_numbers())
                    for n, (b, records) in enumerate(reader.reversed_batches(), 1):
                        if not force:
                            records = _without_newer_writes(client, plan, reader, state, b,
                                                            records, kept)
                        # a batch backed up (or started) but not done may hold a
                        # replacement that failed after its DEL: its replaced documents are
                        # recreated even if no key is left (its batch_started, fsynced after
                        # the backup and beside the writes, may be lost)
                        before = len(conflicts)
                        for key in restore_records(client, storage, records,
                                                   recreate=b not in state.done,
                                                   conflicts=conflicts):
                            if len(report.warnings) < 20:
                                report.warnings.append(
                                    f"{to_str(key)!r} no longer exists; not restored")
                        report.restored_records += len(records) - (len(conflicts) - before)
                        leases.check()
                        if progress is not None:
                            progress("restore", n, total)
                    report.batches = total
                with timer.step("create"):
                    if not index_exists(client, plan.source_index):
                        client.execute_command(*create_arguments(plan.source_schema))
                with timer.step("indexing"):
                    wait_indexed(client, plan.source_index, index_timeout,
                                 progress=_indexing(progress))
                # the drops removed the aliases: point them at the source again
                restore_aliases(client, plan, phase_data(directory, "checked").get("aliases"))
                if conflicts or kept:
                    # not rolled back: once the pairs are resolved (or with --force for
                    # documents changed since), a re-run restores them
                    report.restore_conflicts = len(conflicts) + len(kept)
                    errors = []
                    if conflicts:
                        errors.append(conflict_message(conflicts))
                        report.manual_actions += conflict_actions(
                            conflicts, f"{directory}: 'rvlm rollback --backup-dir {directory}'")
                    if kept:
                        errors.append(kept_message(kept))
                        report.manual_actions += kept_actions(kept, directory)
                    report.error = "; ".join(errors)
                    with contextlib.suppress(Exception):
                        journal.append("error", message=f"rollback: {report.error}")
                    report.validation = validate_source(client, plan)
                    return report.finish(False)
                journal.append("phase", value="rolled_back")
            except (MigrationFailed, redis.RedisError) as exc:
                report.error = str(exc)
                with contextlib.suppress(Exception):
                    journal.append("error", message=f"rollback: {exc}")
                report.manual_actions.append(f"re-run 'rvlm rollback --backup-dir {directory}'")
                return report.finish(False)
            report.validation = validate_source(client, plan)
            return report.finish(report.validation.passed)
    finally:
        report.timings = Timings(timer.seconds)
        journal.close()
        durability.uninstall(client)
        if owns_client:
            client.close()


def _without_newer_writes(client: redis.Redis, plan: Plan, reader: BackupReader,
                          state: RunState, batch: int, records: list[BackupRecord],
                          kept: list[bytes]) -> list[BackupRecord]:
    """``records`` less those whose document was changed by someone else since the migration
    wrote it (appended to ``kept``, by key): its digest differs from what the backup (and the
    journal, for a redone batch) says was written, and it does not hold the originals either
    (a document rolled back already, or whose write never happened, does)."""
    refs = written_refs(reader, batch, state.rewritten)
    outcomes = dict(zip((r[0] for r in refs),
                        check_written(client, refs, plan.target_schema.storage_type),
                        strict=True))
    suspects = [r for r in records if outcomes.get(r.key) == CHANGED]
    if not suspects:
        return records
    original = originals_match(client, suspects, plan.source_schema.storage_type)
    newer = {r.key for r, same in zip(suspects, original, strict=True) if not same}
    kept += sorted(newer)
    return [r for r in records if r.key not in newer]


def kept_message(keys: list[bytes], limit: int = 5) -> str:
    """One line naming documents kept because someone changed them after the migration."""
    shown = ", ".join(repr(to_str(k)) for k in keys[:limit])
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return (f"{len(keys)} document(s) changed since the migration wrote them were kept as they "
            f"are, not overwritten with their originals: {shown}{more}")


def kept_actions(keys: list[bytes], directory: Path, limit: int = 50) -> list[str]:
    """Manual actions for documents kept by a rollback."""
    out = [f"{to_str(k)!r} was changed after the migration: keep it as it is, or restore its "
           "original from the backup with --force" for k in keys[:limit]]
    if len(keys) > limit:
        out.append(f"... and {len(keys) - limit} more such documents")
    out.append(f"to put the originals back over those changes: 'rvlm rollback --backup-dir "
               f"{directory} --force'")
    return out


__all__ = ["kept_actions", "kept_message", "rollback"]
