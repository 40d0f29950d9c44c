"""What every command shares: the --url option, one-line errors, YAML/JSON output.

Commands stay thin: they parse options, call the library, and print. Heavy imports (redis,
numpy, the planner) happen inside command functions so ``rvlm --help`` stays instant.
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


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit with ``code``."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
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
            typer.secho("interrupted; re-run the same command to resume", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:  # a bug or an unexpected server reply: still one line
            import redis

            if isinstance(exc, redis.RedisError):
                fail(f"Redis error: {exc}", 1)
            if "--debug" in sys.argv or _debug():
                raise
            fail(f"unexpected {type(exc).__name__}: {exc} (set RVLM_DEBUG=1 for a traceback)", 1)
        return None

    return wrapper  # type: ignore[return-value]


def _debug() -> bool:
    import os

    return bool(os.environ.get("RVLM_DEBUG"))


def echo_json(data: Any) -> None:
    import json

    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
