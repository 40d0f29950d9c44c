"""``rvlm demo``: one real migration on a real server, start to finish.

It starts the embedded server (or uses ``--url``), loads a small product index (text, tag,
numeric and a float32 HNSW vector field), then plans, applies and validates a migration that
renames a field and quantizes the vectors to float16, and shows the same KNN query before and
after. Everything it writes goes to one work directory it prints.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from rvlm.cli.common import handle_errors

if TYPE_CHECKING:
    from rich.table import Table

INDEX = "demo_products"
PREFIX = "product:"
DIMS = 16
PATCH = """\
version: 1
changes:
  rename_fields:
    - {old_name: name, new_name: title}
  update_fields:
    - name: embedding
      attrs: {datatype: float16}
  add_fields:
    - {name: brand, type: tag}
"""


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def load_sample(client: Any, count: int) -> None:
    """The demo index: ``count`` products with deterministic float32 embeddings."""
    import numpy as np

    rng = np.random.default_rng(7)
    categories = ["books", "garden", "kitchen", "toys"]
    centers = rng.normal(size=(len(categories), DIMS))
    client.execute_command(
        "FT.CREATE", INDEX, "ON", "HASH", "PREFIX", "1", PREFIX, "SCHEMA",
        "name", "TEXT", "WEIGHT", "2",
        "category", "TAG",
        "price", "NUMERIC", "SORTABLE",
        "embedding", "VECTOR", "HNSW", "10", "TYPE", "FLOAT32", "DIM", str(DIMS),
        "DISTANCE_METRIC", "COSINE", "M", "16", "EF_CONSTRUCTION", "200",
    )
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        c = i % len(categories)
        vec = (centers[c] + 0.3 * rng.normal(size=DIMS)).astype(np.float32)
        pipe.hset(f"{PREFIX}{i}", mapping={
            "name": f"{categories[c]} item {i}",
            "category": categories[c],
            "price": round(float(rng.uniform(1, 100)), 2),
            "embedding": vec.tobytes(),
        })
    pipe.execute()


def knn(client: Any, index: str, vector: bytes, k: int = 5) -> list[tuple[str, str]]:
    """(key, score) of the ``k`` nearest neighbours of ``vector``."""
    from rvlm.core.redis.resp import to_list, to_map, to_str

    reply = client.execute_command(
        "FT.SEARCH", index, f"*=>[KNN {k} @embedding $v AS score]", "PARAMS", "2", "v", vector,
        "SORTBY", "score", "RETURN", "1", "score", "DIALECT", "2")
    out: list[tuple[str, str]] = []
    if isinstance(reply, dict) or hasattr(reply, "keys"):
        for r in to_list(to_map(reply).get("results")):
            m = to_map(r)
            attrs = to_map(m.get("extra_attributes"))
            out.append((to_str(m.get("id")), f"{float(to_str(attrs.get('score'))):.4f}"))
        return out
    items = to_list(reply)[1:]
    for key, fields in zip(items[::2], items[1::2], strict=False):
        f = to_map(fields)
        out.append((to_str(key), f"{float(to_str(f.get('score'))):.4f}"))
    return out


@handle_errors
def demo(
    url: Annotated[str | None, typer.Option(
        "--url", "-u", help="Use this server instead of starting the embedded one (its "
                            "database must not hold an index named demo_products).")] = None,
    work_dir: Annotated[Path | None, typer.Option(
        "--work-dir", help="Where the patch, plan, backup and report go (default: a new "
                           "temporary directory).")] = None,
    documents: Annotated[int, typer.Option("--documents", min=10,
                                           help="How many sample documents to load.")] = 1000,
    keep: Annotated[bool, typer.Option(
        "--keep", help="Leave the embedded server running afterwards.")] = False,
) -> None:
    """Run a real migration on the embedded server: plan, apply, validate, compare queries."""
    from rvlm.api import MigrationExecutor, MigrationPlanner
    from rvlm.cli.output import console as stdout_console
    from rvlm.cli.render import print_checks, print_command, print_plan, print_wrapped
    from rvlm.core.errors import RvlmError
    from rvlm.core.redis.connection import connect, index_exists, redact, wait_indexed
    from rvlm.embedded.server import EmbeddedServer, free_port

    console = stdout_console()
    work = (work_dir or Path(tempfile.mkdtemp(prefix="rvlm-demo-"))).resolve()
    if (work / "backup").exists():
        raise RvlmError(f"{work} already holds a demo run (its backup dir); give a new "
                        "--work-dir")
    work.mkdir(parents=True, exist_ok=True)
    server = None
    if url is None:
        server = EmbeddedServer(port=free_port(), directory=work / "server")
        console.print(f"[bold]1. Server[/bold] starting the embedded Redis with Search and "
                      f"JSON on port {server.port} (log: {server.log_path})")
        server.start()
        url = server.url
    else:
        console.print(f"[bold]1. Server[/bold] using {redact(url)}")
    try:
        client = connect(url)
        if index_exists(client, INDEX):
            raise RvlmError(f"an index named {INDEX!r} already exists on {redact(url)} (an "
                            "earlier demo?); run the demo on an empty server, e.g. the "
                            "embedded one restarted: rvlm server stop; rvlm server start")
        load_sample(client, documents)
        wait_indexed(client, INDEX, timeout=20)
        console.print(f"[bold]2. Sample[/bold] index {INDEX!r}: {documents} products under "
                      f"{PREFIX!r} (text, tag, numeric, float32 HNSW vectors of {DIMS} dims)")
        query = client.hget(f"{PREFIX}7", "embedding")
        if not isinstance(query, bytes):
            raise RvlmError(f"the sample document {PREFIX}7 has no embedding")
        before = knn(client, INDEX, query)
        console.print(f"   the 5 nearest neighbours of {PREFIX}7 by cosine distance: "
                      + ", ".join(f"{key} ({score})" for key, score in before))

        patch_path = work / "patch.yaml"
        patch_path.write_text(PATCH, encoding="utf-8")
        console.print(f"[bold]3. Patch[/bold] {patch_path}:\n{PATCH}")
        plan = MigrationPlanner().create_plan(INDEX, schema_patch_path=patch_path,
                                              redis_client=client)
        plan_path = work / "plan.yaml"
        plan.write(plan_path)
        console.print("[bold]4. Plan[/bold] (rvlm plan)")
        print_plan(plan, plan_path, console)

        backup_dir = work / "backup"
        console.print("[bold]5. Apply[/bold] as this command does:")
        print_command(console, f"rvlm apply --plan {plan_path} --backup-dir {backup_dir} "
                               "--accept-data-loss", "     ")
        report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=backup_dir,
                                           accept_data_loss=True)
        report_path = work / "report.yaml"
        report_path.write_text(report.to_yaml(), encoding="utf-8")
        colour = "green" if report.succeeded else "red"
        console.print(f"   result: [bold {colour}]{report.result}[/bold {colour}]; report: "
                      f"{report_path}", soft_wrap=True)
        print_checks(report.validation, console)
        if report.error:
            console.print(f"   [red]{escape(report.error)}[/red]")

        after = knn(client, INDEX, _float16(query))
        console.print("[bold]6. Query[/bold] the same KNN query after the migration (a float16 "
                      "query vector now)")
        console.print(knn_table(before, after))
        same = [k for k, _ in before] == [k for k, _ in after]
        console.print("   same neighbours, same order" if same else
                      "   neighbours changed (expected only for near ties)")
        console.print(f"[bold]Done.[/bold] Every file is in {work}.")
        if keep or server is None:
            console.print("   Undo the migration with:")
            print_command(console, f"rvlm rollback --backup-dir {backup_dir} --url {redact(url)}",
                          "     ")
        else:
            print_wrapped(console, "   ", "The embedded server stops now (--keep leaves it "
                                           "running to try rvlm rollback).")
        if report.result != "succeeded":
            raise typer.Exit(1)
    finally:
        if server is not None and not keep:
            server.stop()


def knn_table(before: list[tuple[str, str]], after: list[tuple[str, str]]) -> Table:
    """Neighbours before and after, side by side: rank, key, cosine distance."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, padding=(0, 2), show_header=True,
                  header_style="bold")
    table.add_column("   rank", justify="right")
    for col in ("before", "distance", "after", "distance"):
        table.add_column(col, justify="right" if col == "distance" else "left")
    blank = ("", "")
    for rank in range(max(len(before), len(after))):
        b = before[rank] if rank < len(before) else blank
        a = after[rank] if rank < len(after) else blank
        table.add_row(str(rank + 1), escape(b[0]), b[1], escape(a[0]), a[1])
    return table


def _float16(raw: bytes) -> bytes:
    import numpy as np

    return np.frombuffer(raw, dtype=np.float32).astype(np.float16).tobytes()
