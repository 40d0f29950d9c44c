"""``rvlm wizard``: the command (options, connecting, picking the index, exit codes)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rvlm.cli.common import ClusterOption, KeySampleOption, UrlOption, handle_errors
from rvlm.cli.wizard.prompting import Prompter, WizardAbort
from rvlm.cli.wizard.session import Wizard, pick_index
from rvlm.cli.wizard.staging import Staging, StagingError


def register(app: typer.Typer) -> None:
    app.command("wizard")(wizard)


def wizard(
    index: Annotated[str | None, typer.Option(
        "--index", "-i", help="Index to migrate (a list to pick from otherwise).")] = None,
    patch: Annotated[Path | None, typer.Option("--patch", help="Start from this schema "
                                                               "patch.")] = None,
    plan_out: Annotated[Path | None, typer.Option(
        "--plan-out", "-o", help="Also write the plan here when done.")] = None,
    patch_out: Annotated[Path | None, typer.Option("--patch-out", help="Where to write the patch "
                                                   "(default: --patch, else schema_patch.yaml)."
                                                   )] = None,
    target_schema_out: Annotated[Path | None, typer.Option(
        "--target-schema-out", help="Also write the target schema (the source with the "
                                    "patch applied) here.")] = None,
    key_sample_limit: KeySampleOption = 20,
    url: UrlOption = None,
    cluster: ClusterOption = False,
) -> None:
    """Build a schema patch interactively: pick an index, stage changes, preview, write.

    Nothing is written to Redis; files are never overwritten without asking.
    """
    code = _run(index, patch, plan_out, patch_out, url, target_schema_out, key_sample_limit)
    if code:
        raise typer.Exit(code)


@handle_errors
def _run(index: str | None, patch: Path | None, plan_out: Path | None, patch_out: Path | None,
         url: str | None, target_schema_out: Path | None = None,
         key_sample_limit: int = 20) -> int:
    """The wizard; returns the exit code (1 when the user left without writing)."""
    from rvlm.core.plugins.host import get_host
    from rvlm.core.redis.capabilities import detect
    from rvlm.core.redis.connection import connect, list_indexes, read_index
    from rvlm.core.schema.patch import load_patch

    host = get_host()
    host.check()
    loaded = load_patch(patch, tuple(host.patch_sections())) if patch else None
    client = connect(url)
    caps = detect(client)
    names = list_indexes(client)
    io = Prompter()
    try:
        name = index if index is not None else pick_index(io, client, names)
        source = read_index(client, name).schema
        try:
            staging = Staging.from_patch(source, loaded) if loaded else Staging(source)
        except StagingError as exc:
            from rvlm.core.errors import RvlmError

            raise RvlmError(str(exc)) from None
        if loaded:
            io.say(f"Started from {patch}: {len(staging.changes())} section(s) staged")
        out = patch_out or patch or Path("schema_patch.yaml")
        Wizard(client, staging, caps, io, index_names=names, patch_out=out,
               plan_out=plan_out, target_schema_out=target_schema_out,
               key_sample_limit=key_sample_limit).run()
    except (WizardAbort, KeyboardInterrupt) as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        typer.echo(f"\nwizard ended ({why}); nothing written", err=True)
        return 1
    finally:
        sys.stdout.flush()
    return 0
