"""``rvlm index list|info|create|drop``: what indexes a server has, everything about one of
them, and creating or dropping one by hand (rvl's ``listall``, ``delete`` and ``destroy`` are
hidden aliases)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rvlm.cli.common import (
    ClusterOption,
    IndexOption,
    JsonOption,
    UrlOption,
    echo_json,
    fail,
    handle_errors,
)

if TYPE_CHECKING:
    from rich.table import Table

    from rvlm.core.schema.ftinfo import IndexInfo, IndexStats
    from rvlm.core.schema.model import Field, IndexDefinition

index_app = typer.Typer(name="index", help="List, show, create or drop the search indexes of a "
                                             "server.", no_args_is_help=True)

#: Server defaults of the vector parameters the model stores as None when they are the default.
VECTOR_DEFAULTS: dict[str, object] = {
    "m": 16, "ef_construction": 200, "ef_runtime": 10, "epsilon": 0.01, "block_size": 1024,
}
VECTOR_BASICS = ("dims", "algorithm", "datatype", "distance_metric")


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _value(value: object) -> str:
    if isinstance(value, bool):
        return _yes(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _prefixes(prefix: tuple[str, ...]) -> str:
    return ", ".join(repr(p) for p in prefix) + ("  (every key)" if prefix == ("",) else "")


def field_attr_rows(field: Field, storage_type: str) -> list[tuple[str, str]]:
    """Every attribute of ``field`` as (name, shown value); FT.INFO's blind spots say unknown."""
    import attrs

    from rvlm.core.schema.model import INERT_ATTRS, VECTOR_PARAMS, TagAttrs, VectorAttrs

    a = field.attrs
    if isinstance(a, VectorAttrs):
        names: tuple[str, ...] = (*VECTOR_BASICS, *VECTOR_PARAMS[a.algorithm], "index_missing")
    else:
        inert = INERT_ATTRS.get(field.type, ())
        names = tuple(x.name for x in attrs.fields(type(a)) if x.name not in inert)
    rows = []
    for name in names:
        value = getattr(a, name)
        if name in field.unknown_attrs:
            shown = "unknown"
        elif value is not None:
            shown = _value(value)
        elif isinstance(a, VectorAttrs):
            default = VECTOR_DEFAULTS.get(name)
            shown = f"default ({default})" if default is not None else "server default"
        elif isinstance(a, TagAttrs) and name == "separator":
            shown = "default (',')" if storage_type == "hash" else "none"
        else:
            shown = "none"
        rows.append((name, shown))
    return rows


def index_rows(index: IndexDefinition) -> list[tuple[str, str]]:
    """Every index option as (name, shown value)."""
    if index.stopwords is None:
        stopwords = "server default list"
    elif not index.stopwords:
        stopwords = "none (STOPWORDS 0)"
    else:
        stopwords = ", ".join(index.stopwords)
    return [
        ("name", index.name),
        ("storage_type", index.storage_type),
        ("prefix", _prefixes(index.prefix)),
        ("filter", index.filter if index.filter is not None else "none"),
        ("language", index.language or "english (default)"),
        ("language_field", index.language_field or "none"),
        ("score", _value(index.score) if index.score is not None else "1 (default)"),
        ("score_field", index.score_field or "none"),
        ("payload_field", index.payload_field or "none"),
        ("stopwords", stopwords),
        ("maxtextfields", _yes(index.maxtextfields)),
        ("nooffsets", _yes(index.nooffsets)),
        ("nohl", _yes(index.nohl)),
        ("nofields", _yes(index.nofields)),
        ("nofreqs", _yes(index.nofreqs)),
    ]


def stats_rows(stats: IndexStats) -> list[tuple[str, str]]:
    from rvlm.core.units import human_bytes, mib_to_bytes

    indexing = "no"
    if stats.indexing:
        pct = stats.percent_indexed
        indexing = "yes" + ("" if math.isnan(pct) else f" ({pct * 100:.0f}% done)")
    return [
        ("docs", f"{stats.num_docs:,}"),
        ("indexing failures", f"{stats.indexing_failures:,}"),
        ("indexing", indexing),
        ("records", str(stats.num_records)),
        ("index memory", human_bytes(mib_to_bytes(stats.total_index_memory_sz_mb))),
        ("vector index memory", human_bytes(mib_to_bytes(stats.vector_index_sz_mb))),
    ]


