"""Every built-in change, whole ``rvlm apply`` process, against its physical floor (and rvl).

    python bench/floor.py --preset full        # the table of bench/RESULTS.md, one command
    python bench/floor.py --preset quick       # 20K FLAT, every change but algorithm, once
    python bench/floor.py                      # 50K x 128-d, FLAT and HNSW, every change, 3 repeats
    python bench/floor.py --algorithms flat --changes quantize,rename --repeat 5
    python bench/floor.py --docs 1000000 --algorithms flat --changes rename_quantize \\
        --tools rvlm,floor --repeat 1          # the 1M run (about 6 minutes, see README)

For each index algorithm (``--algorithms``), change type (``--changes``) and repeat, the script
runs three *tools* on the same data, in an order that rotates with the repeat (interleaved, so a
burst of load on this shared machine hits all three alike):

``rvlm``
    ``rvlm apply --plan P --backup-dir B --yes --accept-data-loss`` as a subprocess, timed from
    spawn to exit (Python start-up, imports, checks, key enumeration, backup, transform,
    FT.CREATE, indexing, validation and exit: everything the user waits for). The plan is made
    before the clock starts (``rvlm plan``). Its ``--benchmark-out`` phase timings say where the
    time goes; "start+exit" is the whole process minus those phases. Peak RSS is the child's
    own ``ru_maxrss`` (``os.wait4``).
``floor``
    The physical floor, with no index present: the bare pipelined document work the change
    needs (the script knows the keys, ``doc:0 .. doc:N-1``, so it enumerates nothing; batches of
    ``--batch`` keys, one hiredis-packed pipeline to read and one to write per batch on a raw
    socket; numpy for a whole batch of vectors), then ``FT.CREATE`` of the target index and the
    server's own time until FT.INFO says it is indexed (polled every 2 ms at first and near the
    end, rarely in between, so the polls do not slow the build). Measured in this
    process around exactly that work: no interpreter start-up, no enumeration, no backup.
``rvl``
    RedisVL's ``rvl migrate apply --plan P --backup-dir B`` (redisvl 0.28.0) as a subprocess from
    its own venv (``--rvl-venv``, default ``.venv-rvl`` next to ``.venv``; see README), timed the
    same way; its plan is made with ``rvl migrate plan`` before the clock starts. Skipped with a
    note when that venv is missing.

Changes (``--changes``; the data is hash documents ``doc:{i}`` with title TEXT, tag TAG, price
NUMERIC, an unindexed ``brand`` and a float32 ``embedding`` of ``--dims`` dims):

=================  =======================================  ===================================
change             patch                                    floor's document work
=================  =======================================  ===================================
``rename``         rename field ``title`` -> ``name``       HMGET title; HSET name + HDEL title
``quantize``       ``embedding`` float32 -> float16         HMGET embedding; numpy; HSET
``prefix``         index prefix ``doc:`` -> ``item:``       RENAMENX doc:i item:i
``add``            add field ``brand`` (TAG)                none
``remove``         remove field ``tag``                     none
``algorithm``      FLAT -> HNSW, or HNSW -> FLAT            none
``rename_quantize``  rename and quantize together           HMGET title embedding; HSET; HDEL
=================  =======================================  ===================================

Every tool's result is checked (document count, failures, the target schema's fields, three
sampled documents) so that a tool that skipped work cannot look fast. Each run starts from the
same data: a snapshot (RDB) made once and loaded by a server restart, so no run inherits
another's memory state; ``rvlm`` and ``rvl`` runs then build the source index (not timed).

CPU: each run also records the CPU seconds of the tool (the child process, or this process
around the floor's work) and of the server (``INFO cpu``, every thread); the CPU ratio
(client + server) is steadier than the wall ratio when the machine is loaded.

Printed: each run, then per algorithm and change the medians, the ratios rvlm / floor and
rvl / floor (median of each), rvlm's phases, the peak RSS, and the load average (1 min) seen
during the runs. ``--json F`` writes everything. ``--workers 1,2`` also runs rvlm with each
worker count (rows ``rvlm-w2``...).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hiredis
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine

from rvlm.core.redis.connection import connect, next_poll, read_index
from rvlm.embedded.server import EmbeddedServer, free_port

INDEX = "bench_idx"
PREFIX = "doc:"
NEW_PREFIX = "item:"
ALL_CHANGES = ("rename", "quantize", "prefix", "add", "remove", "algorithm")
EXTRA_CHANGES = ("rename_quantize",)
ALL_TOOLS = ("rvlm", "floor", "rvl")
POLL_S = 0.002


# --------------------------------------------------------------------------- schema


def fields_for(algorithm: str, dims: int, *, datatype: str = "FLOAT32", title: str = "title",
               tag: bool = True, brand: bool = False) -> list[list[str]]:
    """FT.CREATE field clauses of the bench index (or a change's target)."""
    algo = algorithm.upper()
    vec = ["embedding", "VECTOR", algo, "6", "TYPE", datatype, "DIM", str(dims),
           "DISTANCE_METRIC", "COSINE"]
    out = [[title, "TEXT"]]
    if tag:
        out.append(["tag", "TAG"])
    out.append(["price", "NUMERIC"])
    if brand:
        out.append(["brand", "TAG"])
    out.append(vec)
    return out


def create_args(prefix: str, fields: list[list[str]]) -> list[str]:
    return ["FT.CREATE", INDEX, "ON", "HASH", "PREFIX", "1", prefix, "SCHEMA",
            *[a for f in fields for a in f]]


def other_algorithm(algorithm: str) -> str:
    return "hnsw" if algorithm.lower() == "flat" else "flat"


class Change:
    """One change type: its patch, the target index, the floor's work and the check."""

    def __init__(self, name: str, patch: dict[str, Any], *, rename: bool = False,
                 quantize: bool = False, prefix: bool = False, add: bool = False,
                 remove: bool = False, algorithm: bool = False) -> None:
        self.name = name
        self.patch = {"version": 1, "changes": patch}
        self.rename, self.quantize, self.prefix = rename, quantize, prefix
        self.add, self.remove, self.algorithm = add, remove, algorithm

    def patch_for(self, algorithm: str) -> dict[str, Any]:
        if not self.algorithm:
            return self.patch
        return {"version": 1, "changes": {"update_fields": [
            {"name": "embedding", "attrs": {"algorithm": other_algorithm(algorithm)}}]}}

    def target_args(self, algorithm: str, dims: int) -> list[str]:
        algo = other_algorithm(algorithm) if self.algorithm else algorithm
        fields = fields_for(algo, dims, datatype="FLOAT16" if self.quantize else "FLOAT32",
                            title="name" if self.rename else "title", tag=not self.remove,
                            brand=self.add)
        return create_args(NEW_PREFIX if self.prefix else PREFIX, fields)

    def target_attributes(self, algorithm: str) -> set[str]:
        names = {"name" if self.rename else "title", "price", "embedding"}
        if not self.remove:
            names.add("tag")
        if self.add:
            names.add("brand")
        return names


CHANGES: dict[str, Change] = {
    "rename": Change("rename", {"rename_fields": [{"old_name": "title", "new_name": "name"}]},
                     rename=True),
    "quantize": Change("quantize", {"update_fields": [
        {"name": "embedding", "attrs": {"datatype": "float16"}}]}, quantize=True),
    "prefix": Change("prefix", {"index": {"prefix": NEW_PREFIX}}, prefix=True),
    "add": Change("add", {"add_fields": [{"name": "brand", "type": "tag"}]}, add=True),
    "remove": Change("remove", {"remove_fields": ["tag"]}, remove=True),
    "algorithm": Change("algorithm", {}, algorithm=True),
    "rename_quantize": Change("rename_quantize", {
        "rename_fields": [{"old_name": "title", "new_name": "name"}],
        "update_fields": [{"name": "embedding", "attrs": {"datatype": "float16"}}]},
        rename=True, quantize=True),
}


# --------------------------------------------------------------------------- raw wire


class Raw:
    """A bare RESP2 connection: commands packed by hiredis, one write, replies parsed by a
    hiredis Reader. What the floor uses, and nothing of rvlm."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()

    def run(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        pack = hiredis.pack_command
        self.sock.sendall(b"".join([pack(tuple(c)) for c in commands]))
        out: list[Any] = []
        gets, feed, recv = self.reader.gets, self.reader.feed, self.sock.recv
        n = len(commands)
        while len(out) < n:
            r = gets()
            if r is False:
                data = recv(1 << 20)
                if not data:
                    raise ConnectionError("server closed the connection")
                feed(data)
                continue
            out.append(r)
        for r in out:
            if isinstance(r, hiredis.ReplyError):
                raise RuntimeError(f"error reply: {r}")
        return out

    def one(self, *command: Any) -> Any:
        return self.run([command])[0]

    def close(self) -> None:
        self.sock.close()


def server_cpu(port: int) -> float:
    """CPU seconds the server process used so far (user + sys, every thread)."""
    conn = Raw(port)
    try:
        text = conn.one("INFO", "cpu").decode()
    finally:
        conn.close()
    got = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return float(got["used_cpu_user"]) + float(got["used_cpu_sys"])


def _info_map(reply: list[Any]) -> dict[bytes, Any]:
    return {reply[i]: reply[i + 1] for i in range(0, len(reply) - 1, 2)}


def wait_indexed_raw(conn: Raw, timeout: float = 7200.0) -> float:
    """Poll FT.INFO until the index is fully indexed; seconds waited. Every 2 ms at first and
    near the end, rarely in between (rvlm's :func:`next_poll` with a 2 ms ``low``): each
    FT.INFO holds Redis's main thread for up to milliseconds during an HNSW build, growing
    with the index, so polling every 2 ms throughout slowed the very build the floor times
    (50K x 128-d HNSW: rvlm came out at 0.79-0.92 of such a floor). The end is still seen
    within a few ms while the build's rate holds."""
    t0 = time.perf_counter()
    interval, before, at = POLL_S / 1.5, 0.0, t0
    while True:
        info = _info_map(conn.one("FT.INFO", INDEX))
        now = time.perf_counter()
        done = float(info[b"percent_indexed"])
        if int(info[b"indexing"]) == 0 and done >= 1.0:
            return now - t0
        if now - t0 > timeout:
            raise TimeoutError("index not ready")
        interval = next_poll(interval, before, done, now - at, low=POLL_S, high=2.0)
        before, at = done, now
        time.sleep(interval)


# --------------------------------------------------------------------------- data


def doc_key(i: int) -> bytes:
    return b"doc:%d" % i


def load(conn: Raw, n: int, dims: int, chunk: int = 2000) -> None:
    """``n`` deterministic hash documents, hiredis-packed pipelines."""
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        rng = np.random.default_rng(1000 + start)
        vecs = rng.standard_normal((count, dims)).astype(np.float32)
        cmds = []
        for j in range(count):
            i = start + j
            cmds.append((b"HSET", doc_key(i), b"title", b"document %d" % i,
                         b"tag", b"t%d" % (i % 16), b"price", b"%d" % (i % 1000),
                         b"brand", b"b%d" % (i % 7), b"embedding", vecs[j].tobytes()))
        conn.run(cmds)


class Bench:
    """One embedded server whose data is restored from a snapshot before every run."""

    def __init__(self, work: Path, n: int, dims: int, port: int | None = None) -> None:
        self.work, self.n, self.dims = work, n, dims
        self.server = EmbeddedServer(port=port or free_port(), directory=work / "server")
        self.snapshot = work / "snapshot.rdb"

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start(timeout=600)

    def stop(self) -> None:
        self.server.stop(timeout=120)

    def make_snapshot(self) -> float:
        self.start()
        conn = Raw(self.server.port)
        conn.one("FLUSHALL")
        t0 = time.perf_counter()
        load(conn, self.n, self.dims)
        seconds = time.perf_counter() - t0
        conn.one("SAVE")
        conn.close()
        shutil.copyfile(self.server.dir / "dump.rdb", self.snapshot)
        return seconds

    def restore(self) -> None:
        """Restart the server on the snapshot (no index)."""
        self.stop()
        shutil.copyfile(self.snapshot, self.server.dir / "dump.rdb")
        self.start()
        conn = Raw(self.server.port)
        try:
            got = int(conn.one("DBSIZE"))
        finally:
            conn.close()
        if got != self.n:
            raise SystemExit(f"snapshot restore gave {got} keys, expected {self.n}")

    def source_index(self, algorithm: str) -> float:
        conn = Raw(self.server.port)
        try:
            conn.one(*create_args(PREFIX, fields_for(algorithm, self.dims)))
            return wait_indexed_raw(conn)
        finally:
            conn.close()


# --------------------------------------------------------------------------- floor


def floor_work(conn: Raw, change: Change, n: int, batch: int) -> None:
    """The bare document work of ``change`` over ``doc:0 .. doc:n-1``, no index present."""
    if change.prefix:
        for start in range(0, n, batch):
            got = conn.run([(b"RENAMENX", doc_key(i), b"item:%d" % i)
                            for i in range(start, min(n, start + batch))])
            if any(r != 1 for r in got):
                raise RuntimeError("RENAMENX refused")
        return
    if not (change.rename or change.quantize):
        return
    reads = ([b"title"] if change.rename else []) + ([b"embedding"] if change.quantize else [])
    for start in range(0, n, batch):
        keys = [doc_key(i) for i in range(start, min(n, start + batch))]
        values = conn.run([(b"HMGET", k, *reads) for k in keys])
        if change.quantize:
            col = len(reads) - 1
            buf = np.frombuffer(b"".join([v[col] for v in values]), dtype=np.float32)
            half = buf.astype(np.float16).tobytes()
            step = len(half) // len(keys)
        cmds: list[tuple[Any, ...]] = []
        for j, k in enumerate(keys):
            args: list[Any] = [b"HSET", k]
            if change.rename:
                args += [b"name", values[j][0]]
            if change.quantize:
                args += [b"embedding", half[j * step:(j + 1) * step]]
            cmds.append(tuple(args))
            if change.rename:
                cmds.append((b"HDEL", k, b"title"))
        conn.run(cmds)


def run_floor(bench: Bench, change: Change, algorithm: str, batch: int) -> dict[str, Any]:
    bench.restore()
    conn = Raw(bench.server.port)
    try:
        s0 = server_cpu(bench.server.port)
        c0 = time.process_time()
        t0 = time.perf_counter()
        floor_work(conn, change, bench.n, batch)
        t1 = time.perf_counter()
        # the client's CPU is the document work's: polling FT.INFO (to time the index build
        # closely) is the measurement's, not the floor's
        cpu = time.process_time() - c0
        conn.one(*change.target_args(algorithm, bench.dims))
        wait_indexed_raw(conn)
        t2 = time.perf_counter()
        server = server_cpu(bench.server.port) - s0
    finally:
        conn.close()
    return {"seconds": t2 - t0, "phases": {"documents": t1 - t0, "index": t2 - t1},
            "cpu": cpu, "server_cpu": server}


# --------------------------------------------------------------------------- subprocess tools


def _hwm_kb(pid: int) -> int | None:
    """``pid``'s peak resident memory so far (VmHWM, KiB), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def timed_child(argv: list[str], log: Path, env: dict[str, str] | None = None
                ) -> tuple[float, int, float, float]:
    """Run ``argv`` to its end: (seconds from spawn to exit, exit code, peak RSS MiB, CPU
    seconds of the child and the children it waited for).

    The peak RSS is the child's own VmHWM, read every 20 ms while it runs (the last reading
    before it exits), not ``ru_maxrss``: Linux carries the spawning process's high-water mark
    across fork/vfork + exec, so ``ru_maxrss`` of a child is at least this bench's own peak
    (which holds 1M documents' worth of load buffers at 1M)."""
    import threading

    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=env)
        peak = [0]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                got = _hwm_kb(proc.pid)
                if got is not None:
                    peak[0] = max(peak[0], got)
                done.wait(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        done.set()
        watcher.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss_kb = peak[0] or usage.ru_maxrss  # (a child too short to be read: ru_maxrss)
    return (seconds, proc.returncode, rss_kb / 1024, usage.ru_utime + usage.ru_stime)


def startup_probe(bench: Bench, change: Change, algorithm: str, rvlm_bin: str, work: Path,
                  env: dict[str, str], repeat: int = 5) -> dict[str, float]:
    """Median seconds of ``python -c pass`` and of ``rvlm apply`` up to its first command to
    the server (a plan for ``change`` applied to a closed port: argument parsing, imports,
    plan load, plugins, backup dir; it exits 2 at the connection)."""
    # the plan is made against an empty index of the same schema (no document to wait for)
    conn = Raw(bench.server.port)
    args = create_args("probe:", fields_for(algorithm, bench.dims))
    args[1] = "probe_idx"
    conn.one(*args)
    patch = _write_patch(work / "probe-patch.yaml", change.patch_for(algorithm))
    plan = work / "probe-plan.yaml"
    try:
        subprocess.run([rvlm_bin, "plan", "--index", "probe_idx", "--schema-patch", str(patch),
                        "--url", bench.url, "--plan-out", str(plan)], check=True,
                       capture_output=True, env=env)
    finally:
        conn.one("FT.DROPINDEX", "probe_idx")
        conn.close()
    closed = f"redis://127.0.0.1:{bench.server.port + 1}/0"  # nothing listens there
    python = str(Path(rvlm_bin).parent / "python")
    if not Path(python).exists():  # rvlm is a wrapper script: the Python running this one
        python = sys.executable
    out: dict[str, list[float]] = {"python -c pass": [], "rvlm apply up to connect": []}
    for i in range(repeat):
        out["python -c pass"].append(
            timed_child([python, "-c", "pass"], work / "probe.log")[0])
        seconds, code, _rss, _cpu = timed_child(
            [rvlm_bin, "apply", "--plan", str(plan), "--backup-dir", str(work / f"probe-{i}"),
             "--url", closed, "--yes", "--accept-data-loss"], work / "probe.log", env=env)
        if code != 2:
            raise SystemExit(f"start-up probe: rvlm exited {code}, expected 2 (no server):\n"
                             f"{(work / 'probe.log').read_text()[-2000:]}")
        out["rvlm apply up to connect"].append(seconds)
    return {k: _median(v) for k, v in out.items()}


def _write_patch(path: Path, patch: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(patch, sort_keys=False))
    return path


def third_party_plugins() -> list[str]:
    """Names of the installed ``rvlm`` entry points (third-party plugins)."""
    from importlib import metadata

    return sorted({ep.name for ep in metadata.entry_points(group="rvlm")})


def run_rvlm(bench: Bench, change: Change, algorithm: str, batch: int, workers: int,
             rvlm_bin: str, run_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    bench.restore()
    bench.source_index(algorithm)
    patch = _write_patch(run_dir / "patch.yaml", change.patch_for(algorithm))
    plan = run_dir / "plan.yaml"
    subprocess.run([rvlm_bin, "plan", "--index", INDEX, "--schema-patch", str(patch),
                    "--url", bench.url, "--plan-out", str(plan)], check=True,
                   capture_output=True, env=env)
    timings = run_dir / "timings.yaml"
    argv = [rvlm_bin, "apply", "--plan", str(plan), "--backup-dir", str(run_dir / "backup"),
            "--url", bench.url, "--yes", "--accept-data-loss", "--batch-size", str(batch),
            "--workers", str(workers), "--benchmark-out", str(timings)]
    s0 = server_cpu(bench.server.port)
    seconds, code, rss, cpu = timed_child(argv, run_dir / "apply.log", env=env)
    server = server_cpu(bench.server.port) - s0
    if code != 0:
        raise SystemExit(f"rvlm apply exited {code}:\n{(run_dir / 'apply.log').read_text()}")
    got = yaml.safe_load(timings.read_text())
    # rvlm's own phases; the ``*_duration_seconds`` keys are RedisVL's names for sums of them
    phases = {k: float(v) for k, v in got["timings"].items()
              if not k.endswith("_duration_seconds") and v is not None}
    phases["start+exit"] = seconds - sum(phases.values())
    return {"seconds": seconds, "rss_mb": rss, "phases": phases, "cpu": cpu,
            "server_cpu": server, "rewritten": got["rvlm"]["documents_rewritten"]}


def run_rvl(bench: Bench, change: Change, algorithm: str, batch: int, rvl_bin: str,
            run_dir: Path) -> dict[str, Any]:
    bench.restore()
    bench.source_index(algorithm)
    patch = _write_patch(run_dir / "patch.yaml", change.patch_for(algorithm))
    plan = run_dir / "plan.yaml"
    subprocess.run([rvl_bin, "migrate", "plan", "--index", INDEX, "--schema-patch", str(patch),
                    "--url", bench.url, "--plan-out", str(plan)], check=True,
                   capture_output=True)
    report = run_dir / "report.yaml"
    argv = [rvl_bin, "migrate", "apply", "--plan", str(plan), "--backup-dir",
            str(run_dir / "backup"), "--url", bench.url, "--batch-size", str(batch),
            "--report-out", str(report)]
    s0 = server_cpu(bench.server.port)
    seconds, code, rss, cpu = timed_child(argv, run_dir / "apply.log")
    server = server_cpu(bench.server.port) - s0
    got = yaml.safe_load(report.read_text()) if report.exists() else {}
    if code != 0 or got.get("result") != "succeeded":
        raise SystemExit(f"rvl migrate apply failed (exit {code}, result "
                         f"{got.get('result')}):\n{(run_dir / 'apply.log').read_text()[-3000:]}")
    return {"seconds": seconds, "rss_mb": rss, "phases": {}, "cpu": cpu, "server_cpu": server}


# --------------------------------------------------------------------------- checks


def check_result(bench: Bench, change: Change, algorithm: str, tool: str) -> None:
    """The migrated data and index look like the change's target (all tools alike)."""
    client = connect(bench.url)
    try:
        info = read_index(client, INDEX)
        problems = []
        if info.stats.num_docs != bench.n or info.stats.indexing_failures:
            problems.append(f"{info.stats.num_docs} docs, {info.stats.indexing_failures} "
                            f"failures (expected {bench.n}, 0)")
        names = {f.name for f in info.schema.fields}
        if names != change.target_attributes(algorithm):
            problems.append(f"fields {sorted(names)}")
        vec = info.schema.field("embedding")
        want_algo = (other_algorithm(algorithm) if change.algorithm else algorithm).upper()
        if vec is None or str(vec.attrs.algorithm).upper() != want_algo:  # type: ignore[union-attr]
            problems.append(f"embedding {vec}")
        prefix = NEW_PREFIX if change.prefix else PREFIX
        width = 2 if change.quantize else 4
        for i in (0, bench.n // 2, bench.n - 1):
            k = f"{prefix}{i}".encode()
            got = client.hgetall(k)
            if not got:
                problems.append(f"{k!r} missing")
                continue
            if change.rename and (b"title" in got or got.get(b"name") != b"document %d" % i):
                problems.append(f"{k!r} not renamed")
            if len(got.get(b"embedding", b"")) != bench.dims * width:
                problems.append(f"{k!r} vector of {len(got.get(b'embedding', b''))} bytes")
        if problems:
            raise SystemExit(f"{tool} {algorithm} {change.name}: wrong result: "
                             + "; ".join(problems))
    finally:
        client.close()


# --------------------------------------------------------------------------- driver


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _rotate(tools: Sequence[str], r: int) -> list[str]:
    k = r % len(tools)
    return [*tools[k:], *tools[:k]]


@contextlib.contextmanager
def bench_dir(keep: bool) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="rvlm-floor-"))
    try:
        yield work
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _stop_on_sigterm() -> None:
    """SIGTERM ends the script like Ctrl-C: the server is stopped and the directory removed."""
    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


#: ``--preset``: suites run one after the other by one command (each: docs, algorithms,
#: changes, repeats, tools). ``full`` is the table of bench/RESULTS.md (issue #17);
#: ``quick`` is a smaller check of every change but the algorithm's (about 3 minutes on a quiet
#: machine; 16 at load 12).
PRESETS: dict[str, list[dict[str, Any]]] = {
    "full": [
        {"docs": 50_000, "algorithms": "flat", "changes": ",".join(ALL_CHANGES), "repeat": 3,
         "tools": "rvlm,floor,rvl"},
        {"docs": 50_000, "algorithms": "hnsw", "changes": ",".join(ALL_CHANGES), "repeat": 1,
         "tools": "rvlm,floor,rvl"},
        {"docs": 1_000_000, "algorithms": "flat", "changes": "rename_quantize", "repeat": 1,
         "tools": "rvlm,floor"},
    ],
    "quick": [  # no algorithm change: its HNSW build alone takes minutes on a busy machine
        {"docs": 20_000, "algorithms": "flat", "changes": "rename,quantize,prefix,add,remove",
         "repeat": 1, "tools": "rvlm,floor,rvl"},
    ],
}


def compile_package(rvlm_bin: str) -> None:
    """Byte-compile the rvlm package that ``rvlm_bin`` runs, as ``pip install`` does for an
    installed package: a development install under ``PYTHONDONTWRITEBYTECODE=1`` would
    otherwise compile every rvlm module from source at each start (a second of CPU on a
    loaded machine), which no user's install does."""
    python = str(Path(rvlm_bin).parent / "python")
    if not Path(python).exists():  # a wrapper script (e.g. --rvlm-base): compile nothing
        return
    found = subprocess.run([python, "-c", "import rvlm, os; print(os.path.dirname("
                            "rvlm.__file__))"], capture_output=True, text=True, check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([python, "-m", "compileall", "-q", found.stdout.strip()], check=True,
                   capture_output=True, env=env)


def main(argv: list[str] | None = None) -> int:
    _stop_on_sigterm()
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS),
                    help="run a predefined set of suites: 'full' (the table of "
                         "bench/RESULTS.md: 50K FLAT x3, 50K HNSW x1, 1M rename+quantize) or "
                         "'quick' (20K FLAT, every change but the algorithm's, once); "
                         "overrides --docs, --algorithms, --changes, --repeat, --tools")
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--dims", type=int, default=128)
    ap.add_argument("--batch", type=int, default=500, help="batch size of rvlm, rvl, floor")
    ap.add_argument("--algorithms", default="flat,hnsw")
    ap.add_argument("--changes", default=",".join(ALL_CHANGES),
                    help=f"comma-separated, of {', '.join((*ALL_CHANGES, *EXTRA_CHANGES))}")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS))
    ap.add_argument("--workers", default="1", help="rvlm worker counts, e.g. 1,2")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rvlm", default=str(Path(sys.executable).parent / "rvlm"),
                    help="the rvlm executable (default: next to this Python)")
    ap.add_argument("--rvlm-base", help="another rvlm executable (e.g. an older commit's, in "
                                        "its own venv) run the same way, as column 'base'")
    ap.add_argument("--rvl-venv", type=Path,
                    default=Path(sys.executable).parent.parent.parent / ".venv-rvl",
                    help="a venv with redisvl==0.28.0 (default: .venv-rvl beside .venv)")
    ap.add_argument("--plugins", choices=("builtin", "installed"), default="builtin",
                    help="rvlm with its built-in plugins only (default: installed third-party "
                         "plugins, e.g. the examples, disabled with RVLM_DISABLE_PLUGINS so "
                         "their imports are not counted), or with every installed one")
    ap.add_argument("--port", type=int, help="the server's port (default: a free one); the "
                                             "start-up probe aims at the next one, closed")
    ap.add_argument("--json", type=Path, help="write every run and the medians here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)

    suites = PRESETS[args.preset] if args.preset else [
        {"docs": args.docs, "algorithms": args.algorithms, "changes": args.changes,
         "repeat": args.repeat, "tools": args.tools}]
    for suite in suites:
        for c in suite["changes"].split(","):
            if c.strip() and c.strip() not in CHANGES:
                ap.error(f"unknown change {c!r}")
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    rvl_bin = str(args.rvl_venv / "bin" / "rvl")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    others = third_party_plugins()
    if args.plugins == "builtin" and others:
        env["RVLM_DISABLE_PLUGINS"] = ",".join(others)
    print(f"machine: {machine()}")
    print("rvlm plugins: built-in" + (f" (disabled for rvlm runs: {', '.join(others)})"
                                        if args.plugins == "builtin" and others else
                                        f", and installed: {', '.join(others) or 'none'}"))
    for exe in (args.rvlm, args.rvlm_base):
        if exe:
            compile_package(exe)
    started = time.perf_counter()
    results = []
    for suite in suites:
        results.append(run_suite(args, suite, workers, rvl_bin, env))
    elapsed = time.perf_counter() - started
    print()
    print(f"# all suites took {elapsed / 60:.1f} min; markdown for bench/RESULTS.md:")
    print()
    for got in results:
        print_markdown(got)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "machine": machine(), "suites": results,
                                         "elapsed_s": elapsed}, indent=2))
    return 0


