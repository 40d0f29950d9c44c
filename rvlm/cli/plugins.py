"""``rvlm plugins``: every plugin, what it implements and owns, and the ones that failed to load."""

from __future__ import annotations

from typing import Any

import typer

from rvlm.cli.common import JsonOption, echo_json, handle_errors


def plugins_dict() -> dict[str, Any]:
    """The default host's plugins, load errors and disabled names (JSON-safe).

    Raises :class:`~rvlm.core.errors.RvlmError` when two plugins claim one change type.
    """
    from rvlm.core.plugins.host import DISABLE_ENV, disabled_names, get_host

    host = get_host()
    # raises on a double claim; a disabled plugin stays in pluggy as a blocked name: skip it
    plugins = [p for p in host.plugins() if not host.pm.is_blocked(p.name)]
    return {
        "plugins": [
            {
                "name": p.name,
                "version": p.version,
                "builtin": p.builtin,
                "hooks": list(p.hooks),
                "change_types": list(p.change_types),
            }
            for p in plugins
        ],
        "load_errors": [{"name": e.name, "error": e.error} for e in host.load_errors],
        "disabled": sorted(disabled_names()),
        "disabled_by": DISABLE_ENV,
    }


def _print(data: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from rvlm.cli.output import console as data_console

    console = data_console(data=True)
    table = Table(title="Plugins", title_justify="left")
    for column in ("name", "version", "builtin", "hooks", "change types"):
        table.add_column(column, overflow="fold")
    for p in data["plugins"]:
        table.add_row(escape(p["name"]), escape(p["version"]), "yes" if p["builtin"] else "no",
                      escape(", ".join(p["hooks"])) or "-",
                      escape(", ".join(p["change_types"])) or "-")
    console.print(table)
    if data["load_errors"]:
        errors = Table(title="Failed to load (skipped; the other plugins work)",
                       title_justify="left")
        errors.add_column("name", no_wrap=True)
        errors.add_column("error", overflow="fold")
        for e in data["load_errors"]:
            errors.add_row(escape(e["name"]), escape(e["error"]))
        console.print()
        console.print(errors)
    if data["disabled"]:
        console.print()
        console.print(f"disabled by {data['disabled_by']}: {escape(', '.join(data['disabled']))}")


@handle_errors
def plugins(
    as_json: JsonOption = False,
) -> None:
    """Every plugin: name, version, built-in or not, hooks, change types it owns.

    Plugins that failed to import are listed with their error. Two plugins claiming one
    change type is an error (exit 2); disable one with RVLM_DISABLE_PLUGINS=name.
    """
    data = plugins_dict()
    if as_json:
        echo_json(data)
    else:
        _print(data)


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
