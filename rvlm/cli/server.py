"""``rvlm server start|stop|status|info``: an embedded Redis with Search and JSON for trying rvlm.

The server comes from the ``server`` extra (``pip install 'rvlm[server]'``); ``info`` also
describes any server given with ``--url``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rvlm.cli.common import ClusterOption, JsonOption, UrlOption, echo_json, handle_errors
from rvlm.cli.output import say

if TYPE_CHECKING:
    import redis

    from rvlm.core.redis.capabilities import Capabilities
    from rvlm.embedded.server import EmbeddedServer

#: The same number as ``rvlm.embedded.server.DEFAULT_PORT`` (kept literal so ``--help`` stays fast).
DEFAULT_PORT = 16379

server_app = typer.Typer(
    name="server",
    help="Run an embedded Redis with Search and JSON (needs: pip install 'rvlm\\[server]').",
    no_args_is_help=True,
)

#: The environment variable that sets the default port of the ``rvlm server`` commands.
PORT_ENV = "RVLM_SERVER_PORT"

PortOption = Annotated[
    int, typer.Option("--port", "-p", min=1, max=65535, envvar=PORT_ENV, show_envvar=True,
                      help="Port on 127.0.0.1.")
]
DirOption = Annotated[
    Path | None,
    typer.Option("--dir", "-d", file_okay=False,
                 show_default="~/.rvlm/server-PORT, or $RVLM_HOME/server-PORT",
                 help="Directory for the server's data and log."),
]


def _server(port: int, directory: Path | None, persist: bool = False) -> EmbeddedServer:
    from rvlm.embedded.server import EmbeddedServer

    return EmbeddedServer(port=port, directory=directory, persist=persist)


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def describe(client: redis.Redis, url: str) -> dict[str, Any]:
    """Versions and capabilities of the server behind ``client`` (``url`` is redacted)."""
    from rvlm.core.redis.capabilities import detect
    from rvlm.core.redis.connection import redact

    caps: Capabilities = detect(client)
    versions = caps.to_dict()
    return {
        "url": redact(url),
        "redis_version": caps.redis_version,
        "search_version": versions["search_version"],
        "json_version": versions["json_version"],
        "capabilities": {
            "search": caps.search,
            "float16_bfloat16": caps.float16,
            "int8_uint8": caps.int8,
            "svs_vamana": caps.svs_vamana,
            "json": caps.json,
            "aliases": caps.aliases,
            "cluster": caps.cluster,
        },
        "search_layout": caps.search_layout,
        "datatypes": list(caps.datatypes),
        "algorithms": list(caps.algorithms),
    }


_WHY_NOT = {
    "search": "the Search module is not loaded: rvlm needs it",
    "float16_bfloat16": "needs RediSearch 2.10+",
    "int8_uint8": "needs the Redis 8.0 query engine",
    "svs_vamana": "needs the Redis 8.2 query engine",
    "json": "the JSON module is not loaded",
    "aliases": "needs the Search module",
}
_LABELS = {
    "search": "search",
    "float16_bfloat16": "float16/bfloat16 vectors",
    "int8_uint8": "int8/uint8 vectors",
    "svs_vamana": "svs-vamana vectors",
    "json": "json storage",
    "aliases": "index aliases",
    "cluster": "cluster mode",
}


_LAYOUTS = {
    "standalone": "one server",
    "coordinated": "cluster, one index name answers for every shard",
    "uncoordinated": "cluster without a search coordinator: an index covers the keys of the "
                     "node owning its name's slot (keep name, prefixes and aliases in one "
                     "hash tag)",
}


def print_description(info: dict[str, Any]) -> None:
    rows = [
        ("url", info["url"]),
        ("redis", info["redis_version"]),
        ("search module", info["search_version"]),
        ("json module", info["json_version"]),
    ]
    for key, on in info["capabilities"].items():
        text = _yes(on)
        if not on and key in _WHY_NOT:
            text += f" ({_WHY_NOT[key]})"
        rows.append((_LABELS[key], text))
    rows.append(("search layout", _LAYOUTS.get(info["search_layout"], info["search_layout"])))
    rows.append(("vector datatypes", ", ".join(info["datatypes"])))
    rows.append(("vector algorithms", ", ".join(info["algorithms"])))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


@server_app.command("start")
@handle_errors
def start(
    port: PortOption = DEFAULT_PORT,
    directory: DirOption = None,
    persist: Annotated[
        bool,
        typer.Option("--persist", help="Keep data on disk (AOF + RDB) across restarts."),
    ] = False,
) -> None:
    """Start the embedded server in the background (a no-op if it already runs)."""
    server = _server(port, directory, persist)
    was_running = server.running()
    server.start()
    say(f"{'already running' if was_running else 'started'}: {server.url}")
    say(f"log: {server.log_path}")
    if not was_running:
        say(f"data: {server.dir} ({'persisted' if persist else 'in memory only'})")
    say(f"use it: export REDIS_URL={server.url}   stop it: rvlm server stop --port {port}")


@server_app.command("url")
@handle_errors
def url_command(
    port: PortOption = DEFAULT_PORT,
    directory: DirOption = None,
) -> None:
    """Print the URL of the embedded server on --port, for: export REDIS_URL=$(rvlm server url).

    Exit 1 (and an error line) when no server runs there.
    """
    from rvlm.core.errors import MigrationFailed

    server = _server(port, directory)
    if not server.running():
        raise MigrationFailed(f"no server running on port {port} (start it with: rvlm server "
                              f"start --port {port})")
    typer.echo(server.url)


@server_app.command("stop")
@handle_errors
def stop(
    port: PortOption = DEFAULT_PORT,
    directory: DirOption = None,
) -> None:
    """Stop the embedded server on --port (nothing to do if none runs)."""
    server = _server(port, directory)
    if server.stop():
        say(f"stopped the server on port {port}")
    else:
        say(f"no server running on port {port}")


@server_app.command("status")
@handle_errors
def status(
    port: PortOption = DEFAULT_PORT,
    directory: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Say whether the server on --port runs (exit 0) or not (exit 1); describe it if it runs."""
    server = _server(port, directory)
    running = server.running()
    if as_json:
        out: dict[str, Any] = {"running": running, "port": port, "url": server.url}
        if running:
            out["pid"] = server.pid()
            out["log"] = str(server.log_path)
            out.update(describe(server.client(), server.url))
        echo_json(out)
    elif running:
        pid = server.pid()
        typer.echo(f"running: {server.url}" + (f" (pid {pid})" if pid else ""))
        typer.echo(f"log: {server.log_path}")
        print_description(describe(server.client(), server.url))
    else:
        typer.echo(f"not running on port {port} (start it with: rvlm server start --port {port})")
    if not running:
        raise typer.Exit(1)


@server_app.command("info")
@handle_errors
def info(
    url: UrlOption = None,
    cluster: ClusterOption = False,
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", min=1, max=65535,
                     show_default=f"${PORT_ENV} or {DEFAULT_PORT}, when no --url or REDIS_URL "
                                  "is given",
                     help="Describe the embedded server on this port."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Versions and capabilities of a server: the embedded one, or any --url / REDIS_URL."""
    from rvlm.core.redis.connection import connect

    if url is None or port is not None:
        import os

        url = _server(port or int(os.environ.get(PORT_ENV) or DEFAULT_PORT), None).url
    client = connect(url)
    try:
        described = describe(client, url)
    finally:
        client.close()
    if as_json:
        echo_json(described)
    else:
        print_description(described)


def register(app: typer.Typer) -> None:
    app.add_typer(server_app, name="server")