def run_suite(args: argparse.Namespace, suite: dict[str, Any], workers: list[int],
              rvl_bin: str, env: dict[str, str]) -> dict[str, Any]:
    """One suite (docs, algorithms, changes, repeats, tools): every run, then its tables."""
    docs = int(suite["docs"])
    changes = [c.strip() for c in suite["changes"].split(",") if c.strip()]
    algorithms = [a.strip().lower() for a in suite["algorithms"].split(",") if a.strip()]
    tools = [t.strip() for t in suite["tools"].split(",") if t.strip()]
    repeat = int(suite["repeat"])
    if "rvl" in tools and not Path(rvl_bin).exists():
        print(f"note: {rvl_bin} not found; rvl migrate skipped (see bench/README.md)")
        tools.remove("rvl")
    columns = [f"rvlm-w{w}" if w != 1 else "rvlm" for w in workers if "rvlm" in tools]
    if args.rvlm_base:
        columns.append("base")
    columns += [t for t in tools if t != "rvlm"]
    print()
    print(f"data: {docs} hash docs x {args.dims}-d float32, batch {args.batch}; "
          f"algorithms {algorithms}; changes {changes}; tools {columns}; "
          f"{repeat} repeats")
    runs: list[dict[str, Any]] = []
    loads: list[float] = []
    probe: dict[str, float] = {}
    started = time.perf_counter()
    with bench_dir(args.keep) as work:
        bench = Bench(work, docs, args.dims, args.port)
        try:
            seconds = bench.make_snapshot()
            print(f"loaded {docs} docs in {seconds:.1f}s (snapshot {work})", flush=True)
            if "rvlm" in tools:
                probe = startup_probe(bench, CHANGES[changes[0]], algorithms[0], args.rvlm,
                                      work, env)
                print("start-up (median of 5): " + ", ".join(
                    f"{k} {v:.3f}s" for k, v in probe.items())
                    + f"; load {os.getloadavg()[0]:.1f}", flush=True)
            for r in range(repeat):
                for algorithm in algorithms:
                    for cname in changes:
                        change = CHANGES[cname]
                        for col in _rotate(columns, r):
                            run_dir = work / f"r{r}-{algorithm}-{cname}-{col}"
                            run_dir.mkdir()
                            load_before = os.getloadavg()[0]
                            if col == "floor":
                                got = run_floor(bench, change, algorithm, args.batch)
                            elif col == "base":
                                got = run_rvlm(bench, change, algorithm, args.batch, 1,
                                               args.rvlm_base, run_dir, env)
                            elif col == "rvl":
                                got = run_rvl(bench, change, algorithm, args.batch, rvl_bin,
                                              run_dir)
                            else:
                                w = int(col.partition("-w")[2] or 1)
                                got = run_rvlm(bench, change, algorithm, args.batch, w,
                                               args.rvlm, run_dir, env)
                            check_result(bench, change, algorithm, col)
                            shutil.rmtree(run_dir, ignore_errors=True)
                            load_after = os.getloadavg()[0]
                            loads += [load_before, load_after]
                            got.update(repeat=r, algorithm=algorithm, change=cname, tool=col,
                                       load=(load_before + load_after) / 2)
                            runs.append(got)
                            phases = " ".join(f"{k} {v:.2f}" for k, v in got["phases"].items())
                            rss = f" rss {got['rss_mb']:.0f}MB" if "rss_mb" in got else ""
                            print(f"  r{r + 1} {algorithm:<4} {cname:<15} {col:<8} "
                                  f"{got['seconds']:7.2f}s cpu {got['cpu']:.2f}+"
                                  f"{got['server_cpu']:.2f}s{rss}  [{phases}]  "
                                  f"load {got['load']:.1f}", flush=True)
        finally:
            bench.stop()
    elapsed = time.perf_counter() - started
    summary = summarize(runs, algorithms, changes, columns)
    print()
    print(f"medians of {repeat} ({docs} docs x {args.dims}-d, batch {args.batch}); "
          f"load average (1 min) during runs: min {min(loads):.1f}, median "
          f"{_median(loads):.1f}, max {max(loads):.1f}; suite took {elapsed / 60:.1f} min")
    print_table(summary, columns)
    return {"docs": docs, "dims": args.dims, "repeat": repeat, "columns": columns,
            "startup": probe, "runs": runs, "summary": summary, "elapsed_s": elapsed,
            "load": loads}


