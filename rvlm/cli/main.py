"""The ``rvlm`` command. Each command group lives in its own module and registers itself here.

Only typer is imported at start-up; every command imports what it needs when it runs.
"""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

app = typer.Typer(
    name="rvlm",
    help="Change the schema of a Redis search index without losing a document.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Modules with a ``register(app)`` function, in the order their commands are listed.
COMMAND_MODULES = (
    "rvlm.cli.plan",
    "rvlm.cli.apply",
    "rvlm.cli.batch",
    "rvlm.cli.wizard",
    "rvlm.cli.index",
    "rvlm.cli.plugins",
    "rvlm.cli.server",
    "rvlm.cli.demo",
)


def _version(value: bool) -> None:
    if value:
        from rvlm import __version__

        typer.echo(f"rvlm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Plan, apply, validate and roll back schema changes of Redis search indexes."""


for _module in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(_module)
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise
        continue
    _mod.register(app)


def main() -> None:
    app()
