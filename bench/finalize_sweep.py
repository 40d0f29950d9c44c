"""What the sweep of a re-run ``rvlm finalize`` costs (issue #13): N documents, online apply,
finalize, then a client writes a few source keys with no finalize running, and finalize runs
again. That second finalize sweeps every copied source key: the N keys the first finalize
deleted are gone, all in its backup, so their targets stay (the worst case for the sweep:
every key is looked up in the on-disk set of backed-up keys).

    python bench/finalize_sweep.py --docs 200000,1000000

Per N: the apply's and the first finalize's times (context), then the second finalize in a
fresh spawned child: its whole time, the sweep's (building the on-disk sets: reading the
backup and inserting every key; then TYPE + lookups per chunk), the sets' size on disk, and
the child's peak RSS (VmHWM): bounded by the chunk if it does not grow with N. Hold the bench
lock for runs over a minute: ``flock /work/wt/bench.lock python bench/finalize_sweep.py ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    INDEX,
    client_for,
    create_index,
    embedded_server,
    in_child,
    load_docs,
    machine,
    wait_indexed,
)

ALIAS = "bench_live"
LATE = 10


def own_peak_mb() -> float:
    """This process's peak resident memory (VmHWM, not inherited across spawn)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _finalize_child(url: str, backup: str, out: Any) -> None:
    from rvlm.core.migrate.online.finalize import finalize_migration

    t0 = time.perf_counter()
    report = finalize_migration(url, backup)
    out.send({"result": report.result, "total_s": time.perf_counter() - t0,
              "sweep": dict(report.online.get("sweep") or {}), "rss_peak_mb": own_peak_mb(),
              "late": report.online.get("late_writes_carried_over"), "error": report.error})
    out.close()


def run_one(n: int, dims: int, batch: int) -> None:
    from rvlm.core.migrate.executor import apply_plan
    from rvlm.core.migrate.online.finalize import finalize_migration
    from rvlm.core.migrate.planner import PlanOptions, make_plan
    from rvlm.core.schema.patch import patch_from_dict

    with embedded_server() as (server, work):
        url = server.url
        client = client_for(url)
        t0 = time.perf_counter()
        load_docs(client, n, dims)
        create_index(client, dims)
        wait_indexed(client)
        client.execute_command("FT.ALIASADD", ALIAS, INDEX)
        print(f"  N={n:,}: loaded and indexed in {time.perf_counter() - t0:.1f}s "
              f"(load {os.getloadavg()[0]:.2f})", flush=True)
        changes = {"index": {"name": f"{INDEX}_v2"},
                   "rename_fields": [{"old_name": "title", "new_name": "name"}]}
        plan = make_plan(client, INDEX, patch=patch_from_dict(
            {"version": 1, "changes": changes}, "bench"),
            options=PlanOptions(mode="online", alias=ALIAS, target_prefix="doc_v2:"))
        assert plan.supported, plan.blocked_reasons
        backup = work / "backup"
        t0 = time.perf_counter()
        applied = apply_plan(url, plan, backup_dir=backup, batch_size=batch,
                             accept_data_loss=True)
        assert applied.succeeded, applied.to_yaml()
        t_apply = time.perf_counter() - t0
        t0 = time.perf_counter()
        first = finalize_migration(url, backup)
        assert first.succeeded, first.to_yaml()
        t_first = time.perf_counter() - t0
        print(f"  apply {t_apply:.1f}s, first finalize {t_first:.1f}s "
              f"(load {os.getloadavg()[0]:.2f})", flush=True)
        # a client writes a few source keys once finalize is done (no capture runs)
        for i in range(LATE):
            client.hset(f"doc:late-{i}", mapping={"title": "late", "tag": "t0", "price": 1})
        load_before = os.getloadavg()[0]
        got = in_child(_finalize_child, url, str(backup))
        load_after = os.getloadavg()[0]
        assert got["result"] == "succeeded", got
        sw = got["sweep"]
        check = sw["seconds"] - sw["build_seconds"]
        print(f"  second finalize: {got['total_s']:.2f}s in all; sweep {sw['seconds']:.2f}s = "
              f"sets {sw['build_seconds']:.2f}s ({sw['backed_up_keys']:,} backed-up keys, "
              f"{sw['left_keys']} left, {sw['disk_bytes'] / 2**20:.1f} MiB on disk) + "
              f"TYPE/lookups {check:.2f}s ({sw['checked']:,} checked, {sw['gone']:,} gone, "
              f"{sw['kept']:,} kept, {sw['deleted']} deleted: "
              f"{sw['checked'] / max(sw['seconds'], 1e-9):,.0f} keys/s); "
              f"late writes carried over {got['late']}; peak RSS {got['rss_peak_mb']:.0f} MB "
              f"(load {load_before:.2f} -> {load_after:.2f})", flush=True)
        client.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", default="200000", help="comma-separated N")
    ap.add_argument("--dims", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args(argv)
    print(f"{machine()}; load {Path('/proc/loadavg').read_text().strip()}", flush=True)
    for n in (int(x) for x in args.docs.split(",")):
        run_one(n, args.dims, args.batch)
    print(f"load at the end {Path('/proc/loadavg').read_text().strip()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
