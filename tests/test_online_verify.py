"""Every target document is checked against the transform of its source before the alias
moves (issue #13, with #12's digests): a target corrupted between the copy and the cut-over is
caught and copied again, whatever was wrong with it (a field's value, an extra field, the key
gone, the expiry); one that still differs after that fails the run with the source serving."""

from __future__ import annotations

import json
import threading
import time

import pytest
from online_helpers import contents, copy_plan, dumps, points_at, renamed_quantized
from test_apply_helpers import make_hash_index
from test_mirror import mirror_of, plan_for
from test_online_cli import PATCH, apply_cli
from test_online_copy import start
from typer.testing import CliRunner

from rvlm.cli.main import app
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.online.control import read_status
from rvlm.core.migrate.online.copier import OnlineCopy
from rvlm.core.migrate.online.mirror import Mirror
from rvlm.core.migrate.online.options import OnlineOptions
from rvlm.core.migrate.online.throttle import Throttler
from rvlm.core.migrate.online.verify import EXTRA, check_targets, verify_targets
from rvlm.core.redis.connection import connect
from rvlm.core.redis.copyio import TargetDoc, json_equal
from rvlm.core.storage.keylog import KeyLog
from rvlm.core.storage.pending import PendingKeys

runner = CliRunner()


def test_a_target_corrupted_before_the_cut_over_is_caught_and_copied_again(
        redis_client, redis_url, tmp_path, notify):
    make_hash_index(redis_client, n=300, dims=8, ttl_every=5)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    plan = copy_plan(redis_client)
    flag = tmp_path / "postpone"
    flag.write_text("")
    out: dict[str, object] = {}
    apply = threading.Thread(target=lambda: out.setdefault("report", apply_plan(
        redis_url, plan, backup_dir=tmp_path / "b", accept_data_loss=True,
        online=OnlineOptions(postpone_flag_file=flag))))
    apply.start()
    deadline = time.monotonic() + 60
    while (status := read_status(tmp_path / "b")) is None or status.phase != "postponed":
        assert time.monotonic() < deadline and apply.is_alive()
        time.sleep(0.05)
    # copied and caught up; now the targets go wrong behind rvlm's back (target keys get no
    # keyspace events rvlm listens to, so only the check can see it)
    redis_client.hset("new:1", "title", "corrupted")           # a value
    redis_client.hset("new:2", "stray", "x")                   # a field the copy has not
    redis_client.delete("new:3")                               # the key
    redis_client.persist("new:5")                              # the expiry (doc 5 has one)
    redis_client.pexpire("new:6", 60_000)                      # an expiry it has not
    assert points_at(redis_client, "live") == "idx"
    flag.unlink()
    apply.join(60)
    report = out["report"]
    assert report.succeeded, report.to_yaml()  # type: ignore[union-attr]
    verified = report.online["verified"]  # type: ignore[union-attr]
    assert verified["copied_again"] == 5 and verified["failed"] == 0, verified
    assert verified["checked"] >= 300
    check = next(c for c in report.validation.checks  # type: ignore[union-attr]
                 if c.name == "documents")
    assert check.passed and "5 differed and were copied again" in check.details
    assert any("new:1" in w for w in report.warnings)  # type: ignore[union-attr]
    # what the alias serves now is exactly the transform of every source document
    assert points_at(redis_client, "live") == "idx_v2"
    sources = contents(redis_client, "doc:*")
    targets = contents(redis_client, "new:*")
    assert {b"new:" + k[4:] for k in sources} == set(targets)
    for k, (fields, expiry) in sources.items():
        assert targets[b"new:" + k[4:]] == (renamed_quantized(fields), expiry), k


def test_check_targets_tells_each_kind_of_difference(redis_client):
    redis_client.hset("vt:ok", mapping={"a": "1", "b": b"\x00\xff"})
    redis_client.hset("vt:value", mapping={"a": "1", "b": "2"})
    redis_client.hset("vt:extra", mapping={"a": "1", "b": "2", "c": "3"})
    redis_client.hset("vt:ttl", mapping={"a": "1", "b": "2"})
    redis_client.set("vt:stray", "x")
    at = int(time.time() * 1000) + 600_000

    def doc(key: str, fields: dict[bytes, bytes], expire_at: int = -1) -> TargetDoc:
        return TargetDoc(key=key.encode(), storage="hash", fields=fields, expire_at=expire_at)

    redis_client.execute_command("PEXPIREAT", "vt:ok", at)
    docs = [doc("vt:ok", {b"a": b"1", b"b": b"\x00\xff"}, at),
            doc("vt:value", {b"a": b"1", b"b": b"3"}),
            doc("vt:extra", {b"a": b"1", b"b": b"2"}),
            doc("vt:ttl", {b"a": b"1", b"b": b"2"}, at),
            doc("vt:gone", {b"a": b"1"})]
    outcomes, absent = check_targets(redis_client, "hash", docs, [b"vt:stray", b"vt:none"])
    assert outcomes == ["ok", "changed", "changed", "changed", "gone"]
    assert absent == [EXTRA, "ok"]
    redis_client.delete("vt:ok", "vt:value", "vt:extra", "vt:ttl", "vt:stray")


