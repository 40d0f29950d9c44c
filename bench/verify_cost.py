"""What the verification pass costs (issue #12): every document a plan rewrote is checked
against the digest of what the apply wrote to it, before apply says succeeded.

For each plan (quantize float32 -> float16, rename, rename + quantize) on ``--docs`` hash
documents of ``--dims`` dimensions (FLAT index): load, apply (one worker), and read the
report's phase timings: ``verify`` against ``transform`` (the pass runs while the server
builds the target index, so ``indexing`` is what was left to wait after it). Then the pass
alone, ``--repeat`` times, over the same backup dir (``verify_documents``), for its docs/s.
Medians.

    python bench/verify_cost.py --docs 50000 --dims 128 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PLANS,
    client_for,
    create_index,
    embedded_server,
    load_docs,
    machine,
    make_rvlm_plan,
    reset,
    wait_indexed,
)

from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.verify import verify_documents


def _server_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--dims", type=int, default=128)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--plans", default=",".join(PLANS))
    args = ap.parse_args()
    print(machine())
    print(f"{args.docs:,} docs x {args.dims} dims, batch {args.batch}, load average "
          f"{os.getloadavg()[0]:.1f}")
    with embedded_server() as (server, _work):
        client = client_for(server.url)
        for name in args.plans.split(","):
            applied: list[tuple[float, float, float]] = []
            alone: list[float] = []
            cpu: list[tuple[float, float]] = []
            apply_cpu: list[tuple[float, float]] = []
            for _ in range(args.repeat):
                reset(client)
                load_docs(client, args.docs, args.dims)
                create_index(client, args.dims)
                wait_indexed(client)
                plan = make_rvlm_plan(client, PLANS[name])
                with tempfile.TemporaryDirectory(prefix="rvlm-verify-") as tmp:
                    backup = Path(tmp) / "b"
                    a0, as0 = time.process_time(), _server_cpu(client)
                    report = apply_plan(server.url, plan, backup_dir=backup,
                                        batch_size=args.batch, workers=1,
                                        accept_data_loss=True)
                    assert report.succeeded, report.error or report.validation.errors
                    apply_cpu.append((time.process_time() - a0, _server_cpu(client) - as0))
                    applied.append((report.timings.get("transform", 0.0),
                                    report.timings.get("verify", 0.0),
                                    report.timings.get("indexing", 0.0)))
                    t0, c0, s0 = time.perf_counter(), time.process_time(), _server_cpu(client)
                    checked = verify_documents(client, plan, backup)
                    alone.append(time.perf_counter() - t0)
                    cpu.append((time.process_time() - c0, _server_cpu(client) - s0))
                    assert checked.passed and checked.checked == args.docs, checked
            transform = statistics.median(a[0] for a in applied)
            verify = statistics.median(a[1] for a in applied)
            indexing = statistics.median(a[2] for a in applied)
            pass_s = statistics.median(alone)
            print(f"{name:16s} transform {transform:6.2f} s   verify (in apply) {verify:5.2f} s "
                  f"= {verify / transform:5.1%} of the transform (indexing waited "
                  f"{indexing:4.2f} s after it)   pass alone {pass_s:5.2f} s "
                  f"= {args.docs / pass_s:,.0f} docs/s, CPU rvlm "
                  f"{statistics.median(c[0] for c in cpu):.2f} s + server "
                  f"{statistics.median(c[1] for c in cpu):.2f} s (the whole apply: rvlm "
                  f"{statistics.median(c[0] for c in apply_cpu):.2f} s + server "
                  f"{statistics.median(c[1] for c in apply_cpu):.2f} s)   load "
                  f"{os.getloadavg()[0]:.1f}")
        reset(client)


if __name__ == "__main__":
    main()
