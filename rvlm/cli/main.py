"""The ``rvlm`` command. Each command group lives in its own module and registers itself here.

Only typer is imported at start-up, and only the module of the command the command line names
(:data:`COMMANDS`): ``rvlm apply ...`` imports :mod:`rvlm.cli.apply` and builds the options of
``apply`` alone, not those of the other eighteen commands; ``rvlm --help`` and a command line
naming no known command load them all. Every command imports what it needs when it runs.

The output options (``-q``, ``-v``, ``--debug``, ``--color/--no-color``) are accepted before
the command (``rvlm -q apply ...``) and after it (``rvlm apply ... -q``): :class:`RvlmGroup`
adds them to every command of the tree. It also prints a usage error (an unknown option, a
missing one, a bad choice) as one ``error:`` line with exit code 2, like every other error.
"""

from __future__ import annotations

import functools
import gc
import importlib
import sys
from collections.abc import Callable, Iterator, MutableMapping
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
        settle_start_up()
        return callback(**kwargs)

    command.callback = run


class RvlmGroup(TyperGroup):
    """The root group: output options on every command, rvl's connection options on every
    command with ``--url`` (:mod:`rvlm.cli.connection`), one-line usage errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._output_options: list[Any] | None = None
        _no_type_on_flags(self)
        for command in self.commands.values():
            self.adopt(command)
        self.commands = LazyCommands(self.commands, self.adopt)

    def adopt(self, command: Any) -> None:
        """Give ``command`` (and, for a group, every command under it) the output options and
        rvl's connection options."""
        if self._output_options is None:
            self._output_options = _output_params()
        stack: list[Any] = [command]
        while stack:
            command = stack.pop()
            sub = getattr(command, "commands", None)
            if sub is not None:  # a group: its commands take the options
                stack.extend(sub.values())
            else:
                _with_output_options(command, self._output_options)
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

#: Every top-level command, in the order ``rvlm --help`` lists them, and the module whose
#: ``register(app)`` adds it (hidden ones too: RedisVL's flat names). A module is imported when
#: the command line names one of its commands (tests/test_cli_basics.py checks this table
#: against what the modules register).
COMMANDS: dict[str, str] = {
    "plan": "rvlm.cli.plan",
    "estimate": "rvlm.cli.plan",
    "apply": "rvlm.cli.apply",
    "validate": "rvlm.cli.apply",
    "rollback": "rvlm.cli.apply",
    "finalize": "rvlm.cli.apply",
    "ctl": "rvlm.cli.ctl",
    "batch-plan": "rvlm.cli.batch",
    "batch-apply": "rvlm.cli.batch",
    "batch-resume": "rvlm.cli.batch",
    "batch-status": "rvlm.cli.batch",
    "wizard": "rvlm.cli.wizard",
    "helper": "rvlm.cli.index",
    "list": "rvlm.cli.index",
    "plugins": "rvlm.cli.plugins",
    "demo": "rvlm.cli.demo",
    "batch": "rvlm.cli.batch",
    "index": "rvlm.cli.index",
    "server": "rvlm.cli.server",
}

#: The modules with a ``register(app)`` function, in the order their commands are listed.
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(COMMANDS.values()))


def _nothing() -> None:
    """The callback of a module's throw-away app (so that Typer builds a group of it)."""