def test_a_target_that_still_differs_after_the_copy_again_fails_with_the_source_serving(
        redis_client, redis_url, tmp_path, notify, monkeypatch):
    """Something keeps writing one target key (here: right after each copy of it, the
    re-copy of the check included): the run fails with the key named, the alias stays on the
    source, the source is untouched; once the writer is gone the same command resumes and
    moves the alias to exact copies."""
    make_hash_index(redis_client, n=60, dims=8, ttl_every=5)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    (tmp_path / "patch.yaml").write_text(PATCH)
    res = runner.invoke(app, ["plan", "--index", "idx", "--schema-patch",
                              str(tmp_path / "patch.yaml"), "--mode", "online", "--alias",
                              "live", "--target-prefix", "new:", "--url", redis_url,
                              "--plan-out", str(tmp_path / "plan.yaml")])
    assert res.exit_code == 0, res.output
    before = dumps(redis_client, "doc:*")
    copy_keys = OnlineCopy.copy_keys
    writes = []

    def copy_then_corrupt(self: OnlineCopy, keys) -> None:
        copy_keys(self, keys)
        if b"doc:7" in keys:
            writes.append(self.phase)
            redis_client.hset("new:7", "title", "written by someone else")

    monkeypatch.setattr(OnlineCopy, "copy_keys", copy_then_corrupt)
    res = apply_cli(tmp_path, redis_url)
    out = " ".join(res.output.split())
    assert res.exit_code == 1, res.output
    assert writes == ["copy", "verify"]  # copied, then copied again by the check
    assert "1 of 60 target keys checked still differ" in out and "(e.g. 'new:7')" in out, out
    assert "the aliases still point at 'idx'" in out and "rvlm rollback" in out, out
    assert "notify-keyspace-events keeps the classes this run turned on" in out, out
    assert points_at(redis_client, "live") == "idx"
    assert dumps(redis_client, "doc:*") == before
    journal = (tmp_path / "b" / "journal-0.jsonl").read_text()
    assert '"alias_moved"' not in journal and "verification failed" in journal
    # the writer is gone: the same command checks every copy again and cuts over
    monkeypatch.setattr(OnlineCopy, "copy_keys", copy_keys)
    res = apply_cli(tmp_path, redis_url)
    assert res.exit_code == 0, res.output
    assert points_at(redis_client, "live") == "idx_v2"
    assert dumps(redis_client, "doc:*") == before
    sources = contents(redis_client, "doc:*")
    targets = contents(redis_client, "new:*")
    assert {b"new:" + k[4:] for k in sources} == set(targets)
    for k, (fields, expiry) in sources.items():
        assert targets[b"new:" + k[4:]] == (renamed_quantized(fields), expiry), k


def _engine(client, plan, work):
    """An engine over ``plan`` with no capture (the check alone, as blue_green runs it)."""
    return OnlineCopy(client, mirror_of(client, plan), PendingKeys(work / "pending"), [],
                      KeyLog(work / "written.keys"))


