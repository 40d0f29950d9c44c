"""Human output for plans and estimates (rich)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rvlm.core.migrate.plan import Plan


def _human_bytes(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


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
    out = console or Console(highlight=False)
    src, tgt = plan.source_index, plan.target_index
    stats = plan.source_stats
    docs = stats.num_docs + stats.indexing_failures
    prefixes = ", ".join(repr(p) for p in plan.source_schema.index.prefix)
    out.print(f"[bold]Plan[/bold] {escape(src)}" + (f" -> {escape(tgt)}" if tgt != src else "")
              + f"  ({docs} documents, {plan.source_schema.storage_type}, prefix "
              f"{escape(prefixes)})")
    out.print("[bold]Schema diff[/bold] (+ added, - removed, ~ changed, > renamed)")
    for line in schema_diff_lines(plan):
        out.print(f"  {line}", soft_wrap=True)
    out.print("[bold]Changes[/bold]")
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
    if plan.operations:
        kinds = ", ".join(dict.fromkeys(o.kind for o in plan.operations))
        lossy = " [yellow](lossy)[/yellow]" if plan.lossy else ""
        out.print(f"[bold]Documents touched:[/bold] {docs} rewritten ({escape(kinds)}){lossy}; "
                  "originals go to the backup dir", soft_wrap=True)
    else:
        out.print("[bold]Documents touched:[/bold] none (index-side change only)")
    if plan.online:
        keep = "dropped" if plan.drop_source else "kept"
        out.print(f"[bold]Mode:[/bold] online: {escape(tgt)} is built next to {escape(src)}, "
                  f"then alias {escape(', '.join(plan.aliases) or '(none)')} moves to it; "
                  f"{escape(src)} is {keep} after the move", soft_wrap=True)
    elif plan.aliases:
        out.print(f"[bold]Aliases:[/bold] {escape(', '.join(plan.aliases))} point at "
                  f"{escape(tgt)} right after the create", soft_wrap=True)
    warnings = plan.all_warnings()
    downtime = [w for w in warnings if w.startswith("downtime: ")]
    for w in downtime:
        out.print(f"[bold]Downtime:[/bold] {escape(w[len('downtime: '):])}", soft_wrap=True)
    rest = [w for w in warnings if w not in downtime]
    if rest:
        out.print("[bold yellow]Warnings[/bold yellow]")
        for w in rest:
            out.print(f"  - {escape(w)}", soft_wrap=True)
    if path is not None:
        out.print(f"Plan written to {escape(str(path))}")
    target = path or "PLAN.yaml"
    if plan.supported:
        flag = " --accept-data-loss" if plan.lossy else ""
        out.print(f"[bold]Next:[/bold] rvlm estimate --plan {escape(str(target))}, then "
                  f"rvlm apply --plan {escape(str(target))} --backup-dir BACKUP_DIR{flag}",
                  soft_wrap=True)
    else:
        out.print("[bold red]Blocked:[/bold red] nothing will run. Resolve the reasons above, "
                  "then run rvlm plan again.")


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def print_estimate(result: dict[str, Any], console: Console | None = None) -> None:
    out = console or Console(highlight=False)
    table = Table(show_header=False, box=None)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("documents", str(result["documents"]))
    table.add_row("documents rewritten", str(result["documents_rewritten"]))
    table.add_row("bytes rewritten", _human_bytes(result["bytes_rewritten"]))
    table.add_row("backup disk needed", _human_bytes(result["backup_bytes"]))
    table.add_row("vector bytes before", _human_bytes(result["vector_bytes_before"]))
    table.add_row("vector bytes after", _human_bytes(result["vector_bytes_after"]))
    table.add_row("index memory before", _human_bytes(result["index_memory_before_bytes"]))
    table.add_row("index memory after (est.)", _human_bytes(result["index_memory_after_bytes"]))
    table.add_row("Redis memory before (vectors + index)",
                  _human_bytes(result["memory_before_bytes"]))
    table.add_row("Redis memory after (est.)", _human_bytes(result["memory_after_bytes"]))
    dt = result["expected_downtime_seconds"]
    table.add_row("expected downtime", "unknown" if dt is None else _seconds(dt))
    out.print(table)
    for note in result.get("notes", []):
        out.print(f"  - {note}")
