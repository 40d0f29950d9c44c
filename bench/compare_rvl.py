"""rvlm against RedisVL's ``rvl migrate`` (redisvl 0.28.0) on the same data and server.

    pip install redisvl==0.28.0        # not a dependency of rvlm; this script installs nothing
    python bench/compare_rvl.py --docs 20000

Starts one embedded Redis (Search + JSON), then for each scenario

* ``rename``:   rename the hash field ``title`` to ``name`` (a schema patch),
* ``quantize``: the vector field's datatype float32 -> float16,

loads ``--docs`` documents (title, tag, price, a float32 vector of ``--dims`` dimensions in an
``--algorithm`` index), lets the index finish, and runs the migration once with RedisVL's
Python API (``MigrationPlanner().create_plan(index, redis_url=..., schema_patch_path=...)``,
``MigrationExecutor().apply(plan, redis_url=..., backup_dir=..., batch_size=...)``) and once
with rvlm (``make_plan`` + ``apply_plan``), reloading the same data in between. Each migrator
runs in its own spawned child process so its peak RSS (``ru_maxrss``) is its own.

Reported per run: total time (the apply call), transform time (document rewriting: rvlm's
``transform`` phase; RedisVL's dump (vectors read into its backup, before the drop; taken from
its progress messages, as its report leaves it out) + field-rename + key-rename + quantize
phases), downtime (from the
drop of the source index until the new one is indexed, as each reports it), peak RSS; then the
ratios rvl / rvlm (above 1: rvlm is faster or smaller).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    INDEX,
    QUANTIZE_PATCH,
    RENAME_PATCH,
    client_for,
    create_index,
    embedded_server,
    in_child,
    load_docs,
    machine,
    peak_rss_mb,
    reset,
    wait_indexed,
)

SCENARIOS: dict[str, dict[str, Any]] = {"rename": RENAME_PATCH, "quantize": QUANTIZE_PATCH}
RVL_VERSION = "0.28.0"


def redisvl_version() -> str | None:
    try:
        import redisvl
    except ImportError:
        return None
    return str(getattr(redisvl, "__version__", "unknown"))


def _run_rvl(url: str, patch_path: str, backup_dir: str, batch: int, workers: int,
             out: Any) -> None:
    """Child process: RedisVL plan + apply."""
    from redisvl.migration import MigrationExecutor, MigrationPlanner

    base = peak_rss_mb()
    dump: list[float] = []

    def progress(step: str, detail: str | None) -> None:
        # the dump phase (reading the vectors into the backup) is not in the report's
        # timings; its progress message says "done (1.23s)"
        m = re.fullmatch(r"done \(([0-9.]+)s\)", detail or "")
        if step == "dump" and m:
            dump.append(float(m.group(1)))

    t0 = time.perf_counter()
    plan = MigrationPlanner().create_plan(INDEX, redis_url=url, schema_patch_path=patch_path)
    t1 = time.perf_counter()
    report = MigrationExecutor().apply(plan, redis_url=url, backup_dir=backup_dir,
                                       batch_size=batch, num_workers=workers,
                                       progress_callback=progress)
    total = time.perf_counter() - t1
    t = report.timings
    transform = sum(dump) + sum(x or 0.0 for x in (t.field_rename_duration_seconds,
                                                   t.key_rename_duration_seconds,
                                                   t.quantize_duration_seconds))
    out.send({"result": report.result, "plan_s": t1 - t0, "total_s": total,
              "transform_s": transform, "downtime_s": t.downtime_duration_seconds or 0.0,
              "rss_start_mb": base, "rss_peak_mb": peak_rss_mb(),
              "errors": list(report.validation.errors)})
    out.close()


def _run_rvlm(url: str, patch_path: str, backup_dir: str, batch: int, workers: int,
              out: Any) -> None:
    """Child process: rvlm plan + apply."""
    from rvlm.core.migrate.executor import apply_plan
    from rvlm.core.migrate.planner import make_plan
    from rvlm.core.plugins.host import get_host
    from rvlm.core.schema.patch import load_patch

    base = peak_rss_mb()
    t0 = time.perf_counter()
    host = get_host()
    client = client_for(url)
    plan = make_plan(client, INDEX, patch=load_patch(patch_path, tuple(host.patch_sections())),
                     host=host)
    client.close()
    t1 = time.perf_counter()
    report = apply_plan(url, plan, backup_dir=backup_dir, batch_size=batch, workers=workers,
                        accept_data_loss=True)
    total = time.perf_counter() - t1
    out.send({"result": report.result, "plan_s": t1 - t0, "total_s": total,
              "transform_s": report.timings.get("transform", 0.0),
              "downtime_s": report.downtime_duration_seconds or 0.0,
              "rss_start_mb": base, "rss_peak_mb": peak_rss_mb(),
              "errors": list(report.validation.errors) + ([report.error] if report.error
                                                          else [])})
    out.close()


def _reload(url: str, n: int, dims: int, algorithm: str) -> None:
    client = client_for(url)
    reset(client)
    load_docs(client, n, dims)
    create_index(client, dims, algorithm=algorithm)
    wait_indexed(client)
    client.close()


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--algorithm", default="HNSW", choices=["HNSW", "FLAT"])
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--scenarios", default="rename,quantize")
    args = ap.parse_args(argv)
    version = redisvl_version()
    if version is None:
        print("redisvl is not installed. Install it (in this venv or a separate one with rvlm "
              f"installed): pip install redisvl=={RVL_VERSION}")
        return 2
    if version != RVL_VERSION:
        print(f"warning: redisvl {version} is installed; the comparison was written for "
              f"{RVL_VERSION}")
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    print(f"machine: {machine()}; redisvl {version}")
    print(f"data: {args.docs:,} hash docs (title TEXT, tag TAG, price NUMERIC, float32 "
          f"{args.algorithm} vector of {args.dims} dims); batch {args.batch}, "
          f"workers {args.workers}")
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    with embedded_server() as (server, work):
        for scenario in scenarios:
            patch_path = work / f"{scenario}.yaml"
            patch_path.write_text(yaml.safe_dump(SCENARIOS[scenario], sort_keys=False))
            results: dict[str, dict[str, Any]] = {}
            for tool, target in (("rvl", _run_rvl), ("rvlm", _run_rvlm)):
                _reload(server.url, args.docs, args.dims, args.algorithm)
                got = in_child(target, server.url, str(patch_path),
                                str(work / f"backup-{scenario}-{tool}"), args.batch,
                                args.workers)
                results[tool] = got
                status = got["result"]
                if status != "succeeded":
                    status += f" ({'; '.join(map(str, got.get('errors', [])))[:200]})"
                print(f"{scenario:9s} {tool:5s} {status}: total {got.get('total_s', 0):.2f}s, "
                      f"transform {got.get('transform_s', 0):.2f}s, downtime "
                      f"{got.get('downtime_s', 0):.2f}s, peak RSS "
                      f"{got.get('rss_peak_mb', 0):.0f} MB (at start "
                      f"{got.get('rss_start_mb', 0):.0f} MB)", flush=True)
            rows.append((scenario, results["rvl"], results["rvlm"]))
    print()
    print("ratios rvl / rvlm (above 1.00x: rvlm takes less):")
    print(f"{'scenario':10s} {'total':>8s} {'transform':>10s} {'downtime':>9s} {'peak RSS':>9s}")
    for scenario, rvl, rvlm in rows:
        if rvl["result"] == "crashed" or rvlm["result"] == "crashed":
            print(f"{scenario:10s} (a run crashed)")
            continue
        print(f"{scenario:10s} {_ratio(rvl['total_s'], rvlm['total_s']):>8s} "
              f"{_ratio(rvl['transform_s'], rvlm['transform_s']):>10s} "
              f"{_ratio(rvl['downtime_s'], rvlm['downtime_s']):>9s} "
              f"{_ratio(rvl['rss_peak_mb'], rvlm['rss_peak_mb']):>9s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
