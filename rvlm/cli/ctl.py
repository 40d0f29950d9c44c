"""``rvlm ctl``: a running online apply, steered from another shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rvlm.cli.common import handle_errors

BackupOption = Annotated[Path, typer.Option(
    "--backup-dir", help="The backup dir of the online apply.")]


def register(app: typer.Typer) -> None:
    app.command("ctl")(ctl)


@handle_errors
def ctl(
    command: Annotated[str, typer.Argument(
        help="status | throttle | unthrottle | cut-over | stop | finalize | "
             "max-load=F=N,... | critical-load=F=N,... | max-lag-millis=N (max-load=? "
             "shows the value)")],
    backup_dir: BackupOption,
) -> None:
    """Steer the online apply running on a backup dir, from another shell.

    Ask its status, throttle or unthrottle it, cut over now (a postponed cut-over), stop it
    cleanly, or change a threshold. Exit 2 when no apply runs there.
    """
    from rvlm.core.migrate.online.control import send

    typer.echo(send(backup_dir, command))
