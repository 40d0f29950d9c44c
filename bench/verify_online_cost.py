"""What online mode's check of every document before the cut-over costs (issue #13).

    python bench/verify_online_cost.py --docs 20000 --dims 384 --repeat 3

On an embedded Redis: load ``--docs`` hash documents (``--dims``-d float32 vectors, FLAT
index: the index build is not what is measured), run one online apply (rename ``title`` ->
``name`` + quantize to float16, target prefix ``doc_v2:``) so every target exists, then:

* **the check alone** (``verify_targets``, the code the apply runs before the cut-over),
  ``--repeat`` times: wall time, rvlm's CPU (``process_time``)
  and Redis's main-thread CPU (``INFO cpu``: ``used_cpu_*_main_thread``), per document;
* with ``--reader S``, the check alone runs while another process queries the alias (a
  full-text query every document matches, and a KNN query) every ``S`` seconds, as
  ``bench/online.py``'s reader does: Redis's main thread is then shared, each round trip
  waits behind the queries, and the steps' sizing shows;
* **where a step's time goes** (``--breakdown``): the same work in fixed steps of
  ``--step`` keys, one stage at a time, each stage's wall time and Redis main-thread CPU
  summed, both ways the check has been made: with digests (before: the sources read, the
  transform, ``written_of`` client-side, ``check_written``: a Lua script taking SHA-1s in
  the server, then ``HLEN`` + ``PEXPIRETIME``: three round trips), and read back (now: the
  sources and their targets read whole in one pipeline, the transform, the comparison
  client-side). The transform is the same both ways (counted once).

Pytest does not run this; numbers go in bench/RESULTS.md, section 7.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    INDEX,
    RENAME_QUANTIZE_PATCH,
    client_for,
    create_index,
    embedded_server,
    key,
    load_docs,
    machine,
    wait_indexed,
)
from online import ALIAS

from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.online.copier import OnlineCopy
from rvlm.core.migrate.online.mirror import Mirror
from rvlm.core.migrate.online.verify import check_targets, verify_targets
from rvlm.core.migrate.planner import PlanOptions, make_plan
from rvlm.core.migrate.transform import transform_batch
from rvlm.core.plugins.context import ApplyContext
from rvlm.core.plugins.host import get_host
from rvlm.core.redis import wire
from rvlm.core.redis.capabilities import detect
from rvlm.core.redis.docio import verify as docio_verify
from rvlm.core.redis.docio.verify import check_written, written_of
from rvlm.core.redis.docio.write import KeyWrite
from rvlm.core.schema.patch import patch_from_dict
from rvlm.core.storage.keylog import KeyLog
from rvlm.core.storage.pending import PendingKeys

TARGET_PREFIX = "doc_v2:"
#: bench/online.py's change: rename title -> name, float32 -> float16, a new index name
PATCH: dict[str, Any] = {"version": 1, "changes": {**RENAME_QUANTIZE_PATCH["changes"],
                                                   "index": {"name": f"{INDEX}_v2"}}}
T = TypeVar("T")


def server_cpu(client: Any) -> float:
    """Seconds of CPU Redis's main thread has used (user + system)."""
    info = client.info("cpu")
    return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])


def chunks(n: int, size: int) -> Iterator[list[bytes]]:
    for start in range(0, n, size):
        yield [key(i) for i in range(start, min(n, start + size))]


class Stages:
    """Wall time and Redis main-thread CPU summed per named stage."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.wall: dict[str, float] = {}
        self.server: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], T]) -> T:
        s0 = server_cpu(self.client)
        t0 = time.perf_counter()
        out = fn()
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - t0
        self.server[name] = self.server.get(name, 0.0) + server_cpu(self.client) - s0
        return out


def _read_alias(url: str, n: int, dims: int, every: float, stop: Any, counts: Any) -> None:
    """Child process: ``bench/online.py``'s reader on the alias until ``stop`` is set."""
    from online import Reader

    reader = Reader(url, ALIAS, n, dims, every)
    reader.start()
    stop.wait()
    reader.stop.set()
    reader.join()
    counts.put((reader.queries, reader.failed))


def engine_for(client: Any, plan: Any, work: Path, batch: int) -> OnlineCopy:
    host = get_host()
    ctx = ApplyContext(plan=plan, capabilities=detect(client), client=client)
    mirror = Mirror(plan, host, ctx, transform_batch)
    return OnlineCopy(client, mirror, PendingKeys(work / "pending"), [],
                      KeyLog(work / "written.keys"), batch_size=batch)


