"""The ``rvlm`` command. Each command group lives in its own module and registers itself here.

Only typer is imported at start-up; every command imports what it needs when it runs.

The output options (``-q``, ``-v``, ``--debug``, ``--color/--no-color``) are accepted before
the command (``rvlm -q apply ...``) and after it (``rvlm apply ... -q``): :class:`RvlmGroup`
adds them to every command of the tree. It also prints a usage error (an unknown option, a
missing one, a bad choice) as one ``error:`` line with exit code 2, like every other error.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from rvlm.cli import output
from rvlm.cli.connection import with_connection_options

#: click's exception base (Typer may vendor click, so it is found through a public subclass).
ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _color(value: bool | None) -> bool | None:
    output.set_color(value)
    return value


QuietOption = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress and no narration: only errors and the data asked for.",
    rich_help_panel="Output")]
VerboseOption = Annotated[int, typer.Option(
    "--verbose", "-v", count=True, show_default=False,
    help="Log what rvlm does (each phase); -vv for debug lines.", rich_help_panel="Output")]
DebugOption = Annotated[bool, typer.Option(
    "--debug", help="Debug log lines, and a traceback for an unexpected error (as "
                    "RVLM_DEBUG=1 does).", rich_help_panel="Output")]
ColorOption = Annotated[bool | None, typer.Option(
    "--color/--no-color", callback=_color, is_eager=True, show_default=False,
    help="Force colour on (also into a pipe) or off. Default: on in a terminal, off when "
         "NO_COLOR is set.", rich_help_panel="Output")]

#: The parameter names of the output options (popped before a command's own function runs).
OUTPUT_PARAMS = ("quiet", "verbose", "debug", "color")


def apply_output_options(quiet: bool = False, verbose: int = 0, debug: bool = False,
                         color: bool | None = None) -> None:
    """Set verbosity from the output options (given before or after the command)."""
    if quiet:
        output.set_verbosity(output.QUIET)
    elif debug:
        output.set_verbosity(output.DEBUG)
    elif verbose:
        output.set_verbosity(max(output.SETTINGS.verbosity, 0) + verbose)


def _output_params() -> list[Any]:
    """Fresh click parameters for the output options (built from a throw-away command)."""
    probe = typer.Typer(add_completion=False)

    @probe.command()
    def _probe(quiet: QuietOption = False, verbose: VerboseOption = 0,
               debug: DebugOption = False, color: ColorOption = None) -> None:
        """Only its parameters are used."""

    return list(typer.main.get_command(probe).params)


def _no_type_on_flags(command: Any) -> None:
    """A flag takes no value: show no ``<bool>`` for it in ``--help`` (also for the options
    Typer adds late: ``--help`` and the completion options)."""
    get_params = command.get_params

    def params_without_flag_types(ctx: Any) -> list[Any]:
        params = get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) or getattr(param, "count", False):
                param.display_type_rich = lambda ctx: None
            if getattr(param, "count", False):
                param.metavar = ""  # -v counts, it takes no value: no "<int>" either
        return list(params)

    command.get_params = params_without_flag_types


def _with_output_options(command: Any, params: list[Any]) -> None:
    """Give a leaf command the output options; pop them before its function runs."""
    names = {p.name for p in command.params}
    command.params.extend(p for p in params if p.name not in names)
    callback: Callable[..., Any] | None = command.callback
    if callback is None:
        return

    @functools.wraps(callback)
    def run(**kwargs: Any) -> Any:
        apply_output_options(**{k: kwargs.pop(k) for k in OUTPUT_PARAMS if k in kwargs})
        return callback(**kwargs)

    command.callback = run


class RvlmGroup(TyperGroup):
    """The root group: output options on every command, rvl's connection options on every
    command with ``--url`` (:mod:`rvlm.cli.connection`), one-line usage errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        params = _output_params()
        _no_type_on_flags(self)
        stack: list[Any] = list(self.commands.values())
        while stack:
            command = stack.pop()
            sub = getattr(command, "commands", None)
            if sub is not None:  # a group: its commands take the options
                stack.extend(sub.values())
            else:
                _with_output_options(command, params)
                with_connection_options(command)
            _no_type_on_flags(command)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        standalone_mode = kwargs.pop("standalone_mode", True)
        output.reset()
        try:
            try:
                rv = super().main(*args, **{**kwargs, "standalone_mode": False})
                code = rv if isinstance(rv, int) else 0
            except ClickException as exc:
                code = getattr(exc, "exit_code", 2)
                if type(exc).__name__ != "NoArgsIsHelpError":  # that one printed the help
                    argv = kwargs.get("args", args[0] if args else None)
                    output.error_line(usage_message(exc, self.command_path_of(argv)))
            except typer.Abort:
                output.error_line("aborted")
                code = 1
            if not standalone_mode:
                return code
            sys.exit(code)
        finally:
            output.restore_environment()


    def command_path_of(self, argv: Any) -> str:
        """``rvlm apply`` for ``["apply", "--plan"]``: the command the words name."""
        words = list(sys.argv[1:] if argv is None else argv)
        path, command = ["rvlm"], self
        for word in words:
            sub = getattr(command, "commands", {}).get(word)
            if sub is None:
                if word.startswith("-") and not path[1:]:
                    continue  # an option of the root, before the command
                break
            path.append(word)
            command = sub
        return " ".join(path)


def usage_message(exc: Any, fallback_path: str = "rvlm") -> str:
    """A click usage error as one line, naming the help of the command it is about."""
    message = " ".join(str(exc.format_message()).split())
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or fallback_path
    return f"{message} (see '{path} --help')"


app = typer.Typer(
    name="rvlm",
    help="Change the schema of a Redis search index without losing a document.",
    cls=RvlmGroup,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)

#: Modules with a ``register(app)`` function, in the order their commands are listed.
COMMAND_MODULES = (
    "rvlm.cli.plan",
    "rvlm.cli.apply",
    "rvlm.cli.ctl",
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
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
    debug: DebugOption = False,
    color: ColorOption = None,
) -> None:
    """Plan, apply, validate and roll back schema changes of Redis search indexes.

    Output options work before or after the command: rvlm -q apply ..., rvlm apply ... -q.
    """
    apply_output_options(quiet, verbose, debug, color)


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
