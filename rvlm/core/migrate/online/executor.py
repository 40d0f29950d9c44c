"""Online apply: build the target next to the source, validate it, then move the alias.

A plan with ``mode: online`` changes the index only (add, remove or update fields, vector
algorithm, metric or parameters, index options); it never rewrites documents, so both indexes
can cover the same documents at once. Clients query an alias that points at the source until
the target is built and validated; ``FT.ALIASUPDATE`` then moves it in one command, so queries
never fail (``downtime_duration_seconds: 0``). Phases (journaled in ``journal-0.jsonl``)::

    checked -> created -> indexed -> validated -> alias_moved -> source_dropped -> done

``source_dropped`` only when the plan says ``drop_source: true``. Checks are the same as a
``drop_recreate`` apply's (the source unchanged since the plan, the server accepts the target,
the target name free, the index locks) plus the aliases (each is free or points at the source).
Re-running the same apply resumes after the last journaled phase; every step is idempotent.
:func:`rollback_online` undoes it: the source is recreated from the plan if it was dropped
(documents were never touched, so that is exact), the aliases point at it again and the target
is dropped.

It is the sibling of the drop_recreate executor (:mod:`rvlm.core.migrate.drop_recreate`): both
take a :class:`~rvlm.core.migrate.run.Run` (connection, journal, report, timer, the shared
checks) from :func:`rvlm.core.migrate.executor.apply_plan`. Fault points for crash tests:
``online_after_*`` in :mod:`rvlm.core.migrate.faults`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import attrs
import redis

from rvlm.core.errors import MigrationFailed, RvlmError
from rvlm.core.migrate.aliases import (
    alias_index,
    check_aliases,
    lost_aliases_note,
    point_aliases,
    restore_aliases,
)
from rvlm.core.migrate.backup_dir import PLAN_NAME
from rvlm.core.migrate.faults import fault
from rvlm.core.migrate.online.blue_green import execute_blue_green
from rvlm.core.migrate.online.capture import copied_source_keys, notify_setting, run_id
from rvlm.core.migrate.online.checks import first_keys, online_problems
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.report import MigrationReport, Timer
from rvlm.core.migrate.run import Run
from rvlm.core.migrate.validate import validate_source
from rvlm.core.plugins.checks import CheckResult
from rvlm.core.redis import wire
from rvlm.core.redis.connection import read_index, wait_indexed
from rvlm.core.redis.copyio import server_time_ms
from rvlm.core.redis.docio.restore import restore_records
from rvlm.core.redis.notify import ConfigRefused, needed_flags
from rvlm.core.redis.resp import to_int
from rvlm.core.schema.ftcreate import create_arguments
from rvlm.core.storage.backup.reader import BackupReader
from rvlm.core.storage.journal import Journal, RunState, phase_data

log = logging.getLogger(__name__)


def _source_count(client: redis.Redis, name: str) -> tuple[int, int]:
    stats = read_index(client, name).stats
    return stats.num_docs + stats.indexing_failures, stats.indexing_failures


def execute_online(run: Run) -> MigrationReport:
    """Run (or resume) an online apply; ``run`` holds the connection, journal, timer, report
    and the shared checks. Called by :func:`rvlm.core.migrate.executor.apply_plan` with the
    index locks held; raises before the first change, otherwise returns the (failed) report.
    A plan that rewrites documents copies them to a target prefix: see
    :mod:`rvlm.core.migrate.online.blue_green`."""
    if run.plan.operations:
        return execute_blue_green(run)
    plan, client = run.plan, run.client
    state = run.load_state()
    report = run.report
    report.backup_paths = [str(run.dir / PLAN_NAME)]
    report.downtime_duration_seconds = 0.0
    if state.phase is None:
        with run.timer.step("checks"):
            if plan.supported:  # a blocked plan is refused by check_source, with its reasons
                problems = online_problems(plan)
                if problems:
                    raise RvlmError("the plan cannot run online: " + "; ".join(problems))
            info = run.check_source()
            before = check_aliases(client, plan)
            problems = run.host.pre_drop(plan, run.ctx)
            if problems:
                raise RvlmError("a plugin refused the migration: " + "; ".join(problems))
        run.ask_source()  # the source serves until the alias moves; ask it before any change
        run.phase("checked", aliases=before,
                  source_docs=info.stats.num_docs + info.stats.indexing_failures,
                  source_failures=info.stats.indexing_failures)
        fault("online_after_checks")
    else:
        run.check_plugins()
        if not state.reached("alias_moved"):
            run.ask_source()  # what a first run without these options did not store
        run.check_cluster()
    run.mutated = True
    checked = phase_data(run.dir, "checked")
    report.documents = int(checked.get("source_docs", 0))
    if not state.reached("alias_moved"):
        with run.timer.step("build"):
            run.create_target("online_after_create")
            run.wait_indexed()
        run.phase("indexed")
        with run.timer.step("validation"):
            # the source keeps serving (and may take writes): compare with it as it is now
            expected, failures = _source_count(client, plan.source_index)
            # the quality gate's checks are part of it: under the floor, the alias stays
            result = run.validate(expected_docs=expected, source_failures=failures)
        report.validation = result
        report.documents = expected
        if not result.passed:
            run.journal.append("error", message="validation failed: " + "; ".join(result.errors))
            report.manual_actions.append(
                f"the aliases still point at {plan.source_index!r}, so queries were not "
                f"affected; inspect {plan.target_index!r}, then re-run the same command to "
                f"validate again, or 'rvlm rollback --backup-dir {run.dir}' to drop it")
            return report.finish(False)
        run.phase("validated", docs=expected, failures=failures)
        fault("online_after_validate")
        with run.timer.step("alias"):
            check_aliases(client, plan, allowed=(plan.target_index,))
            point_aliases(client, plan.aliases, plan.target_index, plan.source_index)
        run.phase("alias_moved")
        fault("online_after_alias")
    else:
        validated = phase_data(run.dir, "validated")
        with run.timer.step("validation"):
            report.validation = run.validate(expected_docs=validated.get("docs"),
                                             source_failures=validated.get("failures"))
        report.documents = int(validated.get("docs", report.documents))
        with run.timer.step("alias"):  # idempotent: a resume makes sure they moved
            point_aliases(client, plan.aliases, plan.target_index, plan.source_index)
    if plan.drop_source and not state.reached("source_dropped"):
        with run.timer.step("drop_source"):
            if alias_index(client, plan.source_index) == plan.source_index:
                log.warning("%s", lost_aliases_note(plan.source_index, ()))
                client.execute_command("FT.DROPINDEX", plan.source_index)
        run.phase("source_dropped")
        fault("online_after_drop")
    elif not plan.drop_source:
        report.manual_actions.append(
            f"{plan.source_index!r} was kept (drop_source: false): drop it when you no longer "
            f"need it (FT.DROPINDEX {plan.source_index}, documents are kept)")
    if state.phase != "done":
        run.phase("done")
    return report.finish(report.validation.passed)


def rollback_online(client: redis.Redis, directory: Path, plan: Plan, state: RunState,
                    report: MigrationReport, timer: Timer, journal: Journal,
                    index_timeout: float,
                    progress: Callable[[str, int, int], None] | None = None) -> MigrationReport:
    """Undo an online apply: recreate the source from the plan if it was dropped, point the
    aliases back at it (or delete one the apply created), drop the target. Called by
    :func:`rvlm.core.migrate.rollback.rollback` with the locks held. Idempotent."""
    if state.phase is None:
        report.warnings.append("the online apply never started; nothing to undo")
        report.validation = validate_source(client, plan)
        return report.finish(report.validation.passed)
    copies = bool(plan.operations)
    try:
        if copies and state.reached("finalizing"):
            with timer.step("restore"):
                report.restored_records, expired = restore_finalized(client, directory, plan)
            if expired:
                report.warnings.append(f"{expired} source keys had expired since finalize "
                                       "backed them up; they were not restored")
        with timer.step("create"):
            if alias_index(client, plan.source_index) != plan.source_index:
                client.execute_command(*create_arguments(plan.source_schema))
        with timer.step("indexing"):
            wait_indexed(client, plan.source_index, index_timeout,
                         progress=None if progress is None
                         else lambda pct: progress("indexing", pct, 100))
        with timer.step("alias"):
            restore_aliases(client, plan, phase_data(directory, "checked").get("aliases"))
        with timer.step("drop"):
            if alias_index(client, plan.target_index) == plan.target_index:
                client.execute_command("FT.DROPINDEX", plan.target_index)
        if copies:
            with timer.step("delete_copies"):
                deleted, others = delete_copies(client, directory, plan)
            report.online = {"copies_deleted": deleted}
            if others:
                report.warnings.append(
                    f"{others} keys under the target prefix {plan.target_schema.index.prefix[0]!r} "
                    "were not written by this migration (written there directly after the "
                    "cut-over?); they were left in place")
            if state.reached("alias_moved"):
                report.warnings.append(
                    "writes made directly to target keys after the cut-over are not in the "
                    "source: they were deleted with the copies")
            setting, nodes = notify_setting(client, run_id(plan, directory),
                                            needed_flags(plan.source_schema.storage_type))
            try:
                setting.leave()
            finally:
                if nodes is not None:
                    nodes.close()
        journal.append("phase", value="rolled_back")
    except (MigrationFailed, ConfigRefused, redis.RedisError) as exc:
        report.error = str(exc)
        with contextlib.suppress(Exception):
            journal.append("error", message=f"rollback: {exc}")
        report.manual_actions.append(f"re-run 'rvlm rollback --backup-dir {directory}'")
        return report.finish(False)
    report.downtime_duration_seconds = 0.0
    report.validation = validate_source(client, plan)
    before = phase_data(directory, "checked").get("aliases") or {}
    for name in plan.aliases:
        want = None if before.get(name, plan.source_index) is None else plan.source_index
        now = alias_index(client, name)
        report.validation.add(CheckResult(
            name=f"alias:{name}", passed=now == want,
            details=f"points at {now!r}" if now else "does not exist"))
    return report.finish(report.validation.passed)


def restore_finalized(client: redis.Redis, directory: Path, plan: Plan) -> tuple[int, int]:
    """Put back the source keys ``rvlm finalize`` deleted, from its backup: oldest batch
    first, so a key backed up twice ends as it was last. Expiry times were kept absolute; a
    key whose time has passed is not restored. Returns (restored, expired)."""
    storage = plan.source_schema.storage_type
    reader = BackupReader(directory, plan.fingerprint)
    restored = expired = 0
    for _b, records in reader.batches():
        now = server_time_ms(client)
        keep = []
        expiry: list[tuple[bytes, int]] = []
        for r in records:
            if r.ttl_ms is not None:
                left = r.ttl_ms - now
                if left <= 0:
                    expired += 1
                    continue
                expiry.append((r.key, r.ttl_ms))
                r = attrs.evolve(r, ttl_ms=left)
            keep.append(r)
        restore_records(client, storage, keep, recreate=True)
        # the restore set each TTL relative to a moment ago: now the exact time again
        replies = wire.execute(client, [(b"PEXPIREAT", k, at) for k, at in expiry])
        bad = next((r for r in replies if isinstance(r, Exception)), None)
        if bad is not None:
            raise MigrationFailed(f"restoring an expiry time failed: {bad}")
        restored += len(keep)
    return restored, expired


def delete_copies(client: redis.Redis, directory: Path, plan: Plan,
                  chunk: int = 1000) -> tuple[int, int]:
    """Delete the target keys this migration wrote (the copies of every key in its key
    files and written log), and count the keys left under the target prefix that it did not
    write. Returns (deleted, others)."""
    deleted = 0
    for keys in copied_source_keys(directory, chunk):
        targets = list(dict.fromkeys(plan.map_key(k) for k in keys))
        replies = wire.execute(client, [(b"DEL", t) for t in targets])
        deleted += sum(to_int(r) for r in replies if not isinstance(r, Exception))
    others = 0
    for prefix in plan.target_schema.index.prefix:
        others += len(first_keys(client, prefix, limit=1000))
    return deleted, others

