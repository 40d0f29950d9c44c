"""Online migrations that copy documents, on a real Redis Cluster (3 primaries, no search
coordinator): change capture with one subscriber per primary, the notification setting on every
node, a lost subscription or a failover stopping the run with the source serving, the same
command finishing it; rollback before finalize.

The layout without a coordinator: the index names, the aliases, the source and the target
prefixes share one hash tag (``{t1}idx`` over ``{t1}doc:`` -> ``{t1}idx_v2`` over
``{t1}new:``). A writer thread writes source keys through ``RedisCluster`` during the copy.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from cluster_data import DIMS, load
from online_helpers import GateProbe

from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.online.options import OnlineOptions
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.planner import PlanOptions, make_plan
from rvlm.core.migrate.rollback import rollback
from rvlm.core.redis.capture import CLIENT_NAME
from rvlm.core.redis.connection import connect, index_exists, read_index
from rvlm.core.redis.notify import read_setting
from rvlm.core.schema.patch import patch_from_dict
from rvlm.core.storage.journal import RunState, phase_data

pytestmark = pytest.mark.cluster

SRC = b"{t1}doc:"
DST = b"{t1}new:"
ALIAS = "{t1}live"
RENAME_QUANTIZE = {
    "index": {"name": "{t1}idx_v2"},
    "rename_fields": [{"old_name": "title", "new_name": "headline"}],
    "update_fields": [{"name": "vec", "attrs": {"datatype": "float16"}}],
}


def node_clients(cluster: Any) -> list[redis.Redis]:
    return cluster.node_clients()  # type: ignore[no-any-return]


def _notify_off(cluster: Any) -> None:
    for c in node_clients(cluster):
        c.config_set("notify-keyspace-events", "")
        c.close()


def _settings(cluster: Any) -> list[str]:
    out = []
    for c in node_clients(cluster):
        out.append(read_setting(c))
        c.close()
    return out


def plan_online(url: str, changes: dict[str, Any] | None = None,
                target_prefix: str = "{t1}new:") -> Plan:
    client = connect(url)
    try:
        patch = patch_from_dict({"version": 1, "changes": changes or RENAME_QUANTIZE},
                                "patch.yaml")
        return make_plan(client, "{t1}idx", patch=patch, options=PlanOptions(
            mode="online", alias=ALIAS, target_prefix=target_prefix))
    finally:
        client.close()


def transformed(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """What RENAME_QUANTIZE makes of a source hash."""
    out = {(b"headline" if k == b"title" else k): v for k, v in fields.items()}
    if b"vec" in fields and len(fields[b"vec"]) % 4 == 0:
        out[b"vec"] = np.frombuffer(fields[b"vec"], np.float32).astype(np.float16).tobytes()
    return out


def transformed_json(doc: dict[str, Any]) -> dict[str, Any]:
    """What RENAME_QUANTIZE makes of a JSON document (a JSON vector is a list of numbers
    under either datatype: only the index's datatype changes)."""
    return {("headline" if k == "title" else k): v for k, v in doc.items()}


def hash_docs(rc: Any, prefix: bytes) -> dict[bytes, tuple[dict[bytes, bytes], int]]:
    """Every hash under ``prefix`` on every primary: fields and absolute expiry."""
    out = {}
    for k in rc.scan_iter(match=prefix + b"*", count=1000, target_nodes=rc.PRIMARIES):
        out[bytes(k)] = (rc.hgetall(k), rc.execute_command("PEXPIRETIME", k))
    return out


def json_docs(rc: Any, prefix: bytes) -> dict[bytes, tuple[Any, int]]:
    out = {}
    for k in rc.scan_iter(match=prefix + b"*", count=1000, target_nodes=rc.PRIMARIES):
        out[bytes(k)] = (json.loads(rc.execute_command("JSON.GET", k, "$"))[0],
                         rc.execute_command("PEXPIRETIME", k))
    return out


def dumps(rc: Any, prefix: bytes) -> dict[bytes, tuple[bytes, int]]:
    return {bytes(k): (rc.dump(k), rc.execute_command("PEXPIRETIME", k))
            for k in rc.scan_iter(match=prefix + b"*", count=1000, target_nodes=rc.PRIMARIES)}


def points_at(rc: Any, alias: str) -> str | None:
    return read_index(rc, alias).schema.name if index_exists(rc, alias) else None


class ClusterWriter(threading.Thread):
    """Writes random source documents through ``RedisCluster``: whole documents (HSET, or
    JSON.SET), HDEL of a field (JSON.DEL of a path), DEL, PEXPIRE; keeps a model of each key's
    final state (None: deleted)."""

    def __init__(self, url: str, n: int, storage: str = "hash", seed: int = 3) -> None:
        super().__init__(daemon=True)
        self.client = connect(url)
        self.n, self.storage = n, storage
        self.stop = threading.Event()
        self.model: dict[bytes, Any] = {}
        self.ops = 0
        self.rng = random.Random(seed)

    def run(self) -> None:
        r, rng = self.client, self.rng
        while not self.stop.is_set():
            key = SRC + str(rng.randrange(self.n + 20)).encode()
            op = rng.random()
            vec = [rng.random() for _ in range(DIMS)]
            if op < 0.6:
                if self.storage == "json":
                    doc = {"title": f"hello written {self.ops}", "tag": "w", "vec": vec}
                    r.execute_command("JSON.SET", key, "$", json.dumps(doc))
                    self.model[key] = doc
                else:
                    fields = {b"title": f"hello written {self.ops}".encode(), b"tag": b"w",
                              b"vec": np.array(vec, np.float32).tobytes()}
                    r.delete(key)
                    r.hset(key, mapping=fields)  # type: ignore[arg-type]
                    self.model[key] = fields
            elif op < 0.75:
                if self.model.get(key):
                    if self.storage == "json":
                        if r.execute_command("JSON.DEL", key, "$.tag"):
                            self.model[key] = {k: v for k, v in self.model[key].items()
                                               if k != "tag"}
                    elif r.hdel(key, "tag"):
                        self.model[key] = {k: v for k, v in self.model[key].items()
                                           if k != b"tag"}
            elif op < 0.88:
                if r.delete(key):
                    self.model[key] = None
            else:
                r.pexpire(key, rng.randrange(600_000, 900_000))
            self.ops += 1
            time.sleep(0.001)


class ClusterReader(threading.Thread):
    """Queries the alias (full text) through ``RedisCluster`` every few ms; records errors and
    totals."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = connect(url)
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.totals: list[int] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                reply = self.client.execute_command("FT.SEARCH", ALIAS, "*", "LIMIT", "0", "0")
                self.totals.append(int(reply[0]) if isinstance(reply, list)
                                   else int(reply[b"total_results"]))
            except redis.RedisError as exc:
                self.errors.append(str(exc))
            time.sleep(0.005)


def _apply(url: str, plan: Plan, backup: Path, **kwargs: Any) -> Any:
    return apply_plan(url, plan, backup_dir=backup, batch_size=kwargs.pop("batch_size", 100),
                      accept_data_loss=True, **kwargs)


def _run_with_writer(cluster: Any, rc: Any, storage: str, n: int, tmp_path: Path) -> None:
    _notify_off(cluster)
    load(rc, storage, n)
    rc.execute_command("FT.ALIASADD", ALIAS, "{t1}idx")
    url = cluster.urls[1]
    plan = plan_online(url)
    assert plan.supported, plan.blocked_reasons
    assert any("on every node of the cluster, replicas included" in w
               for w in plan.all_warnings()), plan.all_warnings()
    writer = ClusterWriter(url, n, storage)
    reader = ClusterReader(url)
    reader.start()
    stop = threading.Event()

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "transform" and done and not writer.is_alive() and not writer.stop.is_set():
            writer.start()  # writes begin once the copy is under way

    out: dict[str, Any] = {}
    options = OnlineOptions(follow=True, should_stop=lambda: "the test" if stop.is_set()
                            else None)
    apply = threading.Thread(target=lambda: out.setdefault("report", _apply(
        url, plan, tmp_path / "b", progress=progress, online=options)))
    apply.start()
    deadline = time.monotonic() + 120
    while points_at(rc, ALIAS) != "{t1}idx_v2":
        assert time.monotonic() < deadline and apply.is_alive(), out
        time.sleep(0.05)
    time.sleep(0.5)  # writes after the cut-over are carried over too (--follow)
    writer.stop.set()
    writer.join()
    stop.set()
    apply.join(60)
    reader.stop.set()
    reader.join()
    report = out["report"]
    assert report.succeeded, report.to_yaml()
    assert writer.ops > 100
    assert reader.errors == [] and len(reader.totals) > 20
    subscribed = report.online.get("capture_nodes")
    assert subscribed == sorted(f"127.0.0.1:{p.port}" for p in cluster.primary_servers())
    # every target is the transform of its source's final state; deleted keys are gone
    docs = json_docs if storage == "json" else hash_docs
    change = transformed_json if storage == "json" else transformed
    sources, targets = docs(rc, SRC), docs(rc, DST)
    assert {DST + k[len(SRC):] for k in sources} == set(targets)
    for k, (value, expiry) in sources.items():
        got_value, got_expiry = targets[DST + k[len(SRC):]]
        assert got_value == change(value), k
        assert got_expiry == expiry, k
    for key, model in writer.model.items():
        target = DST + key[len(SRC):]
        if model is None:
            assert not rc.exists(target), key
        else:  # the source holds the writer's last write; its target is its transform
            title = "title" if storage == "json" else b"title"
            assert sources[key][0][title] == model[title], key
            assert targets[target][0] == change(sources[key][0]), key
    lag = report.forward_lag_ms
    assert lag["count"] > 0
    assert set(_settings(cluster)) == {""}  # put back on every node


@pytest.mark.parametrize("storage", ["hash", "json"])
def test_online_copy_with_writes_on_the_cluster(redis_cluster, cluster_client, tmp_path,
                                                storage) -> None:
    _run_with_writer(redis_cluster, cluster_client, storage, 2000, tmp_path)


def test_changes_are_carried_over_while_a_long_check_runs_on_the_cluster(
        redis_cluster, cluster_client, tmp_path) -> None:
    """The gate before the cut-over runs in a thread of its own on a cluster too: a write made
    during it (a plugin's validate hook writes a source key through ``RedisCluster`` and waits
    for its target) is carried over before the check ends, so before the alias moves; a try
    it failed is tried again, and the run cuts over to exact targets."""
    cluster, rc = redis_cluster, cluster_client
    _notify_off(cluster)
    load(rc, "hash", 200)
    rc.execute_command("FT.ALIASADD", ALIAS, "{t1}idx")
    plan = plan_online(cluster.url)
    probe = GateProbe(rc, fail_first=1, source="{t1}doc:7", target="{t1}new:7",
                      source_field="title", field="headline", wait=5.0)
    report = _apply(cluster.url, plan, tmp_path / "b", plugins=[probe])
    assert report.succeeded, report.to_yaml()
    assert probe.carried == [True, True]  # each write reached its target during the check
    assert report.online["gate_tries"] == 2
    assert points_at(rc, ALIAS) == "{t1}idx_v2"
    assert rc.hget(DST + b"7", "headline") == b"written during try 2"
    sources, targets = hash_docs(rc, SRC), hash_docs(rc, DST)
    assert len(sources) == 200 and {DST + k[len(SRC):] for k in sources} == set(targets)
    for k, (fields, expiry) in sources.items():
        assert targets[DST + k[len(SRC):]] == (transformed(fields), expiry), k
    assert set(_settings(cluster)) == {""}


def test_a_target_prefix_in_another_hash_tag_is_refused(redis_cluster, cluster_client) -> None:
    """Without a coordinator the copies must stay in the index's slot: a target prefix in
    another hash tag is blocked with the reason (and the remedy); the same tag plans."""
    load(cluster_client, "hash", 10)
    cluster_client.execute_command("FT.ALIASADD", ALIAS, "{t1}idx")
    plan = plan_online(redis_cluster.url, target_prefix="{t2}new:")
    assert not plan.supported
    assert plan.target_schema.index.prefix == ("{t2}new:",)
    assert any("would move documents out of the index's slot" in r
               and "keep the hash tag of '{t1}doc:'" in r for r in plan.blocked_reasons), \
        plan.blocked_reasons
    assert plan_online(redis_cluster.url).supported


def _kill_capture(cluster: Any, port: int) -> list[int]:
    c = cluster.node(port).client()
    try:
        ids = [x["id"] for x in c.client_list() if x.get("name") == CLIENT_NAME]
        for i in ids:
            c.client_kill_filter(_id=i)
        return ids
    finally:
        c.close()


def test_a_killed_capture_connection_on_one_primary_stops_the_run_and_it_resumes(
        redis_cluster, cluster_client, tmp_path) -> None:
    """The capture connection is killed on a primary that holds none of the documents: the
    run stops all the same (a lost subscription on any node), the source serving and
    unmodified; the same command finishes with every document right, a write made while
    nobody listened included."""
    cluster, rc = redis_cluster, cluster_client
    _notify_off(cluster)
    n = 2000
    load(rc, "hash", n)
    rc.execute_command("FT.ALIASADD", ALIAS, "{t1}idx")
    source = dumps(rc, SRC)
    url = cluster.url
    plan = plan_online(url)
    owner = cluster.owner_of(SRC)
    other = next(p for p in cluster.primary_servers() if p.port != owner.port)
    killed: list[int] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "transform" and done >= 400 and not killed:
            killed.extend(_kill_capture(cluster, other.port))
            time.sleep(0.3)
            rc.hset(SRC + b"7", "title", "hello changed while a node was not listened to")

    first = _apply(url, plan, tmp_path / "b", progress=progress)
    assert killed and not first.succeeded
    assert "lost its subscription" in first.error and f"{other.port}" in first.error, \
        first.error
    assert any("keeps serving and was not modified" in a for a in first.manual_actions)
    assert points_at(rc, ALIAS) == "{t1}idx"
    source[SRC + b"7"] = (rc.dump(SRC + b"7"), -1)
    assert dumps(rc, SRC) == source  # not modified by rvlm
    second = _apply(url, plan, tmp_path / "b")
    assert second.succeeded and second.resumed, second.to_yaml()
    assert points_at(rc, ALIAS) == "{t1}idx_v2"
    assert rc.hget(DST + b"7", "headline") == b"hello changed while a node was not listened to"
    sources, targets = hash_docs(rc, SRC), hash_docs(rc, DST)
    assert len(targets) == len(sources) == n
    for k, (fields, expiry) in sources.items():
        assert targets[DST + k[len(SRC):]] == (transformed(fields), expiry)
    assert set(_settings(cluster)) == {""}


def test_a_failover_during_the_copy_stops_the_run_and_the_same_command_finishes(
        redis_cluster_replicas, cluster_replicas_client, tmp_path) -> None:
    """CLUSTER FAILOVER on the replica of the primary holding the documents, mid-copy: the
    set of primaries is no longer the one subscribed, so the run stops as lost capture (the
    source serving); a write made to the new primary meanwhile is not lost: the same command
    finishes with every document right."""
    cluster, rc = redis_cluster_replicas, cluster_replicas_client
    _notify_off(cluster)
    n = 2000
    load(rc, "hash", n)
    rc.execute_command("FT.ALIASADD", ALIAS, "{t1}idx")
    url = cluster.url
    plan = plan_online(url)
    owner = cluster.owner_of(SRC)
    replica = cluster.replicas_of(owner.port)[0]
    done_over: list[bool] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "transform" and done >= 400 and not done_over:
            cluster.failover(replica.port)  # waits until every node agrees
            done_over.append(True)
            writer = connect(url)
            writer.hset(SRC + b"9", "title", "hello written on the new primary")
            writer.close()
            time.sleep(2.5)  # the capture's watch looks every 2 s

    first = _apply(url, plan, tmp_path / "b", batch_size=50, progress=progress)
    assert done_over and cluster.owner_of(SRC).port == replica.port
    assert not first.succeeded, first.to_yaml()
    assert "primaries changed" in first.error or "lost its subscription" in first.error, \
        first.error
    assert points_at(rc, ALIAS) == "{t1}idx"
    second = _apply(url, plan, tmp_path / "b", batch_size=50)
    assert second.succeeded and second.resumed, second.to_yaml()
    assert points_at(rc, ALIAS) == "{t1}idx_v2"
    assert rc.hget(DST + b"9", "headline") == b"hello written on the new primary"
    sources, targets = hash_docs(rc, SRC), hash_docs(rc, DST)
    assert len(targets) == len(sources) == n
    for k, (fields, expiry) in sources.items():
        assert targets[DST + k[len(SRC):]] == (transformed(fields), expiry)
    assert set(_settings(cluster)) == {""}  # replicas included


def test_rollback_before_finalize_restores_the_source_exactly(redis_cluster, cluster_client,
                                                              tmp_path) -> None:
    cluster, rc = redis_cluster, cluster_client
    _notify_off(cluster)
    load(rc, "hash", 500)
    rc.execute_command("FT.ALIASADD", ALIAS, "{t1}idx")
    source = dumps(rc, SRC)
    schema = read_index(rc, "{t1}idx").schema
    plan = plan_online(cluster.url)
    report = _apply(cluster.url, plan, tmp_path / "b")
    assert report.succeeded, report.to_yaml()
    assert points_at(rc, ALIAS) == "{t1}idx_v2" and len(hash_docs(rc, DST)) == 500
    back = rollback(cluster.url, tmp_path / "b")
    assert back.succeeded, back.to_yaml()
    assert dumps(rc, SRC) == source  # bytes and absolute expiries
    assert not dumps(rc, DST)
    assert points_at(rc, ALIAS) == "{t1}idx"
    assert read_index(rc, "{t1}idx").schema == schema
    assert not index_exists(rc, "{t1}idx_v2")
    assert RunState.load(tmp_path / "b").phase == "rolled_back"
    assert set(_settings(cluster)) == {""}


@pytest.fixture
def coordinated(monkeypatch):
    monkeypatch.setenv("RVLM_SEARCH_LAYOUT", "coordinated")


@pytest.mark.contract
def test_contract_coordinated_online_copy_captures_on_every_primary(
        redis_cluster, cluster_client, coordinated, tmp_path) -> None:
    """CONTRACT TEST of the coordinated layout (forced with RVLM_SEARCH_LAYOUT on a cluster
    without a coordinator): documents without a hash tag spread over every primary, copied to
    ``new:`` while a writer changes them. What is checked is what rvlm sends where and what
    the documents hold: the notification setting and a subscription on every primary, every
    copy written on its key's owner, every copy the transform of its source's final state
    (writes on every primary carried over). Only a coordinator could count every shard's
    documents in one index, so the run stops at the validation gate (the alias stays on the
    source), which is what this cluster can show."""
    from rvlm.core.redis.topology import slot_of
    from rvlm.testing.cluster import CommandRecorder

    cluster, rc = redis_cluster, cluster_client
    _notify_off(cluster)
    rc.execute_command("FT.CREATE", "idx", "ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA",
                       "title", "TEXT", "n", "NUMERIC")
    n = 600
    for i in range(n):
        rc.hset(f"doc:{i}", mapping={"title": f"hello {i}", "n": i})
    rc.execute_command("FT.ALIASADD", "live{idx}", "idx")  # the name's slot (no CROSSSLOT)
    client = connect(cluster.url)
    patch = patch_from_dict({"version": 1, "changes": {
        "index": {"name": "idx_v2{idx}"},
        "rename_fields": [{"old_name": "title", "new_name": "headline"}]}}, "patch.yaml")
    plan = make_plan(client, "idx", patch=patch, options=PlanOptions(
        mode="online", alias="live{idx}", target_prefix="new:"))
    client.close()
    assert plan.supported, plan.blocked_reasons
    owners = cluster.slot_owners()
    written: list[int] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "transform" and not written:
            for i in range(0, n, 7):  # keys on every primary
                rc.hset(f"doc:{i}", "title", f"hello again {i}")
                written.append(i)
            rc.delete("doc:3")

    with CommandRecorder(cluster) as rec:
        report = _apply(cluster.url, plan, tmp_path / "b", batch_size=50, progress=progress)
    primaries = {p.port for p in cluster.primary_servers()}
    # one subscriber per primary (MONITOR does not show pub/sub commands: the report does)
    assert report.online["capture_nodes"] == sorted(f"127.0.0.1:{p}" for p in primaries)
    # the setting found on every node is journaled (MONITOR does not show CONFIG either)
    found = phase_data(tmp_path / "b", "capture_started")["notify"]
    assert found == "; ".join(sorted(f"127.0.0.1:{n.port}=''" for n in cluster.nodes
                                     if n.running())), found
    for port, cmds in rec.commands.items():
        for c in cmds:
            if c[0] in (b"HSET", b"DEL") and c[1].startswith(b"new:"):
                assert owners[slot_of(c[1])] == port, c[:2]
    assert {owners[slot_of(f"doc:{i}")] for i in written} == primaries
    for i in range(n):
        src = rc.hgetall(f"doc:{i}")
        got = rc.hgetall(f"new:{i}")
        if not src:
            assert not got, i
        else:
            assert got == {(b"headline" if k == b"title" else k): v
                           for k, v in src.items()}, i
    assert not report.succeeded
    failed = [c.name for c in report.validation.checks if not c.passed]
    assert failed and set(failed) <= {"doc_count_match", "doc_count_in_flight",
                                      "key_sample_exists", "query_results"}, failed
    assert points_at(rc, "live{idx}") == "idx"  # the alias stays on the source
    rollback(cluster.url, tmp_path / "b")


def test_copies_wait_for_the_replicas_and_every_node_notifies(
        redis_cluster_replicas, cluster_replicas_client, tmp_path) -> None:
    """With replicas (3 + 3): the notification classes are set on every node, replicas
    included (journaled per node, put back on each), and the copy's write pipelines end with
    ``WAIT`` on the primary they went to (the same durability as drop_recreate's batches)."""
    from rvlm.testing.cluster import CommandRecorder

    cluster, rc = redis_cluster_replicas, cluster_replicas_client
    _notify_off(cluster)
    load(rc, "hash", 600)
    rc.execute_command("FT.ALIASADD", ALIAS, "{t1}idx")
    plan = plan_online(cluster.url)
    owner = cluster.owner_of(SRC).port
    with CommandRecorder(cluster) as rec:
        report = _apply(cluster.url, plan, tmp_path / "b", batch_size=100)
    assert report.succeeded, report.to_yaml()
    found = phase_data(tmp_path / "b", "capture_started")["notify"]
    nodes = sorted(f"127.0.0.1:{n.port}" for n in cluster.nodes if n.running())
    assert len(nodes) == 6 and found == "; ".join(f"{a}=''" for a in nodes), found
    cmds = rec.commands[owner]
    writes = [i for i, c in enumerate(cmds) if c[0] == b"HSET" and c[1].startswith(DST)]
    assert len(writes) == 600
    waits = [i for i, c in enumerate(cmds) if c[0] == b"WAIT"]
    assert waits and all(any(w > i for w in waits) for i in writes)  # each write is followed
    assert all(c[1] == b"1" for c in cmds if c[0] == b"WAIT")  # by a WAIT for its replica
    assert set(_settings(cluster)) == {""}  # put back on all six


def test_finalize_then_rollback_on_the_cluster(redis_cluster, cluster_client, tmp_path) -> None:
    """``--finalize`` backs the source keys up and deletes them (SCAN on every primary, the
    scripts on the keys' owner); a rollback after it restores them exactly."""
    cluster, rc = redis_cluster, cluster_client
    _notify_off(cluster)
    load(rc, "hash", 300)
    rc.execute_command("FT.ALIASADD", ALIAS, "{t1}idx")
    source = dumps(rc, SRC)
    plan = plan_online(cluster.url)
    report = _apply(cluster.url, plan, tmp_path / "b", online=OnlineOptions(finalize=True))
    assert report.succeeded, report.to_yaml()
    assert report.online["finalize"]["deleted"] == 300
    assert not dumps(rc, SRC) and len(hash_docs(rc, DST)) == 300
    assert RunState.load(tmp_path / "b").phase == "finalized"
    back = rollback(cluster.url, tmp_path / "b")
    assert back.succeeded, back.to_yaml()
    assert {k: v[0] for k, v in dumps(rc, SRC).items()} == {k: v[0] for k, v in source.items()}
    assert {k: v[1] for k, v in dumps(rc, SRC).items()} == {k: v[1] for k, v in source.items()}
    assert points_at(rc, ALIAS) == "{t1}idx" and not dumps(rc, DST)


def test_the_throttle_reads_every_primary_and_the_worst_value_counts(
        redis_cluster_replicas, cluster_replicas_client) -> None:
    """``--max-load`` on INFO of every primary: the highest value counts and the status names
    its node; ``--max-lag-millis`` samples the replica of every primary."""
    from rvlm.core.migrate.online.throttle import Throttler
    from rvlm.core.redis import routing

    cluster, rc = redis_cluster_replicas, cluster_replicas_client
    nodes = routing.primaries(rc)
    owner = cluster.owner_of(b"{t3}big")
    rc.set(b"{t3}big", b"x" * 4_000_000)  # one primary uses 4 MB more than the others
    used = {a: int(c.info("memory")["used_memory"]) for a, c in nodes}
    big = max(used, key=used.__getitem__)
    assert big.endswith(f":{owner.port}")
    limit = (used[big] + max(v for a, v in used.items() if a != big)) // 2
    t = Throttler(rc, max_load={"used_memory": limit}, max_lag_ms=60_000, interval=0,
                  nodes=nodes)
    t.validate()
    state = t.check()
    assert state.reason is not None and state.reason.startswith("max-load used_memory=")
    assert state.reason.endswith(f"on {big}"), state.reason
    assert len(state.replica_lag_ms) == 3, state.replica_lag_ms  # one replica per primary
    t.max_load = {"used_memory": used[big] * 2}
    assert t.check().reason is None
    t.close()
    rc.delete(b"{t3}big")



def test_refused_config_names_every_node_and_a_configured_cluster_runs(
        redis_cluster, cluster_client, tmp_path) -> None:
    """A user without CONFIG (as on managed services): the plan and apply say which
    ``notify-keyspace-events`` to set, naming every node; once an operator set it on every node,
    the probes (one throw-away key on each primary) pass and the run goes through."""
    from rvlm.core.errors import RvlmError

    cluster, rc = redis_cluster, cluster_client
    _notify_off(cluster)
    load(rc, "hash", 200)
    rc.execute_command("FT.ALIASADD", ALIAS, "{t1}idx")
    user = "limited"
    admins = node_clients(cluster)
    try:
        for c in admins:  # ACLs are per node
            c.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all",
                              "-config")
        url = f"redis://{user}:pw@127.0.0.1:{cluster.nodes[0].port}"
        nodes = [f"127.0.0.1:{n.port}" for n in cluster.nodes if n.running()]
        plan = plan_online(url)
        assert plan.supported, plan.blocked_reasons
        [said] = [w for w in plan.all_warnings() if "CONFIG is refused" in w]
        assert "notify-keyspace-events to 'Kg$hxe'" in said
        assert all(a in said for a in nodes), said
        with pytest.raises(RvlmError) as refused:
            _apply(url, plan, tmp_path / "b")
        assert all(a in str(refused.value) for a in nodes), refused.value
        assert points_at(rc, ALIAS) == "{t1}idx"
        for c in admins:
            c.config_set("notify-keyspace-events", "KA")  # what the operator configures
        plan = plan_online(url)
        assert any("already delivers" in w for w in plan.all_warnings()), plan.all_warnings()
        report = _apply(url, plan, tmp_path / "c")
        assert report.succeeded, report.to_yaml()
        assert len(hash_docs(rc, DST)) == 200
        assert set(_settings(cluster)) == {"AK"}  # not rvlm's to change back
    finally:
        for c in admins:
            c.execute_command("ACL", "DELUSER", user)
            c.config_set("notify-keyspace-events", "")
            c.close()


@pytest.mark.parametrize("fault,serving", [("online_copy:2", "{t1}idx"),
                                           ("online_after_alias", "{t1}idx_v2")])
def test_killed_mid_run_then_the_same_command_finishes(redis_cluster, cluster_client, tmp_path,
                                                       fault, serving) -> None:
    """The process dies (``os._exit`` at a fault point) mid-copy or right after the alias
    moved; a source write lands while nothing captures; the same command finishes with every
    copy exact and the setting put back on every node."""
    import os
    import subprocess
    import sys

    cluster, rc = redis_cluster, cluster_client
    _notify_off(cluster)
    load(rc, "hash", 300)
    rc.execute_command("FT.ALIASADD", ALIAS, "{t1}idx")
    plan = plan_online(cluster.url)
    plan.write(tmp_path / "plan.yaml")
    driver = str(Path(__file__).with_name("online_helpers.py"))
    args = [sys.executable, driver, "apply", cluster.url, str(tmp_path / "plan.yaml"),
            str(tmp_path / "b")]
    env = {k: v for k, v in os.environ.items() if k != "RVLM_FAULT"}
    crashed = subprocess.run(args, env={**env, "RVLM_FAULT": fault}, capture_output=True,
                             text=True, timeout=180, check=False)
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    assert points_at(rc, ALIAS) == serving
    rc.hset(SRC + b"5", "title", "hello written while rvlm was dead")
    rc.delete(SRC + b"6")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert points_at(rc, ALIAS) == "{t1}idx_v2"
    sources, targets = hash_docs(rc, SRC), hash_docs(rc, DST)
    assert len(sources) == 299 and set(targets) == {DST + k[len(SRC):] for k in sources}
    for k, (fields, expiry) in sources.items():
        assert targets[DST + k[len(SRC):]] == (transformed(fields), expiry)
    assert targets[DST + b"5"][0][b"headline"] == b"hello written while rvlm was dead"
    assert set(_settings(cluster)) == {""}


def test_a_slot_migration_is_refused_before_the_start_and_before_the_cut_over(
        redis_cluster, cluster_client, tmp_path) -> None:
    """A resharding in progress: apply does not start; one that begins during the copy stops
    the run before the alias moves (an index does not move with its slot), the source
    serving; once it is over, the same command finishes."""
    from rvlm.core.errors import RvlmError
    from rvlm.core.redis.topology import slot_of

    cluster, rc = redis_cluster, cluster_client
    _notify_off(cluster)
    load(rc, "hash", 600)
    rc.execute_command("FT.ALIASADD", ALIAS, "{t1}idx")
    plan = plan_online(cluster.url)
    slot = slot_of("{t9}x")  # a slot of another tag: still a resharding of the cluster
    owner = cluster.owner_of("{t9}x")
    other = next(p for p in cluster.primary_servers() if p.port != owner.port)
    cluster.begin_slot_migration(slot, other.port)
    try:
        with pytest.raises(RvlmError, match="a slot migration is in progress"):
            _apply(cluster.url, plan, tmp_path / "b")
    finally:
        cluster.cancel_slot_migration(slot)
    begun: list[int] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "transform" and not begun:
            cluster.begin_slot_migration(slot, other.port)
            begun.append(slot)

    try:
        first = _apply(cluster.url, plan, tmp_path / "b", progress=progress)
        assert begun and not first.succeeded, first.to_yaml()
        assert "a slot migration is in progress" in first.error, first.error
        assert points_at(rc, ALIAS) == "{t1}idx"  # the alias did not move
        assert any("keeps serving" in a for a in first.manual_actions)
    finally:
        cluster.cancel_slot_migration(slot)
    second = _apply(cluster.url, plan, tmp_path / "b")
    assert second.succeeded, second.to_yaml()
    assert points_at(rc, ALIAS) == "{t1}idx_v2"
    sources, targets = hash_docs(rc, SRC), hash_docs(rc, DST)
    for k, (fields, expiry) in sources.items():
        assert targets[DST + k[len(SRC):]] == (transformed(fields), expiry)
    assert set(_settings(cluster)) == {""}


def test_the_command_line_on_the_cluster(redis_cluster, cluster_client, tmp_path) -> None:
    """``rvlm plan --mode online`` then ``rvlm apply --critical-load`` / ``--max-load`` and
    ``rvlm finalize`` from any node's URL, in fresh processes."""
    from cluster_data import cli, write_patch

    cluster, rc = redis_cluster, cluster_client
    _notify_off(cluster)
    load(rc, "hash", 200)
    rc.execute_command("FT.ALIASADD", ALIAS, "{t1}idx")
    url = cluster.urls[2]
    patch = write_patch(tmp_path / "patch.yaml", RENAME_QUANTIZE)
    res = cli("plan", "--index", "{t1}idx", "--schema-patch", str(patch), "--mode", "online",
              "--alias", ALIAS, "--target-prefix", "{t1}new:", "--url", url, "--plan-out",
              str(tmp_path / "plan.yaml"))
    assert res.returncode == 0, res.stdout + res.stderr
    apply = ["apply", "--plan", str(tmp_path / "plan.yaml"), "--backup-dir",
             str(tmp_path / "b"), "--url", url, "--accept-data-loss", "-y"]
    res = cli(*apply, "--critical-load", "connected_clients=1")
    assert res.returncode == 1, res.stdout + res.stderr
    out = " ".join((res.stdout + res.stderr).split())
    assert "critical-load reached (connected_clients=" in out and " on 127.0.0.1:" in out, out
    assert points_at(rc, ALIAS) == "{t1}idx"
    res = cli(*apply, "--max-load", "used_memory=100gb")
    assert res.returncode == 0, res.stdout + res.stderr
    assert points_at(rc, ALIAS) == "{t1}idx_v2"
    res = cli("finalize", "--backup-dir", str(tmp_path / "b"), "--url", url)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not hash_docs(rc, SRC) and len(hash_docs(rc, DST)) == 200
    assert set(_settings(cluster)) == {""}


async def test_the_async_api_runs_an_online_copy_on_the_cluster(redis_cluster, cluster_client,
                                                                tmp_path) -> None:
    from rvlm.aio import AsyncMigrationExecutor, AsyncMigrationPlanner

    cluster, rc = redis_cluster, cluster_client
    _notify_off(cluster)
    load(rc, "hash", 200)
    rc.execute_command("FT.ALIASADD", ALIAS, "{t1}idx")
    source = hash_docs(rc, SRC)
    plan = await AsyncMigrationPlanner(mode="online", alias=ALIAS, target_prefix="{t1}new:"
                                       ).create_plan("{t1}idx", redis_url=cluster.url,
                                                     schema_patch={"version": 1,
                                                                   "changes": RENAME_QUANTIZE})
    assert plan.supported, plan.blocked_reasons
    executor = AsyncMigrationExecutor()
    report = await executor.apply(plan, redis_url=cluster.url, backup_dir=tmp_path / "b",
                                  online=OnlineOptions(max_load={"used_memory": 64 * 1024 ** 3},
                                                       finalize=True))
    assert report.succeeded, report.to_yaml()
    assert points_at(rc, ALIAS) == "{t1}idx_v2" and not hash_docs(rc, SRC)
    targets = hash_docs(rc, DST)
    for k, (fields, expiry) in source.items():
        assert targets[DST + k[len(SRC):]] == (transformed(fields), expiry)
    back = await executor.rollback(tmp_path / "b", redis_url=cluster.url)
    assert back.succeeded, back.to_yaml()
    assert hash_docs(rc, SRC) == source and points_at(rc, ALIAS) == "{t1}idx"
    assert set(_settings(cluster)) == {""}


async def test_a_cluster_transaction_of_the_async_api_stays_on_the_callers_loop(
        redis_cluster, cluster_client) -> None:
    """The async API's bridge sends MULTI/EXEC on the caller's loop even when redis-py's
    cluster client is due to re-initialize (as it is after every 5th MOVED reply): the
    commands that follow on that loop still work (with redis-py's own asyncio cluster
    transaction, re-initializing ran on a throw-away loop and left its connections in the
    pool: 'Event loop is closed' on the next command that took one)."""
    import asyncio

    from rvlm.aio import AsyncBridge, async_connect_cluster_aware
    from rvlm.core.migrate.aliases import move_aliases
    from rvlm.core.redis.resp import to_map

    rc = cluster_client
    load(rc, "hash", 10)
    load(rc, "hash", 10, index="{t1}idx_v2", prefix="{t1}new:")
    rc.execute_command("FT.ALIASADD", ALIAS, "{t1}idx")
    client = await async_connect_cluster_aware(redis_cluster.url)
    try:
        bridge = AsyncBridge(client, asyncio.get_running_loop())
        for target in ("{t1}idx_v2", "{t1}idx", "{t1}idx_v2"):
            await client.aclose()  # what redis-py does after reinitialize_steps MOVED replies
            await asyncio.to_thread(move_aliases, bridge, [ALIAS], target)
            for _ in range(12):  # the pool's connections are used again on this loop
                info = to_map(await client.execute_command("FT.INFO", ALIAS))
                assert info["index_name"] == target.encode()
            assert points_at(rc, ALIAS) == target
        with pytest.raises(redis.RedisClusterException, match="exactly one slot"):
            await asyncio.to_thread(move_aliases, bridge, ["{t2}live", ALIAS], "{t1}idx")
        assert points_at(rc, ALIAS) == "{t1}idx_v2"
        await bridge.aclose_nodes()
    finally:
        await client.aclose()
