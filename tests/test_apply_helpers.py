"""Helpers for the executor tests: data, hand-built plans, tiny test plugins, snapshots.

Also a subprocess driver for crash tests::

    python tests/test_apply_helpers.py <url> <plan.yaml> <backup_dir> <batch_size> <workers>

registers the test plugins, applies the plan, prints the result and exits 0 (succeeded) or 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from rvlm import hookimpl
from rvlm.core.migrate.plan import Plan, PlannedChange
from rvlm.core.plugins.documents import MISSING, NO_CHANGE, DocumentOperation, DocumentUpdate
from rvlm.core.redis.connection import read_index
from rvlm.core.schema.model import IndexSchema

DIMS = 4


def make_hash_index(client: Any, name: str = "idx", prefix: str = "doc:", n: int = 120,
                    dims: int = DIMS, ttl_every: int = 0) -> None:
    """An index on hash documents ``{prefix}{i}`` with text t, tag g, vector v (float32)."""
    client.execute_command(
        "FT.CREATE", name, "ON", "HASH", "PREFIX", "1", prefix, "SCHEMA",
        "t", "TEXT", "g", "TAG", "v", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM",
        str(dims), "DISTANCE_METRIC", "L2")
    rng = np.random.default_rng(7)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        key = f"{prefix}{i}"
        vec = rng.standard_normal(dims).astype(np.float32).tobytes()
        pipe.hset(key, mapping={"t": f"hello doc {i} word{i % 7}", "g": f"g{i % 3}", "v": vec})
        if ttl_every and i % ttl_every == 0:
            pipe.pexpire(key, 3_600_000)
    pipe.execute()
    wait_indexed(client, name)


def make_json_index(client: Any, name: str = "jidx", prefix: str = "j:", n: int = 80,
                    dims: int = DIMS) -> None:
    """An index on JSON documents with $.t text, $.g tag and $.v vector (float32)."""
    client.execute_command(
        "FT.CREATE", name, "ON", "JSON", "PREFIX", "1", prefix, "SCHEMA",
        "$.t", "AS", "t", "TEXT", "$.g", "AS", "g", "TAG",
        "$.v", "AS", "v", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", str(dims),
        "DISTANCE_METRIC", "L2")
    rng = np.random.default_rng(11)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        vec = [float(x) for x in rng.standard_normal(dims).astype(np.float32)]
        doc = {"t": f"hello json {i}", "g": f"g{i % 3}", "v": vec, "z": {"n": i}}
        pipe.execute_command("JSON.SET", f"{prefix}{i}", "$", json.dumps(doc))
    pipe.execute()
    wait_indexed(client, name)


def reset(client: Any) -> None:
    """An empty server: every key and every index gone."""
    client.flushall()
    for name in client.execute_command("FT._LIST") or []:
        client.execute_command("FT.DROPINDEX", name)


def wait_indexed(client: Any, name: str) -> None:
    import time

    for _ in range(400):
        if not read_index(client, name).stats.indexing:
            return
        time.sleep(0.025)


def build_plan(client: Any, index: str, target: IndexSchema,
               operations: Sequence[DocumentOperation], *, lossy: bool = False,
               plugin_names: Sequence[str] = ()) -> Plan:
    """A plan built by hand from the live index (what the planner would record)."""
    info = read_index(client, index)
    keys = sorted(client.scan_iter(match=info.schema.index.prefix[0] + "*", count=1000))[:5]
    names = list(dict.fromkeys([*plugin_names, *(o.plugin for o in operations)]))
    changes = tuple(PlannedChange(type="test_change", plugin=p, plugin_version="unknown",
                                  lossy=lossy) for p in names)
    return Plan(source_schema=info.schema, source_stats=info.stats,
                key_sample=tuple(k.decode() for k in keys), requested_changes={},
                target_schema=target, changes=changes, operations=tuple(operations))


def rename_field_target(schema: IndexSchema, old: str, new: str) -> IndexSchema:
    return schema.with_fields(f.evolve(name=new) if f.name == old else f for f in schema.fields)


def f16_target(schema: IndexSchema, name: str = "v") -> IndexSchema:
    import attrs

    return schema.with_fields(
        f.evolve(attrs=attrs.evolve(f.attrs, datatype="float16")) if f.name == name else f
        for f in schema.fields)


class RenamePlugin:
    """Renames a hash field or JSON path: params old/new."""

    name = "t_rename"

    @hookimpl
    def transform_documents(self, operation: Any, documents: Any, context: Any) -> Any:
        if operation.plugin != self.name:
            return None
        old, new = operation.params["old"], operation.params["new"]
        pause = float(os.environ.get("RVLM_TEST_BATCH_SLEEP", "0"))
        if pause:  # a slow plugin, for tests that need a run to last
            time.sleep(pause)
        return [DocumentUpdate(set={new: d.get(old)}, delete=(old,))
                if d.get(old) is not MISSING else NO_CHANGE for d in documents]


class HalfPlugin:
    """float32 -> float16 of a hash field (bytes) or JSON path (list): refuses anything
    that is not float32-sized, so converting twice fails loudly."""

    name = "t_half"

    @hookimpl
    def transform_documents(self, operation: Any, documents: Any, context: Any) -> Any:
        if operation.plugin != self.name:
            return None
        path = operation.params["path"]
        dims = operation.params["dims"]
        out = []
        for d in documents:
            v = d.get(path)
            if v is MISSING:
                out.append(NO_CHANGE)
            elif isinstance(v, bytes):
                assert len(v) == 4 * dims, f"{d.key!r} converted twice ({len(v)} bytes)"
                out.append(DocumentUpdate(set={path: np.frombuffer(v, np.float32)
                                               .astype(np.float16).tobytes()}))
            else:
                out.append(DocumentUpdate(set={path: [float(np.float16(x)) for x in v]}))
        return out


class BadPlugin:
    """Writes a field outside its declared writes."""

    name = "t_bad"

    @hookimpl
    def transform_documents(self, operation: Any, documents: Any, context: Any) -> Any:
        if operation.plugin != self.name:
            return None
        return [DocumentUpdate(set={"other": b"x"}) for _ in documents]


class ConvertPlugin:
    """Replaces whole documents (``converts_to``). To JSON: each hash field becomes a string
    (``{"hex": ...}`` when not UTF-8; a field name that is not UTF-8 becomes ``hex:<name>``),
    the vector field an array of float32 values. To hash: each top-level JSON value becomes a
    field (strings as UTF-8, the vector as float32 bytes, anything else as its JSON text).
    ``params["poison"]`` (or ``poison`` given to the constructor, which leaves the plan alone)
    names a key whose new document RedisJSON refuses (nested too deep), so the write fails
    after the DEL of its MULTI/EXEC."""

    name = "t_convert"

    def __init__(self, poison: str | None = None) -> None:
        self.poison = poison

    @hookimpl
    def transform_documents(self, operation: Any, documents: Any, context: Any) -> Any:
        if operation.plugin != self.name:
            return None
        vec = operation.params["vector"]
        out = []
        for d in documents:
            if operation.converts_to == "json":
                doc: dict[str, Any] = {}
                for n, v in d.values.items():
                    assert isinstance(v, bytes), f"{d.key!r}: {n} is {type(v).__name__}"
                    try:
                        n.encode("utf-8")
                    except UnicodeEncodeError:
                        n = "hex:" + n.encode("utf-8", "surrogateescape").hex()
                    if n == vec:
                        doc[n] = np.frombuffer(v, np.float32).tolist()
                        continue
                    try:
                        doc[n] = v.decode("utf-8")
                    except UnicodeDecodeError:
                        doc[n] = {"hex": v.hex()}
                if d.key.decode() in (operation.params.get("poison"), self.poison):
                    deep: Any = []
                    for _ in range(300):
                        deep = [deep]
                    doc["deep"] = deep
                out.append(DocumentUpdate(replace=doc))
            else:
                root = d.values["$"]
                fields: dict[str, Any] = {}
                for n, v in root.items():
                    if n == vec:
                        fields[n] = np.asarray(v, np.float32).tobytes()
                    elif isinstance(v, str):
                        fields[n] = v.encode("utf-8")
                    else:
                        fields[n] = json.dumps(v).encode()
                out.append(DocumentUpdate(replace=fields))
        return out


def json_target(schema: IndexSchema, **index: Any) -> IndexSchema:
    """A hash index's schema as a JSON index: each field at ``$.<name>``."""
    import attrs

    from rvlm.core.schema.model import TagAttrs

    fields = []
    for f in schema.fields:
        a = f.attrs
        if isinstance(a, TagAttrs):
            a = attrs.evolve(a, separator=a.separator or ",")
        fields.append(f.evolve(path=f"$.{f.name}", attrs=a))
    return schema.with_fields(fields).with_index(storage_type="json", **index)


