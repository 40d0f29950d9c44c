"""Human output for plans, estimates and reports (rich markup).

Long lines wrap at word boundaries with a hanging indent (:func:`print_wrapped`); a command
the user may copy is printed on a line of its own and never wrapped (:func:`print_command`).
The report at the end of a run goes to :func:`~rvlm.cli.output.report_console`: into a pipe
or a file that is a :class:`~rvlm.cli.plain.PlainConsole` (the same text, without importing
rich); rich is imported where a rich console is at work.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rvlm.cli.output import console as stdout_console
from rvlm.cli.output import human_bytes, report_console
from rvlm.cli.plain import PlainConsole, escape
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.report import RESUME_HINT

if TYPE_CHECKING:
    from rich.console import Console

    from rvlm.core.migrate.report import MigrationReport, ValidationResult


def print_wrapped(out: Console | PlainConsole, head: str, body: str) -> None:
    """``head`` then ``body`` (both rich markup), the body wrapped at word boundaries to the
    console's width and its continuation lines indented to where it started."""
    if isinstance(out, PlainConsole):
        plain = out.wrapped_lines(head, body)
        if plain is not None:
            out.write_lines(plain)
            return
        out = out.rich
    from rich.text import Text

    first = Text.from_markup(head, emoji=False)
    indent = first.cell_len
    lines = Text.from_markup(body, emoji=False).wrap(out, max(20, out.width - indent))
    for n, line in enumerate(lines):
        line.rstrip()
        out.print(Text.assemble(first if n == 0 else " " * indent, line), soft_wrap=True)


def print_command(out: Console | PlainConsole, command: str, indent: str = "  ") -> None:
    """A command to copy: one line, never wrapped."""
    if isinstance(out, PlainConsole):
        out.print(indent + command, soft_wrap=True, markup=False)
        return
    from rich.text import Text

    out.print(Text(indent + command, style="bold"), soft_wrap=True)


def _field_line(d: dict[str, Any]) -> str:
    attrs = d.get("attrs") or {}
    shown = ", ".join(f"{k}={v}" for k, v in attrs.items())
    where = f" at {d['path']}" if d.get("path") else ""
    return f"{d['type']}{where}" + (f" ({shown})" if shown else "")


def schema_diff_lines(plan: Plan) -> list[str]:
    """The field-by-field schema diff as rich markup lines: ``+`` added (green), ``-`` removed
    (red), ``~`` changed (yellow, with before -> after), ``>`` renamed, unchanged dimmed."""
    from rvlm.core.schema.diff import attr_diff
    from rvlm.core.schema.yaml_format import field_to_dict, index_to_dict

    src, tgt = plan.source_schema, plan.target_schema
    renames = {c.field: c.new_field for c in plan.changes
               if c.type == "rename_field" and c.field and c.new_field}
    lines: list[str] = []
    b, a = index_to_dict(src.index), index_to_dict(tgt.index)
    for k in dict.fromkeys([*b, *a]):
        if b.get(k) != a.get(k):
            lines.append(f"[yellow]~ index {k}: {escape(repr(b.get(k)))} -> "
                         f"{escape(repr(a.get(k)))}[/yellow]")
    tgt_names = {f.name for f in tgt.fields}
    for f in src.fields:
        new_name = renames.get(f.name, f.name)
        g = tgt.field(new_name)
        if g is None or new_name not in tgt_names:
            lines.append(f"[red]- {escape(f.name)}  {escape(_field_line(field_to_dict(f)))}[/red]")
            continue
        label = f.name if new_name == f.name else f"{f.name} -> {new_name}"
        parts = []
        if f.type != g.type:
            parts.append(f"type {f.type} -> {g.type}")
        else:
            for k, v in attr_diff(f, g).items():
                parts.append(f"{k} {v['before']} -> {v['after']}")
        if f.identifier(src.storage_type) != g.identifier(tgt.storage_type):
            where = "path" if tgt.storage_type == "json" else "hash field"
            parts.append(f"{where} {f.identifier(src.storage_type)} -> "
                         f"{g.identifier(tgt.storage_type)}")
        if parts or new_name != f.name:
            mark = ">" if new_name != f.name else "~"
            detail = ", ".join([g.type, *parts])
            lines.append(f"[yellow]{mark} {escape(label)}  {escape(detail)}[/yellow]")
        else:
            lines.append(f"[dim]  {escape(f.name)}  {escape(g.type)}[/dim]")
    old_names = {renames.get(f.name, f.name) for f in src.fields}
    for g in tgt.fields:
        if g.name not in old_names:
            lines.append(f"[green]+ {escape(g.name)}  "
                         f"{escape(_field_line(field_to_dict(g)))}[/green]")
    return lines


