"""``rvlm apply``, ``rvlm validate``, ``rvlm rollback`` and ``rvlm finalize``: thin wrappers
over the executor.

Exit codes: 0 when the migration (or validation, or rollback) succeeded, 1 when it ran and
failed, 2 for bad input or a refused request (nothing changed).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rvlm.cli.common import (
    BacklogMemoryKeysOption,
    ClusterOption,
    JsonOption,
    MinRecallOption,
    QueryCheckOption,
    RecallKOption,
    RecallQueriesOption,
    RollbackBelowOption,
    UrlOption,
    echo_json,
    handle_errors,
    output_file,
)
from rvlm.cli.progress import progress_display

if TYPE_CHECKING:
    from rvlm.core.migrate.report import MigrationReport

PlanOption = Annotated[Path, typer.Option("--plan", help="The plan YAML made by 'rvlm plan'.")]
# a str, not a Path: Path("") would silently be the current directory, which is refused
BackupOption = Annotated[str, typer.Option(
    "--backup-dir", help="Directory for the backup, key file and journal (re-run the same "
                         "command with the same directory to resume).")]


def register(app: typer.Typer) -> None:
    app.command("apply")(apply)
    app.command("validate")(validate)
    app.command("rollback")(rollback)
    app.command("finalize")(finalize)


def _command(*parts: str, url: str | None) -> str:
    """A command line to copy. ``--url`` is added only when the URL did not come from
    ``REDIS_URL`` (a re-run in the same shell sees that again); a password in it is redacted."""
    import os
    import shlex

    words = [w for w in parts if w]
    if url and url != os.environ.get("REDIS_URL"):
        from rvlm.core.redis.connection import redact

        words += ["--url", redact(url)]
    return shlex.join(words)


def _start_run() -> None:
    """The run begins: the executor's modules are loaded now, as part of start-up, and frozen
    with the rest of it (:func:`rvlm.cli.main.settle_start_up`)."""
    import rvlm.core.migrate.executor  # noqa: F401
    from rvlm.cli.main import settle_start_up

    settle_start_up()


def _summary(report: MigrationReport, *, resume: str | None = None,
             undo: str | None = None) -> None:
    from rvlm.cli.render import print_report

    print_report(report, resume=resume, undo=undo)


@handle_errors
def apply(
    plan: PlanOption,
    backup_dir: BackupOption,
    url: UrlOption = None,
    cluster: ClusterOption = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1,
                                            help="Documents per batch.")] = 500,
    workers: Annotated[int, typer.Option("--workers", min=1,
                                         help="Worker processes for the transform (at most "
                                              "the CPUs the machine gives rvlm; the report "
                                              "says when fewer ran).")] = 1,
    report_out: Annotated[Path | None, typer.Option("--report-out",
                                                    help="Write the YAML report here.")] = None,
    benchmark_out: Annotated[Path | None, typer.Option(
        "--benchmark-out", help="Write timings and throughput here.")] = None,
    accept_data_loss: Annotated[bool, typer.Option(
        "--accept-data-loss", help="Apply a lossy plan (e.g. quantization) without asking.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")
                   ] = False,
    index_timeout: Annotated[float, typer.Option(
        "--index-timeout", help="Seconds to wait for the new index to finish indexing.")
    ] = 600.0,
    json_out: JsonOption = False,
    min_recall: MinRecallOption = None,
    recall_queries: RecallQueriesOption = None,
    recall_k: RecallKOption = 10,
    query_check_file: QueryCheckOption = None,
    rollback_below_recall: RollbackBelowOption = False,
    follow: Annotated[bool, typer.Option(
        "--follow", help="Online copy: after the cut-over, keep carrying writes made to source "
                         "keys over to the target until 'rvlm finalize', 'rvlm ctl stop', "
                         "SIGINT or SIGTERM (without it: drain the backlog and exit).")] = False,
    finalize: Annotated[bool, typer.Option(
        "--finalize", help="Online copy: at the end, back up the source keys and delete them "
                           "(what 'rvlm finalize' does).")] = False,
    max_load: Annotated[str | None, typer.Option(
        "--max-load", help="Online copy: pause while an INFO field reaches its threshold, "
                           "e.g. used_memory=8gb,instantaneous_ops_per_sec=50000.")] = None,
    critical_load: Annotated[str | None, typer.Option(
        "--critical-load", help="Online copy: stop cleanly (resumable) when an INFO field "
                                "reaches its threshold, e.g. used_memory=15gb.")] = None,
    max_lag_millis: Annotated[float | None, typer.Option(
        "--max-lag-millis", help="Online copy: pause while a replica is more than this many "
                                 "ms behind.")] = None,
    throttle_replicas: Annotated[str | None, typer.Option(
        "--throttle-replicas", help="Online copy: host:port of the replicas --max-lag-millis "
                                    "checks, comma-separated (default: those the primary "
                                    "lists in INFO replication).")] = None,
    postpone_cut_over_flag_file: Annotated[Path | None, typer.Option(
        "--postpone-cut-over-flag-file", help="Online copy: move the alias only once this "
                                              "file does not exist (or 'rvlm ctl cut-over'); "
                                              "the target is kept caught up meanwhile.")
    ] = None,
    status_every: Annotated[float, typer.Option(
        "--status-every", min=0, help="Online copy: seconds between status lines on stderr.")
    ] = 5.0,
    backlog_memory_keys: BacklogMemoryKeysOption = None,
    use_async: Annotated[bool, typer.Option(
        "--async", help="Run the async executor (redis.asyncio on an event loop; the same "
                        "plan, documents, backup and report).")] = False,
) -> None:
    """Apply a plan: check, back up, drop, rewrite documents, create, validate.

    The quality gate: before the source stops serving, KNN queries (per vector field whose
    answers can change) and your query checks are asked of it and kept in the backup dir;
    once the target is indexed it must answer them the same way (recall@k at least
    --min-recall, by default the plan's floor), or the result is failed (online: the alias
    stays on the source). An online plan that rewrites documents copies them to the target
    prefix while the source keeps serving, then moves the alias (see the --follow, --finalize
    and throttle options; 'rvlm ctl' talks to it from another shell). Re-run the same command
    after a crash to resume. Exit 0 when the migration succeeded, 1 when it failed, 2 for bad
    input (nothing changed).
    """
    from rvlm.api import MigrationExecutor, quality_options
    from rvlm.core.errors import RvlmError
    from rvlm.core.migrate.plan import Plan

    output_file(report_out, "--report-out")
    output_file(benchmark_out, "--benchmark-out")
    if not index_timeout > 0:
        raise RvlmError(f"--index-timeout must be a positive number of seconds, not "
                        f"{index_timeout:g}")
    loaded = Plan.load(plan)
    quality_options(query_check_file=query_check_file)  # a bad file: refused before anything
    copies = loaded.online and bool(loaded.operations)
    online = _online_options(copies, follow=follow, finalize=finalize, max_load=max_load,
                             critical_load=critical_load, max_lag_millis=max_lag_millis,
                             throttle_replicas=throttle_replicas,
                             postpone=postpone_cut_over_flag_file, status_every=status_every,
                             backlog_memory_keys=backlog_memory_keys)
    if not sys.stdin.isatty() and not loaded.changes_nothing:
        # as terraform's -auto-approve: a script must say it means it. --yes, or for a lossy
        # plan --accept-data-loss (RedisVL's confirmation, so its guide's commands run as typed)
        if loaded.lossy and not accept_data_loss:
            raise RvlmError(f"no terminal to confirm: this plan is lossy (loses precision); "
                            f"pass --accept-data-loss to apply it to index "
                            f"{loaded.source_index!r}")
        if not yes and not accept_data_loss:
            what = ("drops and rebuilds" if not loaded.online else "builds next to")
            raise RvlmError(f"no terminal to confirm: this plan {what} index "
                            f"{loaded.source_index!r}; pass --yes to apply it")
    if loaded.lossy and not accept_data_loss:
        from rvlm.cli.render import lossy_summary

        if not typer.confirm(
                f"This plan loses precision ({lossy_summary(loaded)}): the migrated values "
                "will not equal the originals. The originals are kept in the backup dir and "
                "'rvlm rollback' restores them exactly. Apply it?", default=False,
                err=json_out):
            raise RvlmError("not applied: the lossy plan was not confirmed")
        accept_data_loss = True
    elif not yes and not loaded.changes_nothing and sys.stdin.isatty() and not typer.confirm(
            f"Build {loaded.target_index!r} next to {loaded.source_index!r} and move alias "
            f"{', '.join(loaded.aliases)} to it now?" if loaded.online else
            f"Drop and rebuild index {loaded.source_index!r} now?", default=True,
            err=json_out):
        raise RvlmError("not applied")
    if copies and use_async:
        raise RvlmError("--async runs a plan that rewrites documents in place; an online plan "
                        "that copies documents runs without it")
    _start_run()
    arguments: dict[str, Any] = dict(
        redis_url=url, backup_dir=backup_dir, batch_size=batch_size, num_workers=workers,
        accept_data_loss=accept_data_loss, index_timeout=index_timeout,
        min_recall=min_recall, recall_queries=recall_queries, recall_k=recall_k,
        query_check_file=query_check_file, rollback_below_recall=rollback_below_recall)
    if copies:
        import attrs

        typer.secho(f"online apply: status in {Path(backup_dir) / 'control'}; from another shell: "
                    f"rvlm ctl --backup-dir {backup_dir} status|throttle|unthrottle|cut-over|"
                    "stop", err=True)
        with _stop_on_signals() as stop:
            online = attrs.evolve(online, should_stop=stop)
            report = MigrationExecutor().apply(loaded, online=online, **arguments)
    else:
        with progress_display() as progress:
            if use_async:
                import asyncio

                from rvlm.aio import AsyncMigrationExecutor

                report = asyncio.run(AsyncMigrationExecutor().apply(
                    loaded, progress_callback=progress, **arguments))
            else:
                report = MigrationExecutor().apply(loaded, progress_callback=progress,
                                                   **arguments)
    if report_out is not None:
        report.write(report_out)
    if benchmark_out is not None:
        report.write_benchmark(benchmark_out)
    if json_out:
        echo_json(report.to_dict())
    else:
        lossy = "--accept-data-loss" if loaded.lossy else ""
        _summary(report, resume=_command("rvlm", "apply", "--plan", str(plan), "--backup-dir",
                                         str(backup_dir), lossy,
                                         "--async" if use_async else "", url=url),
                 undo=_command("rvlm", "rollback", "--backup-dir", str(backup_dir), url=url))
    if not report.succeeded:
        raise typer.Exit(1)


def _online_options(copies: bool, *, follow: bool, finalize: bool, max_load: str | None,
                    critical_load: str | None, max_lag_millis: float | None,
                    throttle_replicas: str | None, postpone: Path | None,
                    status_every: float, backlog_memory_keys: int | None = None) -> Any:
    """The OnlineOptions of the command line (refused for a plan that copies nothing; None
    for such a plan, whose run does not load the online modules)."""
    from rvlm.core.errors import RvlmError

    asked = [name for name, value in (
        ("--follow", follow), ("--finalize", finalize), ("--max-load", max_load),
        ("--critical-load", critical_load), ("--max-lag-millis", max_lag_millis),
        ("--throttle-replicas", throttle_replicas), ("--postpone-cut-over-flag-file", postpone),
        ("--backlog-memory-keys", backlog_memory_keys),
    ) if value]
    if asked and not copies:
        raise RvlmError(f"{asked[0]} is for online plans that copy documents to a new prefix; "
                        "this plan does not")
    if not copies:
        return None
    from rvlm.core.migrate.online.options import BACKLOG_MEMORY_KEYS, OnlineOptions
    from rvlm.core.migrate.online.throttle import parse_thresholds

    replicas = (tuple(r.strip() for r in throttle_replicas.split(",") if r.strip())
                if throttle_replicas else None)
    return OnlineOptions(
        follow=follow, finalize=finalize,
        max_load=parse_thresholds(max_load, "--max-load"),
        critical_load=parse_thresholds(critical_load, "--critical-load"),
        max_lag_ms=max_lag_millis, replicas=replicas, postpone_flag_file=postpone,
        status_every=status_every, on_status=lambda status: typer.echo(status.line(), err=True),
        backlog_memory_keys=backlog_memory_keys or BACKLOG_MEMORY_KEYS)


@contextmanager
def _stop_on_signals() -> Iterator[Callable[[], str | None]]:
    """While inside: SIGINT and SIGTERM ask the online apply to stop cleanly (a second SIGINT
    interrupts at once). Yields the ``should_stop`` callable."""
    import signal

    got: list[str] = []

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if got and signum == signal.SIGINT:
            raise KeyboardInterrupt
        got.append(name)
        typer.secho(f"{name}: stopping cleanly (forwarding drains first; SIGINT again to "
                    "interrupt at once)", err=True)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: got[0] if got else None
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@handle_errors
def validate(
    plan: Annotated[Path | None, typer.Option(
        "--plan", help="The plan YAML made by 'rvlm plan' (default: the backup dir's copy).")
    ] = None,
    url: UrlOption = None,
    cluster: ClusterOption = False,
    report_out: Annotated[Path | None, typer.Option("--report-out",
                                                    help="Write the YAML report here.")] = None,
    backup_dir: Annotated[str | None, typer.Option(
        "--backup-dir", help="The apply's backup dir: check every document the plan rewrote "
                             "(required when it rewrote some), compare counts with the source "
                             "count taken at apply time, and the target's answers with the "
                             "source's answers kept there.")] = None,
    json_out: JsonOption = False,
    min_recall: MinRecallOption = None,
    query_check_file: QueryCheckOption = None,
) -> None:
    """Validate a migrated index against its plan. Exit 0 when every check passed, 1 if not,
    2 for bad input (a plan that rewrites documents needs the apply's --backup-dir).

    With --backup-dir the quality gate runs again: the target answers the queries whose
    source answers the apply kept there (recall@k per vector field, at least --min-recall;
    the checks of --query-check-file)."""
    from rvlm.api import validate as validate_plan

    output_file(report_out, "--report-out")
    _start_run()
    report = validate_plan(plan, redis_url=url, backup_dir=backup_dir, min_recall=min_recall,
                           query_check_file=query_check_file)
    if report_out is not None:
        report.write(report_out)
    if json_out:
        echo_json(report.to_dict())
    else:
        _summary(report)
    if not report.succeeded:
        raise typer.Exit(1)


@handle_errors
def rollback(
    backup_dir: BackupOption,
    url: UrlOption = None,
    cluster: ClusterOption = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")
                   ] = False,
    report_out: Annotated[Path | None, typer.Option("--report-out",
                                                    help="Write the YAML report here.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Restore the originals also over documents changed since the "
                        "migration wrote them (by default they are kept and named).")] = False,
    json_out: JsonOption = False,
    index: Annotated[str | None, typer.Option(
        "--index", "-i", help="With a batch's backup dir: the index to roll back.")] = None,
) -> None:
    """Undo a migration from its backup dir: restore documents and the source index."""
    from rvlm.api import rollback as do_rollback
    from rvlm.core.errors import RvlmError
    from rvlm.core.migrate.backup_dir import backup_dir_for, load_backup_plan

    directory = backup_dir_for(backup_dir, index)
    output_file(report_out, "--report-out")
    plan = load_backup_plan(directory)
    if not yes and sys.stdin.isatty() and not typer.confirm(
            f"Roll back {plan.target_index!r} -> {plan.source_index!r} from {directory}?",
            default=False, err=json_out):
        raise RvlmError("not rolled back")
    _start_run()
    with progress_display() as progress:
        report = do_rollback(directory, redis_url=url, progress_callback=progress,
                             force=force)
    if report_out is not None:
        report.write(report_out)
    if json_out:
        echo_json(report.to_dict())
    else:
        _summary(report, resume=_command("rvlm", "rollback", "--backup-dir", str(backup_dir),
                                         *(("--index", index) if index else ()), url=url))
    if not report.succeeded:
        raise typer.Exit(1)


@handle_errors
def finalize(
    backup_dir: Annotated[Path, typer.Option(
        "--backup-dir", help="The backup dir of the online apply.")],
    url: UrlOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")
                   ] = False,
    report_out: Annotated[Path | None, typer.Option("--report-out",
                                                    help="Write the YAML report here.")] = None,
    json_out: JsonOption = False,
    backlog_memory_keys: BacklogMemoryKeysOption = None,
) -> None:
    """End an online migration that copied documents: back up, then delete the source keys.

    Every source key is backed up into the backup dir, then deleted (a change made meanwhile
    is carried over first). If 'rvlm apply --follow' runs on the same backup dir, it is asked
    to finalize (its change capture goes on until the end) and this waits for it. Rollback
    still works afterwards (from the backup). Exit 0 when done, 1 when it failed (re-run to
    resume), 2 for a refused request.
    """
    from rvlm.api import finalize as do_finalize
    from rvlm.core.errors import RvlmError
    from rvlm.core.migrate.backup_dir import load_backup_plan

    plan = load_backup_plan(backup_dir)
    if not yes and sys.stdin.isatty() and not typer.confirm(
            f"Back up and delete the source keys of {plan.source_index!r} "
            f"({', '.join(plan.source_schema.index.prefix)})?", default=False):
        raise RvlmError("not finalized")
    online = None
    if backlog_memory_keys is not None:
        from rvlm.core.migrate.online.options import OnlineOptions

        online = OnlineOptions(backlog_memory_keys=backlog_memory_keys)
    report = do_finalize(backup_dir, redis_url=url, online=online)
    if report_out is not None:
        report.write(report_out)
    if json_out:
        echo_json(report.to_dict())
    else:
        _summary(report, resume=_command("rvlm", "finalize", "--backup-dir", str(backup_dir),
                                         "--yes", url=url))
    if not report.succeeded:
        raise typer.Exit(1)