def hash_target(schema: IndexSchema, **index: Any) -> IndexSchema:
    """A JSON index's schema as a hash index: each field in the hash field of its name."""
    hashed = schema.with_index(storage_type="hash", **index)
    return hashed.with_fields(f.evolve(path=None) for f in schema.fields)


def convert_op(to: str = "json", rename_prefix: tuple[str, str] | None = None,
               vector: str = "v", poison: str | None = None) -> DocumentOperation:
    params: dict[str, Any] = {"vector": vector}
    if poison is not None:
        params["poison"] = poison
    return DocumentOperation(plugin="t_convert", kind="convert_storage", converts_to=to,
                             rename_prefix=rename_prefix, params=params)


def rename_op(old: str = "t", new: str = "title") -> DocumentOperation:
    return DocumentOperation(plugin="t_rename", kind="rename_hash_field", reads=(old,),
                             writes=(old, new), creates=(new,), params={"old": old, "new": new})


def half_op(path: str = "v") -> DocumentOperation:
    return DocumentOperation(plugin="t_half", kind="convert_vector", reads=(path,),
                             writes=(path,), lossy=True, params={"path": path, "dims": DIMS})


def prefix_op(old: str = "doc:", new: str = "item:") -> DocumentOperation:
    return DocumentOperation(plugin="t_rename", kind="rename_keys", rename_prefix=(old, new))


