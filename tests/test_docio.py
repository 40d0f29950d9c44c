"""Key enumeration, batch reads and writes, renames (RENAMENX and DUMP/RESTORE), restores."""

from __future__ import annotations

import pytest
from test_apply_helpers import make_hash_index, make_json_index

from rvlm.core.plugins.documents import MISSING
from rvlm.core.redis.connection import connect, read_index
from rvlm.core.redis.docio.keys import enumerate_keys, escape_glob
from rvlm.core.redis.docio.moves import move_keys
from rvlm.core.redis.docio.read import count_existing, count_holding, fields_exist, read_batch
from rvlm.core.redis.docio.restore import restore_records
from rvlm.core.redis.docio.write import KeyWrite, write_batch
from rvlm.core.storage.backup.records import BackupRecord, FieldOriginal
from rvlm.core.storage.keyfile import KeyFileReader


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def client(request, redis_client, redis_url):
    c = connect(redis_url, protocol=request.param)
    yield c
    c.close()


def _keys(path):
    with KeyFileReader(path) as r:
        return [k for b in r.iter_batches(100) for k in b]


def test_scan_when_the_keyspace_is_mostly_the_index(client, tmp_path):
    make_hash_index(client, n=2500)
    client.set("other:1", "x")
    info = read_index(client, "idx")
    en = enumerate_keys(client, info.schema, info.stats.num_docs, 0, tmp_path / "k")
    assert en.method == "scan" and en.count == 2500 and en.fallback == ""
    assert sorted(_keys(tmp_path / "k")) == sorted(f"doc:{i}".encode() for i in range(2500))


def test_cursor_when_the_index_is_a_small_part_of_the_keyspace(client, tmp_path,
                                                               monkeypatch):
    import rvlm.core.redis.docio.keys as keys_module

    monkeypatch.setattr(keys_module, "CURSOR_COUNT", 1000)  # more than one cursor page
    make_hash_index(client, n=2500)
    pipe = client.pipeline(transaction=False)
    for i in range(10_001):
        pipe.set(f"other:{i}", "x")
    pipe.execute()
    info = read_index(client, "idx")
    en = enumerate_keys(client, info.schema, info.stats.num_docs, 0, tmp_path / "k")
    assert en.method == "cursor" and en.count == 2500
    assert sorted(_keys(tmp_path / "k")) == sorted(f"doc:{i}".encode() for i in range(2500))


def test_scan_duplicates_are_written_once(client, tmp_path, monkeypatch):
    """SCAN may return a key twice; the key file holds each key once, in first-seen order."""
    import rvlm.core.redis.docio.keys as keys_module

    make_hash_index(client, n=40)
    info = read_index(client, "idx")
    real = keys_module.scan_keys

    def twice(c, schema):
        pages = list(real(c, schema))
        yield from pages
        yield [k for page in pages for k in page][::3]  # a third of the keys again

    monkeypatch.setattr(keys_module, "scan_keys", twice)
    monkeypatch.setattr(keys_module, "_FLUSH_AT", 4)  # fingerprints spill to their files
    en = enumerate_keys(client, info.schema, info.stats.num_docs, 0, tmp_path / "k")
    keys = _keys(tmp_path / "k")
    assert en.method == "scan" and en.count == 40 and len(keys) == 40
    assert sorted(keys) == sorted(f"doc:{i}".encode() for i in range(40))
    assert not list(tmp_path.glob(".k*")) and not list(tmp_path.glob(".keys-*"))


def test_scan_when_failures_includes_failed_documents(client, tmp_path):
    make_hash_index(client, n=30)
    client.hset("doc:bad", mapping={"t": "x", "v": b"short"})  # fails indexing
    client.set("doc:string", "not a hash")  # other type: not part of the index
    info = read_index(client, "idx")
    assert info.stats.indexing_failures == 1
    en = enumerate_keys(client, info.schema, info.stats.num_docs,
                        info.stats.indexing_failures, tmp_path / "k")
    assert en.method == "scan" and en.count == 31
    keys = _keys(tmp_path / "k")
    assert b"doc:bad" in keys and b"doc:string" not in keys and len(set(keys)) == len(keys)


def test_scan_fallback_on_count_mismatch_and_overlapping_prefixes(client, tmp_path):
    make_hash_index(client, n=20)
    pipe = client.pipeline(transaction=False)
    for i in range(200):  # the keyspace is mostly not the index's: the cursor is tried first
        pipe.set(f"other:{i}", "x")
    pipe.execute()
    info = read_index(client, "idx")
    schema = info.schema.with_index(prefix=("doc:", "doc:1"))  # overlapping: keys twice
    en = enumerate_keys(client, schema, info.stats.num_docs + 5, 0, tmp_path / "k")
    assert en.method == "scan" and "cursor gave 20" in en.fallback
    assert sorted(_keys(tmp_path / "k")) == sorted(f"doc:{i}".encode() for i in range(20))


