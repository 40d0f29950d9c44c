"""What a rename + quantize apply costs before its first change: checks, keys, collision check,
the source's recall queries (issue #17).

    python bench/before_drop.py --docs 1000000 --repeat 3 --base /path/to/old/checkout

Loads ``--docs`` hash documents (128-d float32) into an embedded server, builds the FLAT index,
then runs ``apply_plan`` in-process up to the journal's ``pre_drop_done`` and stops it there (an
exception raised at that phase: nothing is mutated, so every run starts from the same data).
Each run is a child process; with ``--base`` (a checkout whose ``rvlm`` package is put first on
the child's path) runs alternate between that tree and this one (the order flips every
repeat). Printed per run: wall time to the drop, the child's CPU, the server's CPU (``INFO
cpu``) and, for each step function the tree has (the enumeration, the collision check, the
quality gate's source queries...), its wall, thread CPU and server CPU. Hold the bench lock
for 1M (about 1 minute to load).
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def child(url: str, label: str) -> None:
    """One apply up to the drop, instrumented; prints one line."""
    from _common import RENAME_QUANTIZE_PATCH, client_for, make_rvlm_plan

    import rvlm
    from rvlm.core.migrate import drop_recreate, run
    from rvlm.core.migrate.executor import apply_plan

    class Stop(Exception):
        pass

    mon = client_for(url)

    def server_cpu() -> float:
        i = mon.info("cpu")
        return float(i["used_cpu_user"]) + float(i["used_cpu_sys"])

    steps: dict[str, list[float]] = {}

    def wrap(owner: Any, name: str) -> None:
        f = getattr(owner, name, None)
        if f is None:
            return

        @functools.wraps(f)
        def timed(*a: Any, **k: Any) -> Any:
            s0, t0, c0 = server_cpu(), time.perf_counter(), time.thread_time()
            try:
                return f(*a, **k)
            finally:
                rec = steps.setdefault(name, [0.0, 0.0, 0.0])
                rec[0] += time.perf_counter() - t0
                rec[1] += time.thread_time() - c0
                rec[2] += server_cpu() - s0

        setattr(owner, name, timed)

    targets: list[tuple[Any, str]] = [(drop_recreate, "enumerate_keys"),
                                      (drop_recreate.DropRecreate, "check_collisions"),
                                      (run.Run, "ask_source")]
    try:
        from rvlm.core.migrate import collisions
        targets.append((collisions.StreamedCollisions, "finish"))
    except ImportError:  # a tree from before the streamed check
        pass
    for owner, name in targets:
        wrap(owner, name)
    phase = run.Run.phase

    def stop_at_drop(self: Any, value: str, **kw: Any) -> None:
        if value == "pre_drop_done":
            raise Stop
        phase(self, value, **kw)

    run.Run.phase = stop_at_drop  # type: ignore[method-assign]
    plan = make_rvlm_plan(client_for(url), RENAME_QUANTIZE_PATCH)
    with tempfile.TemporaryDirectory(prefix="rvlm-before-drop-") as tmp:
        s0, t0, c0 = server_cpu(), time.perf_counter(), time.process_time()
        try:
            apply_plan(url, plan, backup_dir=Path(tmp) / "b", batch_size=500, workers=1,
                       accept_data_loss=True)
            raise SystemExit("the apply did not reach pre_drop_done")
        except Stop:
            pass
        wall, cpu, srv = time.perf_counter() - t0, time.process_time() - c0, server_cpu() - s0
    tree = Path(rvlm.__file__).resolve().parent.parent
    detail = "  ".join(f"{k} {v[0]:.2f}s (client {v[1]:.2f}, server {v[2]:.2f})"
                       for k, v in steps.items())
    print(f"{label:5s} to the drop {wall:.2f}s, CPU client {cpu:.2f} server {srv:.2f}, "
          f"load {os.getloadavg()[0]:.1f} [{tree}]\n      {detail}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--base", type=Path, help="an older checkout to run alternately")
    ap.add_argument("--child", nargs=2, metavar=("URL", "LABEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    from _common import client_for, create_index, embedded_server, load_docs, reset, wait_indexed

    this = HERE.parent
    trees = [("new", this)] + ([("base", args.base.resolve())] if args.base else [])
    with embedded_server() as (server, _work):
        client = client_for(server.url)
        reset(client)
        t0 = time.perf_counter()
        load_docs(client, args.docs, 128)
        create_index(client, 128)
        wait_indexed(client)
        print(f"{args.docs} documents loaded and indexed in {time.perf_counter() - t0:.1f}s",
              flush=True)
        for r in range(args.repeat):
            for label, tree in (trees if r % 2 else trees[::-1]):
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(HERE)])}
                subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                                server.url, label], env=env, check=True)


if __name__ == "__main__":
    main()