def commands_of(module_name: str, only: str | None = None) -> dict[str, Any]:
    """The click commands (and groups) that the module ``module_name`` registers, by name
    (``only``: just that one, the others' options are not built); none for a module that is
    not installed (an optional part of the CLI)."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return {}
    sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    sub.callback()(_nothing)  # a group even for a module with one command
    module.register(sub)
    if only is not None:
        sub.registered_commands = [
            c for c in sub.registered_commands
            if (c.name or typer.main.get_command_name(getattr(c.callback, "__name__", "")))
            == only]
        sub.registered_groups = [g for g in sub.registered_groups if g.name == only]
    return dict(typer.main.get_command(sub).commands)  # type: ignore[attr-defined]


class LazyCommands(MutableMapping[str, Any]):
    """The root group's commands, built from their module on first use: looking one name up
    loads only its module (:data:`COMMANDS`); listing them, or looking up a name that is not
    in the table, loads every module."""

    def __init__(self, commands: MutableMapping[str, Any], adopt: Callable[[Any], None]
                 ) -> None:
        self._commands = dict(commands)
        self._adopt = adopt
        self._loaded: set[str] = set()

    def _load(self, module_name: str, only: str | None = None) -> None:
        if module_name in self._loaded:
            return
        if only is None:
            self._loaded.add(module_name)
        for name, command in commands_of(module_name, only).items():
            if name not in self._commands:
                self._adopt(command)
                self._commands[name] = command

    def load_all(self) -> None:
        for module_name in COMMAND_MODULES:
            self._load(module_name)

    def __getitem__(self, name: str) -> Any:
        if name not in self._commands:
            module_name = COMMANDS.get(name)
            if module_name is None:
                self.load_all()
            else:  # the command line's command alone (rvlm apply: not validate's options)
                self._load(module_name, only=name)
        return self._commands[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._commands[name] = command

    def __delitem__(self, name: str) -> None:
        del self._commands[name]

    def __iter__(self) -> Iterator[str]:
        self.load_all()
        ordered = [n for n in COMMANDS if n in self._commands]
        return iter(ordered + [n for n in self._commands if n not in COMMANDS])

    def __len__(self) -> int:
        self.load_all()
        return len(self._commands)


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


def main() -> None:
    from rvlm.core.redis.deferred import defer_redis_asyncio

    global OWN_PROCESS
    OWN_PROCESS = True
    gc.disable()  # until the command runs: see settle_start_up
    defer_redis_asyncio()  # only --async uses redis-py's asyncio client: loaded then
    try:
        app()
    finally:
        settle_before_exit()


#: Whether this process is the ``rvlm`` command (:func:`main`), rather than a library caller
#: or a test's ``CliRunner`` invoking :data:`app`: only then does the CLI touch the collector.
OWN_PROCESS = False


def settle_start_up() -> None:
    """Take what start-up made out of the garbage collector's way; the work begins.

    Start-up (parsing, importing the command's modules) makes about 45,000 objects
    (modules, classes, functions) that live until the process ends, and little garbage
    (about 1,000 objects, mostly the classes attrs replaces with their slotted copies; none
    with a finalizer). The ``rvlm`` command starts with the collector off (:func:`main`);
    here ``gc.freeze`` moves everything start-up made to the permanent generation and the
    collector is switched on for the run, so no collection of the run, nor the one at exit
    (:func:`settle_before_exit`), traverses those objects again: before, each automatic full
    collection during an apply and the one at exit took 15-50 ms (two or three per apply of
    2,000 documents), and start-up ran about ten collections that found almost nothing.
    Start-up's garbage stays until the process ends. This is the use ``gc.freeze`` is
    documented for (collector off early, freeze, collector on; it also spares worker
    processes forked later from copying those pages).

    Called when a command's function starts (every command), and again by a command once it
    has loaded what its run needs (``apply``: the executor). A no-op outside the ``rvlm``
    command (:data:`OWN_PROCESS`): a library caller's or a test's collector is left alone."""
    if OWN_PROCESS:
        gc.freeze()
        gc.enable()


def settle_before_exit() -> None:
    """Make the interpreter's shutdown cheap; the process is about to end.

    At exit CPython clears every module and runs several full garbage collections over all
    the objects still alive (about 47,000 after an apply: 0.2-0.35 s, measured, more than the
    whole report). One collection now frees what is already garbage and runs its finalizers,
    as the shutdown would have done; then ``gc.freeze`` moves the survivors out of the
    collector's reach, so the shutdown's collections have nothing to traverse. What is still
    reachable when the modules are cleared is released by reference counting as before; only
    a cycle that becomes garbage during the shutdown itself is no longer collected (CPython
    promises no finalization at exit anyway; rvlm closes and fsyncs its files itself, and
    ``atexit`` handlers, ``weakref.finalize`` included, still run). Called by the ``rvlm``
    command only (not by a library caller or a test's ``CliRunner``), once it is over."""
    gc.collect()
    gc.freeze()