def summarize(runs: list[dict[str, Any]], algorithms: list[str], changes: list[str],
              columns: list[str]) -> list[dict[str, Any]]:
    out = []
    for algorithm in algorithms:
        for cname in changes:
            row: dict[str, Any] = {"algorithm": algorithm, "change": cname}
            for col in columns:
                mine = [x for x in runs if x["algorithm"] == algorithm
                        and x["change"] == cname and x["tool"] == col]
                row[col] = _median([x["seconds"] for x in mine])
                row[f"{col}_cpu"] = _median([x["cpu"] + x["server_cpu"] for x in mine])
                if mine and "rss_mb" in mine[0]:
                    row[f"{col}_rss_mb"] = max(x["rss_mb"] for x in mine)
                keys = dict.fromkeys(k for x in mine for k in x["phases"])
                row[f"{col}_phases"] = {k: _median([x["phases"].get(k, 0.0) for x in mine])
                                        for k in keys}
                if col != "floor" and "floor" in columns:
                    pairs = _paired(runs, algorithm, cname, col)
                    row[f"{col}_paired"] = pairs
            out.append(row)
    return out


def _paired(runs: list[dict[str, Any]], algorithm: str, cname: str, col: str) -> list[float]:
    """Per repeat, tool / floor of the same repeat."""
    by: dict[int, dict[str, float]] = {}
    for x in runs:
        if x["algorithm"] == algorithm and x["change"] == cname:
            by.setdefault(x["repeat"], {})[x["tool"]] = x["seconds"]
    return [v[col] / v["floor"] for v in by.values() if col in v and "floor" in v]


