"""``rvlm apply``, ``rvlm validate`` and ``rvlm rollback``: thin wrappers over the executor.

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

from rvlm.cli.common import UrlOption, handle_errors

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


@contextmanager
def _progress_bars() -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(phase, done, total)`` callback drawing rich bars with counts and rates."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:,.1f}/s")

    labels = {"keys": "keys", "transform": "batches", "indexing": "indexed %",
              "restore": "batches restored"}
    bars = Progress(TextColumn("{task.description:>16}"), BarColumn(), MofNCompleteColumn(),
                    TaskProgressColumn(), RateColumn(), TimeElapsedColumn(),
                    transient=False, disable=not sys.stderr.isatty())
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bars.add_task(labels.get(phase, phase), total=max(total, 1))
        bars.update(tasks[phase], completed=done, total=max(total, done, 1))

    with bars:
        yield update


def _summary(report: MigrationReport) -> None:
    colour = typer.colors.GREEN if report.succeeded else typer.colors.RED
    typer.secho(f"{report.mode}: {report.source_index} -> {report.target_index}: "
                f"{report.result}", fg=colour, bold=True)
    if report.mode == "validate":
        pass  # no documents were touched: the checks above say it all
    elif report.mode != "rollback":
        typer.echo(f"  documents {report.documents}, rewritten {report.documents_rewritten} "
                   f"({report.bytes_rewritten} bytes) in {report.batches} batches, "
                   f"{report.documents_per_second} docs/s, workers {report.workers}"
                   + (", resumed" if report.resumed else ""))
    else:
        typer.echo(f"  records restored {report.restored_records} in {report.batches} batches")
    if report.mode == "online" and report.downtime_duration_seconds is not None:
        typer.echo(f"  downtime none (online); build {report.timings.get('build', 0.0):.2f}s")
    elif report.downtime_duration_seconds is not None:
        typer.echo(f"  downtime {report.downtime_duration_seconds:.2f}s")
    for line in report.validation.errors:
        typer.secho(f"  validation: {line}", fg=typer.colors.RED)
    if report.error:
        typer.secho(f"  error: {report.error}", fg=typer.colors.RED)
    for w in report.warnings:
        typer.secho(f"  warning: {w}", fg=typer.colors.YELLOW)
    for a in report.manual_actions:
        typer.echo(f"  next: {a}")


@handle_errors
def apply(
    plan: PlanOption,
    backup_dir: BackupOption,
    url: UrlOption = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1,
                                            help="Documents per batch.")] = 500,
    workers: Annotated[int, typer.Option("--workers", min=1,
                                         help="Worker processes for the transform.")] = 1,
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
) -> None:
    """Apply a plan: check, back up, drop, rewrite documents, create, validate.

    Re-run the same command after a crash to resume. Exit 0 when the migration succeeded,
    1 when it failed, 2 for bad input (nothing changed).
    """
    from rvlm.api import MigrationExecutor
    from rvlm.core.errors import RvlmError
    from rvlm.core.migrate.plan import Plan

    loaded = Plan.load(plan)
    if loaded.lossy and not accept_data_loss:
        if not sys.stdin.isatty():
            raise RvlmError("the plan is lossy; pass --accept-data-loss to apply it "
                            "(no terminal to ask)")
        if not typer.confirm("This plan is lossy: some values cannot be restored exactly. "
                             "Apply it?", default=False):
            raise RvlmError("not applied: the lossy plan was not confirmed")
        accept_data_loss = True
    elif not yes and sys.stdin.isatty() and not typer.confirm(
            f"Build {loaded.target_index!r} next to {loaded.source_index!r} and move alias "
            f"{', '.join(loaded.aliases)} to it now?" if loaded.online else
            f"Drop and rebuild index {loaded.source_index!r} now?", default=True):
        raise RvlmError("not applied")
    with _progress_bars() as progress:
        report = MigrationExecutor().apply(
            loaded, redis_url=url, backup_dir=backup_dir, batch_size=batch_size,
            num_workers=workers, accept_data_loss=accept_data_loss,
            progress_callback=progress, index_timeout=index_timeout)
    if report_out is not None:
        report.write(report_out)
    if benchmark_out is not None:
        report.write_benchmark(benchmark_out)
    _summary(report)
    if not report.succeeded:
        raise typer.Exit(1)


@handle_errors
def validate(
    plan: PlanOption,
    url: UrlOption = None,
    report_out: Annotated[Path | None, typer.Option("--report-out",
                                                    help="Write the YAML report here.")] = None,
    backup_dir: Annotated[Path | None, typer.Option(
        "--backup-dir", help="The apply's backup dir: compare counts with the source count "
                             "taken at apply time instead of the plan's.")] = None,
) -> None:
    """Validate a migrated index against its plan. Exit 0 when every check passed, 1 if not."""
    from rvlm.api import validate as validate_plan

    report = validate_plan(plan, redis_url=url, backup_dir=backup_dir)
    if report_out is not None:
        report.write(report_out)
    for c in report.validation.checks:
        mark = "ok  " if c.passed else "FAIL"
        typer.secho(f"{mark} {c.name}: {c.details}",
                    fg=typer.colors.GREEN if c.passed else typer.colors.RED)
    _summary(report)
    if not report.succeeded:
        raise typer.Exit(1)


@handle_errors
def rollback(
    backup_dir: BackupOption,
    url: UrlOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")
                   ] = False,
    report_out: Annotated[Path | None, typer.Option("--report-out",
                                                    help="Write the YAML report here.")] = None,
) -> None:
    """Undo a migration from its backup dir: restore documents and the source index."""
    from rvlm.api import rollback as do_rollback
    from rvlm.core.errors import RvlmError
    from rvlm.core.migrate.backup_dir import load_backup_plan

    plan = load_backup_plan(backup_dir)
    if not yes and sys.stdin.isatty() and not typer.confirm(
            f"Roll back {plan.source_index!r} -> {plan.target_index!r} from {backup_dir}?",
            default=False):
        raise RvlmError("not rolled back")
    with _progress_bars() as progress:
        report = do_rollback(backup_dir, redis_url=url, progress_callback=progress)
    if report_out is not None:
        report.write(report_out)
    _summary(report)
    if not report.succeeded:
        raise typer.Exit(1)
