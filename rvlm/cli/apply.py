"""``rvlm apply``, ``rvlm validate`` and ``rvlm rollback``: thin wrappers over the executor.

Exit codes: 0 when the migration (or validation, or rollback) succeeded, 1 when it ran and
failed, 2 for bad input or a refused request (nothing changed).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rvlm.cli.common import (
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
)
from rvlm.cli.progress import progress_display

if TYPE_CHECKING:
    from rvlm.core.migrate.report import MigrationReport

PlanOption = Annotated[Path, typer.Option("--plan", help="The plan YAML made by 'rvlm plan'.")]
BackupOption = Annotated[Path, typer.Option(
    "--backup-dir", help="Directory for the backup, key file and journal (re-run the same "
                         "command with the same directory to resume).")]


def register(app: typer.Typer) -> None:
    app.command("apply")(apply)
    app.command("validate")(validate)
    app.command("rollback")(rollback)


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
    recall_queries: RecallQueriesOption = 100,
    recall_k: RecallKOption = 10,
    query_check_file: QueryCheckOption = None,
    rollback_below_recall: RollbackBelowOption = False,
) -> None:
    """Apply a plan: check, back up, drop, rewrite documents, create, validate.

    The quality gate: before the source stops serving, KNN queries (per vector field whose
    answers can change) and your query checks are asked of it and kept in the backup dir;
    once the target is indexed it must answer them the same way (recall@k at least
    --min-recall, by default the plan's floor), or the result is failed (online: the alias
    stays on the source). Re-run the same command after a crash to resume. Exit 0 when the
    migration succeeded, 1 when it failed, 2 for bad input (nothing changed).
    """
    from rvlm.api import MigrationExecutor, quality_options
    from rvlm.core.errors import RvlmError
    from rvlm.core.migrate.plan import Plan

    loaded = Plan.load(plan)
    quality_options(query_check_file=query_check_file)  # a bad file: refused before anything
    if loaded.lossy and not accept_data_loss:
        if not sys.stdin.isatty():
            raise RvlmError("the plan is lossy (it loses precision); pass --accept-data-loss "
                            "to apply it (no terminal to ask)")
        from rvlm.cli.render import lossy_summary

        if not typer.confirm(
                f"This plan loses precision ({lossy_summary(loaded)}): the migrated values "
                "will not equal the originals. The originals are kept in the backup dir and "
                "'rvlm rollback' restores them exactly. Apply it?", default=False,
                err=json_out):
            raise RvlmError("not applied: the lossy plan was not confirmed")
        accept_data_loss = True
    elif not yes and sys.stdin.isatty() and not typer.confirm(
            f"Build {loaded.target_index!r} next to {loaded.source_index!r} and move alias "
            f"{', '.join(loaded.aliases)} to it now?" if loaded.online else
            f"Drop and rebuild index {loaded.source_index!r} now?", default=True,
            err=json_out):
        raise RvlmError("not applied")
    with progress_display() as progress:
        report = MigrationExecutor().apply(
            loaded, redis_url=url, backup_dir=backup_dir, batch_size=batch_size,
            num_workers=workers, accept_data_loss=accept_data_loss,
            progress_callback=progress, index_timeout=index_timeout, min_recall=min_recall,
            recall_queries=recall_queries, recall_k=recall_k,
            query_check_file=query_check_file, rollback_below_recall=rollback_below_recall)
    if report_out is not None:
        report.write(report_out)
    if benchmark_out is not None:
        report.write_benchmark(benchmark_out)
    if json_out:
        echo_json(report.to_dict())
    else:
        lossy = "--accept-data-loss" if loaded.lossy else ""
        _summary(report, resume=_command("rvlm", "apply", "--plan", str(plan), "--backup-dir",
                                         str(backup_dir), lossy, url=url),
                 undo=_command("rvlm", "rollback", "--backup-dir", str(backup_dir), url=url))
    if not report.succeeded:
        raise typer.Exit(1)


@handle_errors
def validate(
    plan: PlanOption,
    url: UrlOption = None,
    cluster: ClusterOption = False,
    report_out: Annotated[Path | None, typer.Option("--report-out",
                                                    help="Write the YAML report here.")] = None,
    backup_dir: Annotated[Path | None, typer.Option(
        "--backup-dir", help="The apply's backup dir: compare counts with the source count "
                             "taken at apply time instead of the plan's, and the target's "
                             "answers with the source's answers kept there.")] = None,
    json_out: JsonOption = False,
    min_recall: MinRecallOption = None,
    query_check_file: QueryCheckOption = None,
) -> None:
    """Validate a migrated index against its plan. Exit 0 when every check passed, 1 if not.

    With --backup-dir the quality gate runs again: the target answers the queries whose
    source answers the apply kept there (recall@k per vector field, at least --min-recall;
    the checks of --query-check-file)."""
    from rvlm.api import validate as validate_plan

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
    json_out: JsonOption = False,
    index: Annotated[str | None, typer.Option(
        "--index", "-i", help="The index to roll back: with a multi-index run's backup dir, "
                              "its backup under it; with one index's, a check that the backup "
                              "is that index's.")] = None,
) -> None:
    """Undo a migration from its backup dir: restore documents and the source index."""
    from rvlm.api import rollback as do_rollback
    from rvlm.core.errors import RvlmError
    from rvlm.core.migrate.backup_dir import load_backup_plan

    if index is not None:
        backup_dir = _index_backup_dir(backup_dir, index)
    plan = load_backup_plan(backup_dir)
    if not yes and sys.stdin.isatty() and not typer.confirm(
            f"Roll back {plan.target_index!r} -> {plan.source_index!r} from {backup_dir}?",
            default=False, err=json_out):
        raise RvlmError("not rolled back")
    with progress_display() as progress:
        report = do_rollback(backup_dir, redis_url=url, progress_callback=progress)
    if report_out is not None:
        report.write(report_out)
    if json_out:
        echo_json(report.to_dict())
    else:
        _summary(report, resume=_command("rvlm", "rollback", "--backup-dir", str(backup_dir),
                                         url=url))
    if not report.succeeded:
        raise typer.Exit(1)


def _index_backup_dir(backup_dir: Path, index: str) -> Path:
    """The backup dir of ``index``: ``backup_dir`` itself when it is that index's (the source
    or the target of its plan), else its subdirectory for ``index`` (where ``rvlm batch``
    keeps each index's backup). Bad input (exit 2) when neither is."""
    from rvlm.core.errors import RvlmError
    from rvlm.core.migrate.backup_dir import PLAN_NAME, load_backup_plan
    from rvlm.core.multi.plan import safe_name

    if (backup_dir / PLAN_NAME).exists():
        plan = load_backup_plan(backup_dir)
        if index in (plan.source_index, plan.target_index):
            return backup_dir
        raise RvlmError(f"{backup_dir} is the backup of index {plan.source_index!r}, not "
                        f"{index!r}")
    nested = backup_dir / safe_name(index)
    if (nested / PLAN_NAME).exists():
        return nested
    raise RvlmError(f"{backup_dir} holds no backup of index {index!r} (neither its own plan "
                    f"nor {nested.name}/ of a multi-index run)")