def breakdown(client: Any, engine: OnlineCopy, n: int, step: int) -> Stages:
    """One pass over the ``n`` documents in steps of ``step``, stage by stage, both ways."""
    st = Stages(client)
    mirror = engine.mirror
    # the digests as the check took them before: by the server's script (check_written now
    # takes them client-side for a server on this machine)
    docio_verify.DIGESTS_ON_SERVER = True
    for keys in chunks(n, step):
        # the digests (before this session): read, transform, digest each side, HLEN + expiry
        sources = st.run("digests: read sources", lambda keys=keys: mirror.read(client, keys))
        docs, _deletes = st.run("transform", lambda s=sources: mirror.targets(s))

        def refs(docs: Any = docs) -> list[Any]:
            return [(d.key, None, False, written_of("hash", KeyWrite.edit(
                d.key, dict(d.fields or {}), (), None))) for d in docs]

        expected = st.run("digests: expected (client SHA-1)", refs)
        got = st.run("digests: check_written (server Lua)",
                     lambda r=expected: check_written(client, r, "hash"))
        assert all(o == "ok" for o in got), got[:5]
        st.run("digests: HLEN + PEXPIRETIME", lambda docs=docs: wire.execute(
            client, [c for d in docs for c in ((b"HLEN", d.key), (b"PEXPIRETIME", d.key))]))
        # read back (this session): sources and targets in one pipeline, compared here
        sources, have = st.run("read back: sources + targets, 1 pipeline",
                               lambda keys=keys: mirror.read_with_targets(client, keys))
        docs, deletes = mirror.targets(sources)
        outcomes, _extra = st.run("read back: compare (client)",
                                  lambda d=docs, x=deletes, h=have: check_targets(
                                      client, "hash", d, x, h))
        assert all(o == "ok" for o in outcomes), outcomes[:5]
    return st


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--breakdown", action="store_true")
    ap.add_argument("--reader", type=float, default=0.0,
                    help="seconds between a reader's queries during the check (0: none)")
    ap.add_argument("--step", type=int, default=200, help="keys per step of --breakdown")
    args = ap.parse_args()
    print(machine())
    print(f"{args.docs:,} docs x {args.dims} dims, FLAT, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    with embedded_server() as (server, _work):
        client = client_for(server.url)
        load_docs(client, args.docs, args.dims)
        create_index(client, args.dims)
        wait_indexed(client)
        client.execute_command("FT.ALIASADD", ALIAS, INDEX)
        plan = make_plan(client, INDEX, patch=patch_from_dict(PATCH, "bench"),
                         options=PlanOptions(mode="online", alias=ALIAS,
                                             target_prefix=TARGET_PREFIX))
        assert plan.supported, plan.blocked_reasons
        with tempfile.TemporaryDirectory(prefix="rvlm-vcost-") as tmp:
            t0 = time.perf_counter()
            report = apply_plan(server.url, plan, backup_dir=Path(tmp) / "b",
                                batch_size=args.batch, accept_data_loss=True)
            assert report.succeeded, report.error
            print(f"online apply {time.perf_counter() - t0:.1f} s; its check of every "
                  f"document: {report.online['verified']}", flush=True)
        # the targets exist and hold the transform; the source keeps its keys
        mp = multiprocessing.get_context("spawn")
        stop, counts = mp.Event(), mp.Queue()
        reader = None
        if args.reader > 0:
            reader = mp.Process(target=_read_alias, args=(server.url, args.docs, args.dims,
                                                          args.reader, stop, counts))
            reader.start()
            time.sleep(2.0)  # started and querying
        with tempfile.TemporaryDirectory(prefix="rvlm-vcost-") as tmp:
            engine = engine_for(client, plan, Path(tmp), args.batch)
            rows = []
            for _ in range(args.repeat):
                c0, s0, t0 = time.process_time(), server_cpu(client), time.perf_counter()
                got = verify_targets(engine, chunks(args.docs, 1000))
                wall = time.perf_counter() - t0
                rows.append((wall, time.process_time() - c0, server_cpu(client) - s0))
                assert got.passed and got.ok == args.docs, got
                print(f"  check alone: {wall:6.2f} s wall, rvlm CPU {rows[-1][1]:6.2f} s, "
                      f"Redis main thread {rows[-1][2]:6.2f} s, load "
                      f"{os.getloadavg()[0]:.1f}",
                      flush=True)
            per = 1e6 / args.docs
            print(f"check alone, median of {args.repeat}: per document "
                  f"{statistics.median(r[0] for r in rows) * per:.0f} us wall, "
                  f"{statistics.median(r[1] for r in rows) * per:.0f} us rvlm CPU, "
                  f"{statistics.median(r[2] for r in rows) * per:.0f} us Redis main thread",
                  flush=True)
            if reader is not None:
                stop.set()
                reader.join()
                queries, failed = counts.get()
                print(f"reader: {queries:,} queries during the checks, {failed} failed")
            if args.breakdown:
                st = breakdown(client, engine, args.docs, args.step)
                print(f"where it goes, steps of {args.step} keys (per document):")
                for name in st.wall:
                    print(f"  {name:36s} {st.wall[name] * per:7.1f} us wall  "
                          f"{st.server[name] * per:7.1f} us Redis")
        print(f"load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
