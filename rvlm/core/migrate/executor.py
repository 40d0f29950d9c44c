"""Apply a plan: the one entry point of every apply (CLI, Python API, async API, batch runs).

:func:`apply_plan` opens (or reopens, to resume) the backup dir bound to the plan, builds the
:class:`~rvlm.core.migrate.run.Run`, takes the index locks
(:func:`~rvlm.core.redis.lock.hold_locks`) and hands the run to the executor of the plan's
mode:

* ``drop_recreate``: :func:`rvlm.core.migrate.drop_recreate.execute_drop_recreate` (drop,
  rewrite documents in batches with backups and a journal, create, validate);
* ``online``: :func:`rvlm.core.migrate.online.executor.execute_online` (build the target next
  to the source, validate, move the alias; or copy the documents a change rewrites to a
  target prefix first).

A failure before the first change raises :class:`~rvlm.core.errors.RvlmError` (nothing
changed); after it, the report says ``failed``, the journal holds the error, and re-running
the same call resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.backup_dir import (
    KEYS_NAME,
    PLAN_NAME,
    check_backup_dir_name,
    prepare_backup_dir,
)
from rvlm.core.migrate.drop_recreate import execute_drop_recreate
from rvlm.core.migrate.plan import DROP_RECREATE, ONLINE, Plan
from rvlm.core.migrate.report import MigrationReport, Timings
from rvlm.core.migrate.rollback import rollback
from rvlm.core.migrate.run import Progress, Run, check_live_source
from rvlm.core.plugins.host import host_with
from rvlm.core.quality.model import QualityOptions
from rvlm.core.redis.lock import hold_locks, lock_owner

if TYPE_CHECKING:
    from rvlm.core.migrate.online.options import OnlineOptions

def execute_online(run: Run) -> MigrationReport:
    """The online executor (:func:`rvlm.core.migrate.online.executor.execute_online`), its
    modules loaded by the runs that use them."""
    from rvlm.core.migrate.online.executor import execute_online as execute

    return execute(run)


#: The executor of each plan mode; each gets a Run with the index locks held.
EXECUTORS: dict[str, Callable[[Run], MigrationReport]] = {
    DROP_RECREATE: execute_drop_recreate,
    ONLINE: execute_online,
}


def apply_plan(
    url: str | None,
    plan: Plan,
    *,
    backup_dir: str | Path,
    batch_size: int = 500,
    workers: int = 1,
    accept_data_loss: bool = False,
    progress: Progress | None = None,
    plugins: Sequence[Any] = (),
    index_timeout: float = 600.0,
    client: Any = None,
    quality: QualityOptions | None = None,
    rollback_below_recall: bool = False,
    online: OnlineOptions | None = None,
) -> MigrationReport:
    """Apply ``plan`` to the server at ``url``, or resume it from ``backup_dir``.

    Takes the plan, a backup dir (created, or reopened to resume the same plan), batch size
    and worker count (a resume uses the batch size the dir was made with), and extra plugin
    objects. ``client`` replaces the connection made from ``url`` for every command of this
    process (the async executor passes a bridge to redis.asyncio); worker processes still
    connect to ``url``. ``online`` says how an online apply that copies documents behaves
    while it runs (:class:`~rvlm.core.migrate.online.options.OnlineOptions`: throttling, the
    postponed cut-over, forwarding after it, finalize, status). Returns a
    :class:`MigrationReport` whose ``result`` is ``succeeded`` only when validation passed.

    ``quality`` sets the quality gate (:mod:`rvlm.core.migrate.quality_gate`): the floor of
    recall@k, the number of queries, k, and the user's query checks. Under the floor the
    validation fails: the report says ``failed`` and an online alias stays on the source. With
    ``rollback_below_recall`` such a run then rolls itself back (``report.rolled_back``; the
    result stays ``failed``).

    Raises :class:`RvlmError` (nothing changed) for a refused request: another apply holds the
    lock, the source changed since the plan, a lossy plan without ``accept_data_loss``,
    collisions, a missing plugin or capability, a foreign or corrupt backup dir. Once the
    source index was dropped, failures do not raise: the report says ``failed``, the journal
    holds the error, and re-running the same call resumes.
    """
    host = host_with(plugins)
    host.check()
    if plan.changes_nothing:
        return _nothing_to_do(url, plan, client)
    execute = EXECUTORS.get(plan.mode)
    if execute is None:
        raise RvlmError(f"unknown mode {plan.mode!r} (known: {', '.join(EXECUTORS)})")
    directory = check_backup_dir_name(backup_dir)
    manifest, _created = prepare_backup_dir(directory, plan, batch_size)
    size = int(manifest["batch_size"])
    run = Run(url=url or "", plan=plan, backup_dir=directory, batch_size=size,
              workers=workers, accept_data_loss=accept_data_loss, progress=progress,
              host=host, index_timeout=index_timeout, client=client, quality=quality,
              online=online)
    if size != batch_size:
        run.report.warnings.append(f"resuming with the backup dir's batch size {size} "
                                   f"(not {batch_size})")
    run.report.backup_paths = [str(directory / PLAN_NAME)]
    try:
        with hold_locks(run.client, (plan.source_index, plan.target_index),
                        lock_owner("apply")) as leases:
            run.leases = leases
            try:
                report = execute(run)
            except Exception as exc:
                if not run.mutated:
                    raise
                report = run.failed(exc)
    finally:
        run.close()
    report.timings = Timings(run.timer.seconds)
    if (directory / KEYS_NAME).exists():  # an index-only change has no key file
        report.backup_paths.append(str(directory / KEYS_NAME))
    report.backup_paths += sorted(str(p) for p in directory.glob("data-*.rvb"))
    if rollback_below_recall and below_recall(report):
        roll_back_below_recall(url, client, directory, report, index_timeout, progress)
    return report


def below_recall(report: MigrationReport) -> bool:
    """The run failed its validation because a field's recall is under the floor."""
    return not report.succeeded and any(
        c.name.startswith("recall:") and not c.passed for c in report.validation.checks)


