"""Online mode against drop_recreate and RedisVL's ``rvl migrate``, with clients running.

    python bench/online.py --docs 100000 --dims 384 --rvl-python /path/to/rvl-venv/bin/python

For each mode, on a fresh embedded Redis (Search + JSON) of its own (so peak memory is the
mode's own): load ``--docs`` hash documents (title, tag, price, a float32 ``--dims`` vector in
an ``--algorithm`` index), put the alias ``bench_live`` on the index, start

* a **reader** thread: every ``--read-every`` seconds a full-text query that every document
  matches (``document``) and a KNN query, through the alias (through the index name for
  ``rvl migrate``, which does not keep aliases). A KNN query must send the index's datatype:
  like a careful client, it retries once with the other encoding. Counted: failed queries
  (errors after that retry), incomplete answers (fewer documents than loaded), and which
  index answered;
* a **writer** thread (online mode only: the other two are not meant to run under writes):
  ``--write-rate`` HSETs a second on random source documents;
* a **memory** sampler: Redis ``used_memory`` every 0.2 s;

then migrate in a child process (its own peak RSS): the same change, renaming ``title`` to
``name`` and quantizing the vector float32 -> float16, in

* ``online``: ``rvlm`` online mode, target index ``bench_idx_v2`` under the prefix ``doc_v2:``;
* ``drop_recreate``: ``rvlm`` default mode (the alias is kept across the rebuild);
* ``rvl``: RedisVL's ``MigrationPlanner``/``MigrationExecutor`` (redisvl 0.28.0, run with
  ``--rvl-python``: a separate venv that has redisvl, never a dependency of rvlm).

Printed per mode: time to cut-over (online: from the apply's start until the alias moved;
the others: the whole migration, since queries are down or incomplete until the end), the
whole run, failed queries and incomplete answers, forwarding lag (online), peak Redis memory
above the loaded baseline, the migrator's peak RSS, and rvlm's phase timings (where the time
goes). Pytest does not run this; numbers go in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    INDEX,
    VECTOR,
    client_for,
    create_index,
    embedded_server,
    in_child,
    load_docs,
    machine,
    peak_rss_mb,
    wait_indexed,
)

ALIAS = "bench_live"
PATCH: dict[str, Any] = {
    "version": 1,
    "changes": {
        "rename_fields": [{"old_name": "title", "new_name": "name"}],
        "update_fields": [{"name": VECTOR, "attrs": {"datatype": "float16"}}],
    },
}
MODES = ("online", "drop_recreate", "rvl")

_RVL_SCRIPT = r"""
import json, sys, time
from redisvl.migration import MigrationExecutor, MigrationPlanner
url, patch, backup = sys.argv[1:4]
t0 = time.perf_counter()
plan = MigrationPlanner().create_plan("bench_idx", redis_url=url, schema_patch_path=patch)
t1 = time.perf_counter()
report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=backup, batch_size=500)
t2 = time.perf_counter()
t = report.timings
print(json.dumps({"result": report.result, "plan_s": t1 - t0, "total_s": t2 - t1,
                  "downtime_s": t.downtime_duration_seconds or 0.0,
                  "rss_peak_mb": [int(l.split()[1]) / 1024 for l in open("/proc/self/status")
                                  if l.startswith("VmHWM:")][0],
                  "timings": {k: v for k, v in t.model_dump().items() if v is not None}}))
