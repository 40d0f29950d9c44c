"""Human output for plans and estimates (rich)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rvlm.core.plan import Plan


def _human_bytes(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def print_plan(plan: Plan, path: Path | None = None, console: Console | None = None) -> None:
    """A readable summary: changes (coloured), documents touched, warnings, next command."""
    out = console or Console(highlight=False)
    src, tgt = plan.source_index, plan.target_index
    docs = plan.source_stats.num_docs + plan.source_stats.indexing_failures
    out.print(f"[bold]Plan[/bold] {src}" + (f" -> {tgt}" if tgt != src else "")
              + f"  ({docs} documents, {plan.source_schema.storage_type})")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("")
    table.add_column("change")
    table.add_column("what happens")
    for c in plan.changes:
        mark = "[green]+[/green]" if c.supported else "[red]x[/red]"
        if c.type in ("remove_field",):
            mark = "[yellow]-[/yellow]" if c.supported else mark
        what = c.summary if c.supported else "; ".join(c.blocked_reasons)
        style = "" if c.supported else "red"
        name = c.field or c.new_field or ""
        table.add_row(mark, f"{c.type} {name}".strip(), f"[{style}]{what}[/{style}]"
                      if style else what)
    if not plan.changes:
        table.add_row("", "(none)", "the target schema equals the source")
    out.print(table)
    if plan.operations:
        kinds = ", ".join(dict.fromkeys(o.kind for o in plan.operations))
        out.print(f"Documents rewritten: {docs} ({kinds}); originals go to the backup dir.")
    else:
        out.print("Documents rewritten: none (index-side change only).")
    warnings = plan.all_warnings()
    if warnings:
        out.print("[bold yellow]Warnings[/bold yellow]")
        for w in warnings:
            out.print(f"  - {w}", soft_wrap=True)
    if path is not None:
        out.print(f"Plan written to {path}")
    if plan.supported:
        flag = " --accept-data-loss" if plan.lossy else ""
        target = path or "PLAN.yaml"
        out.print(f"[bold]Next:[/bold] rvlm apply --plan {target} --backup-dir BACKUP_DIR{flag}")
    else:
        out.print("[bold red]Blocked:[/bold red] nothing will run until the reasons above are "
                  "resolved.")


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
    dt = result["expected_downtime_seconds"]
    table.add_row("expected downtime", "unknown" if dt is None else f"{dt:.1f} s")
    out.print(table)
    for note in result.get("notes", []):
        out.print(f"  - {note}")
