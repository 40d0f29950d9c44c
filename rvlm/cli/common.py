"""What every command shares: the --url option, one-line errors, JSON output.

Commands stay thin: they parse options, call the library, and print (through
:mod:`rvlm.cli.output`). Heavy imports (redis, numpy, the planner) happen inside command
functions so ``rvlm --help`` stays instant.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

UrlOption = Annotated[
    str | None,
    typer.Option("--url", "-u", envvar="REDIS_URL", show_envvar=True,
                 help="Redis URL, e.g. redis://localhost:6379 (password never printed)."),
]
IndexOption = Annotated[str, typer.Option("--index", "-i", help="Name of the search index.")]


JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print the result as JSON on stdout (progress and errors go to stderr).")]


def fail(message: str, code: int = 2) -> None:
    """Print one ``error:`` line to stderr and exit with ``code``."""
    from rvlm.cli.output import error_line

    error_line(message)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn RvlmError (and friends) into one clear line and the right exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from rvlm.core.errors import RvlmError

        try:
            return func(*args, **kwargs)
        except RvlmError as exc:
            fail(str(exc), exc.exit_code)
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:  # `rvlm ... | head`: the reader left; nothing to report
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            from rvlm.cli.output import error_line

            error_line("interrupted; re-run the same command to resume")
            raise typer.Exit(130) from None
        except Exception as exc:  # a bug or an unexpected server reply: still one line
            import redis

            from rvlm.cli.output import SETTINGS

            if isinstance(exc, redis.RedisError):
                if SETTINGS.debug:
                    raise
                fail(f"Redis error: {exc}", 1)
            if SETTINGS.debug:
                raise
            fail(f"unexpected {type(exc).__name__}: {exc} (--debug or RVLM_DEBUG=1 shows the "
                 "traceback)", 1)
        return None

    return wrapper  # type: ignore[return-value]


def echo_json(data: Any) -> None:
    """``data`` as JSON on stdout."""
    from rvlm.cli.output import echo_json as echo

    echo(data)
