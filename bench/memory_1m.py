"""Peak memory of the rvlm migrator at a million documents.

    python bench/memory_1m.py --docs 1000000          # the target run (a few minutes)
    python bench/memory_1m.py --docs 50000            # a quick run

Starts an embedded Redis, loads ``--docs`` small hash documents (title, tag, price and a
float32 vector of ``--dims`` dimensions, 8 by default so the server stays small), indexes
them, then runs rvlm's apply of a plan that renames ``title`` to ``name`` and quantizes the
vector to float16, in a *fresh child process* (``multiprocessing`` spawn), so the loader's
memory is not counted. The child reports:

* peak RSS of the migrator process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and of its
  worker processes (``RUSAGE_CHILDREN``, the largest one) when ``--workers`` > 1;
* with ``--tracemalloc``, the Python heap peak (``tracemalloc``; slows the run down).

Target: peak RSS < 200 MB.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RENAME_QUANTIZE_PATCH,
    client_for,
    create_index,
    embedded_server,
    load_docs,
    machine,
    make_rvlm_plan,
    peak_rss_mb,
    server_memory_mb,
    wait_indexed,
)

TARGET_MB = 200.0


def _migrate(url: str, backup_dir: str, batch: int, workers: int, trace: bool,
             out: Any) -> None:
    """Runs in a spawned child: plan + apply, then report memory through ``out``."""
    import tracemalloc

    from rvlm.core.migrate.executor import apply_plan

    base = peak_rss_mb()
    if trace:
        tracemalloc.start()
    client = client_for(url)
    plan = make_rvlm_plan(client, RENAME_QUANTIZE_PATCH)
    client.close()
    t0 = time.perf_counter()
    report = apply_plan(url, plan, backup_dir=backup_dir, batch_size=batch, workers=workers,
                        accept_data_loss=True, index_timeout=3600)
    seconds = time.perf_counter() - t0
    heap = tracemalloc.get_traced_memory()[1] / (1024 * 1024) if trace else None
    out.send({
        "result": report.result,
        "error": report.error,
        "documents": report.documents,
        "rewritten": report.documents_rewritten,
        "seconds": seconds,
        "timings": dict(report.timings),
        "downtime": report.downtime_duration_seconds,
        "rss_start_mb": base,
        "rss_peak_mb": peak_rss_mb(),
        "workers_rss_peak_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
        "heap_peak_mb": heap,
    })
    out.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--dims", type=int, default=8)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--tracemalloc", action="store_true", help="also measure the Python heap")
    args = ap.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"data: {args.docs:,} hash docs, float32 vector of {args.dims} dims; plan: rename "
          f"title -> name + quantize float32 -> float16; batch {args.batch}, "
          f"workers {args.workers}")
    with embedded_server() as (server, work):
        client = client_for(server.url)
        t0 = time.perf_counter()
        load_docs(client, args.docs, args.dims, chunk=10_000)
        print(f"loaded in {time.perf_counter() - t0:.1f}s", flush=True)
        create_index(client, args.dims)
        waited = wait_indexed(client)
        print(f"indexed in {waited:.1f}s; server memory {server_memory_mb(client):,.0f} MB",
              flush=True)
        client.close()
        ctx = multiprocessing.get_context("spawn")
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_migrate, args=(server.url, str(work / "backup"), args.batch,
                                                  args.workers, args.tracemalloc, send))
        proc.start()
        send.close()
        got: dict[str, Any] = recv.recv()
        proc.join()
        backup_mb = sum(p.stat().st_size for p in (work / "backup").iterdir()
                        if p.is_file()) / (1024 * 1024)
    if got["result"] != "succeeded":
        print(f"migration FAILED: {got['error']}")
        return 1
    t = got["timings"]
    print(f"migration succeeded: {got['documents']:,} docs ({got['rewritten']:,} rewritten) "
          f"in {got['seconds']:.1f}s (keys {t.get('keys', 0):.1f}s, checks "
          f"{t.get('checks', 0):.1f}s, transform "
          f"{t.get('transform', 0):.1f}s, indexing {t.get('indexing', 0):.1f}s); downtime "
          f"{got['downtime']:.1f}s; backup dir {backup_mb:,.0f} MB")
    peak = max(got["rss_peak_mb"], got["workers_rss_peak_mb"])
    print(f"peak RSS of the migrator process: {got['rss_peak_mb']:.1f} MB (at start "
          f"{got['rss_start_mb']:.1f} MB)")
    if args.workers > 1:
        print(f"peak RSS of its largest worker process: {got['workers_rss_peak_mb']:.1f} MB")
    if got["heap_peak_mb"] is not None:
        print(f"Python heap peak (tracemalloc): {got['heap_peak_mb']:.1f} MB")
    verdict = "met" if peak < TARGET_MB else "NOT met"
    print(f"target peak RSS < {TARGET_MB:.0f} MB: {peak:.1f} MB ({verdict})")
    return 0 if peak < TARGET_MB else 2


if __name__ == "__main__":
    raise SystemExit(main())
