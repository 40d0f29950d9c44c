"""Helpers for the online-copy tests: plans, a reader and a writer thread, expectations, and a
subprocess driver for crash tests::

    python tests/online_helpers.py apply <url> <plan.yaml> <backup_dir> [--follow-until FILE]
    python tests/online_helpers.py finalize <url> <backup_dir>

exits 0 when the run succeeded, 1 when it failed (``RVLM_FAULT`` kills it with 137).
"""

from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

from rvlm import hookimpl
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.planner import PlanOptions, make_plan
from rvlm.core.plugins.checks import CheckResult
from rvlm.core.redis.connection import connect, index_exists, read_index
from rvlm.core.schema.patch import patch_from_dict

#: rename t -> title, quantize v float32 -> float16, a new index name
RENAME_QUANTIZE = {
    "index": {"name": "idx_v2"},
    "rename_fields": [{"old_name": "t", "new_name": "title"}],
    "update_fields": [{"name": "v", "attrs": {"datatype": "float16"}}],
}


def copy_plan(client: Any, changes: dict[str, Any] | None = None, index: str = "idx",
              **options: Any) -> Plan:
    """An online plan that copies documents to ``new:`` through ``changes``."""
    opts = {"mode": "online", "alias": "live", "target_prefix": "new:", **options}
    patch = patch_from_dict({"version": 1, "changes": changes or RENAME_QUANTIZE}, "patch.yaml",
                            plugin_sections=("hash_to_json",))
    return make_plan(client, index, patch=patch, options=PlanOptions(**opts))


def dumps(client: Any, pattern: str) -> dict[bytes, tuple[bytes, int]]:
    """Every key matching ``pattern``: its exact serialized value and absolute expiry."""
    return {k: (client.dump(k), client.execute_command("PEXPIRETIME", k))
            for k in client.scan_iter(match=pattern, count=1000)}


def contents(client: Any, pattern: str) -> dict[bytes, tuple[dict[bytes, bytes], int]]:
    """Every hash matching ``pattern``: its fields and absolute expiry."""
    return {k: (client.hgetall(k), client.execute_command("PEXPIRETIME", k))
            for k in client.scan_iter(match=pattern, count=1000)}


