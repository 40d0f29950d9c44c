"""RedisVL's connection options, on every command that talks to Redis.

``rvl`` takes ``--host``, ``--port``/``-p``, ``--user``, ``--password``/``-a`` and ``--ssl``
next to ``--url``; rvlm gives every command that has ``--url`` the same options (in a
"Connection" panel of its help), so an rvl user's command line works as typed. They are folded
into the command's ``url`` before it runs, with RedisVL's precedence: ``--url`` given on the
command line is used as is (giving both is refused), connection options build a URL
(localhost:6379 where not given) that wins over ``REDIS_URL``, and ``--ssl`` alone switches the
URL in use to TLS.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

HostOption = Annotated[str | None, typer.Option(
    "--host", help="Redis host (as rvl takes it; with --port/--user/--password/--ssl instead "
                   "of --url).", rich_help_panel="Connection")]


def _port(value: str) -> int:
    """A port number; a value that is not a number is most likely a schema patch given with
    ``-p`` (rvlm's short option for ``--schema-patch`` before it became rvl's port)."""
    if not value.isdigit():
        raise typer.BadParameter(f"{value!r} is not a port number (-p is the Redis port, as in "
                                 "rvl; give a schema patch with --schema-patch)")
    if not 1 <= int(value) <= 65535:
        raise typer.BadParameter(f"{value} is not a port number (1-65535)")
    return int(value)


PortOption = Annotated[int | None, typer.Option(
    "--port", "-p", parser=_port, metavar="PORT", help="Redis port (rvl's -p).",
    rich_help_panel="Connection")]
UserOption = Annotated[str | None, typer.Option(
    "--user", help="Redis username.", rich_help_panel="Connection")]
PasswordOption = Annotated[str | None, typer.Option(
    "--password", "-a", help="Redis password (never printed).", rich_help_panel="Connection")]
SslOption = Annotated[bool, typer.Option(
    "--ssl", help="Connect with TLS (rediss://).", rich_help_panel="Connection")]

#: The parameter names of the connection options (folded into ``url`` before a command runs).
CONNECTION_PARAMS = ("host", "port", "user", "password", "ssl")


def _connection_params() -> list[Any]:
    """Fresh click parameters for the connection options (from a throw-away command)."""
    probe = typer.Typer(add_completion=False)

    @probe.command()
    def _probe(host: HostOption = None, port: PortOption = None, user: UserOption = None,
               password: PasswordOption = None, ssl: SslOption = False) -> None:
        """Only its parameters are used."""

    return list(typer.main.get_command(probe).params)


def fold_connection(params: dict[str, Any], url_from_command_line: bool) -> None:
    """Replace the connection options in ``params`` by the ``url`` they mean (see the module
    docstring); raises :class:`~rvlm.core.errors.RvlmError` for ``--url`` with them."""
    from rvlm.core.errors import RvlmError
    from rvlm.core.redis.connection import url_from_parts, with_ssl

    parts = {k: params.pop(k, None) for k in CONNECTION_PARAMS}
    ssl = bool(parts.pop("ssl"))
    given = [k for k, v in parts.items() if v is not None]
    if given:
        if url_from_command_line:
            raise RvlmError(f"give --url or --{given[0]} (and the other connection options), "
                            "not both")
        params["url"] = url_from_parts(ssl=ssl, **parts)
    elif ssl:
        params["url"] = with_ssl(params.get("url") or os.environ.get("REDIS_URL")
                                 or url_from_parts())


def with_connection_options(command: Any) -> None:
    """Give a command that has ``--url`` (and no ``--port`` of its own) rvl's connection
    options, folded into ``url`` before it runs."""
    names = {p.name for p in command.params}
    if "url" not in names or names & set(CONNECTION_PARAMS):
        return
    command.params.extend(_connection_params())
    invoke = command.invoke

    def invoke_with_url(ctx: Any) -> Any:
        from rvlm.cli.common import fail
        from rvlm.core.errors import RvlmError

        source = ctx.get_parameter_source("url")
        try:
            fold_connection(ctx.params, getattr(source, "name", "") == "COMMANDLINE")
        except RvlmError as exc:
            fail(str(exc))
        return invoke(ctx)

    command.invoke = invoke_with_url


__all__ = ["CONNECTION_PARAMS", "fold_connection", "with_connection_options"]
