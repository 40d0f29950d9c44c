"""``rvlm batch plan|apply|resume|status``: one schema patch over many indexes, resumable.

Exit codes: ``plan`` 0 when the batch can run (1 when no index is applicable, 2 when it is
refused or the input is bad); ``apply`` and ``resume`` 0 only when every applicable index
succeeded, 1 otherwise, 2 for refused input (nothing run); ``status`` 0.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rvlm.cli.common import (
    BacklogMemoryKeysOption,
    ClusterOption,
    MinRecallOption,
    QueryCheckOption,
    RecallKOption,
    RecallQueriesOption,
    RollbackBelowOption,
    UrlOption,
    echo_json,
    handle_errors,
)

if TYPE_CHECKING:
    from rich.table import Table

    from rvlm.core.multi.plan import BatchPlan
    from rvlm.core.multi.report import BatchReport
    from rvlm.core.multi.state import BatchState


class FailurePolicy(str, Enum):
    """``--failure-policy``, offered as a choice list."""

    fail_fast = "fail_fast"
    continue_on_error = "continue_on_error"

batch_app = typer.Typer(
    name="batch",
    help="Migrate many indexes with one schema patch: plan, apply, resume, status.",
    no_args_is_help=True,
)

StateOption = Annotated[Path, typer.Option("--state", "-s", help="Batch state file "
                                                                   "(checkpointed after every "
                                                                   "step).")]
ParallelOption = Annotated[int, typer.Option(
    "--parallel", min=1, help="Run up to K indexes at once (only indexes whose key prefixes "
                              "are disjoint run together).")]
ReportDirOption = Annotated[Path | None, typer.Option(
    "--report-dir", help="Where the batch report and per-index reports go (default: "
                         "'reports' next to the state file).")]
AcceptOption = Annotated[bool, typer.Option(
    "--accept-data-loss", help="Apply plans that lose precision (e.g. quantization) without "
                               "asking; rollback restores the originals from the backup.")]


def register(app: typer.Typer) -> None:
    app.add_typer(batch_app, name="batch")
    # rvl's flat names (rvl migrate batch-plan ...), hidden
    for name, command in (("batch-plan", plan), ("batch-apply", apply),
                          ("batch-resume", resume), ("batch-status", status)):
        app.command(name, hidden=True,
                    help=f"Same as rvlm batch {name.split('-')[1]}.")(command)


@batch_app.command("plan")
@handle_errors
def plan(
    schema_patch: Annotated[Path, typer.Option("--schema-patch",
                                               help="The schema patch applied to every index.")],
    pattern: Annotated[str | None, typer.Option("--pattern", help="Glob over index names, "
                                                                  "e.g. '*_idx'.")] = None,
    indexes: Annotated[str | None, typer.Option("--indexes", help="Comma-separated index "
                                                                  "names.")] = None,
    indexes_file: Annotated[Path | None, typer.Option("--indexes-file",
                                                      help="File with one index name a "
                                                           "line.")] = None,
    failure_policy: Annotated[FailurePolicy, typer.Option(
        "--failure-policy", help="fail_fast: stop at the first failure; continue_on_error: run "
                                 "the other indexes."
    )] = FailurePolicy.fail_fast,
    plan_out: Annotated[Path, typer.Option("--plan-out", "-o", help="Where to write the batch "
                                                                    "plan; per-index plans go "
                                                                    "next to it.")] = Path(
        "batch_plan.yaml"),
    url: UrlOption = None,
    cluster: ClusterOption = False,
    sample_size: Annotated[int | None, typer.Option(
        "--sample-size", min=1, help="Documents read per index to calibrate quantization.")
    ] = None,
    mode: Annotated[str, typer.Option(
        "--mode", help="drop_recreate, or online (each index: the new one is built next to "
                       "it and --alias moves; documents a change rewrites are copied to "
                       "--target-prefix).")] = "drop_recreate",
    alias: Annotated[str | None, typer.Option(
        "--alias", help="Online: the alias clients query, per index, e.g. '{index}_live'.")
    ] = None,
    target_index: Annotated[str | None, typer.Option(
        "--target-index", help="Online: the new index's name, e.g. '{index}_v2' (the "
                               "default in online mode).")] = None,
    target_prefix: Annotated[str | None, typer.Option(
        "--target-prefix", help="The new key prefix, e.g. '{prefix}_v2:' ({prefix}: the "
                                "index's prefix without its trailing separator).")] = None,
    drop_source: Annotated[bool, typer.Option(
        "--drop-source/--keep-source", help="Online: drop each source index once its alias "
                                            "moved, or keep it.")] = True,
    allow_shared_keys: Annotated[bool, typer.Option(
        "--allow-shared-keys", help="Rewrite documents that a live index outside the batch "
                                    "also covers (recorded in each plan).")] = False,
) -> None:
    """Test one schema patch on every selected index; write a batch plan (no Redis writes).

    Each applicable index gets its own full plan next to the batch plan, for review.
    """
    from rvlm.core.errors import RvlmError
    from rvlm.core.multi.planner import BatchMigrationPlanner

    result = BatchMigrationPlanner(
        sample_size=sample_size, mode=mode, alias=alias, target_index=target_index,
        target_prefix=target_prefix, drop_source=drop_source,
        allow_shared_keys=allow_shared_keys).create_batch_plan(
        redis_url=url, schema_patch_path=schema_patch, pattern=pattern, indexes=indexes,
        indexes_file=indexes_file, failure_policy=FailurePolicy(failure_policy).value)
    written = result.write(plan_out)
    _print_plan(result, written)
    if result.refused:
        raise RvlmError(result.conflict_message())
    if not result.applicable:
        raise typer.Exit(1)


@batch_app.command("apply")
@handle_errors
def apply(
    plan: Annotated[Path, typer.Option("--plan", help="Batch plan made by 'rvlm batch plan'.")],
    backup_dir: Annotated[str, typer.Option(
        "--backup-dir", help="Backups and journals, one subdirectory per index.")],
    state: StateOption = Path("batch_state.yaml"),
    report_dir: ReportDirOption = None,
    accept_data_loss: AcceptOption = False,
    parallel: ParallelOption = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1,
                                            help="Documents per batch.")] = 500,
    workers: Annotated[int, typer.Option("--workers", min=1,
                                         help="Worker processes per index.")] = 1,
    url: UrlOption = None,
    min_recall: MinRecallOption = None,
    recall_queries: RecallQueriesOption = None,
    recall_k: RecallKOption = 10,
    query_check_file: QueryCheckOption = None,
    rollback_below_recall: RollbackBelowOption = False,
    cluster: ClusterOption = False,
    finalize: Annotated[bool, typer.Option(
        "--finalize", help="Online copies: back up and delete each index's source keys at the "
                           "end of its run (else 'rvlm finalize --backup-dir DIR/INDEX').")
    ] = False,
    backlog_memory_keys: BacklogMemoryKeysOption = None,
) -> None:
    """Run every applicable index of a batch plan (re-run, or 'batch resume', to continue).

    The quality gate's options apply to every index (a query check file's checks run against
    each one)."""
    from rvlm.api import quality_options
    from rvlm.core.migrate.online.options import BACKLOG_MEMORY_KEYS, OnlineOptions
    from rvlm.core.multi.executor import BatchMigrationExecutor

    quality = quality_options(min_recall=min_recall, recall_queries=recall_queries,
                              recall_k=recall_k, query_check_file=query_check_file)
    executor = BatchMigrationExecutor(batch_size=batch_size, workers=workers, quality=quality,
                                      rollback_below_recall=rollback_below_recall,
                                      online=OnlineOptions(
                                          finalize=finalize, backlog_memory_keys=(
                                              backlog_memory_keys or BACKLOG_MEMORY_KEYS)))
    report = executor.apply(plan, redis_url=url, state_path=state, report_dir=report_dir,
                            backup_dir=backup_dir, progress_callback=_progress,
                            accept_data_loss=accept_data_loss, parallel=parallel)
    _finish(report, state)


@batch_app.command("resume")
@handle_errors
def resume(
    state: StateOption,
    retry_failed: Annotated[bool, typer.Option("--retry-failed",
                                               help="Run failed indexes again too.")] = False,
    backup_dir: Annotated[Path | None, typer.Option(
        "--backup-dir", help="Must be the batch's backup dir (checked).")] = None,
    report_dir: ReportDirOption = None,
    accept_data_loss: AcceptOption = False,
    parallel: ParallelOption = 1,
    url: UrlOption = None,
    min_recall: MinRecallOption = None,
    recall_queries: RecallQueriesOption = None,
    recall_k: RecallKOption = 10,
    query_check_file: QueryCheckOption = None,
    rollback_below_recall: RollbackBelowOption = False,
    cluster: ClusterOption = False,
    backlog_memory_keys: BacklogMemoryKeysOption = None,
) -> None:
    """Continue a batch where it stopped (a crashed index resumes from its journal)."""
    from rvlm.api import quality_options
    from rvlm.core.migrate.online.options import OnlineOptions
    from rvlm.core.multi.executor import BatchMigrationExecutor

    quality = quality_options(min_recall=min_recall, recall_queries=recall_queries,
                              recall_k=recall_k, query_check_file=query_check_file)
    online = (None if backlog_memory_keys is None
              else OnlineOptions(backlog_memory_keys=backlog_memory_keys))
    report = BatchMigrationExecutor(quality=quality, rollback_below_recall=rollback_below_recall,
                                    online=online).resume(
        state, redis_url=url, retry_failed=retry_failed, backup_dir=backup_dir,
        report_dir=report_dir, progress_callback=_progress, accept_data_loss=accept_data_loss,
        parallel=parallel)
    _finish(report, state)


@batch_app.command("status")
@handle_errors
def status(
    state: StateOption,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What a batch has done: succeeded, failed (with the error), in progress, remaining."""
    from rvlm.core.multi.executor import BatchMigrationExecutor

    loaded = BatchMigrationExecutor.status(state)
    rows = [_status_row(loaded, i.name) for i in loaded.indexes]
    if json_out:
        echo_json({"batch_id": loaded.batch_id, "status": loaded.status,
                   "counts": loaded.counts(), "backup_dir": loaded.backup_dir,
                   "indexes": rows})
        return
    _print_status(loaded, rows)