def renamed_quantized(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """What the RENAME_QUANTIZE plan makes of a hash's fields."""
    out = {(b"title" if n == b"t" else n): v for n, v in fields.items()}
    if b"v" in fields and len(fields[b"v"]) % 4 == 0:
        out[b"v"] = np.frombuffer(fields[b"v"], np.float32).astype(np.float16).tobytes()
    return out


def points_at(client: Any, alias: str) -> str | None:
    return read_index(client, alias).schema.name if index_exists(client, alias) else None


def total_of(reply: Any) -> int:
    if isinstance(reply, dict):
        return int(reply.get(b"total_results", reply.get("total_results", 0)))
    return int(reply[0])


def first_id(reply: Any) -> bytes | None:
    if isinstance(reply, dict):
        results = reply.get(b"results") or reply.get("results") or []
        if not results:
            return None
        r = results[0]
        return r.get(b"id") or r.get("id")
    return reply[1] if len(reply) > 1 else None


def wait_spilled(backup_dir: Path, keys: list[bytes], timeout: float = 10.0) -> int:
    """Wait until the backlog's spill file(s) in ``backup_dir`` hold a record of every key of
    ``keys`` (written in this order) but the first (the backlog holds one key in memory) and
    the last (the spill's latest record may still sit in the file object's write buffer, which
    the next record's seek flushes); returns their size in bytes. A record is a 4-byte length,
    the key, an 8-byte time."""
    want = sum(12 + len(k) for k in keys[1:-1])
    deadline = time.monotonic() + timeout
    while True:
        size = sum(p.stat().st_size for p in (backup_dir / "backlog").glob(".pending-*.spill"))
        if size >= want:
            return size
        assert time.monotonic() < deadline, f"spilled {size} of {want} bytes"
        time.sleep(0.02)


class GateProbe:
    """A plugin whose validate hook (the gate before the cut-over) writes the field
    ``source_field`` of ``source`` at each call (with ``client``, as another client would),
    waits up to ``wait`` seconds for ``target``'s ``field`` to hold it, records whether it did,
    and fails its first ``fail_first`` calls."""

    name = "gate_probe"

    def __init__(self, client: Any, fail_first: int, source: str = "doc:3",
                 target: str = "new:3", source_field: str = "t", field: str = "title",
                 wait: float = 3.0) -> None:
        self.client, self.fail_first = client, fail_first
        self.source, self.target, self.wait = source, target, wait
        self.source_field, self.field = source_field, field
        self.carried: list[bool] = []

    @hookimpl
    def validate(self, plan: Any, context: Any) -> list[CheckResult]:
        n = len(self.carried) + 1
        value = f"written during try {n}".encode()
        self.client.hset(self.source, self.source_field, value)
        deadline = time.monotonic() + self.wait
        while self.client.hget(self.target, self.field) != value \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        self.carried.append(self.client.hget(self.target, self.field) == value)
        return [CheckResult(name="gate_probe", passed=n > self.fail_first, details=f"try {n}")]


class Reader(threading.Thread):
    """Queries the alias every ``pause`` seconds: a full-text query (every document matches
    ``hello``) and a KNN query. A KNN query must send the index's datatype: like the client
    the docs show, it retries once with the other encoding when the server refuses the
    vector (after the cut-over of a quantization). Records errors (after that retry), each
    text answer's total, which prefix answered, and the retries."""

    def __init__(self, url: str, dims: int, pause: float = 0.003, alias: str = "live") -> None:
        super().__init__(daemon=True)
        self.client = connect(url)
        self.alias = alias
        self.pause = pause
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.totals: list[int] = []
        self.knn: list[int] = []
        self.served_by: list[bytes] = []
        self.retries = 0
        self.query32 = np.ones(dims, np.float32)
        self.encoding = np.float32

    def run(self) -> None:
        c = self.client
        while not self.stop.is_set():
            try:
                reply = c.execute_command("FT.SEARCH", self.alias, "hello", "LIMIT", "0", "1",
                                          "NOCONTENT", "DIALECT", "2")
                self.totals.append(total_of(reply))
                doc = first_id(reply)
                if doc is not None:
                    self.served_by.append(bytes(doc).split(b":")[0])
                self.knn.append(self._knn())
            except redis.RedisError as exc:
                self.errors.append(str(exc))
            time.sleep(self.pause)

    def _knn(self) -> int:
        args = ("FT.SEARCH", self.alias, "*=>[KNN 5 @v $q]", "NOCONTENT", "DIALECT", "2",
                "PARAMS", "2", "q")
        try:
            return total_of(self.client.execute_command(
                *args, self.query32.astype(self.encoding).tobytes()))
        except redis.ResponseError:
            self.retries += 1  # the index wants the other datatype: switch and retry once
            self.encoding = np.float16 if self.encoding is np.float32 else np.float32
            return total_of(self.client.execute_command(
                *args, self.query32.astype(self.encoding).tobytes()))


class Writer(threading.Thread):
    """Writes random source hashes (whole documents with HSET, HDEL of a field, DEL, PEXPIRE)
    and keeps a model of what the target of each key it wrote must hold (None: deleted). A
    DEL or HDEL that finds nothing to delete changes nothing, so it is not counted."""

    def __init__(self, url: str, n: int, dims: int, prefix: str = "doc:",
                 pause: float = 0.0005, seed: int = 5) -> None:
        super().__init__(daemon=True)
        self.client = connect(url)
        self.n, self.dims, self.prefix, self.pause = n, dims, prefix, pause
        self.stop = threading.Event()
        self.model: dict[bytes, dict[bytes, bytes] | None] = {}
        self.ops = 0
        self.rng = random.Random(seed)
        self.times: list[tuple[float, bytes]] = []

    def run(self) -> None:
        r, rng = self.client, self.rng
        while not self.stop.is_set():
            i = rng.randrange(self.n + 20)
            key = f"{self.prefix}{i}".encode()
            op = rng.random()
            if op < 0.6:
                vec = np.array([rng.random() for _ in range(self.dims)], np.float32).tobytes()
                doc = {b"t": f"hello written {self.ops}".encode(), b"g": b"w", b"v": vec}
                pipe = r.pipeline(transaction=True)
                pipe.delete(key)
                pipe.hset(key, mapping=doc)  # type: ignore[arg-type]
                pipe.execute()
                self.model[key] = dict(doc)
            elif op < 0.75:
                # a write that changes nothing (the key is gone, e.g. finalized) is no write:
                # the model keeps what the target should hold
                if self.model.get(key) and r.hdel(key, "g"):
                    self.model[key] = {k: v for k, v in self.model[key].items()  # type: ignore[union-attr]
                                       if k != b"g"}
            elif op < 0.88:
                if r.delete(key):
                    self.model[key] = None
            else:
                r.pexpire(key, rng.randrange(600_000, 900_000))
            self.times.append((time.time(), key))  # acknowledged at (Unix time)
            self.ops += 1
            time.sleep(self.pause)


def main(argv: list[str]) -> int:
    from rvlm.core.migrate.executor import apply_plan
    from rvlm.core.migrate.online.finalize import finalize_migration
    from rvlm.core.migrate.online.options import OnlineOptions

    if argv[0] == "apply":
        url, plan_path, backup = argv[1], argv[2], argv[3]
        until = Path(argv[5]) if len(argv) > 5 and argv[4] == "--follow-until" else None
        options = OnlineOptions(
            follow=until is not None,
            should_stop=(lambda: "the test" if until and until.exists() else None))
        report = apply_plan(url, Plan.load(plan_path), backup_dir=backup, batch_size=50,
                            accept_data_loss=True, online=options)
    else:
        report = finalize_migration(argv[1], argv[2])
    print(report.to_yaml())
    return 0 if report.succeeded else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


__all__ = ["RENAME_QUANTIZE", "Reader", "Writer", "contents", "copy_plan", "dumps",
           "points_at", "renamed_quantized"]
