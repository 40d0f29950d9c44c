"""How long Redis's main thread stalls while a vector index builds in the background.

    python bench/probe_stalls.py --docs 20000 --dims 384 [--gap 1] [--reader]

Loads ``--docs`` hashes (the bench documents, a float32 ``--dims`` vector) with no index over
them, then creates an HNSW index over them (what online mode does once the copy is written)
and waits until it is built. A **prober** thread sends ``PING`` every millisecond on a
connection of its own and records each round trip: a PING that takes 100 ms is a client (a
carried-over change, a query) that waited 100 ms for the main thread. Printed per phase
(``idle`` before the index, ``build`` while it builds, ``after`` once built): PING p50 / p99 /
max and how many took over 20 / 50 / 100 ms, and the build's seconds per document.

``--gap N`` starts the server with the Search module's load-time argument
``BG_INDEX_SLEEP_GAP N`` (RediSearch 2.10: its background indexer holds the server's lock for
one scan step at a time and gives it up with ``sched_yield()``, which rarely lets the main
thread take it, except every N steps, when it sleeps; default 100). ``--reader`` adds the
online bench's reader (a text query every document matches + a KNN query, every 10 ms).
Pytest does not run this; numbers go in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as bench
from online import Prober, Reader


def summary(name: str, ms: list[float]) -> str:
    if not ms:
        return f"{name}: no samples"
    a = np.array(ms)
    return (f"{name:6s} {len(a):7d} PINGs  p50 {np.percentile(a, 50):6.2f}  p99 "
            f"{np.percentile(a, 99):7.2f}  max {a.max():7.1f} ms;  over 20/50/100 ms: "
            f"{(a > 20).sum()}/{(a > 50).sum()}/{(a > 100).sum()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--gap", type=int, default=None,
                    help="BG_INDEX_SLEEP_GAP (Search module load-time argument)")
    ap.add_argument("--reader", action="store_true")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds of idle/after phases")
    args = ap.parse_args(argv)
    search_args = ("BG_INDEX_SLEEP_GAP", str(args.gap)) if args.gap else ()
    print(f"machine: {bench.machine()}")
    with bench.embedded_server(search_args=search_args) as (server, _work):
        client = bench.client_for(server.url)
        gap = client.execute_command("FT.CONFIG", "GET", "BG_INDEX_SLEEP_GAP")
        print(f"{args.docs:,} docs x {args.dims}-d HNSW; BG_INDEX_SLEEP_GAP {gap}; reader "
              f"{'on' if args.reader else 'off'}", flush=True)
        bench.load_docs(client, args.docs, args.dims)
        prober = Prober(server.url, every=0.001)
        prober.start()
        time.sleep(args.settle)
        t_create = time.time()
        bench.create_index(client, args.dims, algorithm="HNSW")
        reader = Reader(server.url, bench.INDEX, args.docs, args.dims, 0.01) if args.reader \
            else None
        if reader is not None:
            reader.start()
        build_s = bench.wait_indexed(client)
        t_built = time.time()
        time.sleep(args.settle)
        prober.stop.set()
        prober.join()
        if reader is not None:
            reader.stop.set()
            reader.join()
        phases: dict[str, list[float]] = {"idle": [], "build": [], "after": []}
        for t0, ms in prober.samples:
            phase = "idle" if t0 < t_create else "build" if t0 < t_built else "after"
            phases[phase].append(ms)
        print(f"build {build_s:.1f}s = {build_s / args.docs * 1000:.2f} ms/doc; load "
              f"{Path('/proc/loadavg').read_text().split()[:3]}")
        for name, ms in phases.items():
            print(summary(name, ms))
        worst = sorted(prober.samples, key=lambda s: -s[1])[:5]
        print("longest: " + ", ".join(f"{ms:.0f} ms at +{t0 - t_create:.1f}s"
                                      for t0, ms in worst))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
