"""Whole-document replacement (``DocumentOperation.converts_to``): hash -> JSON and back.

The document I/O for each state a crash or a failed write can leave (replaced in place, moved,
moved copy beside its source, neither key), the backup of every original field and the TTL,
and the executor end to end: apply, queries, rollback byte for byte, refusals.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from test_apply_helpers import (
    DIMS,
    ConvertPlugin,
    all_plugins,
    build_plan,
    convert_op,
    hash_target,
    json_target,
    make_hash_index,
    make_json_index,
    rename_field_target,
    rename_op,
    snapshot,
)

from rvlm import hookimpl
from rvlm.core.errors import MigrationFailed, RvlmError
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.rollback import rollback
from rvlm.core.plugins.documents import DocumentOperation, DocumentUpdate, operation_problems
from rvlm.core.redis.connection import connect, index_exists, read_index
from rvlm.core.redis.docio.read import read_batch
from rvlm.core.redis.docio.restore import backup_record, restore_records
from rvlm.core.redis.docio.write import KeyWrite, write_batch
from rvlm.core.storage.backup.reader import BackupReader

ODD_NAME = b"\xff\xfeodd"  # a hash field name that is not UTF-8
TTL = 3_600_000


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def client(request, redis_client, redis_url):
    c = connect(redis_url, protocol=request.param)
    yield c
    c.close()


def _hash(client, key: bytes, ttl: int | None = 100_000) -> dict[bytes, bytes]:
    fields = {b"a": b"1", b"b": b"\x00\xff", ODD_NAME: b"odd value"}
    client.hset(key, mapping=fields)
    if ttl:
        client.pexpire(key, ttl)
    return fields


def _json(client, key: bytes) -> object:
    raw = client.execute_command("JSON.GET", key, "$")
    return None if raw is None else json.loads(raw)[0]


def _replace(doc, new: dict, **kw) -> KeyWrite:
    return KeyWrite(doc.key, {}, (), replace=new, converts_to="json", pttl=doc.pttl, **kw)


# --------------------------------------------------------------------------- operations


def test_operation_round_trips_and_checks_its_type():
    op = DocumentOperation(plugin="p", kind="k", converts_to="json", rename_prefix=("a:", "b:"))
    assert op.to_dict()["converts_to"] == "json"
    assert DocumentOperation.from_dict(op.to_dict()) == op
    assert "converts_to" not in DocumentOperation(plugin="p", kind="k").to_dict()
    with pytest.raises(ValueError, match="converts_to"):
        DocumentOperation(plugin="p", kind="k", converts_to="xml")
    assert not DocumentUpdate(replace={}).empty and DocumentUpdate().empty


def test_operation_problems():
    conv, edit = convert_op(), rename_op()
    assert operation_problems([edit, conv], "hash", "json") == []
    assert "must be the last" in operation_problems([conv, edit], "hash", "json")[0]
    assert "target index stores hash" in operation_problems([conv], "hash", "hash")[0]
    to_hash = convert_op("hash")
    assert operation_problems([to_hash], "json", "hash") == []
    assert "no operation before it" in operation_problems(
        [rename_op("$.t", "$.title"), to_hash], "json", "hash")[0]


# --------------------------------------------------------------------------- document I/O


def test_whole_read_backup_replace_and_restore_in_place(client):
    original = _hash(client, b"h:1")
    docs = read_batch(client, "hash", [b"h:1", b"h:gone"], [], whole=True)
    [doc] = docs
    assert doc.values == {"a": b"1", "b": b"\x00\xff",
                          ODD_NAME.decode("utf-8", "surrogateescape"): b"odd value"}
    assert 0 < doc.pttl <= 100_000
    rec = backup_record(doc, "hash", (), None, replaced=True)
    assert rec.replaced and rec.ttl_ms == doc.pttl and rec.new_key is None
    assert {f.name: f.value for f in rec.fields} == original  # every field, byte for byte
    written = write_batch(client, "hash", [_replace(doc, {"a": "1", "n": [1, 2]})])
    assert written > 0
    assert client.type("h:1") == b"ReJSON-RL" and _json(client, b"h:1") == {"a": "1",
                                                                          "n": [1, 2]}
    assert 0 < client.pttl("h:1") <= 100_000  # the TTL survives the replacement
    for _ in range(2):  # idempotent
        assert restore_records(client, "hash", [rec]) == []
        assert client.type("h:1") == b"hash" and client.hgetall("h:1") == original
        assert 0 < client.pttl("h:1") <= 100_000


def test_replace_without_ttl_keeps_none(client):
    _hash(client, b"h:2", ttl=None)
    [doc] = read_batch(client, "hash", [b"h:2"], [], whole=True)
    rec = backup_record(doc, "hash", (), None, replaced=True)
    assert rec.ttl_ms is None
    write_batch(client, "hash", [_replace(doc, {"x": 1})])
    assert client.pttl("h:2") == -1
    restore_records(client, "hash", [rec])
    assert client.pttl("h:2") == -1 and client.type("h:2") == b"hash"


@pytest.mark.parametrize("mode", ["rename", "dump"])
def test_replace_and_move_restores_from_every_state(client, monkeypatch, mode):
    """Each state a crash can leave for a replaced document that also moves to a new key."""
    if mode == "dump":
        monkeypatch.setenv("RVLM_RENAME_MODE", "dump")
    original = _hash(client, b"a:1")
    [doc] = read_batch(client, "hash", [b"a:1"], [], whole=True)
    rec = backup_record(doc, "hash", (), b"b:1", replaced=True)
    write = _replace(doc, {"a": "1"}, new_key=b"b:1")

    def check_restored(**kw: bool) -> None:
        assert restore_records(client, "hash", [rec], **kw) == []
        assert client.hgetall("a:1") == original and client.exists("b:1") == 0
        assert 0 < client.pttl("a:1") <= 100_000

    # 1. not replaced yet (crash after the backup)
    check_restored()

    # 2. replaced in place, not moved yet (crash between the writes and the moves)
    class Crash(Exception):
        pass

    def crash() -> None:
        raise Crash

    with pytest.raises(Crash):
        write_batch(client, "hash", [write], fault=crash)
    assert client.type("a:1") == b"ReJSON-RL" and client.exists("b:1") == 0
    check_restored()

    # 3. replaced and moved (done, or crash before batch_done)
    write_batch(client, "hash", [write])
    assert client.exists("a:1") == 0 and _json(client, b"b:1") == {"a": "1"}
    assert 0 < client.pttl("b:1") <= 100_000
    check_restored()

    # 4. a moved copy beside its source (DUMP/RESTORE, crash before the DEL)
    with pytest.raises(Crash):
        write_batch(client, "hash", [write], fault=crash)
    client.copy("a:1", "b:1")
    assert client.exists("a:1", "b:1") == 2
    check_restored()

    # 5. neither key: gone (deleted by someone else) unless the batch was started, not done
    client.delete("a:1")
    assert restore_records(client, "hash", [rec]) == [b"a:1"]
    assert client.exists("a:1", "b:1") == 0
    check_restored(recreate=True)


def test_a_refused_json_document_leaves_no_key_and_is_recreated(client):
    """MULTI/EXEC does not roll back: a JSON.SET the server refuses after the DEL leaves
    neither document. The write fails loudly; a restore of the started batch recreates it."""
    originals = {k: _hash(client, k) for k in (b"p:1", b"p:2", b"p:3")}
    docs = read_batch(client, "hash", list(originals), [], whole=True)
    records = [backup_record(d, "hash", (), None, replaced=True) for d in docs]
    deep: object = []
    for _ in range(300):
        deep = [deep]
    writes = [_replace(d, {"deep": deep} if d.key == b"p:2" else {"ok": True}) for d in docs]
    with pytest.raises(MigrationFailed, match="p:2"):
        write_batch(client, "hash", writes)
    assert client.exists("p:2") == 0 and _json(client, b"p:1") == {"ok": True}
    assert restore_records(client, "hash", records) == [b"p:2"]  # a done batch: gone
    assert restore_records(client, "hash", records, recreate=True) == []
    for k, fields in originals.items():
        assert client.hgetall(k) == fields and client.pttl(k) > 0


def test_json_to_hash_and_back_keeps_key_order(client):
    make_json_index(client, n=3)
    original = client.execute_command("JSON.GET", "j:1", "$")
    [doc] = read_batch(client, "json", [b"j:1"], [], whole=True)
    assert doc.values["$"]["t"] == "hello json 1"
    rec = backup_record(doc, "json", (), None, replaced=True)
    write_batch(client, "json", [KeyWrite(b"j:1", {}, (), replace={"t": "x", "v": b"\x01"},
                                          converts_to="hash", pttl=doc.pttl)])
    assert client.hgetall("j:1") == {b"t": b"x", b"v": b"\x01"}
    restore_records(client, "json", [rec])
    assert client.execute_command("JSON.GET", "j:1", "$") == original


def test_an_empty_hash_is_refused_before_anything_is_written(client):
    client.hset("e:1", "f", "1")
    client.hset("e:2", "f", "2")
    docs = read_batch(client, "hash", [b"e:1", b"e:2"], [], whole=True)
    writes = [KeyWrite(d.key, {}, (), replace={"f": "x"} if d.key == b"e:1" else {},
                       converts_to="hash", pttl=d.pttl) for d in docs]
    with pytest.raises(MigrationFailed, match="non-empty"):
        write_batch(client, "hash", writes)
    assert client.hgetall("e:1") == {b"f": b"1"} and client.hgetall("e:2") == {b"f": b"2"}


# --------------------------------------------------------------------------- the executor


def _data(client) -> None:
    make_hash_index(client, n=60, ttl_every=7)
    client.hset("doc:3", mapping={ODD_NAME: b"\xff\x01", b"blob": b"\x89PNG\xff"})


def _keys(client, index: str, query: str, *args: object) -> list[bytes]:
    reply = client.execute_command("FT.SEARCH", index, query, *args, "NOCONTENT",
                                   "LIMIT", "0", "1000", "DIALECT", "2")
    if isinstance(reply, dict):
        return [r[b"id"] for r in reply[b"results"]]
    return list(reply[1:])


def _queries(client, index: str) -> dict[str, list[bytes]]:
    q = np.arange(DIMS, dtype=np.float32).tobytes()
    return {
        "text": sorted(_keys(client, index, "@t:word3")),
        "tag": sorted(_keys(client, index, "@g:{g1}")),
        "knn": _keys(client, index, "*=>[KNN 5 @v $q AS d]", "PARAMS", "2", "q", q,
                     "SORTBY", "d"),
    }


@pytest.mark.parametrize(("prefix", "mode"), [(None, None), ("item:", None), ("item:", "dump")])
def test_apply_converts_every_document_and_rollback_restores_it(
        redis_client, redis_url, tmp_path, monkeypatch, prefix, mode):
    if mode:
        monkeypatch.setenv("RVLM_RENAME_MODE", mode)
    c = redis_client
    _data(c)
    before = snapshot(c)
    ttls = {k: c.pttl(k) for k in before if c.pttl(k) > 0}
    assert len(ttls) == 9
    q_before = _queries(c, "idx")
    src = read_index(c, "idx").schema
    target = json_target(src, name="idx2", **({"prefix": (prefix,)} if prefix else {}))
    op = convert_op("json", ("doc:", prefix) if prefix else None)
    plan = build_plan(c, "idx", target, [op])
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=16,
                        plugins=all_plugins())
    assert report.succeeded, report.to_yaml()
    moved = {k: (prefix.encode() + k[4:] if prefix else k) for k in before}
    for k, new in moved.items():
        assert c.type(new) == b"ReJSON-RL", new
        if new != k:
            assert c.exists(k) == 0
        assert (c.pttl(new) > 0) == (k in ttls)
    doc3 = _json(c, moved[b"doc:3"])
    assert doc3["hex:" + ODD_NAME.hex()] == {"hex": "ff01"} and doc3["blob"] == {"hex":
                                                                            "89504e47ff"}
    assert np.array(doc3["v"], np.float32).tobytes() == before[b"doc:3"][0][b"v"]
    q_after = _queries(c, "idx2")
    assert q_after == {name: [moved[k] for k in keys] if name == "knn" else
                       sorted(moved[k] for k in keys) for name, keys in q_before.items()}
    records = [r for _b, batch in BackupReader(tmp_path / "b").batches() for r in batch]
    assert len(records) == 60 and all(r.replaced for r in records)
    assert sum(r.ttl_ms is not None for r in records) == 9

    back = rollback(redis_url, tmp_path / "b")
    assert back.succeeded, back.to_yaml()
    assert snapshot(c) == before  # every hash byte for byte (odd names too), TTL flags
    for k, ttl in ttls.items():
        assert ttl - 60_000 < c.pttl(k) <= TTL
    assert not index_exists(c, "idx2") and _queries(c, "idx") == q_before


def test_earlier_operations_are_applied_before_the_conversion(redis_client, redis_url,
                                                              tmp_path):
    c = redis_client
    _data(c)
    before = snapshot(c)
    src = read_index(c, "idx").schema
    target = json_target(rename_field_target(src, "t", "title"), name="idx2")
    plan = build_plan(c, "idx", target, [rename_op(), convert_op()])
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", plugins=all_plugins())
    assert report.succeeded, report.to_yaml()
    doc = _json(c, b"doc:5")
    assert doc["title"] == "hello doc 5 word5" and "t" not in doc
    assert sorted(_keys(c, "idx2", "@title:word3")) == sorted(
        k for k in before if b"word3" in before[k][0][b"t"])
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert snapshot(c) == before


def test_json_to_hash_apply_and_rollback(redis_client, redis_url, tmp_path):
    c = redis_client
    make_json_index(c, n=30)
    c.pexpire("j:4", TTL)
    before = snapshot(c)
    src = read_index(c, "jidx").schema
    plan = build_plan(c, "jidx", hash_target(src, name="hidx"), [convert_op("hash")])
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", plugins=all_plugins())
    assert report.succeeded, report.to_yaml()
    assert c.hgetall("j:4")[b"z"] == b'{"n": 4}' and c.pttl("j:4") > 0
    assert sorted(_keys(c, "hidx", "@g:{g1}")) == sorted(
        f"j:{i}".encode() for i in range(30) if i % 3 == 1)
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert snapshot(c) == before  # JSON text byte for byte, key order included


def test_a_write_refused_after_the_del_is_restored_by_rollback(redis_client, redis_url,
                                                               tmp_path):
    c = redis_client
    _data(c)
    before = snapshot(c)
    src = read_index(c, "idx").schema
    plan = build_plan(c, "idx", json_target(src, name="idx2"), [convert_op(poison="doc:5")])
    for _ in range(2):  # the first run and a resume fail the same way
        report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=16,
                            plugins=all_plugins())
        assert not report.succeeded and "doc:5" in (report.error or "")
        assert c.exists("doc:5") == 0  # neither the hash nor a JSON document
    back = rollback(redis_url, tmp_path / "b")
    assert back.succeeded, back.to_yaml()
    assert snapshot(c) == before


def test_resume_recreates_a_document_left_with_no_key_and_converts_it(redis_client, redis_url,
                                                                     tmp_path):
    """The first run's write of doc:5 fails after its DEL (neither key is left); the resume
    recreates the hash from the backup and converts it: the result equals a clean run."""
    c = redis_client
    _data(c)
    before = snapshot(c)
    src = read_index(c, "idx").schema
    plan = build_plan(c, "idx", json_target(src, name="idx2", prefix=("item:",)),
                      [convert_op("json", ("doc:", "item:"))])
    control = apply_plan(redis_url, plan, backup_dir=tmp_path / "control", batch_size=16,
                         plugins=all_plugins())
    assert control.succeeded, control.to_yaml()
    converted = snapshot(c)
    assert rollback(redis_url, tmp_path / "control").succeeded and snapshot(c) == before

    plugins = [p for p in all_plugins() if not isinstance(p, ConvertPlugin)]
    first = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=16,
                       plugins=[*plugins, ConvertPlugin(poison="doc:5")])
    assert not first.succeeded and "doc:5" in (first.error or "")
    assert c.exists("doc:5", "item:5") == 0
    second = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=16,
                        plugins=all_plugins())
    # doc:5's batch, and up to two after it backed up while it was written (never written)
    assert second.succeeded and 1 <= second.batches_resumed <= 3, second.to_yaml()
    assert snapshot(c) == converted
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert snapshot(c) == before


def test_plans_that_cannot_convert_are_refused_before_anything_changes(redis_client,
                                                                       redis_url, tmp_path):
    c = redis_client
    _data(c)
    before = snapshot(c)
    src = read_index(c, "idx").schema
    target = json_target(rename_field_target(src, "t", "title"), name="idx2")
    plan = build_plan(c, "idx", target, [convert_op(), rename_op()])
    with pytest.raises(RvlmError, match="must be the last operation"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "b", plugins=all_plugins())
    plan = build_plan(c, "idx", src.with_index(name="idx2"), [convert_op()])
    with pytest.raises(RvlmError, match="target index stores hash"):
        apply_plan(redis_url, plan, backup_dir=tmp_path / "c", plugins=all_plugins())
    assert index_exists(c, "idx") and snapshot(c) == before


class _HalfConvert(ConvertPlugin):
    """Returns ``set`` instead of ``replace`` for the first document of each batch."""

    @hookimpl
    def transform_documents(self, operation: Any, documents: Any, context: Any) -> Any:
        out = list(super().transform_documents(operation, documents, context) or [])
        if out:
            out[0] = DocumentUpdate(set={"x": b"1"})
        return out


def test_a_conversion_must_replace_every_document(redis_client, redis_url, tmp_path):
    c = redis_client
    _data(c)
    before = snapshot(c)
    src = read_index(c, "idx").schema
    plan = build_plan(c, "idx", json_target(src, name="idx2"), [convert_op()])
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", plugins=[_HalfConvert()])
    assert not report.succeeded and "must return an update with replace" in report.error
    assert rollback(redis_url, tmp_path / "b").succeeded
    assert snapshot(c) == before
