"""rvlm's document transform phase against a bare pipelined read-convert-write loop.

    python bench/transform_vs_bare.py --docs 20000 --dims 64 --batch 500 --workers 1,2,4

Starts an embedded Redis (Search + JSON) on a free port, loads ``--docs`` hash documents
(title, tag, price and a float32 vector of ``--dims`` dimensions), then, ``--repeat`` times:

1. *bare*: with no index, a loop over the same keys in batches of ``--batch``: one pipeline
   of ``HMGET key embedding``, one numpy float32 -> float16 conversion of the whole batch, one
   pipeline of ``HSET key embedding <float16 bytes>`` (redis-py pipelines, the way a user would
   write it). A second bare loop does the same with hiredis-packed pipelines (what rvlm's
   executor uses) as a reference for the client-side floor.
2. the data is restored (FLUSHALL, reload), the index created and fully indexed;
3. *rvlm*: ``apply_plan`` of a float32 -> float16 plan with each ``--workers`` count (data
   and index restored between runs); its transform throughput is documents / the report's
   ``transform`` seconds (read, backup with fsync, journal, convert, write).

Prints each run and the median throughputs and ratios rvlm / bare (target >= 0.70).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    QUANTIZE_PATCH,
    VECTOR,
    client_for,
    create_index,
    embedded_server,
    key,
    load_docs,
    machine,
    make_rvlm_plan,
    reset,
    wait_indexed,
)

from rvlm.core.migrate.executor import apply_plan
from rvlm.core.redis import wire


def _convert(values: list[bytes], n: int) -> list[bytes]:
    buf = np.frombuffer(b"".join(values), dtype=np.float32).astype(np.float16).tobytes()
    step = len(buf) // n
    return [buf[i:i + step] for i in range(0, len(buf), step)]


def bare_redis_py(url: str, n: int, batch: int) -> float:
    """Docs per second of the redis-py pipelined HMGET / numpy / HSET loop."""
    client = client_for(url)
    keys = [key(i) for i in range(n)]
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        chunk = keys[start:start + batch]
        pipe = client.pipeline(transaction=False)
        for k in chunk:
            pipe.hmget(k, [VECTOR])
        values = [r[0] for r in pipe.execute()]
        new = _convert(values, len(chunk))
        pipe = client.pipeline(transaction=False)
        for k, v in zip(chunk, new, strict=True):
            pipe.hset(k, VECTOR, v)
        pipe.execute()
    seconds = time.perf_counter() - t0
    client.close()
    return n / seconds


def bare_packed(url: str, n: int, batch: int) -> float:
    """Docs per second of the same loop with hiredis-packed pipelines (rvlm.core.redis.wire)."""
    client = client_for(url)
    keys = [key(i) for i in range(n)]
    field = VECTOR.encode()
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        chunk = keys[start:start + batch]
        values = [r[0] for r in wire.execute(client, [(b"HMGET", k, field) for k in chunk])]
        new = _convert(values, len(chunk))
        wire.execute(client, [(b"HSET", k, field, v) for k, v in zip(chunk, new, strict=True)])
    seconds = time.perf_counter() - t0
    client.close()
    return n / seconds


def reload(url: str, n: int, dims: int, index: bool) -> None:
    client = client_for(url)
    reset(client)
    load_docs(client, n, dims)
    if index:
        create_index(client, dims)
        wait_indexed(client)
    client.close()


def rvlm_apply(url: str, work: Path, run: str, batch: int, workers: int) -> dict[str, Any]:
    client = client_for(url)
    plan = make_rvlm_plan(client, QUANTIZE_PATCH)
    client.close()
    t0 = time.perf_counter()
    report = apply_plan(url, plan, backup_dir=work / f"backup-{run}", batch_size=batch,
                        workers=workers, accept_data_loss=True)
    total = time.perf_counter() - t0
    if report.result != "succeeded":
        raise SystemExit(f"rvlm apply failed: {report.error or report.validation.errors}")
    return {"transform_s": report.timings["transform"], "total_s": total,
            "docs": report.documents_rewritten}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each (medians reported)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    n, dims, batch = args.docs, args.dims, args.batch
    print(f"machine: {machine()}")
    print(f"data: {n} hash docs, float32 vector of {dims} dims -> float16, batch {batch}")
    results: dict[str, list[float]] = {"bare": [], "bare_packed": []}
    for w in workers:
        results[f"rvlm_w{w}"] = []
    with embedded_server() as (server, work):
        for r in range(args.repeat):
            reload(server.url, n, dims, index=False)
            results["bare"].append(bare_redis_py(server.url, n, batch))
            reload(server.url, n, dims, index=False)
            results["bare_packed"].append(bare_packed(server.url, n, batch))
            print(f"run {r + 1}: bare {results['bare'][-1]:,.0f} docs/s, bare (hiredis-packed) "
                  f"{results['bare_packed'][-1]:,.0f} docs/s", flush=True)
            for w in workers:
                reload(server.url, n, dims, index=True)
                got = rvlm_apply(server.url, work, f"{r}-{w}", batch, w)
                if got["docs"] != n:
                    raise SystemExit(f"rvlm rewrote {got['docs']} docs, expected {n}")
                rate = n / got["transform_s"]
                results[f"rvlm_w{w}"].append(rate)
                print(f"run {r + 1}: rvlm --workers {w}: transform {rate:,.0f} docs/s "
                      f"({got['transform_s']:.2f}s; whole apply {got['total_s']:.2f}s)",
                      flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print()
    print(f"median of {args.repeat} runs ({n} docs x {dims} dims, batch {batch}):")
    print(f"  bare pipelined loop (redis-py)      {med['bare']:>10,.0f} docs/s")
    print(f"  bare pipelined loop (hiredis-packed) {med['bare_packed']:>9,.0f} docs/s")
    for w in workers:
        rate = med[f"rvlm_w{w}"]
        print(f"  rvlm apply --workers {w}              {rate:>10,.0f} docs/s   "
              f"ratio {rate / med['bare']:.2f} (vs packed {rate / med['bare_packed']:.2f})")
    first = med[f"rvlm_w{workers[0]}"] / med["bare"]
    verdict = "met" if first >= 0.70 else "NOT met"
    print(f"target rvlm/bare >= 0.70 with --workers {workers[0]}: {first:.2f} ({verdict})")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "machine": machine(), "runs": results,
                                         "median": med}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