def _key_value_table(title: str, rows: list[tuple[str, str]]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False, box=None,
                  padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(escape(key), escape(value))
    return table


def print_info(info: IndexInfo) -> None:
    from rich.markup import escape
    from rich.table import Table

    from rvlm.cli.output import console as data_console

    schema = info.schema
    storage = schema.index.storage_type
    console = data_console(data=True)
    console.print(_key_value_table(f"Index {escape(schema.name)}", index_rows(schema.index)))
    console.print()
    fields = Table(title=f"Fields ({len(schema.fields)})", title_justify="left")
    fields.add_column("name", no_wrap=True)
    fields.add_column("path" if storage == "json" else "hash field", overflow="fold")
    fields.add_column("type", no_wrap=True)
    fields.add_column("attributes", overflow="fold")
    for f in schema.fields:
        attr_text = "\n".join(f"{escape(k)}: {escape(v)}"
                              for k, v in field_attr_rows(f, storage))
        fields.add_row(escape(f.name), escape(f.identifier(storage)), f.type, attr_text)
    console.print(fields)
    console.print()
    console.print(_key_value_table("Stats", stats_rows(info.stats)))
    if schema.unknown_attrs():
        console.print()
        console.print("unknown: FT.INFO does not report these values; a schema patch can set "
                      "them explicitly.")
    if info.unparsed:
        console.print(f"not understood (kept as is): {escape(repr(info.unparsed))}")


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def info_dict(info: IndexInfo) -> dict[str, Any]:
    """``{"schema": <RedisVL-format schema>, "stats": {...}}`` (JSON-safe)."""
    import attrs

    from rvlm.core.schema.yaml_format import schema_to_dict

    out: dict[str, Any] = {
        "schema": schema_to_dict(info.schema),
        "stats": {k: _finite(v) for k, v in attrs.asdict(info.stats).items()},
    }
    if info.unparsed:
        out["unparsed"] = info.unparsed
    return out


@index_app.command("list")
@handle_errors
def list_command(url: UrlOption = None, cluster: ClusterOption = False,
                 as_json: JsonOption = False) -> None:
    """Every search index: name, documents, storage type and key prefixes."""
    from rvlm.core.errors import RvlmError
    from rvlm.core.redis.connection import connect, list_indexes, read_index

    client = connect(url)
    rows: list[dict[str, Any]] = []
    try:
        for name in list_indexes(client):
            try:
                info = read_index(client, name)
            except RvlmError as exc:
                rows.append({"name": name, "error": str(exc)})
                continue
            rows.append({
                "name": name,
                "num_docs": info.stats.num_docs,
                "storage_type": info.schema.storage_type,
                "prefix": list(info.schema.index.prefix),
                "fields": len(info.schema.fields),
                "indexing_failures": info.stats.indexing_failures,
                "indexing": info.stats.indexing,
            })
    finally:
        client.close()
    if as_json:
        echo_json(rows)
        return
    if not rows:
        typer.echo("no search indexes on this server")
        return
    from rich.markup import escape
    from rich.table import Table

    from rvlm.cli.output import console

    table = Table()
    for column in ("name", "docs", "storage", "prefixes", "fields", "failures"):
        table.add_column(column, justify="right" if column in ("docs", "fields", "failures")
                         else "left", overflow="fold")
    for row in rows:
        if "error" in row:
            table.add_row(escape(row["name"]), "", "", escape(row["error"]), "", "")
            continue
        indexing = " (indexing)" if row["indexing"] else ""
        table.add_row(escape(row["name"]), f"{row['num_docs']:,}{indexing}", row["storage_type"],
                      escape(_prefixes(tuple(row["prefix"]))), str(row["fields"]),
                      f"{row['indexing_failures']:,}")
    console(data=True).print(table)


@index_app.command("info")
@handle_errors
def info_command(
    index: IndexOption,
    url: UrlOption = None,
    cluster: ClusterOption = False,
    as_json: JsonOption = False,
    as_yaml: Annotated[
        bool,
        typer.Option("--yaml", help="Print the schema as YAML (a starting point for a target "
                                    "schema; RedisVL's IndexSchema loads it too)."),
    ] = False,
) -> None:
    """The index definition with every option, every field with every attribute, and stats."""
    from rvlm.core.redis.connection import connect, read_index, redact, resolve_url

    if as_json and as_yaml:
        fail("choose one of --json and --yaml")
    client = connect(url)
    try:
        info = read_index(client, index)
    finally:
        client.close()
    if as_json:
        echo_json(info_dict(info))
    elif as_yaml:
        from rvlm.core.schema.redisvl import redisvl_notes
        from rvlm.core.schema.yaml_format import dump_schema

        typer.echo(f"# index {index!r} read from {redact(resolve_url(url))}")
        if info.schema.unknown_attrs():
            typer.echo("# rvlm.unknown_attrs: values FT.INFO does not report (set them to be "
                       "sure); RedisVL ignores the rvlm key")
        for note in redisvl_notes(info.schema):
            typer.echo(f"# {note}")
        typer.echo(dump_schema(info.schema, redisvl=True), nl=False)
    else:
        print_info(info)


@index_app.command("create")
@handle_errors
def create_command(
    schema: Annotated[
        str,
        typer.Option("--schema", "-s", help="Schema YAML (RedisVL's IndexSchema format, or "
                                            "what rvlm index info --yaml prints)."),
    ],
    url: UrlOption = None,
    cluster: ClusterOption = False,
) -> None:
    """Create an index from a schema file (as rvl index create does)."""
    from rvlm.core.migrate.indexes import create_index
    from rvlm.core.redis.connection import connect
    from rvlm.core.schema.yaml_format import load_schema

    target = load_schema(schema)
    client = connect(url)
    try:
        create_index(client, target)
    finally:
        client.close()
    prefixes = ", ".join(repr(p) for p in target.index.prefix)
    typer.echo(f"created index {target.name!r} ({target.storage_type}, {len(target.fields)} "
               f"fields, prefix {prefixes}); the server indexes the existing documents in the "
               "background")


@index_app.command("drop")
@handle_errors
def drop_command(
    index: IndexOption,
    url: UrlOption = None,
    cluster: ClusterOption = False,
    delete_documents: Annotated[
        bool,
        typer.Option("--delete-documents", help="Delete the documents the index covers too "
                                                "(FT.DROPINDEX ... DD)."),
    ] = False,
) -> None:
    """Drop an index; its documents stay unless --delete-documents (rvl index delete /
    destroy)."""
    from rvlm.core.migrate.indexes import drop_index
    from rvlm.core.redis.connection import connect

    client = connect(url)
    try:
        dropped = drop_index(client, index, delete_documents=delete_documents)
    finally:
        client.close()
    if dropped.deleted_documents:
        typer.echo(f"dropped index {dropped.name!r} and deleted its {dropped.documents} "
                   "documents")
    else:
        typer.echo(f"dropped index {dropped.name!r}; its {dropped.documents} documents are kept")


# rvl's names for the same commands (rvl index listall / delete / destroy)
index_app.command("listall", hidden=True, help="Same as rvlm index list.")(list_command)
index_app.command("delete", hidden=True, help="Same as rvlm index drop.")(drop_command)


@index_app.command("destroy", hidden=True)
@handle_errors
def destroy_command(index: IndexOption, url: UrlOption = None,
                    cluster: ClusterOption = False) -> None:
    """Same as rvlm index drop --delete-documents."""
    drop_command(index=index, url=url, delete_documents=True)


@handle_errors
def helper_command(url: UrlOption = None, cluster: ClusterOption = False) -> None:
    """The indexes of a server, the changes rvlm can make, and the commands (rvl migrate
    helper)."""
    from rvlm.core.plugins.host import get_host
    from rvlm.core.redis.connection import connect, list_indexes

    client = connect(url)
    try:
        names = list_indexes(client)
    finally:
        client.close()
    typer.echo("Indexes:")
    for position, name in enumerate(names, start=1):
        typer.echo(f"  {position}. {name}")
    if not names:
        typer.echo("  (none)")
    typer.echo("\nChanges rvlm can make (one plugin each; 'rvlm plugins' lists them all):")
    for name, (_plugin, change_type) in sorted(get_host().change_types().items()):
        typer.echo(f"  - {name}: {change_type.description}")
    typer.echo("\nCommands:\n"
               "  rvlm wizard -i <index>                                build a patch\n"
               "  rvlm plan -i <index> --schema-patch <patch.yaml>      plan it\n"
               "  rvlm apply --plan <plan.yaml> --backup-dir <dir>      apply (re-run to resume)\n"
               "  rvlm validate --plan <plan.yaml>                      check the result\n"
               "  rvlm rollback --backup-dir <dir>                      undo it")


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
    # rvl's flat names: rvl migrate helper, and list (rvlm index list), hidden
    app.command("helper", hidden=True, help="Same as rvl migrate helper: the indexes, the "
                                            "changes rvlm can make, the commands.")(
        helper_command)
    app.command("list", hidden=True, help="Same as rvlm index list.")(list_command)
