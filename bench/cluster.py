"""rvlm on a 3-primary Redis Cluster against one node: key moves and a quantize transform.

    python bench/cluster.py --docs 100000 --dims 32 --batch 500 --workers 1,3 --repeat 3
    python bench/cluster.py --port 7400   # fixed ports 7400-7403 instead of free ones
    python bench/cluster.py --replicas --only "hash tag"   # with replicas (WAIT per batch)

Starts one embedded Redis and one embedded 3-primary cluster (rvlm.embedded.cluster), each on
free ports, and loads the same ``--docs`` hash documents (title, float32 vector of ``--dims``)
on each before every run. Each run is rvlm's own transform phase (what ``rvlm apply`` runs
after the drop: keys enumerated, then in batches of ``--batch``: read, transform, backup
fsynced, journal, write, renames; ``--workers`` processes), timed alone:

* ``move``: every key ``doc:N`` -> ``moved:N`` (a prefix change). One node: RENAMENX, and
  DUMP/PTTL/RESTORE/DEL forced with ``RVLM_RENAME_MODE=dump``; cluster: the new names are in
  other slots (and mostly on other nodes), so DUMP/PTTL on the old key's owner, RESTORE on the
  new key's, DEL.
* ``quantize``: float32 -> float16 of every vector (the plan ``rvlm plan`` makes on the one
  node, run on both). Cluster: keys spread over the 3 primaries (``doc:``, what a coordinated
  cluster holds), and all in one hash tag (``{t}doc:``: the only complete index a cluster
  without a search coordinator can have, i.e. one shard).

Keys are enumerated by SCAN (on every primary of the cluster). Prints docs/s per run and the
medians. Everything runs on this one machine: the cluster's three servers and the client share
its cores (see bench/RESULTS.md for what that means for the numbers).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine

from rvlm.core.migrate.backup_dir import KEYS_NAME, prepare_backup_dir
from rvlm.core.migrate.drop_recreate import DropRecreate
from rvlm.core.migrate.plan import Plan, PlannedChange
from rvlm.core.migrate.planner import make_plan
from rvlm.core.migrate.run import Run
from rvlm.core.plugins.documents import DocumentOperation
from rvlm.core.plugins.host import get_host
from rvlm.core.redis import wire
from rvlm.core.redis.connection import connect
from rvlm.core.redis.docio.keys import enumerate_keys
from rvlm.core.redis.routing import primaries
from rvlm.core.schema.ftinfo import IndexStats
from rvlm.core.schema.model import Field, IndexDefinition, IndexSchema, TextAttrs
from rvlm.core.schema.patch import patch_from_dict
from rvlm.embedded.cluster import EmbeddedCluster
from rvlm.embedded.server import EmbeddedServer, free_port


def load(client: Any, prefix: str, n: int, dims: int) -> None:
    for n_node, node in primaries(client):
        del n_node
        node.flushall()
    rng = np.random.default_rng(1)
    for start in range(0, n, 10_000):
        count = min(10_000, n - start)
        vecs = rng.standard_normal((count, dims)).astype(np.float32)
        wire.raise_first(wire.execute(client, [
            (b"HSET", f"{prefix}{start + j}".encode(), b"title", f"document {start + j}",
             b"vec", vecs[j].tobytes()) for j in range(count)]))


def move_plan(prefix: str, new: str) -> Plan:
    fields = [Field(name="title", type="text", attrs=TextAttrs())]
    return Plan(
        source_schema=IndexSchema(index=IndexDefinition(name="b", prefix=(prefix,)),
                                  fields=fields),
        source_stats=IndexStats(), key_sample=(), requested_changes={},
        target_schema=IndexSchema(index=IndexDefinition(name="b", prefix=(new,)),
                                  fields=fields),
        changes=(PlannedChange(type="change_prefix", plugin="change_prefix",
                               plugin_version="bench"),),
        operations=(DocumentOperation(plugin="change_prefix", kind="rename_keys",
                                      rename_prefix=(prefix, new)),))


def quantize_plan(one: Any, prefix: str, dims: int) -> Plan:
    """The plan rvlm makes for float32 -> float16 of an index over ``prefix`` (on one node)."""
    for name in one.execute_command("FT._LIST") or []:
        one.execute_command("FT.DROPINDEX", name)
    one.execute_command("FT.CREATE", "bench", "ON", "HASH", "PREFIX", "1", prefix, "SCHEMA",
                        "title", "TEXT", "vec", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32",
                        "DIM", str(dims), "DISTANCE_METRIC", "COSINE")
    host = get_host()
    patch = patch_from_dict({"version": 1, "changes": {"update_fields": [
        {"name": "vec", "attrs": {"datatype": "float16"}}]}}, "bench",
        tuple(host.patch_sections()))
    plan = make_plan(one, "bench", patch=patch, host=host)
    one.execute_command("FT.DROPINDEX", "bench")
    return plan


def transform(url: str, plan: Plan, batch: int, workers: int) -> float:
    """rvlm's transform phase of ``plan`` over the keys under its source prefix; seconds."""
    directory = Path(tempfile.mkdtemp(prefix="rvlm-bench-cluster-"))
    try:
        prepare_backup_dir(directory, plan, batch)
        run = Run(url=url, plan=plan, backup_dir=directory, batch_size=batch, workers=workers,
                  accept_data_loss=True, progress=None, host=get_host(), index_timeout=60)
        try:
            found = enumerate_keys(run.client, plan.source_schema, 0, 1,
                                   directory / KEYS_NAME)
            run.phase("keys_enumerated", count=found.count, method=found.method)
            run.mutated = True
            t0 = time.monotonic()
            DropRecreate(run).transform(directory / KEYS_NAME)
            return time.monotonic() - t0
        finally:
            run.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=32)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--workers", default="1,3")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--port", type=int, default=None,
                    help="the one node on PORT, the cluster on PORT+1..PORT+3 (bus ports "
                         "+10000); default: free ports")
    ap.add_argument("--replicas", action="store_true",
                    help="also a cluster of 3 primaries + 3 replicas (every batch's writes "
                         "wait for the replica: WAIT); ports PORT+4..PORT+9 with --port")
    ap.add_argument("--only", default="",
                    help="run only the cases whose label contains this text")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="rvlm-bench-"))
    base = args.port
    server = EmbeddedServer(port=base if base else free_port(), directory=work / "one")
    cluster = EmbeddedCluster(primaries=3, directory=work / "cluster",
                              ports=[base + i for i in (1, 2, 3)] if base else None)
    replicated = EmbeddedCluster(primaries=3, replicas=1, directory=work / "replicated",
                                 ports=[base + i for i in range(4, 10)] if base else None
                                 ) if args.replicas else None
    server.start()
    cluster.start()
    if replicated is not None:
        replicated.start()
    print(machine())
    print(f"{args.docs} docs, {args.dims} dims, batch {args.batch}; one node {server.url}, "
          f"cluster {cluster.url} (3 primaries)"
          + (f", cluster {replicated.url} (3 primaries + 3 replicas)" if replicated else ""))
    results: dict[str, list[float]] = {}
    try:
        one = connect(server.url)
        rc = connect(cluster.url)
        quantize = {p: quantize_plan(one, p, args.dims) for p in ("doc:", "{t}doc:")}
        cases = [
            ("move, one node, RENAMENX", one, server.url, "doc:", move_plan("doc:", "moved:"),
             None),
            ("move, one node, DUMP/RESTORE", one, server.url, "doc:",
             move_plan("doc:", "moved:"), "dump"),
            ("move, 3 primaries, across slots", rc, cluster.url, "doc:",
             move_plan("doc:", "moved:"), None),
            ("quantize, one node", one, server.url, "doc:", quantize["doc:"], None),
            ("quantize, 3 primaries, keys on every shard", rc, cluster.url, "doc:",
             quantize["doc:"], None),
            ("quantize, 3 primaries, one hash tag", rc, cluster.url, "{t}doc:",
             quantize["{t}doc:"], None),
        ]
        if replicated is not None:
            rr = connect(replicated.url)
            cases += [
                ("move, 3+3 replicas (WAIT), across slots", rr, replicated.url, "doc:",
                 move_plan("doc:", "moved:"), None),
                ("quantize, 3+3 replicas (WAIT), one hash tag", rr, replicated.url,
                 "{t}doc:", quantize["{t}doc:"], None),
            ]
        cases = [c for c in cases if args.only in c[0]]
        for _ in range(args.repeat):
            for label, client, url, prefix, plan, mode in cases:
                for w in workers:
                    load(client, prefix, args.docs, args.dims)
                    if mode:
                        os.environ["RVLM_RENAME_MODE"] = mode
                    try:
                        seconds = transform(url, plan, args.batch, w)
                    finally:
                        os.environ.pop("RVLM_RENAME_MODE", None)
                    rate = args.docs / seconds
                    results.setdefault(f"{label}, --workers {w}", []).append(rate)
                    print(f"{label:<44} --workers {w}: {seconds:6.2f} s  {rate:9,.0f} docs/s",
                          flush=True)
        print("\nmedians (docs/s):")
        for key, rates in results.items():
            print(f"  {key:<58} {statistics.median(rates):9,.0f}")
        one.close()
        rc.close()
    finally:
        server.stop()
        cluster.wipe()
        if replicated is not None:
            replicated.wipe()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