"""


def total_of(reply: Any) -> int:
    if isinstance(reply, dict):
        return int(reply.get(b"total_results", 0))
    return int(reply[0])


def first_id(reply: Any) -> bytes | None:
    if isinstance(reply, dict):
        rows = reply.get(b"results") or []
        return rows[0].get(b"id") if rows else None
    return reply[1] if len(reply) > 1 else None


class Reader(threading.Thread):
    def __init__(self, url: str, target: str, n: int, dims: int, every: float) -> None:
        super().__init__(daemon=True)
        self.client = client_for(url)
        self.target, self.n, self.every = target, n, every
        self.stop = threading.Event()
        self.queries = self.failed = self.incomplete = self.retries = 0
        self.errors: list[str] = []
        self.served: list[bytes] = []
        self.vector = np.ones(dims, np.float32)
        self.encoding: Any = np.float32

    def _knn(self) -> Any:
        args = ("FT.SEARCH", self.target, f"*=>[KNN 5 @{VECTOR} $q]", "NOCONTENT",
                "DIALECT", "2", "PARAMS", "2", "q")
        try:
            return self.client.execute_command(*args, self.vector.astype(self.encoding).tobytes())
        except redis.ResponseError:
            self.retries += 1
            self.encoding = np.float16 if self.encoding is np.float32 else np.float32
            return self.client.execute_command(*args, self.vector.astype(self.encoding).tobytes())

    def run(self) -> None:
        while not self.stop.is_set():
            for query in ("text", "knn"):
                self.queries += 1
                try:
                    if query == "text":
                        reply = self.client.execute_command(
                            "FT.SEARCH", self.target, "document", "LIMIT", "0", "1",
                            "NOCONTENT", "DIALECT", "2")
                        if total_of(reply) < self.n:
                            self.incomplete += 1
                        doc = first_id(reply)
                        if doc is not None:
                            self.served.append(bytes(doc).split(b":")[0])
                    elif total_of(self._knn()) < 5:
                        self.incomplete += 1
                except redis.RedisError as exc:
                    self.failed += 1
                    if len(self.errors) < 3:
                        self.errors.append(str(exc)[:120])
            time.sleep(self.every)


class Writer(threading.Thread):
    def __init__(self, url: str, n: int, dims: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.client = client_for(url)
        self.n, self.dims, self.rate = n, dims, rate
        self.stop = threading.Event()
        self.ops = 0

    def run(self) -> None:
        rng = random.Random(1)
        gap = 1.0 / self.rate
        while not self.stop.is_set():
            i = rng.randrange(self.n)
            vec = np.full(self.dims, rng.random(), np.float32).tobytes()
            self.client.hset(f"doc:{i}", mapping={"title": f"document {i} again",
                                                  VECTOR: vec})
            self.ops += 1
            time.sleep(gap)


class Prober(threading.Thread):
    """A PING every ``every`` seconds on a connection of its own, each round trip recorded
    (wall-clock start, ms): how long any client waited for Redis's main thread."""

    def __init__(self, url: str, every: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.client = client_for(url)
        self.every = every
        self.stop = threading.Event()
        self.samples: list[tuple[float, float]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            t0, m0 = time.time(), time.monotonic()
            self.client.ping()
            self.samples.append((t0, (time.monotonic() - m0) * 1000.0))
            time.sleep(self.every)

    def by_phase(self, started: float, timings: dict[str, Any]) -> dict[str, dict[str, float]]:
        """PING p50/p99/max and counts over 50/100 ms per phase of the apply, the phases
        placed end to end from ``started`` (wall clock) in the order of the report's
        timings."""
        bounds, at = [], started
        for name, seconds in timings.items():
            if isinstance(seconds, (int, float)):
                bounds.append((name, at, at + seconds))
                at += seconds
        out: dict[str, dict[str, float]] = {}
        for name, lo, hi in [("whole run", started, float("inf")), *bounds]:
            ms = np.array([m for t, m in self.samples if lo <= t < hi])
            if len(ms):
                out[name] = {"pings": len(ms), "p50": round(float(np.percentile(ms, 50)), 2),
                             "p99": round(float(np.percentile(ms, 99)), 2),
                             "max": round(float(ms.max()), 1),
                             "over50": int((ms > 50).sum()), "over100": int((ms > 100).sum())}
        # the longest stalls, seconds after the apply started: a period (e.g. the fork GC's
        # 30 s) shows what causes them
        out["longest"] = {f"{t - started:.1f}s": round(m, 1)
                          for t, m in sorted(self.samples, key=lambda s: -s[1])[:30]}
        return out


class Memory(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = client_for(url)
        self.stop = threading.Event()
        self.peak = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, int(self.client.info("memory")["used_memory"]))
            time.sleep(0.2)


def own_peak_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux keeps the parent's
    high-water mark across fork + exec, so a migrator started by this bench would report at
    least the bench's own peak (about 100 MB at 100K x 384-d)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return peak_rss_mb()


def _run_rvlm(url: str, mode: str, backup: str, batch: int, index_timeout: float,
              out: Any) -> None:
    """Child process: plan and apply with rvlm."""
    from rvlm.core.migrate.executor import apply_plan
    from rvlm.core.migrate.planner import PlanOptions, make_plan
    from rvlm.core.schema.patch import patch_from_dict

    client = client_for(url)
    changes = dict(PATCH["changes"])
    options = PlanOptions()
    if mode == "online":
        changes["index"] = {"name": f"{INDEX}_v2"}
        options = PlanOptions(mode="online", alias=ALIAS, target_prefix="doc_v2:")
    plan = make_plan(client, INDEX, patch=patch_from_dict({"version": 1, "changes": changes},
                                                          "bench"), options=options)
    client.close()
    assert plan.supported, plan.blocked_reasons
    started_at = time.time()
    t0 = time.perf_counter()
    report = apply_plan(url, plan, backup_dir=backup, batch_size=batch, accept_data_loss=True,
                        index_timeout=index_timeout)
    total = time.perf_counter() - t0
    out.send({"result": report.result, "total_s": total,
              "cut_over_s": report.online.get("cut_over_after_seconds", total),
              "downtime_s": report.downtime_duration_seconds or 0.0,
              "lag": report.forward_lag_ms, "timings": dict(report.timings),
              "online": dict(report.online), "rss_peak_mb": own_peak_mb(),
              "started_at": started_at,
              "error": report.error})
    out.close()


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    search_args = tuple(x for a in args.search_arg for x in a.split("=", 1))
    with embedded_server(port=args.port, search_args=search_args) as (server, work):
        url = server.url
        client = client_for(url)
        gap = client.execute_command("FT.CONFIG", "GET", "BG_INDEX_SLEEP_GAP")
        print(f"{mode}: Search module BG_INDEX_SLEEP_GAP {gap}", flush=True)
        t0 = time.monotonic()
        load_docs(client, args.docs, args.dims)
        create_index(client, args.dims, algorithm=args.algorithm)
        wait_indexed(client)
        client.execute_command("FT.ALIASADD", ALIAS, INDEX)
        load_s = time.monotonic() - t0
        baseline = int(client.info("memory")["used_memory"])
        target = INDEX if mode == "rvl" else ALIAS
        reader = Reader(url, target, args.docs, args.dims, args.read_every)
        writer = Writer(url, args.docs, args.dims, args.write_rate) if (
            mode == "online" and args.write_rate > 0) else None
        memory = Memory(url)
        prober = Prober(url) if args.probe else None
        for t in (reader, memory, writer, prober):
            if t is not None:
                t.start()
        time.sleep(1.0)
        started = time.time()
        try:
            if mode == "rvl":
                patch = work / "patch.yaml"
                import yaml

                patch.write_text(yaml.safe_dump(PATCH))
                proc = subprocess.run([args.rvl_python, "-c", _RVL_SCRIPT, url, str(patch),
                                       str(work / "backup")], capture_output=True, text=True,
                                      check=False)
                try:
                    got = json.loads(proc.stdout.strip().splitlines()[-1])
                except (IndexError, ValueError):
                    got = {"result": "crashed", "error": (proc.stderr or proc.stdout)[-400:]}
                got.setdefault("cut_over_s", got.get("total_s", 0.0))
            else:
                got = in_child(_run_rvlm, url, mode, str(work / "backup"), args.batch,
                               args.index_timeout)
            time.sleep(1.0)
        finally:
            for t in (reader, memory, writer, prober):
                if t is not None:
                    t.stop.set()
            for t in (reader, memory, writer, prober):
                if t is not None:
                    t.join(10)
        if prober is not None:
            got["stalls"] = prober.by_phase(got.get("started_at", started),
                                            got.get("timings") or {})
        got.update(load_s=load_s, queries=reader.queries, failed=reader.failed,
                   incomplete=reader.incomplete, retries=reader.retries,
                   errors=reader.errors, writes=writer.ops if writer else 0,
                   redis_peak_mb=(memory.peak - baseline) / (1024 * 1024),
                   redis_baseline_mb=baseline / (1024 * 1024))
        client.close()
        return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--algorithm", default="HNSW", choices=["HNSW", "FLAT"])
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--read-every", type=float, default=0.01)
    ap.add_argument("--write-rate", type=float, default=200.0)
    ap.add_argument("--index-timeout", type=float, default=3600.0,
                    help="seconds rvlm waits for an index to build (apply's default: 600)")
    ap.add_argument("--rvl-python", default=os.environ.get("RVL_PYTHON", ""))
    ap.add_argument("--search-arg", action="append", default=[], metavar="NAME=VALUE",
                    help="a load-time argument of the Search module, e.g. "
                         "BG_INDEX_SLEEP_GAP=1 (repeatable)")
    ap.add_argument("--probe", action="store_true",
                    help="PING every 2 ms during the migration: main-thread stalls per phase")
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--port", type=int, default=None,
                    help="port of the embedded Redis (default: a free one)")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "rvl" in modes and not args.rvl_python:
        print("--rvl-python (or RVL_PYTHON) must name the python of a venv with "
              "redisvl==0.28.0; leaving rvl out")
        modes.remove("rvl")
    print(f"machine: {machine()}")
    print(f"data: {args.docs:,} hash docs x {args.dims}-d float32 {args.algorithm}; change: "
          f"rename title -> name + float32 -> float16; reader every {args.read_every}s; "
          f"writer {args.write_rate}/s (online only)", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for mode in modes:
        got = run_mode(mode, args)
        results[mode] = got
        lag = got.get("lag") or {}
        print(f"\n{mode}: {got.get('result')}" + (f" ({got.get('error')})"
                                                  if got.get("error") else ""))
        print(f"  load+index {got['load_s']:.1f}s; time to cut-over "
              f"{got.get('cut_over_s', 0):.1f}s; whole run {got.get('total_s', 0):.1f}s")
        print(f"  queries {got['queries']}, failed {got['failed']}, incomplete "
              f"{got['incomplete']}, encoding retries {got['retries']}"
              + (f"; e.g. {got['errors'][0]}" if got["errors"] else ""))
        if lag:
            print(f"  writes {got['writes']}; forwarding lag p50 {lag.get('p50')} ms, p99 "
                  f"{lag.get('p99')} ms, max {lag.get('max')} ms over {lag.get('count')}")
        print(f"  Redis peak +{got['redis_peak_mb']:.0f} MB over {got['redis_baseline_mb']:.0f} "
              f"MB loaded; migrator peak RSS {got.get('rss_peak_mb', 0):.0f} MB")
        if got.get("timings"):
            phases = ", ".join(f"{k} {v:.1f}s" for k, v in got["timings"].items()
                               if isinstance(v, (int, float)) and v >= 0.05)
            print(f"  where the time goes: {phases}", flush=True)
        for phase, st in (got.get("stalls") or {}).items():
            if phase == "longest":
                print("  longest PINGs (s after the start: ms): " + ", ".join(
                    f"{k} {v}" for k, v in sorted(st.items(), key=lambda kv: float(kv[0][:-1]))))
                continue
            print(f"  PING {phase}: {st['pings']} p50 {st['p50']} p99 {st['p99']} max "
                  f"{st['max']} ms, over 50/100 ms {st['over50']}/{st['over100']}", flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

