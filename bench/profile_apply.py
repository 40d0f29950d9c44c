"""Where one in-process ``apply_plan`` spends its client CPU, by phase and by function.

    python bench/profile_apply.py --docs 50000 --plans quantize,rename --profile 25

Starts an embedded server (``--port``, default a free one), and for each plan: loads
``--docs`` hash documents of ``--dims`` dims, builds the FLAT index, applies the plan (one
worker) and prints the report's phase timings, the client CPU per document (process time of
the apply / documents) and the server's CPU. ``--profile N`` runs the apply under cProfile
and prints its N most expensive functions (cumulative and own time); the numbers of a
profiled run are inflated by the profiler, so compare profiled runs with profiled runs.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PLANS,
    PREFIX_PATCH,
    client_for,
    create_index,
    embedded_server,
    load_docs,
    make_rvlm_plan,
    reset,
    wait_indexed,
)

from rvlm.core.migrate.executor import apply_plan

PROFILED = {**PLANS, "prefix": PREFIX_PATCH}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--dims", type=int, default=128)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--plans", default="quantize,rename")
    ap.add_argument("--port", type=int)
    ap.add_argument("--profile", type=int, default=0, help="print the N top functions")
    ap.add_argument("--no-verify", action="store_true",
                    help="skip the every-document verification (to measure what it costs)")
    args = ap.parse_args()
    if args.no_verify:
        from rvlm.core.migrate import drop_recreate

        drop_recreate.verifies = lambda _plan: False  # type: ignore[assignment]
    # the client CPU of the transform phase alone (every thread of the process: reader,
    # writer and durable threads included), around DropRecreate.transform
    from rvlm.core.migrate.drop_recreate import DropRecreate

    transform_cpu: list[float] = []
    plain_transform = DropRecreate.transform
    # the time the garbage collector takes during the apply (every generation, every thread)
    gc_spent = [0.0, 0.0]  # total, start of the running collection

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            gc_spent[1] = time.perf_counter()
        else:
            gc_spent[0] += time.perf_counter() - gc_spent[1]

    gc.callbacks.append(on_gc)

    def timed_transform(self: DropRecreate, keyfile: Path) -> None:
        c0 = time.process_time()
        try:
            plain_transform(self, keyfile)
        finally:
            transform_cpu.append(time.process_time() - c0)

    DropRecreate.transform = timed_transform  # type: ignore[method-assign]
    with embedded_server(port=args.port) as (server, _work):
        client = client_for(server.url)
        for name in args.plans.split(","):
            for _ in range(args.repeat):
                reset(client)
                load_docs(client, args.docs, args.dims)
                create_index(client, args.dims)
                wait_indexed(client)
                plan = make_rvlm_plan(client, PROFILED[name])
                info = client.info("cpu")
                s0 = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
                with tempfile.TemporaryDirectory(prefix="rvlm-prof-") as tmp:
                    prof = cProfile.Profile() if args.profile else None
                    gc_spent[0] = 0.0
                    t0, c0 = time.perf_counter(), time.process_time()
                    if prof:
                        prof.enable()
                    report = apply_plan(server.url, plan, backup_dir=Path(tmp) / "b",
                                        batch_size=args.batch, workers=1,
                                        accept_data_loss=True)
                    if prof:
                        prof.disable()
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                    in_gc = gc_spent[0]
                assert report.succeeded, report.error or report.validation.errors
                info = client.info("cpu")
                s1 = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
                phases = "  ".join(f"{k} {v:.2f}" for k, v in report.timings.items())
                tcpu = transform_cpu.pop() if transform_cpu else float("nan")
                print(f"{name:16s} wall {wall:5.2f} s  client CPU {cpu:5.2f} s = "
                      f"{cpu / args.docs * 1e6:5.1f} us/doc (transform {tcpu:5.2f} s = "
                      f"{tcpu / args.docs * 1e6:4.1f} us/doc; gc {in_gc:4.2f} s)  "
                      f"server CPU {s1 - s0:5.2f} s  load {os.getloadavg()[0]:.1f}\n    {phases}",
                      flush=True)
                if prof:
                    st = pstats.Stats(prof)
                    st.sort_stats("tottime").print_stats(args.profile)
                    st.sort_stats("cumulative").print_stats(args.profile)
        reset(client)


if __name__ == "__main__":
    main()