def test_the_check_catches_a_byte_of_a_384_d_vector_a_field_an_expiry_a_type_a_stray(
        redis_client, redis_url, tmp_path, notify, protocol):
    """The targets are read back and compared with the transform client-side: one byte of a
    384-d vector, a field the copy does not have, an expiry each way, a target that holds
    another type, a target whose source is gone. Each is copied again, then exact."""
    make_hash_index(redis_client, n=40, dims=384, ttl_every=5)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    plan = copy_plan(redis_client)
    assert apply_plan(redis_url, plan, backup_dir=tmp_path / "b",
                      accept_data_loss=True).succeeded
    client = connect(redis_url)  # RESP2 or RESP3, as the protocol fixture says
    vector = bytearray(client.hget("new:1", "v"))
    assert len(vector) == 384 * 2  # float16
    vector[501] ^= 0x01
    client.hset("new:1", "v", bytes(vector))
    client.hset("new:2", "stray", "x")
    client.pexpire("new:3", 60_000)            # an expiry its source has not
    client.persist("new:5")                    # doc 5 has one
    client.delete("new:4")
    client.set("new:4", "not a hash")          # another type
    client.delete("doc:6")                     # no source: its target must go
    keys = [b"doc:%d" % i for i in range(40)]
    engine = _engine(client, plan, tmp_path)
    got = verify_targets(engine, [keys])
    assert (got.checked, got.recopied, got.failed, got.in_flight) == (40, 6, 0, 0), got
    assert got.recopied_keys == [b"new:1", b"new:2", b"new:3", b"new:4", b"new:5"]
    sources = contents(client, "doc:*")
    targets = contents(client, "new:*")
    assert {b"new:" + k[4:] for k in sources} == set(targets) and b"new:6" not in targets
    for k, (fields, expiry) in sources.items():
        assert targets[b"new:" + k[4:]] == (renamed_quantized(fields), expiry), k
    again = verify_targets(engine, [keys])
    assert (again.checked, again.ok, again.recopied) == (40, 40, 0), again


def test_a_json_float_changed_in_its_last_digits_is_caught_and_one_read_back_off_is_not(
        redis_client, protocol):
    """RedisJSON reads some floats back a unit in the last place off: that is the same
    document; any other change of a float is not (a digest at 12 bits of mantissa missed a
    change smaller than 1/4096)."""
    root = {"v": [0.1, -0.9304680228233337, 3.0], "n": 7, "b": True, "s": "x"}
    redis_client.execute_command("JSON.SET", "vj:1", "$", json.dumps(root))

    def doc(document: object) -> TargetDoc:
        return TargetDoc(key=b"vj:1", storage="json", document=document, expire_at=-1)

    off_by_a_unit = {**root, "v": [0.1, -0.9304680228233336, 3.0]}
    changed = {**root, "v": [0.1, -0.9304680228233337 * (1 + 1e-9), 3.0]}
    outcomes, _ = check_targets(redis_client, "json", [doc(root), doc(off_by_a_unit),
                                                       doc(changed)], [])
    assert outcomes == ["ok", "ok", "changed"]
    assert not json_equal({"n": 7}, {"n": 7.0})      # an integer is not a float
    assert not json_equal({"b": True}, {"b": 1})     # nor a boolean a number
    assert json_equal(2**70, float(2**70))           # beyond 64 bits RedisJSON has a float
    redis_client.delete("vj:1")


def test_a_resumed_run_checks_each_key_once(redis_client, redis_url, tmp_path, notify):
    """A run stopped before the cut-over and resumed has two key files (each copy enumerates
    the source): the check reads each document once, and of the first copy's keys only
    that a source deleted meanwhile has no target."""
    make_hash_index(redis_client, n=50, dims=8, ttl_every=5)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    plan = copy_plan(redis_client)
    flag, stop = tmp_path / "postpone", tmp_path / "stop"
    flag.write_text("")
    out: dict[str, object] = {}
    first = threading.Thread(target=lambda: out.setdefault("report", apply_plan(
        redis_url, plan, backup_dir=tmp_path / "b", accept_data_loss=True,
        online=OnlineOptions(postpone_flag_file=flag,
                             should_stop=lambda: "asked" if stop.exists() else None))))
    first.start()
    deadline = time.monotonic() + 60
    while (status := read_status(tmp_path / "b")) is None or status.phase != "postponed":
        assert time.monotonic() < deadline and first.is_alive()
        time.sleep(0.05)
    stop.write_text("")
    first.join(60)
    assert not out["report"].succeeded  # type: ignore[attr-defined]
    assert points_at(redis_client, "live") == "idx"
    redis_client.delete("doc:9")  # while nothing runs: no capture sees it
    flag.unlink()
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", accept_data_loss=True)
    assert report.succeeded, report.to_yaml()
    assert len(list((tmp_path / "b").glob("keys-*.rvk"))) == 2
    verified = report.online["verified"]
    assert verified["checked"] == 50 and verified["ok"] == 50, verified  # 49 + doc:9's
    assert points_at(redis_client, "live") == "idx_v2"
    sources = contents(redis_client, "doc:*")
    targets = contents(redis_client, "new:*")
    assert {b"new:" + k[4:] for k in sources} == set(targets) and b"new:9" not in targets
    for k, (fields, expiry) in sources.items():
        assert targets[b"new:" + k[4:]] == (renamed_quantized(fields), expiry), k