def roll_back_below_recall(url: str | None, client: Any, directory: Path,
                           report: MigrationReport, index_timeout: float,
                           progress: Progress | None) -> None:
    """``--rollback-below-recall``: undo the run (its locks are released by now) and say so
    in ``report``, which stays ``failed``."""
    from rvlm.core.quality.answers import ANSWERS_NAME

    undone = rollback(url, directory, index_timeout=index_timeout, progress=progress,
                      client=client)
    report.timings["rollback"] = sum(undone.timings.values())
    if undone.succeeded:
        report.rolled_back = True
        report.manual_actions = [
            f"recall under the floor: rolled back by itself (--rollback-below-recall); the "
            f"source index {report.source_index!r} serves as before. Inspect "
            f"{directory / ANSWERS_NAME} and the report's quality, then plan another change"]
    else:
        report.error = f"rollback after a recall under the floor failed: {undone.error}"
        report.manual_actions.append(
            f"re-run 'rvlm rollback --backup-dir {directory}' to restore the source index")


def _nothing_to_do(url: str | None, plan: Plan, client: Any) -> MigrationReport:
    """A plan that changes nothing: the source must still be what the plan saw; nothing is
    dropped, written or backed up, and the report says so."""
    from rvlm.core.migrate.validate import validate_migration
    from rvlm.core.redis.connection import connect

    own = client is None
    conn = connect(url) if own else client
    try:
        check_live_source(conn, plan)
        report = MigrationReport(mode=plan.mode, source_index=plan.source_index,
                                 target_index=plan.target_index,
                                 plan_fingerprint=plan.fingerprint)
        report.warnings.append(
            "the plan changes nothing: nothing was dropped, written or backed up")
        # the index as it is, checked as the plan's target (it is the same)
        report.validation = validate_migration(conn, plan)
    finally:
        if own:
            conn.close()
    return report.finish(report.validation.passed)


__all__ = ["EXECUTORS", "apply_plan", "below_recall"]