# --------------------------------------------------------------------------- output


def _progress(name: str, position: int, total: int, status: str) -> None:
    from rvlm.cli.output import SETTINGS, err_line

    if SETTINGS.quiet:
        return
    colour = {"succeeded": "green", "failed": "red"}.get(status, "")
    err_line(f"[{position}/{total}] {name}: {status}", colour)


def _table(*columns: str) -> Table:
    """A borderless table whose headers sit over their columns: counts and seconds are
    right-aligned under right-aligned headers, text columns fold instead of being cut."""
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in columns:
        right = col in ("documents", "seconds")
        table.add_column(col, justify="right" if right else "left",
                         no_wrap=right or col in ("index", "result", "status", "action"),
                         overflow="fold")
    return table


def _styled(value: str, style: str) -> str:
    from rich.markup import escape

    return f"[{style}]{escape(value)}[/{style}]" if style else escape(value)


def _finish(report: BatchReport, state: Path) -> None:
    from rich.markup import escape

    from rvlm.cli.output import console

    out = console(data=not report.succeeded)
    table = _table("index", "result", "documents", "seconds", "detail")
    for row in report.indexes:
        result = row["result"]
        style = {"succeeded": "green", "failed": "red", "skipped": "yellow"}.get(result, "")
        detail = row.get("error") or row.get("skip_reason") or (
            "resumed" if row.get("resumed") else "")
        table.add_row(escape(row["name"]), _styled(result, style),
                      f"{row.get('documents', 0):,}", f"{row.get('duration_seconds', 0):.2f}",
                      escape(str(detail)))
    out.print(table)
    colour = "green" if report.succeeded else "red"
    out.print(f"batch {escape(report.batch_id)}: [{colour}]{escape(report.status)}[/{colour}]  "
              f"(report: {escape(str(report.report_path))})", soft_wrap=True)
    if not report.succeeded:
        out.print(f"see 'rvlm batch status --state {escape(str(state))}'; 'rvlm batch resume "
                  f"--state {escape(str(state))} --retry-failed' runs failed indexes again",
                  soft_wrap=True)
        raise typer.Exit(1)