def _copied(client, url, tmp_path, n, **engine_options):
    """``n`` documents copied to ``new:`` (t renamed title) by an engine with capture, the
    backlog drained: (notification setting, subscriber, engine), to stop and leave."""
    make_hash_index(client, n=n, dims=8)
    plan = plan_for(client, "idx", {
        "index": {"name": "idx_v2", "prefix": "new:"},
        "rename_fields": [{"old_name": "t", "new_name": "title"}]})
    setting, sub, engine, keyfile = start(client, url, plan, tmp_path, **engine_options)
    try:
        engine.copy(keyfile)
        engine.drain()
    except BaseException:
        sub.stop()
        setting.leave()
        raise
    return setting, sub, engine


def test_changes_are_carried_over_while_a_step_of_the_check_runs(
        redis_client, redis_url, tmp_path, notify, monkeypatch):
    """The check reads and compares in a thread of its own: a source written while one of its
    steps takes a second reaches its target during that step, not after it."""
    setting, sub, engine = _copied(redis_client, redis_url, tmp_path, 60)
    read = Mirror.read_with_targets
    written: list[float] = []

    def read_slowly(self: Mirror, client, keys):
        if not written:  # the first step of the check
            redis_client.hset("doc:7", "t", "written during the check")
            written.append(time.monotonic())
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and redis_client.hget(
                    "new:7", "title") != b"written during the check":
                time.sleep(0.01)
            written.append(time.monotonic())  # carried over (or a second gone by)
        return read(self, client, keys)

    try:
        monkeypatch.setattr(Mirror, "read_with_targets", read_slowly)
        got = verify_targets(engine, [[b"doc:%d" % i for i in range(60)]])
        assert written[1] - written[0] < 0.9, written
        assert (got.checked, got.recopied, got.failed) == (60, 0, 0), got
        assert redis_client.hget("new:7", "title") == b"written during the check"
    finally:
        sub.stop()
        setting.leave()


def test_the_check_neither_reads_nor_copies_again_while_the_run_is_throttled(
        redis_client, redis_url, tmp_path, notify):
    """Throttled (here by 'rvlm ctl throttle'), the check waits: a target corrupted
    meanwhile is copied again only once the throttle lifts."""
    throttler = Throttler(redis_client, interval=0.05)
    setting, sub, engine = _copied(redis_client, redis_url, tmp_path, 40, throttler=throttler)
    seen: dict[str, object] = {}

    def operator() -> None:
        time.sleep(0.5)
        seen["target"] = redis_client.hget("new:3", "title")  # still as corrupted
        throttler.forced = False

    try:
        redis_client.hset("new:3", "title", "corrupted")
        throttler.forced = True
        engine.tick(force=True)
        t = threading.Thread(target=operator)
        t.start()
        started = time.monotonic()
        got = verify_targets(engine, [[b"doc:%d" % i for i in range(40)]])
        t.join()
        assert time.monotonic() - started >= 0.5
        assert seen["target"] == b"corrupted"
        assert (got.checked, got.recopied, got.failed) == (40, 1, 0), got
        assert redis_client.hget("new:3", "title") == redis_client.hget("doc:3", "t")
    finally:
        sub.stop()
        setting.leave()


def test_a_capture_lost_during_the_check_stops_it_at_once(redis_client, redis_url, tmp_path,
                                                          notify, monkeypatch):
    """The check's thread stops within a step when the engine's thread fails (here the
    capture's connection killed): the run stops cleanly, it does not wait for the whole
    check."""
    from rvlm.core.redis.capture import CLIENT_NAME, CaptureLost

    setting, sub, engine = _copied(redis_client, redis_url, tmp_path, 600)
    read = Mirror.read_with_targets
    steps: list[int] = []

    def read_slowly(self: Mirror, client, keys):
        steps.append(len(keys))
        if len(steps) == 1:
            for c in redis_client.client_list():
                if c.get("name") == CLIENT_NAME:
                    redis_client.client_kill_filter(_id=c["id"])
        time.sleep(0.3)
        return read(self, client, keys)

    try:
        monkeypatch.setattr(Mirror, "read_with_targets", read_slowly)
        started = time.monotonic()
        with pytest.raises(CaptureLost, match="lost its subscription"):
            verify_targets(engine, [[b"doc:%d" % i for i in range(600)]])
        assert time.monotonic() - started < 1.0 and len(steps) <= 2, steps  # of 4 steps
        assert not any(t.name == "rvlm-check" for t in threading.enumerate())
    finally:
        sub.stop()
        setting.leave()