def test_escape_glob():
    assert escape_glob("a*b?[c]\\") == b"a\\*b\\?\\[c\\]\\\\"


def test_hash_read_write_and_restore(client):
    client.hset("h:1", mapping={"a": b"1", "b": b"\x00\xff"})
    client.hset("h:2", mapping={"a": b"2"})
    docs = read_batch(client, "hash", [b"h:1", b"h:2", b"h:gone"], ["a", "b"])
    assert [d.key for d in docs] == [b"h:1", b"h:2"]
    assert docs[0].values == {"a": b"1", "b": b"\x00\xff"} and docs[1].values["b"] is MISSING
    assert fields_exist(client, "hash", [b"h:1", b"h:2"], ["b"]) == [["b"], []]
    n = write_batch(client, "hash", [KeyWrite(b"h:1", {"c": b"xyz"}, ("a",))])
    assert n == 3 and client.hgetall("h:1") == {b"b": b"\x00\xff", b"c": b"xyz"}
    restore_records(client, "hash", [BackupRecord(b"h:1", None, (FieldOriginal(b"a", b"1"),
                                                                 FieldOriginal(b"c", None)))])
    assert client.hgetall("h:1") == {b"a": b"1", b"b": b"\x00\xff"}


@pytest.mark.parametrize("names", [["a", "b"], ["a"], ["b", "a", "new"]])
def test_hash_read_without_ttls_keeps_every_document_and_only_those(client, names):
    """The executor's read (no TTLs): a key deleted since enumeration is left out, a document
    holding none of the names is kept (every name MISSING), a nil value is MISSING."""
    client.hset("h:1", mapping={"a": b"1", "b": b"\x00\xff"})
    client.hset("h:2", mapping={"a": b"2"})
    client.hset("h:3", mapping={"z": b"other"})
    keys = [b"h:1", b"h:gone", b"h:2", b"h:3"]
    docs = read_batch(client, "hash", keys, names, ttl=False)
    assert [d.key for d in docs] == [b"h:1", b"h:2", b"h:3"]
    held = {b"h:1": {"a": b"1", "b": b"\x00\xff"}, b"h:2": {"a": b"2"}, b"h:3": {}}
    for d in docs:
        assert d.pttl is None
        assert d.values == {n: held[d.key].get(n, MISSING) for n in names}
        assert list(d.values) == names
    assert read_batch(client, "hash", [b"h:gone", b"h:also-gone"], names, ttl=False) == []
    assert read_batch(client, "hash", [], names, ttl=False) == []


def test_json_read_write_restore_keeps_key_order(client):
    make_json_index(client, n=3)
    original = client.execute_command("JSON.GET", "j:1", "$")
    docs = read_batch(client, "json", [b"j:1"], ["$.t", "$.nope"])
    assert docs[0].values["$.t"] == "hello json 1" and docs[0].values["$.nope"] is MISSING
    write_batch(client, "json", [KeyWrite(b"j:1", {"$.title": "x"}, ("$.t",))])
    assert client.execute_command("JSON.GET", "j:1", "$.t") == b"[]"
    restore_records(client, "json", [BackupRecord(b"j:1", None,
                                                  (FieldOriginal(b"$", docs[0].raw_json),))])
    assert client.execute_command("JSON.GET", "j:1", "$") == original


@pytest.mark.parametrize("mode", ["rename", "dump"])
def test_moves_keep_ttl_refuse_overwrite_and_restore(client, monkeypatch, mode):
    if mode == "dump":
        monkeypatch.setenv("RVLM_RENAME_MODE", "dump")
    client.hset("a:1", "f", "1")
    client.pexpire("a:1", 500_000)
    client.hset("a:2", "f", "2")
    move_keys(client, [(b"a:1", b"b:1"), (b"a:2", b"b:2")])
    assert not client.exists("a:1") and client.hget("b:1", "f") == b"1"
    assert 0 < client.pttl("b:1") <= 500_000 and client.pttl("b:2") == -1
    client.hset("a:3", "f", "3")
    client.hset("b:3", "f", "taken")
    from rvlm.core.errors import MigrationFailed

    with pytest.raises(MigrationFailed):
        move_keys(client, [(b"a:3", b"b:3")])
    assert client.hget("b:3", "f") == b"taken"
    # restore moves them back (and a half-done DUMP/RESTORE copy is cleaned up)
    client.hset("a:2", "f", "2")  # as if RESTORE happened but DEL did not
    gone = restore_records(client, "hash", [
        BackupRecord(b"a:1", b"b:1", (), 500_000), BackupRecord(b"a:2", b"b:2", ()),
        BackupRecord(b"a:9", b"b:9", ())])
    assert gone == [b"a:9"]
    assert client.hget("a:1", "f") == b"1" and client.pttl("a:1") > 0
    assert client.exists("a:2") and not client.exists("b:2") and not client.exists("b:1")


