"""Helpers shared by the bench scripts: an embedded server, deterministic data, plans.

Not part of the rvlm package and not run by pytest. Every script starts its own embedded
server (``rvlm.embedded.server.EmbeddedServer``) in a temporary directory and stops it at the end.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import redis

from rvlm.core.redis.connection import connect, read_index
from rvlm.embedded.server import EmbeddedServer, free_port

INDEX = "bench_idx"
PREFIX = "doc:"
VECTOR = "embedding"


@contextlib.contextmanager
def embedded_server(keep_dir: bool = False, port: int | None = None,
                    search_args: tuple[str, ...] = ()
                    ) -> Iterator[tuple[EmbeddedServer, Path]]:
    """An embedded Redis (Search + JSON) on ``port`` (a free one by default) in a new
    temporary directory; ``search_args``: load-time arguments of the Search module."""
    work = Path(tempfile.mkdtemp(prefix="rvlm-bench-"))
    server = EmbeddedServer(port=port or free_port(), directory=work / "server",
                            search_args=search_args)
    server.start()
    try:
        yield server, work
    finally:
        server.stop()
        if not keep_dir:
            shutil.rmtree(work, ignore_errors=True)


def client_for(url: str) -> redis.Redis:
    """A bytes client (the same defaults rvlm uses)."""
    return connect(url)


def key(i: int) -> bytes:
    return f"{PREFIX}{i}".encode()


def vectors_for(start: int, count: int, dims: int) -> np.ndarray:
    """Deterministic float32 vectors for documents ``start .. start+count``."""
    rng = np.random.default_rng(1000 + start)
    return rng.standard_normal((count, dims)).astype(np.float32)


def load_docs(client: redis.Redis, n: int, dims: int, *, chunk: int = 5000) -> None:
    """Write ``n`` hash documents ``doc:{i}`` with a title, a tag, a number and a float32
    vector of ``dims`` dimensions (pipelined, ``chunk`` documents per round trip)."""
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        vecs = vectors_for(start, count, dims)
        pipe = client.pipeline(transaction=False)
        for j in range(count):
            i = start + j
            pipe.hset(key(i), mapping={
                "title": f"document {i}",
                "tag": f"t{i % 16}",
                "price": i % 1000,
                VECTOR: vecs[j].tobytes(),
            })
        pipe.execute()


def create_index(client: redis.Redis, dims: int, datatype: str = "FLOAT32",
                 algorithm: str = "FLAT") -> None:
    """The bench index over ``doc:`` (text, tag, numeric, vector)."""
    algo_args = ["6", "TYPE", datatype, "DIM", str(dims), "DISTANCE_METRIC", "COSINE"]
    client.execute_command(
        "FT.CREATE", INDEX, "ON", "HASH", "PREFIX", "1", PREFIX, "SCHEMA",
        "title", "TEXT", "tag", "TAG", "price", "NUMERIC",
        VECTOR, "VECTOR", algorithm, *algo_args,
    )


def wait_indexed(client: redis.Redis, index: str = INDEX, timeout: float = 3600.0) -> float:
    """Block until ``index`` finished indexing; returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        stats = read_index(client, index).stats
        if not stats.indexing and stats.percent_indexed >= 1.0:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise TimeoutError(f"{index} still indexing after {timeout:.0f}s")


def reset(client: redis.Redis) -> None:
    """Drop every index and every key."""
    for name in client.execute_command("FT._LIST") or []:
        with contextlib.suppress(redis.ResponseError):
            client.execute_command("FT.DROPINDEX", name)
    client.flushall()


def make_rvlm_plan(client: redis.Redis, patch: dict[str, Any]) -> Any:
    """rvlm plan for ``patch`` (a schema patch dict) against the bench index."""
    from rvlm.core.migrate.planner import make_plan
    from rvlm.core.plugins.host import get_host
    from rvlm.core.schema.patch import patch_from_dict

    host = get_host()
    return make_plan(client, INDEX,
                     patch=patch_from_dict(patch, "bench", tuple(host.patch_sections())),
                     host=host)


QUANTIZE_PATCH: dict[str, Any] = {
    "version": 1,
    "changes": {"update_fields": [{"name": VECTOR, "attrs": {"datatype": "float16"}}]},
}
RENAME_PATCH: dict[str, Any] = {
    "version": 1,
    "changes": {"rename_fields": [{"old_name": "title", "new_name": "name"}]},
}
RENAME_QUANTIZE_PATCH: dict[str, Any] = {
    "version": 1,
    "changes": {
        "rename_fields": [{"old_name": "title", "new_name": "name"}],
        "update_fields": [{"name": VECTOR, "attrs": {"datatype": "float16"}}],
    },
}
PREFIX_PATCH: dict[str, Any] = {"version": 1, "changes": {"index": {"prefix": "item:"}}}
#: the document-rewriting plans the transform and verification benches run, by name
PLANS: dict[str, dict[str, Any]] = {"quantize": QUANTIZE_PATCH, "rename": RENAME_PATCH,
                                    "rename_quantize": RENAME_QUANTIZE_PATCH}


def in_child(target: Callable[..., None], *args: Any) -> dict[str, Any]:
    """Run ``target(*args, send)`` in a spawned process (its own memory high-water mark) and
    return the dict it sent; a child that died first gives ``result: crashed`` with its exit
    code as ``error`` (and ``errors``)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, send))
    proc.start()
    send.close()
    try:
        got: dict[str, Any] = recv.recv()
    except EOFError:
        why = f"exit code {proc.exitcode}"
        got = {"result": "crashed", "error": why, "errors": [why]}
    proc.join()
    return got


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(who).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def machine() -> str:
    """A one-line description of this machine."""
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, numpy {np.__version__}, "
            f"redis-py {redis.__version__}")


def server_memory_mb(client: redis.Redis) -> float:
    info = client.info("memory")
    return float(info.get("used_memory", 0)) / (1024 * 1024)
