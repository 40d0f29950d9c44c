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
online bench's reader (a text query every document matches + a KNN query, every 10 ms),
``--writer R`` its writer (R HSETs a second on random indexed documents). SLOWLOG then says
which commands ran long in the main thread, per phase (the indexer's hold is no command).
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
from online import Prober, Reader, Writer


def summary(name: str, ms: list[float]) -> str:
    if not ms:
        return f"{name}: no samples"
    a = np.array(ms)
    return (f"{name:6s} {len(a):7d} PINGs  p50 {np.percentile(a, 50):6.2f}  p99 "
            f"{np.percentile(a, 99):7.2f}  max {a.max():7.1f} ms;  over 20/50/100 ms: "
            f"{(a > 20).sum()}/{(a > 50).sum()}/{(a > 100).sum()}")


def commands_by_phase(client: object, t_create: float, t_built: float) -> None:
    """Print SLOWLOG (commands that ran over the threshold) grouped by phase and command:
    count, total and longest run time in Redis's main thread (waiting is not in it)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for entry in client.execute_command("SLOWLOG", "GET", "-1"):  # type: ignore[attr-defined]
        at, micros, argv = float(entry[1]), int(entry[2]), entry[3]
        phase = "idle" if at < int(t_create) else "build" if at <= t_built else "after"
        name = bytes(argv[0]).decode().upper() if argv else "?"
        if name == "FT.SEARCH" and len(argv) > 2:
            name += " KNN" if b"KNN" in bytes(argv[2]) else " text"
        groups.setdefault((phase, name), []).append(micros / 1000.0)
    for (phase, name), ms in sorted(groups.items()):
        print(f"  slowlog {phase:5s} {name:16s} {len(ms):6d} over the threshold, total "
              f"{sum(ms) / 1000:6.1f} s, p50 {np.percentile(ms, 50):6.1f} ms, max "
              f"{max(ms):6.1f} ms")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--gap", type=int, default=None,
                    help="BG_INDEX_SLEEP_GAP (Search module load-time argument)")
    ap.add_argument("--reader", action="store_true")
    ap.add_argument("--writer", type=float, default=0.0,
                    help="HSETs a second on random indexed documents (the online bench's)")
    ap.add_argument("--slowlog-ms", type=float, default=2.0,
                    help="SLOWLOG threshold: commands that ran longer are listed by phase")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds of idle/after phases")
    args = ap.parse_args(argv)
    search_args = ("BG_INDEX_SLEEP_GAP", str(args.gap)) if args.gap else ()
    print(f"machine: {bench.machine()}")
    with bench.embedded_server(search_args=search_args) as (server, _work):
        client = bench.client_for(server.url)
        gap = client.execute_command("FT.CONFIG", "GET", "BG_INDEX_SLEEP_GAP")
        print(f"{args.docs:,} docs x {args.dims}-d HNSW; BG_INDEX_SLEEP_GAP {gap}; reader "
              f"{'on' if args.reader else 'off'}; writer {args.writer}/s", flush=True)
        bench.load_docs(client, args.docs, args.dims)
        client.config_set("slowlog-log-slower-than", int(args.slowlog_ms * 1000))
        client.config_set("slowlog-max-len", 1_000_000)
        client.execute_command("SLOWLOG", "RESET")
        prober = Prober(server.url, every=0.001)
        prober.start()
        time.sleep(args.settle)
        t_create = time.time()
        bench.create_index(client, args.dims, algorithm="HNSW")
        reader = Reader(server.url, bench.INDEX, args.docs, args.dims, 0.01) if args.reader \
            else None
        writer = Writer(server.url, args.docs, args.dims, args.writer) if args.writer else None
        for t in (reader, writer):
            if t is not None:
                t.start()
        build_s = bench.wait_indexed(client)
        t_built = time.time()
        time.sleep(args.settle)
        prober.stop.set()
        prober.join()
        for t in (reader, writer):
            if t is not None:
                t.stop.set()
                t.join()
        phases: dict[str, list[float]] = {"idle": [], "build": [], "after": []}
        for t0, ms in prober.samples:
            phase = "idle" if t0 < t_create else "build" if t0 < t_built else "after"
            phases[phase].append(ms)
        print(f"build {build_s:.1f}s = {build_s / args.docs * 1000:.2f} ms/doc; load "
              f"{Path('/proc/loadavg').read_text().split()[:3]}")
        for name, samples in phases.items():
            print(summary(name, samples))
        worst = sorted(prober.samples, key=lambda s: -s[1])[:5]
        print("longest: " + ", ".join(f"{ms:.0f} ms at +{t0 - t_create:.1f}s"
                                      for t0, ms in worst))
        commands_by_phase(client, t_create, t_built)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
