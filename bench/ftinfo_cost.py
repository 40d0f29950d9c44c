"""What one FT.INFO costs Redis's main thread while a vector index builds, and whether it grows.

    python bench/ftinfo_cost.py --docs 50000 --dims 384 [--every 0.25]

Loads ``--docs`` bench hashes (float32 ``--dims`` vector) with no index, creates the bench's
HNSW index over them and, until it is built, sends ``FT.INFO`` every ``--every`` seconds (what
a wait loop does). Each call's main-thread time is the growth of ``INFO commandstats``'s
``cmdstat_ft.info`` usec across that one call (no other client sends FT.INFO); its round
trip is timed too (it includes waiting for the background indexer's lock). Printed per tenth
of the build (by percent_indexed): calls, server ms p50 / max, round trip ms p50 / max.
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


def ftinfo_usec(client: object) -> tuple[int, int]:
    """``(calls, usec)`` of FT.INFO so far, from INFO commandstats."""
    stats = client.info("commandstats")  # type: ignore[attr-defined]
    entry = stats.get("cmdstat_ft.info") or stats.get("cmdstat_FT.INFO") or {}
    return int(entry.get("calls", 0)), int(entry.get("usec", 0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--every", type=float, default=0.25)
    args = ap.parse_args(argv)
    print(f"machine: {bench.machine()}")
    with bench.embedded_server() as (server, _work):
        client = bench.client_for(server.url)
        bench.load_docs(client, args.docs, args.dims)
        print(f"{args.docs:,} docs x {args.dims}-d HNSW loaded; load "
              f"{Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
        t0 = time.monotonic()
        bench.create_index(client, args.dims, algorithm="HNSW")
        rows: list[tuple[float, float, float]] = []  # (percent, server ms, round trip ms)
        while True:
            _, before = ftinfo_usec(client)
            t = time.perf_counter()
            info = client.execute_command("FT.INFO", bench.INDEX)
            rtt = (time.perf_counter() - t) * 1000
            _, after = ftinfo_usec(client)
            fields = dict(zip(info[::2], info[1::2], strict=False)) if isinstance(info, list) \
                else info
            pct = float(fields.get(b"percent_indexed", fields.get("percent_indexed", 1)))
            indexing = int(fields.get(b"indexing", fields.get("indexing", 0)))
            if not indexing and pct >= 1.0:
                break
            rows.append((pct, (after - before) / 1000, rtt))
            time.sleep(args.every)
        build = time.monotonic() - t0
        print(f"build {build:.1f} s, {len(rows)} FT.INFO while building; load "
              f"{Path('/proc/loadavg').read_text().split()[:3]}")
        for tenth in range(10):
            part = [r for r in rows if int(min(r[0], 0.999) * 10) == tenth]
            if not part:
                continue
            srv, rtt = np.array([r[1] for r in part]), np.array([r[2] for r in part])
            print(f"  {tenth * 10:3d}-{tenth * 10 + 10:3d}%  {len(part):4d} calls  server ms "
                  f"p50 {np.percentile(srv, 50):6.2f} max {srv.max():6.2f}  round trip ms p50 "
                  f"{np.percentile(rtt, 50):6.2f} max {rtt.max():6.2f}")
        calls, usec = ftinfo_usec(client)
        print(f"commandstats: {calls} FT.INFO, {usec / max(calls, 1):.0f} usec per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
