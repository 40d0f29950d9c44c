"""Client CPU per document of each step of the drop_recreate transform path, one batch at a time.

    python bench/transform_steps.py --docs 20000 --plans rename_quantize

Starts an embedded server, loads ``--docs`` hash documents of ``--dims`` dims and, per plan,
runs the executor's per-batch steps on one thread (with the garbage collector's thresholds the
executor's transform has), each timed with ``time.thread_time``:
read (``read_batch``), transform (``transform_batch``: the plugins, the merge, the digests),
encode (``encode_records``: the backup payload, no file), write (``write_batch``: HSET/HDEL
pipeline to the server). The documents are restored between plans (the write step rewrites
them). Prints microseconds per document per step (min over ``--repeat`` passes) and the
load average: the numbers are CPU time of this thread, the server's share is not in them.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PLANS,
    client_for,
    create_index,
    embedded_server,
    key,
    load_docs,
    make_rvlm_plan,
    reset,
    wait_indexed,
)

from rvlm.core.migrate.transform import transform_batch

try:  # the executor's transform runs with fewer garbage collections (since xform)
    from rvlm.core.migrate.collector import fewer_collections
except ImportError:  # an older tree (PYTHONPATH): the default thresholds, as its executor had
    fewer_collections = contextlib.nullcontext  # type: ignore[assignment]
from rvlm.core.plugins.context import ApplyContext
from rvlm.core.plugins.host import get_host
from rvlm.core.redis.capabilities import detect
from rvlm.core.redis.docio.read import read_batch
from rvlm.core.redis.docio.write import write_batch
from rvlm.core.storage.backup.records import encode_records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--dims", type=int, default=128)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--plans", default="rename_quantize")
    ap.add_argument("--profile", type=int, default=0,
                    help="also run the steps under cProfile and print the N top functions")
    args = ap.parse_args()
    host = get_host()
    with embedded_server() as (server, _work):
        client = client_for(server.url)
        caps = detect(client)
        for name in args.plans.split(","):
            best: dict[str, float] = {}
            for _ in range(args.repeat):
                reset(client)
                load_docs(client, args.docs, args.dims)
                create_index(client, args.dims)
                wait_indexed(client)
                plan = make_rvlm_plan(client, PLANS[name])
                names = list(dict.fromkeys(n for op in plan.operations
                                           for n in (*op.reads, *op.writes)))
                ttl = any(op.rename_prefix is not None for op in plan.operations)
                ctx = ApplyContext(plan=plan, capabilities=caps, client=client)
                spent = dict.fromkeys(("read", "transform", "encode", "write"), 0.0)
                clock = time.thread_time
                prof = cProfile.Profile() if args.profile else None
                if prof:
                    prof.enable()
                collecting = fewer_collections()
                collecting.__enter__()
                for start in range(0, args.docs, args.batch):
                    keys = [key(i) for i in range(start, min(args.docs, start + args.batch))]
                    t0 = clock()
                    docs = read_batch(client, "hash", keys, names, ttl=ttl)
                    t1 = clock()
                    writes, records = transform_batch(host, plan, ctx, docs)
                    t2 = clock()
                    encode_records(records)
                    t3 = clock()
                    write_batch(client, "hash", writes)
                    t4 = clock()
                    spent["read"] += t1 - t0
                    spent["transform"] += t2 - t1
                    spent["encode"] += t3 - t2
                    spent["write"] += t4 - t3
                collecting.__exit__(None, None, None)
                if prof:
                    prof.disable()
                    pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
                for step, s in spent.items():
                    best[step] = min(best.get(step, s), s)
            per = {k: v / args.docs * 1e6 for k, v in best.items()}
            print(f"{name:16s} " + "  ".join(f"{k} {v:5.2f}" for k, v in per.items())
                  + f"  total {sum(per.values()):5.2f} us/doc (thread CPU, min of "
                  f"{args.repeat})  load {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
                  flush=True)
        reset(client)


if __name__ == "__main__":
    main()