def print_plan(plan: Plan, path: Path | None = None, console: Console | None = None) -> None:
    """A readable summary: the schema diff (coloured), each change and its verdict, the
    documents touched, the downtime, the warnings, and the next command."""
    out = console or stdout_console()
    src, tgt = plan.source_index, plan.target_index
    stats = plan.source_stats
    docs = stats.num_docs + stats.indexing_failures
    prefixes = ", ".join(repr(p) for p in plan.source_schema.index.prefix)
    print_wrapped(out, f"[bold]Plan[/bold] {escape(src)}"
                  + (f" -> {escape(tgt)}" if tgt != src else "") + "  ",
                  f"({docs:,} documents, {plan.source_schema.storage_type}, prefix "
                  f"{escape(prefixes)})")
    out.print("[bold]Schema diff[/bold] (+ added, - removed, ~ changed, > renamed)")
    for line in schema_diff_lines(plan):
        print_wrapped(out, "  ", line)
    out.print("[bold]Changes[/bold]")
    from rich.table import Table  # here: the report at the end of an apply needs no table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("")
    table.add_column("change")
    table.add_column("what happens")
    for c in plan.changes:
        mark = "[green]ok[/green]" if c.supported else "[red]BLOCKED[/red]"
        what = (escape(c.summary) if c.supported
                else f"[red]{escape('; '.join(c.blocked_reasons))}[/red]")
        name = c.field or c.new_field or ""
        if c.field and c.new_field and c.field != c.new_field:
            name = f"{c.field} -> {c.new_field}"
        table.add_row(mark, escape(f"{c.type} {name}".strip()), what)
    if not plan.changes:
        table.add_row("", "(none)", "the target schema equals the source")
    out.print(table)
    if plan.changes_nothing:
        print_wrapped(out, "[bold]Nothing to do:[/bold] ", "the patch changes nothing; applying "
                      "this plan leaves the index, its aliases and every document as they are")
        if path is not None:
            out.print(f"Plan written to {escape(str(path))}", soft_wrap=True)
        return
    if plan.operations and plan.online:
        kinds = ", ".join(dict.fromkeys(o.kind for o in plan.operations))
        prefix = plan.target_schema.index.prefix[0]
        out.print(f"[bold]Documents touched:[/bold] none; {docs} copied to new keys under "
                  f"{escape(repr(prefix))} through ({escape(kinds)}); the source keys are "
                  "only read until 'rvlm finalize' backs them up and deletes them",
                  soft_wrap=True)
    elif plan.operations:
        kinds = ", ".join(dict.fromkeys(o.kind for o in plan.operations))
        lossy = " [yellow](lossy)[/yellow]" if plan.lossy else ""
        print_wrapped(out, "[bold]Documents touched:[/bold] ",
                      f"{docs:,} rewritten ({escape(kinds)}){lossy}; originals go to the "
                      "backup dir")
    else:
        out.print("[bold]Documents touched:[/bold] none (index-side change only)")
    if plan.quality:
        from rvlm.core.quality.planning import below_floor, describe

        print_wrapped(out, "[bold]Recall:[/bold] ", "the share of a KNN query's nearest "
                      "documents that stay its nearest (apply measures it on the live indexes)")
        for name, entry in plan.quality.items():
            colour = "red" if below_floor(entry) else "cyan"
            print_wrapped(out, "  ", f"[{colour}]{escape(describe(name, entry))}[/{colour}]")
    if plan.online:
        keep = "dropped" if plan.drop_source else "kept"
        print_wrapped(out, "[bold]Mode:[/bold] ",
                      f"online: {escape(tgt)} is built next to {escape(src)}, then alias "
                      f"{escape(', '.join(plan.aliases) or '(none)')} moves to it; "
                      f"{escape(src)} is {keep} after the move")
    elif plan.aliases:
        print_wrapped(out, "[bold]Aliases:[/bold] ", f"{escape(', '.join(plan.aliases))} point "
                      f"at {escape(tgt)} right after the create")
    warnings = plan.all_warnings()
    downtime = [w for w in warnings if w.startswith("downtime: ")]
    for w in downtime:
        print_wrapped(out, "[bold]Downtime:[/bold] ", escape(w[len("downtime: "):]))
    rest = [w for w in warnings if w not in downtime]
    if rest:
        out.print("[bold yellow]Warnings[/bold yellow]")
        for w in rest:
            print_wrapped(out, "  - ", escape(w))
    if path is not None:
        out.print(f"Plan written to {escape(str(path))}", soft_wrap=True)
    target = path or "PLAN.yaml"
    if plan.supported:
        flag = " --accept-data-loss" if plan.lossy else ""
        out.print("[bold]Next:[/bold] review the plan, size it, apply it:")
        print_command(out, f"rvlm estimate --plan {target}")
        print_command(out, f"rvlm apply --plan {target} --backup-dir BACKUP_DIR{flag}")
    else:
        print_wrapped(out, "[bold red]Blocked:[/bold red] ", "nothing will run. Resolve the "
                      "reasons above, then run rvlm plan again.")