def _print_plan(result: BatchPlan, path: Path) -> None:
    from rich.markup import escape

    from rvlm.cli.output import console

    out = console()
    out.print(f"[bold]Batch plan[/bold] {escape(result.batch_id)}  ({len(result.indexes)} "
              f"indexes, failure policy {escape(result.failure_policy)})")
    table = _table("index", "action", "documents", "plan / reason")
    for e in result.indexes:
        mark = "[green]apply[/green]" if e.applicable else "[yellow]skip[/yellow]"
        detail = e.plan_path if e.applicable else (e.skip_reason or "")
        table.add_row(escape(e.name), mark, f"{e.documents:,}", escape(str(detail)))
    out.print(table)
    for c in result.conflicts:
        out.print(f"[red]conflict[/red] ({escape(c.kind)}): {escape(c.message)}")
    for w in result.warnings:
        out.print(f"[yellow]warning[/yellow]: {escape(w)}")
    out.print(f"batch plan written to {escape(str(path))}", soft_wrap=True)
    if not result.refused and result.applicable:
        out.print(f"next: rvlm batch apply --plan {escape(str(path))} --backup-dir BACKUP_DIR",
                  soft_wrap=True)


def _status_row(state: BatchState, name: str) -> dict[str, Any]:
    i = state.index(name)
    row: dict[str, Any] = {"name": i.name, "status": i.status, "error": i.error,
                           "skip_reason": i.skip_reason, "started_at": i.started_at,
                           "finished_at": i.finished_at,
                           "duration_seconds": round(i.duration_seconds, 3),
                           "documents": i.documents, "attempts": i.attempts,
                           "backup_dir": i.backup_dir}
    if i.status == "in_progress" and i.backup_dir and Path(i.backup_dir).is_dir():
        try:
            from rvlm.core.storage.journal import RunState

            run = RunState.load(Path(i.backup_dir))
            row["journal_phase"] = run.phase
            row["batches_done"] = len(run.done)
        except Exception as exc:  # status must always print
            row["journal_phase"] = f"unreadable ({exc})"
    return row


