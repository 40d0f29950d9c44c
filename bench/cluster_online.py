"""An online copy (rename + float16) on a 3-primary Redis Cluster against one node, under a
writer and a reader.

    python bench/cluster_online.py --docs 20000 --dims 32 --port 8100
    python bench/cluster_online.py --replicas          # 3 primaries + 3 replicas (WAIT)

Starts one embedded Redis and one embedded cluster (3 primaries, or 3 + 3 with
``--replicas``), loads the same ``--docs`` hashes (title, tag, float32 vector of ``--dims``,
FLAT) under ``{t1}doc:`` behind the alias ``{t1}live`` on each, then runs the same online plan
(rename ``title`` -> ``headline``, vector float32 -> float16, copies to ``{t1}new:``, index
``{t1}idx_v2``) with ``--follow`` while a writer changes random source documents at about
``--writes`` per second (HSET of a whole document, HDEL, DEL, PEXPIRE, through the cluster
client on the cluster) and a reader queries the alias every 10 ms. Forwarding stops 1 s after
the cut-over. Prints per target: time to cut-over, the copy's seconds, the documents copied,
the changes carried over, the forwarding lag (p50/p99/max ms), the reader's queries and
errors. Without a coordinator every document is in one hash tag, so on the cluster one
primary holds them all; capture runs on all three.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine

from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.online.options import OnlineOptions
from rvlm.core.migrate.planner import PlanOptions, make_plan
from rvlm.core.redis.connection import connect, index_exists, read_index
from rvlm.core.schema.patch import patch_from_dict
from rvlm.embedded.cluster import EmbeddedCluster
from rvlm.embedded.server import EmbeddedServer, free_port

SRC = "{t1}doc:"


def load(client: Any, n: int, dims: int) -> None:
    client.execute_command(
        "FT.CREATE", "{t1}idx", "ON", "HASH", "PREFIX", "1", SRC, "SCHEMA", "title", "TEXT",
        "tag", "TAG", "vec", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", str(dims),
        "DISTANCE_METRIC", "COSINE")
    vecs = np.random.default_rng(1).standard_normal((n, dims)).astype(np.float32)
    for start in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 1000)):
            pipe.hset(f"{SRC}{i}", mapping={"title": f"hello {i}", "tag": f"t{i % 4}",
                                            "vec": vecs[i].tobytes()})
        pipe.execute()
    while True:
        info = read_index(client, "{t1}idx").stats
        if info.num_docs >= n and not info.indexing:
            break
        time.sleep(0.1)
    client.execute_command("FT.ALIASADD", "{t1}live", "{t1}idx")


class Writer(threading.Thread):
    def __init__(self, url: str, n: int, dims: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.client, self.n, self.dims, self.pause = connect(url), n, dims, 1.0 / rate
        self.stop = threading.Event()
        self.ops = 0

    def run(self) -> None:
        rng, r = random.Random(2), self.client
        while not self.stop.is_set():
            key = f"{SRC}{rng.randrange(self.n)}"
            op = rng.random()
            if op < 0.6:
                r.hset(key, mapping={"title": f"hello w{self.ops}", "tag": "w", "vec": np.array(
                    [rng.random() for _ in range(self.dims)], np.float32).tobytes()})
            elif op < 0.75:
                r.hdel(key, "tag")
            elif op < 0.88:
                r.delete(key)
            else:
                r.pexpire(key, 900_000)
            self.ops += 1
            time.sleep(self.pause)


class Reader(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = connect(url)
        self.stop = threading.Event()
        self.queries = 0
        self.errors = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.client.execute_command("FT.SEARCH", "{t1}live", "hello", "LIMIT", "0",
                                            "1", "NOCONTENT")
            except redis.RedisError:
                self.errors += 1
            self.queries += 1
            time.sleep(0.01)


def run_one(label: str, url: str, n: int, dims: int, writes: float) -> None:
    client = connect(url)
    load(client, n, dims)
    patch = patch_from_dict({"version": 1, "changes": {
        "index": {"name": "{t1}idx_v2"},
        "rename_fields": [{"old_name": "title", "new_name": "headline"}],
        "update_fields": [{"name": "vec", "attrs": {"datatype": "float16"}}]}}, "patch.yaml")
    plan = make_plan(client, "{t1}idx", patch=patch, options=PlanOptions(
        mode="online", alias="{t1}live", target_prefix="{t1}new:"))
    assert plan.supported, plan.blocked_reasons
    writer, reader = Writer(url, n, dims, writes), Reader(url)
    reader.start()
    writer.start()
    stop = threading.Event()
    out: dict[str, Any] = {}
    backup = Path(tempfile.mkdtemp(prefix="rvlm-bench-online-"))
    t0 = time.monotonic()
    apply = threading.Thread(target=lambda: out.setdefault("report", apply_plan(
        url, plan, backup_dir=backup / "b", batch_size=500, accept_data_loss=True,
        online=OnlineOptions(follow=True, should_stop=lambda: "bench" if stop.is_set()
                             else None))))
    apply.start()
    while not (index_exists(client, "{t1}live")
               and read_index(client, "{t1}live").schema.name == "{t1}idx_v2"):
        if not apply.is_alive():
            break
        time.sleep(0.02)
    cut = time.monotonic() - t0
    time.sleep(1.0)
    stop.set()
    apply.join()
    writer.stop.set()
    reader.stop.set()
    writer.join()
    reader.join()
    report = out["report"]
    lag = report.forward_lag_ms
    copy = float(report.timings.get("copy", 0.0))
    print(f"{label:<34} {'ok' if report.succeeded else 'FAILED':<6} cut-over {cut:6.1f} s  "
          f"copy {copy:5.1f} s  copied {report.online.get('copied')}  carried over "
          f"{report.online.get('changes_carried_over')}  lag p50/p99/max {lag.get('p50', 0):.0f}"
          f"/{lag.get('p99', 0):.0f}/{lag.get('max', 0):.0f} ms  writes {writer.ops}  "
          f"queries {reader.queries}, errors {reader.errors}", flush=True)
    if not report.succeeded:
        print(report.to_yaml())
    shutil.rmtree(backup, ignore_errors=True)
    client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--dims", type=int, default=32)
    ap.add_argument("--writes", type=float, default=200.0)
    ap.add_argument("--port", type=int, default=None,
                    help="the one node on PORT, the cluster on PORT+1.. (default: free ports)")
    ap.add_argument("--replicas", action="store_true", help="3 primaries + 3 replicas")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rvlm-bench-"))
    base = args.port
    nodes = 6 if args.replicas else 3
    server = EmbeddedServer(port=base if base else free_port(), directory=work / "one")
    cluster = EmbeddedCluster(primaries=3, replicas=1 if args.replicas else 0,
                              directory=work / "cluster",
                              ports=[base + i for i in range(1, nodes + 1)] if base else None)
    server.start()
    cluster.start()
    print(machine())
    print(f"{args.docs} docs x {args.dims}-d FLAT, writer ~{args.writes:.0f}/s, reader every "
          f"10 ms; rename + float16 online to {{t1}}new:")
    try:
        run_one("one node", server.url, args.docs, args.dims, args.writes)
        run_one(f"cluster, 3 primaries{' + 3 replicas' if args.replicas else ''}",
                cluster.url, args.docs, args.dims, args.writes)
    finally:
        server.stop()
        cluster.wipe()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