def print_table(summary: list[dict[str, Any]], columns: list[str]) -> None:
    head = f"{'algo':<5} {'change':<15}" + "".join(f" {c:>9}" for c in columns)
    ratio_cols = [c for c in columns if c != "floor"] if "floor" in columns else []
    head += "".join(f" {c + '/floor':>13}" for c in ratio_cols)
    print(head)
    for row in summary:
        line = f"{row['algorithm']:<5} {row['change']:<15}"
        line += "".join(f" {row[c]:>8.2f}s" for c in columns)
        line += "".join(f" {row[c] / row['floor']:>13.2f}" for c in ratio_cols)
        print(line)
    if ratio_cols:
        print("CPU (client + server, medians) / the floor's: " + "; ".join(
            f"{row['algorithm']} {row['change']} " + ", ".join(
                f"{c} {row[f'{c}_cpu'] / row['floor_cpu']:.2f}" for c in ratio_cols)
            for row in summary))
    print()
    for row in summary:
        for col in columns:
            phases = row.get(f"{col}_phases") or {}
            if not phases:
                continue
            rss = row.get(f"{col}_rss_mb")
            paired = row.get(f"{col}_paired")
            extra = f"; peak RSS {rss:.0f} MB" if rss is not None else ""
            if paired:
                extra += "; per-repeat ratios " + ", ".join(f"{p:.2f}" for p in paired)
            print(f"{row['algorithm']:<5} {row['change']:<15} {col:<8} "
                  + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()) + extra)