def _print_status(state: BatchState, rows: list[dict[str, Any]]) -> None:
    from rich.markup import escape

    from rvlm.cli.output import console

    out = console(data=True)
    counts = state.counts()
    out.print(f"[bold]Batch[/bold] {escape(state.batch_id)}: {escape(state.status)}  "
              f"(succeeded {counts['succeeded']}, failed {counts['failed']}, in progress "
              f"{counts['in_progress']}, remaining {counts['pending']}, skipped "
              f"{counts['skipped']})")
    table = _table("index", "status", "documents", "seconds", "detail")
    for r in rows:
        style = {"succeeded": "green", "failed": "red", "in_progress": "cyan",
                 "skipped": "yellow"}.get(r["status"], "")
        detail = r.get("error") or r.get("skip_reason") or ""
        if r["status"] == "in_progress":
            detail = (f"crashed or running; journal phase {r.get('journal_phase')}, "
                      f"{r.get('batches_done', 0)} batches done; 'rvlm batch resume' "
                      "continues it")
        status = r["status"] if r["status"] != "pending" else "remaining"
        table.add_row(escape(r["name"]), _styled(status, style), f"{r['documents']:,}",
                      f"{r['duration_seconds']:.2f}", escape(str(detail)))
    out.print(table)
    out.print(f"backup dir: {escape(str(state.backup_dir))}", soft_wrap=True)