def test_collision_helpers_on_the_packed_pipeline(client):
    """fields_exist / keys_exist (the collision checks before the drop) answer for every key,
    under RESP2 and RESP3: hash fields, JSON paths, a key of another type (an error reply
    counts as not held), and more keys than one pipeline chunk."""
    from rvlm.core.redis import wire
    from rvlm.core.redis.docio.read import keys_exist

    client.hset(b"h:1", mapping={b"a": b"1", b"b": b"2"})
    client.hset(b"h:2", mapping={b"b": b"2"})
    client.set(b"s:1", b"not a hash")
    assert fields_exist(client, "hash", [b"h:1", b"h:2", b"h:none", b"s:1"], ["a", "b"]) == [
        ["a", "b"], ["b"], [], []]
    client.execute_command("JSON.SET", b"j:1", "$", '{"t": "x", "n": {"m": 1}}')
    client.execute_command("JSON.SET", b"j:2", "$", '{"u": 1}')
    assert fields_exist(client, "json", [b"j:1", b"j:2", b"j:none", b"s:1"],
                        ["$.t", "$.n.m", "$.u"]) == [["$.t", "$.n.m"], ["$.u"], [], []]
    many = [b"k:%d" % i for i in range(wire.CHUNK + 10)]
    pipe = client.pipeline(transaction=False)
    for k in many[::7]:
        pipe.set(k, b"1")
    pipe.execute()
    got = keys_exist(client, many)
    assert got == [i % 7 == 0 for i in range(len(many))]
    assert count_existing(client, many) == sum(got)
    assert count_existing(client, [b"k:1", b"k:2", b"k:3"]) == 0


def test_count_holding_agrees_with_fields_exist(client, redis_url):
    """count_holding (one EVAL per 1000 keys: the rename's collision check when nothing
    collides) counts what fields_exist finds, over more than one command's keys and missing
    keys; a key of another type, or a user without scripting, gets None (the caller then
    asks fields_exist)."""
    keys = [b"c:%d" % i for i in range(2500)]
    pipe = client.pipeline(transaction=False)
    for i, k in enumerate(keys):
        if i % 3 == 0:
            pipe.hset(k, mapping={b"name": b"x"})
        elif i % 3 == 1:
            pipe.hset(k, mapping={b"other": b"y"})
        elif i % 9 == 2:
            pipe.set(k, b"a string")
    pipe.execute()
    held = fields_exist(client, "hash", keys, ["name", "nick"])
    hashes = [k for i, k in enumerate(keys) if i % 9 != 2]
    assert count_holding(client, hashes, ["name", "nick"]) == sum(1 for h in held if h) == 834
    assert count_holding(client, hashes, ["nick"]) == 0
    assert count_holding(client, keys, ["name"]) is None  # strings among them
    assert count_holding(client, [], ["name"]) == 0
    client.execute_command("ACL", "SETUSER", "rvlm-noscript", "on", ">pw", "~*", "+@all",
                           "-@scripting")
    try:
        import redis

        pool = client.connection_pool
        kwargs = {**pool.connection_kwargs, "username": "rvlm-noscript", "password": "pw"}
        kwargs.pop("credential_provider", None)
        limited = redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **kwargs))
        try:
            assert limited.execute_command("ACL", "WHOAMI") in (b"rvlm-noscript",
                                                                "rvlm-noscript")
            assert count_holding(limited, keys, ["name"]) is None
        finally:
            limited.close()
    finally:
        client.execute_command("ACL", "DELUSER", "rvlm-noscript")


def test_dump_restore_move_never_loses_the_source(client, monkeypatch):
    """DUMP/RESTORE renames (clusters): a RESTORE refused because the new key exists leaves
    the source where it was (its DEL runs only after its copy is in place)."""
    from rvlm.core.errors import MigrationFailed

    monkeypatch.setenv("RVLM_RENAME_MODE", "dump")
    client.hset(b"m:1", mapping={b"a": b"1"})
    client.hset(b"m:2", mapping={b"a": b"2"})
    client.hset(b"n:2", mapping={b"other": b"x"})
    with pytest.raises(MigrationFailed, match="n:2"):
        move_keys(client, [(b"m:1", b"n:1"), (b"m:2", b"n:2")])
    assert client.hgetall(b"m:2") == {b"a": b"2"} and client.hgetall(b"n:2") == {b"other": b"x"}
    assert client.hgetall(b"n:1") == {b"a": b"1"} and not client.exists(b"m:1")