def snapshot(client: Any, pattern: str = "*") -> dict[bytes, Any]:
    """Every matching key (rvlm's own left out: locks, the alias registry) with its full
    content and whether it has a TTL."""
    out: dict[bytes, Any] = {}
    for k in client.scan_iter(match=pattern, count=1000):
        if k.startswith((b"rvlm:lock:", b"rvlm:aliases:")):
            continue
        t = client.type(k)
        t = t.decode() if isinstance(t, bytes) else t
        ttl = client.pttl(k) > 0
        if t == "hash":
            out[k] = (client.hgetall(k), ttl)
        else:
            out[k] = (client.execute_command("JSON.GET", k, "$"), ttl)
    return out


@contextlib.contextmanager
def primary_with_replica() -> Iterator[tuple[str, Any, Any]]:
    """Two embedded servers of the test's own, a primary and its synced replica: yields the
    primary's URL and a client of each."""
    import tempfile
    from pathlib import Path

    import redis

    from rvlm.embedded.server import EmbeddedServer, free_port

    servers = []
    try:
        for _ in range(2):
            s = EmbeddedServer(port=free_port(),
                               directory=Path(tempfile.mkdtemp(prefix="rvlm-r-")))
            s.start()
            servers.append(s)
        primary, replica = servers
        redis.Redis(port=primary.port).config_set("repl-diskless-sync-delay", 0)
        rc = redis.Redis(port=replica.port)
        rc.replicaof("127.0.0.1", primary.port)
        deadline = time.monotonic() + 20
        while rc.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.05)
        yield primary.url, redis.Redis(port=primary.port), rc
    finally:
        for s in servers:
            s.stop()
            s.wipe()


def search(client: Any, index: str, query: str = "@t:hello", **kw: Any) -> Any:
    """FT.SEARCH results as {key: {field: value}} (RESP2 or RESP3), order-insensitive."""
    reply = client.execute_command("FT.SEARCH", index, query, "LIMIT", "0", "1000",
                                   "DIALECT", "2")
    if isinstance(reply, dict):
        rows = {}
        for r in reply[b"results"]:
            rows[r[b"id"]] = dict(r.get(b"extra_attributes", {}))
        return reply[b"total_results"], rows
    total = reply[0]
    rows = {}
    for i in range(1, len(reply), 2):
        fields = reply[i + 1]
        rows[reply[i]] = {fields[j]: fields[j + 1] for j in range(0, len(fields), 2)}
    return total, rows


def all_plugins() -> list[Any]:
    return [RenamePlugin(), HalfPlugin(), BadPlugin(), ConvertPlugin()]


def _main(argv: list[str]) -> int:
    import faulthandler

    from rvlm.core.migrate.executor import apply_plan

    faulthandler.dump_traceback_later(60, exit=True)  # a hang prints every thread's stack

    url, plan_path, backup_dir, batch, workers = argv[:5]
    plan = Plan.load(plan_path)
    report = apply_plan(url, plan, backup_dir=backup_dir, batch_size=int(batch),
                        workers=int(workers), accept_data_loss=True, plugins=all_plugins())
    print(report.result, report.error or "", "; ".join(report.validation.errors))
    return 0 if report.succeeded else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