def print_markdown(got: dict[str, Any]) -> None:
    """One suite's medians as a bench/RESULTS.md table."""
    columns, summary = got["columns"], got["summary"]
    loads = got["load"]
    others = [c for c in columns if c not in ("floor",)]
    print(f"{got['docs']:,} docs x {got['dims']}-d, medians of {got['repeat']}, load average "
          f"{min(loads):.1f}-{max(loads):.1f}, {got['elapsed_s'] / 60:.1f} min")
    print()
    head = ["index", "change", *[f"{c} (s)" for c in columns]]
    if "floor" in columns:
        head += [f"{c} / floor" for c in others] + [f"{c} CPU / floor CPU" for c in others]
    head += [f"{c} peak RSS" for c in others]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
    for row in summary:
        cells = [row["algorithm"].upper(), row["change"], *[f"{row[c]:.2f}" for c in columns]]
        if "floor" in columns:
            cells += [f"**{row[c] / row['floor']:.2f}**" for c in others]
            cells += [f"{row[f'{c}_cpu'] / row['floor_cpu']:.2f}" for c in others]
        cells += [f"{row[f'{c}_rss_mb']:.0f} MB" if f"{c}_rss_mb" in row else "-"
                  for c in others]
        print("| " + " | ".join(cells) + " |")
    print()
    for row in summary:
        phases = row.get("rvlm_phases") or {}
        if phases:
            print(f"* {row['algorithm'].upper()} {row['change']}, rvlm phases (s): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    print()


if __name__ == "__main__":
    raise SystemExit(main())
