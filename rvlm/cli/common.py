"""What every command shares: the --url option, one-line errors, JSON output.

Commands stay thin: they parse options, call the library, and print (through
:mod:`rvlm.cli.output`). Heavy imports (redis, numpy, the planner) happen inside command
functions so ``rvlm --help`` stays instant.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

UrlOption = Annotated[
    str | None,
    typer.Option("--url", "-u", envvar="REDIS_URL", show_envvar=True,
                 help="Redis URL, e.g. redis://localhost:6379 (password never printed)."),
]
IndexOption = Annotated[str, typer.Option("--index", "-i", help="Name of the search index.")]

# The quality gate's options (plan, apply, validate, batch apply/resume).
MinRecallOption = Annotated[float | None, typer.Option(
    "--min-recall", min=0.0, max=1.0,
    help="Floor of recall@k for every vector field whose KNN answers can change: the target's "
         "answers to the same queries must keep this share of the source's (plan: the "
         "estimate; apply and validate: measured). Under it the result is failed (exit 1).")]
RecallQueriesOption = Annotated[int | None, typer.Option(
    "--recall-queries", min=1, help="KNN queries measured per vector field (vectors of stored "
                                    "documents, drawn with a fixed seed). Default 100; without "
                                    "--min-recall, fewer on a source of more than 200,000 "
                                    "documents (100 x 200,000 / documents, at least 20).")]
RecallKOption = Annotated[int, typer.Option(
    "--recall-k", min=1, help="k of recall@k: the nearest documents compared per query.")]
KeySampleOption = Annotated[int, typer.Option(
    "--key-sample-limit", min=0, help="Keys recorded in the plan's key sample (validation "
                                      "checks they still exist; rvl's option).")]
QueryCheckOption = Annotated[Path | None, typer.Option(
    "--query-check-file", help="Your own checks (YAML): rvl's fetch_ids/keys_exist, or "
                               "queries: [{name, query, params, order}] run against the source "
                               "before and the target after; the ids must be the same.")]
RollbackBelowOption = Annotated[bool, typer.Option(
    "--rollback-below-recall", help="When a field's measured recall is under --min-recall, "
                                    "roll the migration back by itself (the result stays "
                                    "failed).")]


def _force_cluster(value: bool) -> bool:
    """``--cluster``: every connection of this process and its workers is a cluster client
    (``RVLM_CLUSTER=1``, read by :func:`rvlm.core.redis.connection.connect`)."""
    if value:
        import os

        os.environ["RVLM_CLUSTER"] = "1"
    return value


# The online copy's change backlog (apply, finalize, batch apply/resume).
BacklogMemoryKeysOption = Annotated[int | None, typer.Option(
    "--backlog-memory-keys", min=1, show_default=False,
    help="Online copy: changed keys the backlog holds in memory before it spills to a file "
         "in the backup dir (default 100000; memory grows with the key size).")]
ClusterOption = Annotated[
    bool,
    typer.Option("--cluster", callback=_force_cluster,
                 help="The URL is a node of a Redis Cluster: refuse to go on otherwise. A "
                      "cluster is also detected without it."),
]


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


def output_file(path: Any, option: str) -> None:
    """Refuse (one line, exit 2) an output file that cannot be written, before any work: a
    directory, a missing parent directory, or one this user cannot write into."""
    import os
    from pathlib import Path

    from rvlm.core.errors import RvlmError

    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise RvlmError(f"{option} {p} is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise RvlmError(f"{option} {p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise RvlmError(f"{option} {p}: not writable")
