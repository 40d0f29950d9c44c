"""How every command talks to the user: streams, colour, verbosity, logging, sizes, JSON.

* **Streams.** stdout carries what a command produces (a plan summary, a report, a table,
  JSON with ``--json``); stderr carries progress, log lines, prompts in ``--json`` mode and
  errors. ``rvlm apply ... --json > report.json`` therefore holds nothing but the JSON.
* **Colour.** ``NO_COLOR`` (https://no-color.org) or ``--no-color`` turn colour off everywhere
  (help, tables, the error line); ``--color`` forces it, also into a pipe. The flags work by
  setting ``NO_COLOR`` / ``FORCE_COLOR`` for the length of one invocation, so every rich
  console (ours and Typer's help) obeys them; :func:`restore_environment` undoes that.
* **Verbosity.** ``-q/--quiet``: no progress and no narration, only errors, failures and the
  data a command was asked for (tables, JSON). ``-v/--verbose``: rvlm's INFO log lines (each
  phase of a migration as it is journaled). ``-vv`` or ``--debug``: DEBUG lines, and a
  traceback for an unexpected error (as ``RVLM_DEBUG=1`` does). Log lines come from the
  standard :mod:`logging` module (logger ``rvlm``) and go to stderr.
* **Sizes.** :func:`~rvlm.core.units.human_bytes` (re-exported here) is the one way a byte
  count is shown, in the CLI and in the core's messages alike: decimal units with the right
  label (``5.3 MB`` is 5,300,000 bytes), from :mod:`rich.filesize`.

Nothing here imports redis or numpy: ``rvlm --help`` stays fast.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, TYPE_CHECKING, Any, cast

from rvlm.core.units import human_bytes, mib_to_bytes

if TYPE_CHECKING:
    from rich.console import Console

    from rvlm.cli.plain import PlainConsole

__all__ = ["console", "echo_json", "err_console", "err_line", "error_line", "human_bytes",
           "mib_to_bytes", "report_console", "rich_stderr", "say"]

LOGGER = "rvlm"
DEBUG_ENV = "RVLM_DEBUG"

#: Verbosity levels (``-q`` .. ``-vv``) and the logging level each shows.
QUIET, NORMAL, VERBOSE, DEBUG = -1, 0, 1, 2
LOG_LEVELS = {QUIET: logging.ERROR, NORMAL: logging.WARNING, VERBOSE: logging.INFO,
              DEBUG: logging.DEBUG}


class Settings:
    """The output settings of one invocation (set by the global options, reset per run)."""

    def __init__(self) -> None:
        self.verbosity = NORMAL
        self.saved_env: dict[str, str | None] = {}

    @property
    def quiet(self) -> bool:
        return self.verbosity <= QUIET

    @property
    def debug(self) -> bool:
        return self.verbosity >= DEBUG or bool(os.environ.get(DEBUG_ENV))


SETTINGS = Settings()


def reset() -> None:
    """Back to the defaults (the start of every invocation)."""
    restore_environment()
    SETTINGS.verbosity = NORMAL
    configure_logging()


def set_verbosity(level: int) -> None:
    SETTINGS.verbosity = max(QUIET, min(DEBUG, level))
    configure_logging()


def _set_env(name: str, value: str | None) -> None:
    if name not in SETTINGS.saved_env:
        SETTINGS.saved_env[name] = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def set_color(on: bool | None) -> None:
    """``True``: colour even into a pipe; ``False``: no colour; ``None``: leave it to
    ``NO_COLOR`` and the terminal."""
    if on is None:
        return
    _set_env("NO_COLOR", None if on else "1")
    _set_env("FORCE_COLOR", "1" if on else None)


def restore_environment() -> None:
    """Undo :func:`set_color`'s changes to ``os.environ``."""
    for name, value in SETTINGS.saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    SETTINGS.saved_env.clear()


# --------------------------------------------------------------------------- consoles