def seconds_text(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def print_estimate(result: dict[str, Any], console: Console | None = None) -> None:
    from rich.table import Table

    out = console or stdout_console(data=True)
    table = Table(show_header=False, box=None)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("documents", f"{result['documents']:,}")
    table.add_row("documents rewritten", f"{result['documents_rewritten']:,}")
    table.add_row("bytes rewritten", human_bytes(result["bytes_rewritten"]))
    table.add_row("backup disk needed", human_bytes(result["backup_bytes"]))
    table.add_row("vector bytes before", human_bytes(result["vector_bytes_before"]))
    table.add_row("vector bytes after", human_bytes(result["vector_bytes_after"]))
    table.add_row("index memory before", human_bytes(result["index_memory_before_bytes"]))
    table.add_row("index memory after (est.)", human_bytes(result["index_memory_after_bytes"]))
    table.add_row("Redis memory before (vectors + index)",
                  human_bytes(result["memory_before_bytes"]))
    table.add_row("Redis memory after (est.)", human_bytes(result["memory_after_bytes"]))
    savings = result["memory_savings_bytes"]
    table.add_row("Redis memory saved" if savings >= 0 else "Redis memory added",
                  human_bytes(abs(savings)))
    table.add_row("RDB snapshot (BGSAVE)", human_bytes(result["rdb_snapshot_bytes"]))
    aof = result["aof_enabled"]
    table.add_row("AOF growth (est.)", "not estimated (pass --aof-enabled if AOF is on)"
                  if aof is None else human_bytes(result["aof_growth_bytes"]) if aof
                  else "none (AOF is off)")
    table.add_row("total new disk (backup + RDB + AOF)",
                  human_bytes(result["total_new_disk_bytes"]))
    dt = result["expected_downtime_seconds"]
    table.add_row("expected downtime", "unknown" if dt is None else seconds_text(dt))
    out.print(table)
    for note in result.get("notes", []):
        print_wrapped(out, "  - ", escape(note))


def lossy_summary(plan: Plan) -> str:
    """What a lossy plan changes, in its changes' own words (for the confirmation prompt)."""
    lossy = [c.summary for c in plan.changes if c.lossy]
    return "; ".join(lossy) or "some values are converted to a less precise type"


# --------------------------------------------------------------------------- reports


def print_checks(validation: ValidationResult, out: Console | PlainConsole) -> None:
    """Every validation check on one line: ``ok`` or ``FAIL``, its name, its detail if any."""
    for c in validation.checks:
        mark = "[green]ok  [/green]" if c.passed else "[bold red]FAIL[/bold red]"
        detail = f": {escape(c.details)}" if c.details else ""
        print_wrapped(out, f"    {mark} ", f"{escape(c.name)}{detail}")
    named = {c.name for c in validation.checks}
    for line in validation.errors:  # errors that are not a check of their own
        if line.split(":", 1)[0] not in named:
            print_wrapped(out, "    [bold red]FAIL[/bold red] ", escape(line))


#: What is left of a drop_recreate apply after each journaled phase (for a resumed run).
_AFTER = {"transformed": "created the index, waited for indexing and validated",
          "created": "waited for indexing and validated",
          "indexed": "validated", "validated": "finished", "done": "validated again"}


def resume_text(report: MigrationReport) -> str:
    """What a resumed apply did, in words: where the interrupted run had got to, and what
    this run added (``resumed: rewrote 12,000 of 20,000 documents; 8,000 were done before the
    interruption``)."""
    start = report.resumed_from or "an earlier phase"
    if report.mode == "online":
        return (f"resumed: the interrupted run had reached phase {start}; this run finished "
                "the rest")
    if start in ("planned", "checked", "keys_enumerated", "pre_drop_done"):
        return (f"resumed: the interrupted run had changed nothing (it stopped after phase "
                f"{start}); this run did the whole migration")
    if start in _AFTER:
        return (f"resumed: every document had been rewritten before the interruption (it "
                f"stopped after phase {start}); this run {_AFTER[start]}")
    rest = report.documents - report.documents_done_before
    text = (f"resumed: rewrote {rest:,} of {report.documents:,} documents; "
            f"{report.documents_done_before:,} were done before the interruption")
    if report.batches_resumed:
        n = report.batches_resumed
        text += (f" ({n:,} unfinished batch{'es' if n != 1 else ''} restored from the backup "
                 "and redone)")
    return text


def print_report(report: MigrationReport, *, resume: str | None = None,
                 undo: str | None = None, console: Console | PlainConsole | None = None
                 ) -> None:
    """The end of ``apply``, ``validate`` and ``rollback``: the result, what was done, every
    check (one line each), the backup dir and the exact command to resume or to undo.

    ``resume`` is the command that continues this run (shown when an error stopped it part-way);
    ``undo`` the one that rolls it back (shown after an apply, whatever its result)."""
    out = console or report_console(data=not report.succeeded)
    ok = report.succeeded
    colour = "green" if ok else "red"
    src, tgt = escape(report.source_index), escape(report.target_index)
    route = f"{tgt} -> {src}" if report.mode == "rollback" else (
        src if src == tgt else f"{src} -> {tgt}")
    command = {"validate": "validate", "rollback": "rollback", "online": "apply (online)",
               "finalize": "finalize"}.get(report.mode, "apply")
    out.print(f"[bold]{command}[/bold] {route}: "
              f"[bold {colour}]{escape(report.result)}[/bold {colour}]", soft_wrap=True)
    rate = (f", {report.documents_per_second:,.0f} documents/s"
            if report.documents_per_second > 0 else "")
    if report.mode == "rollback":
        out.print(f"  restored {report.restored_records:,} records in {report.batches:,} "
                  "batches")
    elif report.mode == "finalize":
        out.print(f"  source keys backed up and deleted: {report.online.get('deleted', 0):,}")
    elif report.mode == "online" and report.online:
        print_wrapped(out, "  ", f"documents {report.documents:,}, copied "
                      f"{report.documents_rewritten:,} to "
                      f"{escape(repr(report.online.get('target_prefix')))} "
                      f"({human_bytes(report.bytes_rewritten)}){rate}, changes carried over "
                      f"{report.online.get('changes_carried_over', 0):,}"
                      + (", resumed" if report.resumed else ""))
        lag = report.forward_lag_ms or {}
        if lag.get("count"):
            out.print(f"  forwarding lag p50 {lag['p50']} ms, p99 {lag['p99']} ms, max "
                      f"{lag['max']} ms")
    elif report.mode != "validate":
        ran = report.batches - report.batches_done_before
        if ran > 0 or not report.resumed:
            print_wrapped(out, "  ", f"documents {report.documents:,}, rewritten "
                          f"{report.documents_rewritten:,} "
                          f"({human_bytes(report.bytes_rewritten)}) in {ran:,} "
                          f"batch{'es' if ran != 1 else ''}{rate}, {report.workers} "
                          f"worker{'s' if report.workers != 1 else ''}")
        else:
            out.print(f"  documents {report.documents:,}")
        if report.resumed:
            print_wrapped(out, "  ", escape(resume_text(report)))
    if report.mode == "online" and report.online:
        out.print("  downtime none (online)")
    elif report.mode == "online" and report.downtime_duration_seconds is not None:
        out.print(f"  downtime none (online); build "
                  f"{seconds_text(report.timings.get('build', 0.0))}")
    elif report.downtime_duration_seconds is not None:
        out.print(f"  downtime {seconds_text(report.downtime_duration_seconds)}")
    for name, q in report.validation.quality.items():
        good = q.get("passed", True)
        floor = f" (floor {q['min_recall']})" if "min_recall" in q else ""
        print_wrapped(out, f"  [{'green' if good else 'red'}]recall[/] ",
                      escape(f"{name}: recall@{q['k']} {q['recall_at_k']:.4f}, p5 {q['p5']:.4f}, "
                             f"{q['lost_first_neighbour']} of {q['queries']} queries lost their "
                             f"first neighbour{floor}"))
    if report.rolled_back:
        print_wrapped(out, "  [yellow]rolled back by itself[/yellow] ",
                      "(--rollback-below-recall): the source serves as before")
    for w in report.warnings:
        print_wrapped(out, "  [yellow]warning:[/yellow] ", escape(w))
    if report.validation.checks or report.validation.errors:
        out.print("  checks:")
        print_checks(report.validation, out)
    if report.error:
        print_wrapped(out, "  [bold red]error:[/bold red] ", escape(report.error))
    commands = not ok and bool(report.error and resume)  # resume and roll back, shown below
    for a in report.manual_actions:
        if commands and a.startswith(RESUME_HINT):
            continue  # the exact commands follow
        print_wrapped(out, "  next: ", escape(a))
    if report.backup_dir and report.mode != "validate":
        print_wrapped(out, "  backup dir: ", escape(str(Path(report.backup_dir).absolute())))
    # an error stopped the run part-way: the same command continues it
    if commands and resume:
        out.print("  resume with:")
        print_command(out, resume, "    ")
    if undo and report.mode != "rollback":
        out.print("  roll back with:" if ok or not (report.error and resume)
                  else "  or roll back with:")
        print_command(out, undo, "    ")
    if not ok and console is None:
        print_failure(report, resume=resume if report.error else None, undo=undo)


def print_failure(report: MigrationReport, *, resume: str | None = None,
                  undo: str | None = None) -> None:
    """A failed run on stderr too (whoever reads only stderr, a log collector or a script
    keeping stdout for data, learns that it failed, why, and what to do): one ``error:`` line,
    then the advice, one ``next:`` line each."""
    from rvlm.cli.output import err_line, error_line

    route = (report.source_index if report.source_index == report.target_index
             else f"{report.source_index} -> {report.target_index}")
    why = report.error or "; ".join(report.validation.errors) or "a check failed"
    error_line(f"{report.mode} {route} failed: {why}")
    actions = list(report.manual_actions)
    if resume:
        actions.append(f"resume with: {resume}")
    if undo and report.mode != "rollback":
        actions.append(f"roll back with: {undo}")
    for a in actions:
        err_line(f"next: {a}")
