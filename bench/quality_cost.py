"""What the quality gate costs: the plan-time recall estimate, and the recall queries at apply.

    python bench/quality_cost.py --docs 100000 --dims 128 --sample 1000 --queries 100

1. The estimate (numpy only): ``estimate_recall`` on ``--sample`` vectors of 128, 768 and 1536
   dims, float32 -> float16 and -> bfloat16 under COSINE, for an index of ``--docs`` documents
   (so the extrapolation over sub-samples runs too). Median of ``--repeat`` runs.
2. At apply, on a FLAT COSINE float32 index of ``--docs`` documents of ``--dims`` dims: asking
   the source (``probe_source``: one keys-only FT.SEARCH, a pipelined read of the query
   vectors, ``--queries`` KNN queries) and asking the target the same queries
   (``measure_field``; here the same index, so recall is 1.0 and only the cost is measured).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import client_for, create_index, embedded_server, load_docs, wait_indexed

from rvlm.core import vectors
from rvlm.core.quality.estimate import estimate_recall
from rvlm.core.quality.probes import measure_field, probe_source
from rvlm.core.redis.connection import read_index


def cone(n: int, dims: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=dims)
    centre /= np.linalg.norm(centre)
    return (centre + 0.1 * rng.normal(size=(n, dims)) / np.sqrt(dims)).astype(np.float64)


def bench_estimate(sample: int, docs: int, repeat: int) -> None:
    print(f"estimate: {sample} sampled vectors, index of {docs} documents, median of {repeat}")
    for dims in (128, 768, 1536):
        data = cone(sample, dims)
        for datatype in ("float16", "bfloat16"):
            scheme = vectors.choose_scheme("float32", datatype, "COSINE", data)
            times = []
            est = None
            for _ in range(repeat):
                t0 = time.perf_counter()
                est = estimate_recall(data, source_datatype="float32", source_metric="COSINE",
                                      target_datatype=datatype, target_metric="COSINE",
                                      scheme=scheme, documents=docs)
                times.append(time.perf_counter() - t0)
            assert est is not None
            print(f"  {dims:5d} dims {datatype:9s} {statistics.median(times):7.3f} s  "
                  f"(recall@10 {est.recall_at_k:.3f}, {est.recall_on_sample:.3f} on the sample)")


def bench_apply(docs: int, dims: int, queries: int, repeat: int) -> None:
    with embedded_server() as (server, _work):
        client = client_for(server.url)
        create_index(client, dims)
        t0 = time.perf_counter()
        load_docs(client, docs, dims)
        wait_indexed(client)
        print(f"apply: FLAT float32 index of {docs} documents x {dims} dims "
              f"(loaded and indexed in {time.perf_counter() - t0:.1f} s), {queries} queries, "
              f"median of {repeat}")
        schema = read_index(client, "bench_idx").schema
        source, target = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            probes = probe_source(client, schema, "embedding", queries=queries)
            source.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            quality = measure_field(client, "bench_idx", probes)
            target.append(time.perf_counter() - t0)
        assert quality.recall_at_k == 1.0, quality
        print(f"  ask the source (draw, read, {queries} KNN): {statistics.median(source):.3f} s")
        print(f"  ask the target and compare ({queries} KNN):  {statistics.median(target):.3f} s")
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=128)
    ap.add_argument("--sample", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    bench_estimate(args.sample, args.docs, args.repeat)
    bench_apply(args.docs, args.dims, args.queries, args.repeat)


if __name__ == "__main__":
    main()