def console(*, data: bool = False) -> Console:
    """A rich console on stdout. Narration (``data=False``) is silenced by ``--quiet``; the
    data a command was asked for (``data=True``) never is. No emoji codes: ``vector:v:`` is a
    check name, not a peace sign. Into a file or a pipe, lines lose the spaces rich pads
    tables with (a log or ``| tee`` gets no trailing blanks)."""
    from rich.console import Console

    quiet = SETTINGS.quiet and not data
    if sys.stdout.isatty():
        return Console(highlight=False, emoji=False, quiet=quiet)
    return Console(highlight=False, emoji=False, quiet=quiet,
                   file=cast("IO[str]", _Trimmed(sys.stdout)))


def report_console(*, data: bool = False) -> Console | PlainConsole:
    """The console a report is printed on: :func:`console`'s, or into a pipe or a file (where
    rich would add no colour) a :class:`~rvlm.cli.plain.PlainConsole` writing the same text
    without importing rich."""
    from rvlm.cli.plain import PlainConsole, rich_is_plain

    if rich_is_plain():
        return PlainConsole(lambda: console(data=data), quiet=SETTINGS.quiet and not data)
    return console(data=data)


class _Trimmed:
    """A text stream that drops the spaces at the end of every line written through it."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.pending = ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        if lines:
            self.out.write("".join(line.rstrip(" ") + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.out.write(self.pending)
            self.pending = ""
        self.out.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return int(self.out.fileno())


def say(text: str) -> None:
    """One line of narration on stdout, as is (no markup, never wrapped); ``--quiet``
    silences it."""
    console().print(text, markup=False, soft_wrap=True)


def err_console() -> Console:
    """A rich console on stderr (errors, warnings, log lines, progress)."""
    from rich.console import Console

    return Console(highlight=False, emoji=False, stderr=True)


def rich_stderr() -> bool:
    """Whether stderr shows colour: a terminal, or ``--color`` (``FORCE_COLOR``). Only then
    are stderr's lines written through rich; into a pipe or a file they are written as they
    are (the same text: colour is all rich would add), and rich is not even imported."""
    if os.environ.get("FORCE_COLOR"):
        return True
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # a closed or exotic stream: write plainly
        return False


def err_line(text: str, style: str = "") -> None:
    """One line on stderr, in ``style`` when colour is on (as is, no markup, never wrapped)."""
    if not rich_stderr():
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
        return
    from rich.text import Text

    err_console().print(Text(text, style=style), soft_wrap=True)


def error_line(message: str) -> None:
    """``error: MESSAGE`` on stderr, one line, red when colour is on."""
    text = " ".join(message.split("\n"))
    if not rich_stderr():
        err_line(f"error: {text}")
        return
    from rich.text import Text

    line = Text("error: ", style="bold red")
    line.append(text, style="red")
    err_console().print(line, soft_wrap=True)


def echo_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (never silenced: it was asked for)."""
    import json

    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


# --------------------------------------------------------------------------- logging


class _Handler(logging.Handler):
    """Log records as one line each on stderr: ``warning: ...`` (yellow), ``error: ...``
    (red), and INFO/DEBUG lines dimmed, so they read apart from the command's own output."""

    STYLES = {logging.DEBUG: "dim", logging.INFO: "dim", logging.WARNING: "yellow",
              logging.ERROR: "red", logging.CRITICAL: "bold red"}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and SETTINGS.debug:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            label = record.levelname.lower()
            err_line(f"{label}: {message}", self.STYLES.get(record.levelno, ""))
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def configure_logging() -> None:
    """Route the ``rvlm`` logger to stderr at the level the verbosity asks for."""
    logger = logging.getLogger(LOGGER)
    level = LOG_LEVELS[SETTINGS.verbosity]
    if SETTINGS.debug:
        level = logging.DEBUG
    logger.setLevel(level)
    if not any(isinstance(h, _Handler) for h in logger.handlers):
        logger.addHandler(_Handler())
